/**
 * Scenario 11, the ModelPack view (issue 18). (1) Warm serving: `oras pull <proxy>/mp/<org>/<name>:main`
 * from a `cake proxy` that converted the revision once, each file assembled from the tensor blobs as it
 * is served, against CNCF distribution serving the same ModelPack artifact (pushed by `cake push
 * --format modelpack`: the same digests, the same bytes), runs alternating. (2) `push --format modelpack`
 * of a stored model, in this process with a store that counts what is read from its blobs: every tensor
 * byte exactly once (headers come from the recipe; no file is hashed again).
 */
import fs from "node:fs/promises";
import path from "node:path";
import type { Readable } from "node:stream";
import { pushToRegistry, Store } from "../../src/index.js";
import { startHub } from "../../test/hub/emulator.js";
import { startRegistry } from "../../test/registry/harness.js";
import { startCakeProxy } from "../lib/cake-proxy.js";
import { cakeEnv, type Models, type Options } from "../lib/context.js";
import { checkRegistry, ensureOras } from "../lib/peers.js";
import { cake, medianOf, Scratch, timed } from "../lib/proc.js";
import { mb, mbs, pct, secs, type Section } from "../lib/report.js";

const REPO = "bench/model";
const TITLE = "11. ModelPack view: mp/ serving and push --format modelpack";

/** A store that counts the bytes read through its content seam (what a push reads of the model). */
class CountingStore extends Store {
  read = 0;
  override openBlob(digest: string, start?: number, end?: number): Readable {
    const s = super.openBlob(digest, start, end);
    s.on("data", (c: Buffer) => (this.read += c.length));
    return s;
  }
}

export async function modelPack(models: Models, opts: Options): Promise<Section> {
  const oras = await ensureOras();
  checkRegistry();
  const model = await models.base();
  const scratch = new Scratch();
  try {
    const hub = await startHub();
    scratch.defer(() => hub.close());
    await hub.commit(REPO, model.dir);
    const reg = await startRegistry();
    scratch.defer(() => reg.close());
    const home = await scratch.dir("mp-store");
    await cake(["pull", "-q", `hf://${REPO}`], cakeEnv(hub, home));

    // (2) the push, in process, counted; then the same push in the default format for its time
    const store = new CountingStore(home);
    const t0 = performance.now();
    await pushToRegistry(`hf://${REPO}@main`, `${reg.host}/mp/${REPO}:main`, { store, format: "modelpack" });
    const pushSecs = (performance.now() - t0) / 1000;
    const cakePush = await cake(["push", "-q", `hf://${REPO}@main`, `${reg.host}/hf/${REPO}:main`], { ...cakeEnv(hub, home), HF_HUB_OFFLINE: "1" });

    // (1) warm serving, alternating with distribution
    const p = await startCakeProxy(scratch, hub);
    const once = async (ref: string) => {
      const d = await scratch.dir("mp-client");
      const t = await timed(oras, ["pull", "--plain-http", "--no-tty", "--concurrency", "16", "-o", path.join(d, "out"), ref]);
      await fs.rm(d, { recursive: true, force: true });
      return t.secs;
    };
    await once(`${p.host}/mp/${REPO}:main`); // converts
    const pair = await medianOf(opts.runs, async () => ({ dist: await once(`${reg.host}/mp/${REPO}:main`), warm: await once(`${p.host}/mp/${REPO}:main`) }));
    await p.stop();

    const ratio = pair.dist / pair.warm;
    const readRatio = store.read / model.bytes;
    return {
      name: "modelpack",
      title: TITLE,
      setup: [
        `${mb(model.bytes)} MB model; oras pull --concurrency 16 of \`<host>/mp/${REPO}:main\` from a warm \`cake proxy\` (files assembled from the tensor blobs) and from distribution (the same artifact, pushed by \`cake push --format modelpack\`); median of ${opts.runs} runs, alternating`,
        "push: `pushToRegistry(..., {format: \"modelpack\"})` from a store that counts the bytes read through `openBlob`, into an empty repository",
      ],
      header: ["what", "seconds", "MB/s", "measure"],
      rows: [
        ["oras pull mp/, distribution", secs(pair.dist), mbs(model.bytes, pair.dist), "100 %"],
        ["oras pull mp/, cake proxy warm", secs(pair.warm), mbs(model.bytes, pair.warm), pct(ratio)],
        ["push --format modelpack", secs(pushSecs), mbs(model.bytes, pushSecs), `${mb(store.read)} MB read of ${mb(model.bytes)} MB`],
        ["push (cake format), same model", secs(cakePush.secs), mbs(model.bytes, cakePush.secs), ""],
      ],
      targets: [
        { what: "mp/ view warm serving >= 80 % of distribution's blob rate for the same bytes", measured: pct(ratio), met: ratio >= 0.8 },
        // Tensor bytes are at most the model's bytes (headers and small files are the rest): read once means <= 1.0.
        { what: "push --format modelpack reads no tensor byte twice (bytes read from blobs <= model bytes)", measured: readRatio.toFixed(3), met: readRatio <= 1 },
      ],
      notes: [],
    };
  } finally {
    await scratch.cleanup();
  }
}
