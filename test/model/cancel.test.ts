/**
 * One AbortSignal cancels a pull, a push or an export: what is in flight stops, nothing is tagged or
 * pushed as a manifest, nothing half-written is left; and one blob that fails to upload stops the
 * push's other uploads (no stray requests after the error) and ends its progress.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canonicalRef, exportTo, importDir, pullHf, pushToRegistry, sourceFromStore, Store, type ProgressSink } from "../../src/index.js";
import { hashTree, makeLlamaLike } from "../fixtures/models.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { startCountingProxy, type CountingProxy } from "../registry/counting-proxy.js";
import { startRegistry, type RunningRegistry } from "../registry/harness.js";

let tmp: string;
let model: string;
let hub: Hub;
let reg: RunningRegistry;
let proxy: CountingProxy;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-cancel-"));
  model = path.join(tmp, "model");
  await makeLlamaLike(model, { hidden: 512, layers: 2, vocab: 4096, shards: 2 });
  hub = await startHub();
  await hub.commit("acme/m", model);
  reg = await startRegistry();
  proxy = await startCountingProxy(reg.url);
});
afterAll(async () => {
  await proxy?.close();
  await reg?.close();
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

/** A progress sink that aborts `ctl` once `after` bytes went by, and records whether it was ended. */
function abortAfter(ctl: AbortController, after: number): ProgressSink & { ended: boolean; seen: number } {
  const p = {
    ended: false,
    seen: 0,
    addTotal() {},
    bytes(n: number) {
      p.seen += n;
      if (p.seen >= after && !ctl.signal.aborted) ctl.abort(new Error("cancelled by the test"));
    },
    item() {},
    done() {
      p.ended = true;
    },
  };
  return p;
}

const settle = () => new Promise((r) => setTimeout(r, 400));
// A request written just before a push stopped can reach the registry (served in this same process)
// a moment after the push has rejected: let those land, and count from there.
const requestsLanded = async () => {
  await new Promise((r) => setTimeout(r, 100));
  return proxy.requests.length;
};

describe("cancelling", () => {
  it("a Hub pull: it stops, tags nothing, and a rerun finishes byte-identical", async () => {
    const store = new Store(path.join(tmp, "pull-store"));
    hub.setKnobs({ bandwidth: 2 << 20 });
    const ctl = new AbortController();
    const hubParams = { hubUrl: hub.url };
    await expect(pullHf({ kind: "hf", repo: "acme/m", revision: "main" }, { store, hub: hubParams, signal: ctl.signal, progress: abortAfter(ctl, 1 << 20) })).rejects.toThrow(/cancelled by the test/);
    hub.setKnobs({ bandwidth: 0 });
    expect(await store.tags()).toEqual([]);
    const served = hub.counters.requests;
    await settle();
    expect(hub.counters.requests).toBe(served); // nothing kept asking after the cancel
    await pullHf({ kind: "hf", repo: "acme/m", revision: "main" }, { store, hub: hubParams });
    const out = path.join(tmp, "pull-out");
    await exportTo(await sourceFromStore(store, "hf://acme/m"), out);
    expect(await hashTree(out)).toEqual(await hashTree(model));
  });

  it("a push: uploads stop, no manifest is pushed, progress ends", async () => {
    const store = new Store(path.join(tmp, "push-store"));
    await importDir(model, store, { tag: canonicalRef("127.0.0.1:1/local/m:v1") });
    proxy.reset();
    proxy.fault({ kind: "upload", times: 1000, throttleUp: 4 << 20 });
    const ctl = new AbortController();
    const progress = abortAfter(ctl, 1 << 20);
    await expect(pushToRegistry("127.0.0.1:1/local/m:v1", `${proxy.host}/acme/cancel:v1`, { store, signal: ctl.signal, progress })).rejects.toThrow(/cancelled by the test/);
    const sent = await requestsLanded();
    await settle();
    // Nothing starts after the cancel but the cleanup of upload sessions it cut (DELETE).
    expect(proxy.requests.slice(sent).filter((r) => r.method !== "DELETE").map((r) => `${r.method} ${r.kind}`)).toEqual([]);
    expect(proxy.count("PUT", "manifest")).toBe(0);
    expect(progress.ended).toBe(true);
  });

  it("a push with one blob the registry refuses: the others stop, one error naming it", async () => {
    const store = new Store(path.join(tmp, "push-store"));
    proxy.reset();
    // The first upload that starts is refused outright (not worth a retry); the others are slow.
    proxy.fault({ method: "POST", kind: "upload", respond: { status: 403, body: JSON.stringify({ errors: [{ code: "DENIED", message: "quota exceeded" }] }) } });
    proxy.fault({ kind: "upload", times: 1000, throttleUp: 4 << 20 });
    const progress = abortAfter(new AbortController(), Infinity);
    await expect(pushToRegistry("127.0.0.1:1/local/m:v1", `${proxy.host}/acme/refused:v1`, { store, progress, concurrency: 4 })).rejects.toThrow(/quota exceeded/);
    const sent = await requestsLanded();
    await settle();
    // No stray uploads after the error: only the cleanup of upload sessions it cut (DELETE).
    expect(proxy.requests.slice(sent).filter((r) => r.method !== "DELETE").map((r) => `${r.method} ${r.kind}`)).toEqual([]);
    expect(proxy.count("PUT", "manifest")).toBe(0);
    expect(progress.ended).toBe(true);
  });

  it("an export: it stops and leaves no temp files", async () => {
    const store = new Store(path.join(tmp, "pull-store"));
    const out = path.join(tmp, "cancel-out");
    const ctl = new AbortController();
    await expect(exportTo(await sourceFromStore(store, "hf://acme/m"), out, { signal: ctl.signal, progress: abortAfter(ctl, 1) })).rejects.toThrow(/cancelled by the test/);
    const left = await fs.readdir(out).catch(() => []);
    expect(left.filter((n) => n.includes(".tmp"))).toEqual([]);
  });
});
