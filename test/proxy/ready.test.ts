/**
 * `/_cake/ready`: 200 while the store is writable and the backend answers; 503 with the reason when
 * the backend registry (a real distribution) is stopped or the store's cake/ dir cannot be written.
 * `/v2/` (liveness) answers 200 throughout.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProxy } from "../../proxy/index.js";
import { startRegistry } from "../registry/harness.js";

let tmp: string;
beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-proxy-ready-"));
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

async function get(url: string): Promise<{ status: number; body: { ready: boolean; reasons: string[] } }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as { ready: boolean; reasons: string[] } };
}

describe("proxy readiness", () => {
  it("is ready with a live backend, 503 naming the backend once it stops; /v2/ stays 200", async () => {
    const reg = await startRegistry();
    const proxy = await startProxy({ host: "127.0.0.1", port: 0, hub: "http://127.0.0.1:9", store: path.join(tmp, "store"), aliases: {}, quiet: true, backend: `${reg.host}/cache` });
    // A second proxy on the same backend, asked only after the stop: the first one's answer is cached a few seconds.
    const late = await startProxy({ host: "127.0.0.1", port: 0, hub: "http://127.0.0.1:9", store: path.join(tmp, "store-2"), aliases: {}, quiet: true, backend: `${reg.host}/cache` });
    try {
      expect(await get(`${proxy.url}/_cake/ready`)).toEqual({ status: 200, body: { ready: true, reasons: [] } });
      await reg.close();
      const down = await get(`${late.url}/_cake/ready`);
      expect(down.status).toBe(503);
      expect(down.body.ready).toBe(false);
      expect(down.body.reasons).toHaveLength(1);
      expect(down.body.reasons[0]).toMatch(new RegExp(`^backend http://${reg.host}/v2/ is unreachable: `));
      expect((await fetch(`${late.url}/v2/`)).status).toBe(200);
    } finally {
      await proxy.close();
      await late.close();
      await reg.close();
    }
  });

  it("answers 503 naming the store when its cake/ dir cannot be written", async () => {
    const store = path.join(tmp, "ro-store");
    const proxy = await startProxy({ host: "127.0.0.1", port: 0, hub: "http://127.0.0.1:9", store, aliases: {}, quiet: true });
    try {
      expect((await get(`${proxy.url}/_cake/ready`)).status).toBe(200);
      // Mode bits do not stop root (CI runs as root), so cake/ becomes a file: no write in it can succeed.
      await fs.rm(path.join(store, "cake"), { recursive: true });
      await fs.writeFile(path.join(store, "cake"), "");
      const r = await get(`${proxy.url}/_cake/ready`);
      expect(r.status).toBe(503);
      expect(r.body.reasons).toEqual([expect.stringMatching(new RegExp(`^store ${store} is not writable: `))]);
      expect((await fetch(`${proxy.url}/v2/`)).status).toBe(200);
    } finally {
      await proxy.close();
    }
  });
});
