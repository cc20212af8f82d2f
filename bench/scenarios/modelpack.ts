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
import { Readable } from "node:stream";
import { pushToRegistry, sourceFromStore, Store, type Recipe } from "../../src/index.js";
import { startCakeProxy } from "../lib/cake-proxy.js";
import { cakeEnv, type Models, type Options } from "../lib/context.js";
import { checkRegistry, ensureOras } from "../lib/peers.js";
import { cake, medianOf, Scratch, timed } from "../lib/proc.js";
import { mb, mbs, pct, secs, type Section } from "../lib/report.js";
import { hubWith, registryIn } from "../lib/servers.js";

const REPO = "bench/model";
const TITLE = "11. ModelPack view: mp/ serving and push --format modelpack";

/** A store that counts the bytes read through its content seam, by blob (what a push reads of the model). */
class CountingStore extends Store {
  readonly read = new Map<string, number>();
  /** None: every byte goes through openBlob, where it is counted. */
  override rawFile(): string | undefined {
    return undefined;
  }
  override openBlob(digest: string, start?: number, end?: number): Readable {
    // Counted as read by the caller, not with a "data" listener: that would start the stream flowing
    // before its reader (file-range.ts opens the next blob early) and lose its bytes.
    const read = this.read;
    const counted = async function* (s: AsyncIterable<Buffer>) {
      for await (const c of s) {
        read.set(digest, (read.get(digest) ?? 0) + c.length);
        yield c;
      }
    };
    return Readable.from(counted(super.openBlob(digest, start, end)), { objectMode: false });
  }
}

/**
 * What the push read of the model's tensor blobs (the parts of its safetensors files; not the
 * manifest, config and recipe it reads to plan, nor the small files): bytes in all, against their
 * sizes, and the most of any one blob read again (0 when every byte was read once).
 */
function tensorReads(read: ReadonlyMap<string, number>, recipe: Recipe): { read: number; of: number; reread: number } {
  let total = 0;
  let of = 0;
  let reread = 0;
  for (const digest of new Set(recipe.files.flatMap((f) => f.parts ?? []))) {
    const size = recipe.blobs[digest]!.size;
    const n = read.get(digest) ?? 0;
    total += n;
    of += size;
    reread = Math.max(reread, n - size);
  }
  return { read: total, of, reread };
}

export async function modelPack(models: Models, opts: Options): Promise<Section> {
  const oras = await ensureOras();
  checkRegistry();
  const model = await models.base();
  const scratch = new Scratch();
  try {
    const hub = await hubWith(scratch, REPO, model.dir);
    const reg = await registryIn(scratch);
    const home = await scratch.dir("mp-store");
    await cake(["pull", "-q", `hf://${REPO}`], cakeEnv(hub, home));

    // (2) the push, in process: timed as it runs (blobs read from their plain files); then counted,
    // through openBlob, into a registry of its own (nothing there to find or mount); then the same
    // push in the default format for its time
    const t0 = performance.now();
    await pushToRegistry(`hf://${REPO}@main`, `${reg.host}/mp/${REPO}:main`, { store: new Store(home), format: "modelpack" });
    const pushSecs = (performance.now() - t0) / 1000;
    const reg2 = await registryIn(scratch);
    const store = new CountingStore(home);
    await pushToRegistry(`hf://${REPO}@main`, `${reg2.host}/mp/${REPO}:main`, { store, format: "modelpack" });
    const reads = tensorReads(store.read, (await sourceFromStore(store, `hf://${REPO}@main`)).recipe);
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
    return {
      name: "modelpack",
      title: TITLE,
      setup: [
        `${mb(model.bytes)} MB model; oras pull --concurrency 16 of \`<host>/mp/${REPO}:main\` from a warm \`cake proxy\` (files assembled from the tensor blobs) and from distribution (the same artifact, pushed by \`cake push --format modelpack\`); median of ${opts.runs} runs, alternating`,
        "push: `pushToRegistry(..., {format: \"modelpack\"})` into an empty repository, timed; then again into an empty registry from a store that counts the bytes read, by blob, through `openBlob` (its plain-file path turned off); counted: the tensor blobs (the manifest, config and recipe read to plan are not tensor bytes)",
      ],
      header: ["what", "seconds", "MB/s", "measure"],
      rows: [
        ["oras pull mp/, distribution", secs(pair.dist), mbs(model.bytes, pair.dist), "100 %"],
        ["oras pull mp/, cake proxy warm", secs(pair.warm), mbs(model.bytes, pair.warm), pct(ratio)],
        ["push --format modelpack", secs(pushSecs), mbs(model.bytes, pushSecs), `${mb(reads.read)} MB read of ${mb(reads.of)} MB of tensor blobs`],
        ["push (cake format), same model", secs(cakePush.secs), mbs(model.bytes, cakePush.secs), ""],
      ],
      targets: [
        { what: "mp/ view warm serving >= 80 % of distribution's blob rate for the same bytes", measured: pct(ratio), met: ratio >= 0.8 },
        {
          what: "push --format modelpack reads no tensor byte twice (bytes read of the tensor blobs = their size)",
          measured: `${reads.read} B read of ${reads.of} B; most re-read of one blob: ${reads.reread} B`,
          met: reads.read === reads.of && reads.reread === 0,
        },
      ],
      notes: [
        "Each file layer is one stream that the proxy's one JS thread reads from the blobs' plain files and writes to the socket (src/model/file-range.ts: 1 MiB reads, 4 MiB ahead); a profile of warm serving shows the time in those reads and socket writes, not in assembling. On 2 shared cores the proxy's share of CPU moves with the load, and so does this figure (as the hf/ view's in section 5).",
      ],
    };
  } finally {
    await scratch.cleanup();
  }
}
