/**
 * What the registry pull tests share: a Llama-shaped base model and a fine-tune of it with two
 * tensors changed, a real CNCF distribution registry, and a counting proxy in front of it. A test
 * file calls `useFineTuneRegistry` once at its top; the bindings below are set before its tests run
 * (each test file has its own instance of this module).
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll } from "vitest";
import { makeFineTune, makeLlamaLike } from "../fixtures/models.js";
import { startCountingProxy, type CountingProxy } from "./counting-proxy.js";
import { startRegistry, type RunningRegistry } from "./harness.js";

/** The tensors the fine-tune changed. */
export const CHANGED = ["model.layers.1.mlp.down_proj.weight", "lm_head.weight"];

export let tmp: string;
/** The base model's folder, and the fine-tune's. */
export let base: string;
export let ft: string;
export let reg: RunningRegistry;
export let proxy: CountingProxy;

let stores = 0;
/** A fresh store (and the shared docker config) for one cake command. */
export const env = () => ({ CAKE_HOME: path.join(tmp, `store-${stores++}`), DOCKER_CONFIG: path.join(tmp, "docker") });

/** Starts the models, the registry and the proxy before the file's tests; `then` adds to them (e.g. pushes). */
export function useFineTuneRegistry(prefix: string, then?: () => Promise<void>): void {
  beforeAll(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
    base = path.join(tmp, "base");
    ft = path.join(tmp, "ft");
    await makeLlamaLike(base, { hidden: 512, layers: 2, vocab: 4096, shards: 2 });
    await makeFineTune(base, ft, CHANGED);
    reg = await startRegistry();
    proxy = await startCountingProxy(reg.url);
    await then?.();
  }, 60_000);
  afterAll(async () => {
    await proxy?.close();
    await reg?.close();
    await fs.rm(tmp, { recursive: true, force: true });
  });
}
