/** The proxy's configuration: a flag wins over CAKE_PROXY_*, which wins over the config file. */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
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

  it("backend access: plain HTTP, user and password from flags, CAKE_PROXY_BACKEND_*, or the file, alike", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cake-proxy-config-"));
    const file = path.join(dir, "proxy.json");
    const secret = path.join(dir, "password");
    await fs.writeFile(file, JSON.stringify({ backend: "registry.internal/cache", backendPlainHttp: true, backendUsername: "file-user", backendPassword: "file-pass" }));
    await fs.writeFile(secret, "secret-from-file\n");
    try {
      expect(resolveConfig({ config: file }, {}).backendAccess).toEqual({ plainHttp: true, username: "file-user", password: "file-pass" });
      const env = { CAKE_PROXY_BACKEND_PLAIN_HTTP: "false", CAKE_PROXY_BACKEND_USERNAME: "env-user", CAKE_PROXY_BACKEND_PASSWORD: "env-pass" };
      expect(resolveConfig({ config: file }, env).backendAccess).toEqual({ username: "env-user", password: "env-pass" });
      expect(resolveConfig({ config: file, backendUsername: "flag-user", backendPassword: "flag-pass" }, env).backendAccess).toEqual({ username: "flag-user", password: "flag-pass" });
      // A secret mounted as a file: its first line, from the environment, the config file or the flag.
      expect(resolveConfig({}, { CAKE_PROXY_BACKEND_PASSWORD_FILE: secret }).backendAccess).toEqual({ password: "secret-from-file" });
      await fs.writeFile(file, JSON.stringify({ backendPasswordFile: secret }));
      expect(resolveConfig({ config: file }, {}).backendAccess).toEqual({ password: "secret-from-file" });
      expect(resolveConfig({ config: file, backendPassword: "flag-pass" }, {}).backendAccess).toEqual({ password: "flag-pass" });
      expect(resolveConfig({}, {}).backendAccess).toBeUndefined();
      expect(resolveConfig({}, { CAKE_PROXY_CONCURRENCY: "4" }).concurrency).toBe(4);
      expect(() => resolveConfig({}, { CAKE_PROXY_BACKEND_PLAIN_HTTP: "maybe" })).toThrow('CAKE_PROXY_BACKEND_PLAIN_HTTP="maybe": want true or false (or 1, 0)');
      expect(() => resolveConfig({}, { CAKE_PROXY_BACKEND_PASSWORD_FILE: path.join(dir, "missing") })).toThrow(
        `CAKE_PROXY_BACKEND_PASSWORD_FILE ${path.join(dir, "missing")}: cannot read it (ENOENT); give a readable file holding the password`,
      );
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it("the startup log names the backend but never its password or the Hub token", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "cake-proxy-config-"));
    const child = spawn(path.resolve("bin/cake"), ["proxy", "--port", "0", "--store", path.join(dir, "store"), "--backend", "127.0.0.1:9/cache"], {
      env: { ...process.env, CAKE_PROXY_BACKEND_USERNAME: "ops", CAKE_PROXY_BACKEND_PASSWORD: "s3cret-pw", CAKE_PROXY_HUB_TOKEN: "hf_s3cret" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    try {
      await new Promise<void>((resolve, reject) => {
        child.stderr.on("data", (c: Buffer) => {
          stderr += c.toString();
          if (stderr.includes('"listening"')) resolve();
        });
        child.once("exit", (code) => reject(new Error(`cake proxy exited ${code}: ${stderr}`)));
      });
      const listening = stderr.split("\n").find((l) => l.includes('"listening"'));
      expect(listening).toContain('"backend":"127.0.0.1:9/cache"');
      expect(stderr).not.toContain("s3cret");
    } finally {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("close", r));
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
