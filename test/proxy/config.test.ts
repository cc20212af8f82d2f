/** The proxy's configuration: a flag wins over CAKE_PROXY_*, which wins over the config file. */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { resolveConfig } from "../../proxy/server.js";

describe("proxy config", () => {
  it("index: --index, else CAKE_PROXY_INDEX, else the file's `index`; a bad one is one usage line", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cake-proxy-config-"));
    const file = path.join(dir, "proxy.json");
    await fs.writeFile(file, JSON.stringify({ index: "registry.internal/from-file" }));
    try {
      expect(resolveConfig({ config: file }, {}).index).toBe("registry.internal/from-file");
      expect(resolveConfig({ config: file }, { CAKE_PROXY_INDEX: "registry.internal/from-env" }).index).toBe("registry.internal/from-env");
      expect(resolveConfig({ config: file, index: "localhost:5000/from-flag" }, { CAKE_PROXY_INDEX: "registry.internal/from-env" }).index).toBe("localhost:5000/from-flag");
      expect(resolveConfig({}, {}).index).toBeUndefined();
      expect(() => resolveConfig({}, { CAKE_PROXY_INDEX: "localhost:5000" })).toThrow(
        'proxy index "localhost:5000": want REGISTRY/prefix (host[:port]/path, no tag), e.g. localhost:5000/index',
      );
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
