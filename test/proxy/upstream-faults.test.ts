/**
 * `cake proxy` when the Hub cuts its answers: 16 clients pulling one model at once through one
 * proxy while every 3rd answer of the Hub (JSON, redirects, header reads, tensor bytes) is cut
 * half-way all end byte-identical, from one conversion; a rate limit past what cake waits for is a
 * 429 TOOMANYREQUESTS with Retry-After, and the next request after it converts.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { request as httpGet } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProxy, type RunningProxy } from "../../proxy/index.js";
import { dirBytes, hashTree, makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import { cutEvery } from "../helpers/cut-answer.js";
import { startHub, type Hub } from "../hub/emulator.js";

const OCI = "application/vnd.oci.image.manifest.v1+json";
let tmp: string;
let model: string;
let hub: Hub;
let proxy: RunningProxy;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-proxy-faults-"));
  model = path.join(tmp, "model");
  await makeLlamaLike(model, { hidden: 256, layers: 2, vocab: 2048, shards: 2 });
  hub = await startHub();
  await hub.commit("acme/tiny", model);
  await hub.commit("acme/limited", model);
  proxy = await startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store: path.join(tmp, "proxy-store"), aliases: {}, quiet: true });
});
afterAll(async () => {
  await proxy?.close();
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

describe("cake proxy when the Hub cuts its answers", () => {
  it("serves 16 clients pulling at once, every one byte-identical, from one conversion", async () => {
    hub.counters.reset();
    hub.setKnobs({ cut: cutEvery(3, 0.5) });
    const clients = await Promise.all(
      Array.from({ length: 16 }, (_, i) => cake(["pull", "-q", `${proxy.host}/hf/acme/tiny:main`], { CAKE_HOME: path.join(tmp, `client-${i}`) })),
    );
    hub.setKnobs({ cut: undefined });
    expect(clients.map((c) => c.stderr)).toEqual(Array(16).fill(""));
    expect(clients.map((c) => c.code)).toEqual(Array(16).fill(0));
    expect(new Set(clients.map((c) => c.stdout)).size).toBe(1);
    expect(hub.counters.cut).toBeGreaterThan(3);
    expect(proxy.service.metrics.conversions).toBe(1);
    expect(hub.counters.bytesServed).toBeLessThan((await dirBytes(model)) * 1.5);
    const out = path.join(tmp, "out");
    expect((await cake(["export", "-q", `${proxy.host}/hf/acme/tiny:main`, out], { CAKE_HOME: path.join(tmp, "client-0") })).code).toBe(0);
    expect(await hashTree(out)).toEqual(await hashTree(model));
  });

  it("keeps a cake client waiting on a slow conversion past its idle timeout (102 Processing), and it gets the model", async () => {
    proxy.service.opts.processingEveryMs = 200;
    const slow = path.join(tmp, "slow-model"); // bytes of its own: nothing to take from the store
    await makeLlamaLike(slow, { hidden: 256, layers: 2, vocab: 2048, shards: 2, seed: 99 });
    await hub.commit("acme/slow", slow);
    hub.setKnobs({ bandwidth: 1 << 20 }); // the conversion takes a few seconds
    // One try only: without the 102s it would end after a second of silence.
    const e = { CAKE_HOME: path.join(tmp, "slow-client"), CAKE_HTTP_IDLE_TIMEOUT: "1", CAKE_HTTP_TIMEOUT: "1", CAKE_HTTP_RETRIES: "0" };
    const r = await cake(["pull", "-q", `${proxy.host}/hf/acme/slow:main`], e);
    hub.setKnobs({ bandwidth: 0 });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const out = path.join(tmp, "slow-out");
    expect((await cake(["export", "-q", `${proxy.host}/hf/acme/slow:main`, out], e)).code).toBe(0);
    expect(await hashTree(out)).toEqual(await hashTree(slow));
  });

  it("answers a rate limit longer than cake waits with 429 TOOMANYREQUESTS and Retry-After, then converts once it is over", async () => {
    // The Hub asks for an hour: more than CAKE_HTTP_MAX_WAIT (300 s), so the proxy does not sit on the request.
    hub.setKnobs({ fail429Every: 1, rateLimitStyle: "ratelimit", retryAfterSeconds: 3600 });
    const limited = await httpGet(`${proxy.url}/v2/hf/acme/limited/manifests/main`, { headers: { accept: OCI } });
    hub.setKnobs({ fail429Every: 0 });
    expect(limited.statusCode).toBe(429);
    expect(limited.headers["retry-after"]).toBe("5");
    const error = (JSON.parse(Buffer.from(await limited.body.arrayBuffer()).toString()) as { errors: { code: string; message: string }[] }).errors[0]!;
    expect(error.code).toBe("TOOMANYREQUESTS");
    expect(error.message).toMatch(/^the Hub is rate limiting: hf:\/\/acme\/limited@main: HTTP 429, the Hub's rate limit "api" \(0 of 500 requests left in a 300 s window\), resets in 3600 s: more than CAKE_HTTP_MAX_WAIT allows; try again later$/);
    const after = await httpGet(`${proxy.url}/v2/hf/acme/limited/manifests/main`, { headers: { accept: OCI } });
    await after.body.dump();
    expect(after.statusCode).toBe(200);
  });
});
