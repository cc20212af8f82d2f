/**
 * `cake login` as `docker login` behaves on a terminal: it asks for the user and the password (not
 * echoed), checks them against the registry, stores them; `cake logout` forgets them. The built
 * binary in tmux against a registry stand-in that wants Basic credentials.
 */
import fs from "node:fs";
import fsp from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CAKE, cake } from "../helpers/cli.js";
import { shq as q, terminal } from "../helpers/tmux.js";

const term = terminal(`cake-login-${process.pid}`);

let tmp: string;
let registry: http.Server;
let host: string;

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "cake-login-"));
  // /v2/ as a registry with Basic auth answers it: 401 with a challenge, 200 for alice:s3cret
  registry = http.createServer((req, res) => {
    const ok = req.headers.authorization === `Basic ${Buffer.from("alice:s3cret").toString("base64")}`;
    res.writeHead(ok ? 200 : 401, ok ? {} : { "www-authenticate": 'Basic realm="test"' }).end();
  });
  await new Promise<void>((r) => registry.listen(0, "127.0.0.1", r));
  host = `127.0.0.1:${(registry.address() as AddressInfo).port}`;
});
afterAll(async () => {
  term.close();
  await new Promise((r) => registry.close(r));
  await fsp.rm(tmp, { recursive: true, force: true });
});

describe("cake login on a terminal", () => {
  it("asks for the user and the password, shows no password, stores them; logout forgets them", async () => {
    const docker = path.join(tmp, "docker");
    const shell = `env DOCKER_CONFIG=${q(docker)} ${q(process.execPath)} ${q(CAKE)} login ${host}; echo "cake exited $?"; sleep 600`;
    term.start("login", 120, 20, shell);
    await term.until("Username:"); // (capture-pane drops the space after it)
    term.keys("alice", "Enter");
    await term.until("Password:");
    term.keys("s3cret", "Enter");
    const s = await term.until("cake exited");
    expect(s).toContain("Login Succeeded");
    expect(s).toContain("cake exited 0");
    expect(s).not.toContain("s3cret");
    const config = JSON.parse(fs.readFileSync(path.join(docker, "config.json"), "utf8")) as { auths: Record<string, { auth: string }> };
    expect(Buffer.from(config.auths[host]!.auth, "base64").toString()).toBe("alice:s3cret");

    const out = await cake(["logout", host], { DOCKER_CONFIG: docker });
    expect(out.stderr).toBe(`Removed login credentials for ${host} (from ${path.join(docker, "config.json")})\n`);
    expect(JSON.parse(fs.readFileSync(path.join(docker, "config.json"), "utf8"))).toEqual({ auths: {} });
    expect((await cake(["logout", host], { DOCKER_CONFIG: docker })).stderr).toBe(`Not logged in to ${host}\n`);
  });

  it("without a terminal and without credentials: one line saying what to pass", async () => {
    const r = await cake(["login", host], { DOCKER_CONFIG: path.join(tmp, "none") });
    expect(r.stderr).toBe("cake: login needs -u USER and --password-stdin (or a terminal to ask on)\n");
    expect(r.code).toBe(2);
  });
});
