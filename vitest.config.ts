import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    setupFiles: ["test/helpers/no-proxy-env.ts"],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    // Tests start real servers (hub emulation, registries); two cores, so keep files to two workers.
    maxWorkers: 2,
  },
});
