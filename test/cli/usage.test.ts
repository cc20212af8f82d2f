/** Usage errors exit 2 (as git and docker do), naming the option and what is wrong. */
import { describe, expect, it } from "vitest";
import { cake } from "../helpers/cli.js";

describe("usage errors", () => {
  it("exit 2 and name the option for a bad --concurrency", async () => {
    for (const v of ["0", "abc", "99999"]) {
      const r = await cake(["pull", "-c", v, "hf://acme/m"], { CAKE_HOME: "/nonexistent-cake-home" });
      expect(r.code, v).toBe(2);
      expect(r.stderr).toContain(`option '-c, --concurrency <n>' argument '${v}' is invalid. not a positive integer (1-1024): ${v}`);
    }
  });
});
