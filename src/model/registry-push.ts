/**
 * `cake push <store ref> host/repo[:tag]`: the store is the source, the registry the destination.
 * Children before the parent (blobs, then the manifest last); each blob HEADed first and skipped
 * when present, mounted from another repository of the same registry when the store knows one
 * that holds it, else uploaded (monolithic when small, chunked when big, resumed from the offset
 * the registry reports). Pushing the same model twice uploads nothing the second time.
 *
 * Two formats of the same stored model (`format`): cake's per-tensor artifact (the stored graph, as
 * it is), or the CNCF ModelPack view (modelpack/push-plan.ts: one layer per original file, streamed
 * from the tensor blobs). Either is a plan — blobs with a way to open them, then manifests — that
 * the same uploader carries out.
 */
import { setMaxListeners } from "node:events";
import type { Readable } from "node:stream";
import { CakeError } from "../errors.js";
import { collectGraph } from "../format/graph.js";
import { MANIFEST_LIMIT, MT, type Descriptor } from "../format/oci.js";
import { parseManifest } from "../format/recipe.js";
import { formatReference, parseReference, REGISTRY_DEFAULTS, type PushBlobResult } from "../registry/index.js";
import type { Store } from "../store/layout.js";
import { DEFAULT_CONCURRENCY } from "../transfer/defaults.js";
import { Pool } from "../transfer/pool.js";
import { silentProgress, type ProgressSink } from "../transfer/progress.js";
import { clientFor, type RegistryAccess } from "./registry-pull.js";
import { modelPackPlan } from "../modelpack/push-plan.js";
import { readStoredManifest } from "./source.js";

/** Chunked uploads (blobs above the monolithic threshold) at once; each holds one chunk (8 MiB) in memory. */
const CHUNKED_AT_ONCE = 4;

export interface PushOptions extends RegistryAccess {
  store: Store;
  concurrency?: number;
  chunkSize?: number;
  progress?: ProgressSink;
  /** Cancels the push: uploads in flight stop, none starts, the manifest is not pushed. */
  signal?: AbortSignal;
  /** What to push: cake's per-tensor artifact (default) or its CNCF ModelPack view (one layer per file). */
  format?: PushFormat;
}

export type PushFormat = "cake" | "modelpack";
export const PUSH_FORMATS: readonly PushFormat[] = ["cake", "modelpack"];

/** A blob to push: its descriptor, a stream of its bytes from `start`, and a check that the store can give them all. */
export interface BlobToPush {
  desc: Pick<Descriptor, "digest" | "size">;
  open: (start: number) => Readable;
  /** Throws (one line: what is missing, what to do) when the bytes are not all in the store. */
  check: () => Promise<void>;
}

/** What a push does: upload `blobs`, put `documents` by digest (children first), then tag `root`. */
export interface PushPlan {
  blobs: BlobToPush[];
  documents: { desc: Descriptor; bytes: Buffer }[];
  root: { digest: string; bytes: Buffer; mediaType: string };
}

export interface PushResult {
  ref: string;
  manifestDigest: string;
  counts: Record<PushBlobResult, number>;
  uploadedBytes: number;
}

export async function pushToRegistry(storeRef: string, dest: string, opts: PushOptions): Promise<PushResult> {
  // Under a lease: a `cake rm` + `cake gc` meanwhile would take the blobs from under the upload.
  return opts.store.withLease(async () => {
    const ref = parseReference(dest);
    if (ref.digest) throw new CakeError("E_REF", `${dest}: push to a tag, not a digest`);
    const plan = opts.format === "modelpack" ? await modelPackPlan(opts.store, storeRef) : await cakePlan(opts.store, storeRef);
    return carryOut(plan, ref, opts);
  });
}

/** cake's artifact as stored: its whole graph (blobs, then the manifests it reaches: a subject's), the tagged one last. */
async function cakePlan(store: Store, storeRef: string): Promise<PushPlan> {
  const { digest } = await readStoredManifest(store, storeRef);
  const bytes = await store.readBlob(digest, MANIFEST_LIMIT);
  const manifest = parseManifest(bytes, `${storeRef} manifest`);
  const root = { mediaType: manifest.mediaType ?? MT.manifest, digest, size: bytes.length };
  const { documents, blobs } = await collectGraph(root, (d) => (d.digest === digest ? Promise.resolve(bytes) : store.readBlob(d.digest, MANIFEST_LIMIT)), storeRef);
  return {
    blobs: blobs.map((d) => ({
      desc: d,
      open: (start) => store.openBlob(d.digest, start),
      check: async () => {
        if (!(await store.hasBlob(d.digest, d.size))) throw new CakeError("E_NOT_FOUND", `${storeRef}: blob ${d.digest} is missing from the store (pull it again)`);
      },
    })),
    documents: documents.slice(1).reverse(),
    root: { digest, bytes, mediaType: root.mediaType },
  };
}

async function carryOut(plan: PushPlan, ref: ReturnType<typeof parseReference>, opts: PushOptions): Promise<PushResult> {
  const { store } = opts;
  const name = formatReference(ref);
  const descs = plan.blobs;
  const client = clientFor(ref.registry, opts);
  const known = await store.locations(ref.registry);
  const progress = opts.progress ?? silentProgress;
  progress.addTotal(descs.reduce((n, b) => n + b.desc.size, 0), descs.length);
  const counts: Record<PushBlobResult, number> = { exists: 0, mounted: 0, uploaded: 0 };
  let uploadedBytes = 0;
  const pool = new Pool(opts.concurrency ?? DEFAULT_CONCURRENCY);
  // A chunked upload holds its current chunk in memory (to resend it): at most CHUNKED_AT_ONCE of
  // them run together, so memory stays bounded whatever the model's size.
  const chunked = new Pool(CHUNKED_AT_ONCE);
  const bigBlob = (size: number) => size > REGISTRY_DEFAULTS.monolithicThreshold;
  // The first blob that fails stops the others (uploads in flight end, none starts) before the push
  // reports it; so does the caller's signal.
  const stop = new AbortController();
  setMaxListeners(0, stop.signal); // one listener per request in flight, by design
  const onCancel = () => stop.abort(opts.signal!.reason);
  opts.signal?.addEventListener("abort", onCancel, { once: true });
  if (opts.signal?.aborted) onCancel(); // cancelled before it began: a listener added now never hears it
  const upload = ({ desc: d, open, check }: BlobToPush) =>
    pool.run(async () => {
      stop.signal.throwIfAborted();
      await check();
      let sent = 0;
      const r = await client.pushBlob(ref.repository, d, open, {
        mountFrom: (known.get(d.digest) ?? []).filter((r) => r !== ref.repository),
        ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
        signal: stop.signal,
        onProgress: (n) => {
          if (n > sent) progress.bytes(n - sent);
          sent = Math.max(sent, n);
        },
      });
      counts[r]++;
      if (r === "uploaded") uploadedBytes += d.size;
      else progress.bytes(d.size - sent);
      progress.item();
    });
  try {
    const settled = await Promise.allSettled(
      descs.map((b) =>
        (bigBlob(b.desc.size) ? chunked.run(() => upload(b)) : upload(b)).catch((err: unknown) => {
          if (!stop.signal.aborted) stop.abort(err);
          throw err;
        }),
      ),
    );
    if (settled.some((r) => r.status === "rejected")) throw stop.signal.reason;
  } finally {
    opts.signal?.removeEventListener("abort", onCancel);
    progress.done();
  }
  for (const m of plan.documents) await client.putManifest(ref.repository, m.desc.digest, m.bytes, m.desc.mediaType);
  const { root } = plan;
  const pushed = await client.putManifest(ref.repository, ref.tag ?? "latest", root.bytes, root.mediaType);
  if (pushed !== root.digest) throw new CakeError("E_DIGEST", `${name}: registry stored the manifest as ${pushed}, not ${root.digest}`);
  await store.recordLocations(ref.registry, ref.repository, descs.map((b) => b.desc.digest));
  return { ref: name, manifestDigest: root.digest, counts, uploadedBytes };
}
