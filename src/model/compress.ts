/**
 * `cake compress` / `cake decompress` and `pull --compress`: a stored model's layers kept in the
 * compressed form (src/codec/, src/store/compressed.ts) or as they are. Each blob is converted on its
 * own and crash-safe, so a kill loses nothing and a rerun goes on where it stopped. The store's
 * readers decode transparently; only outside readers of the OCI layout need `cake decompress`.
 */
import { parseConfig, recipeLayer } from "../format/recipe.js";
import type { ImageManifest } from "../format/oci.js";
import type { Store } from "../store/layout.js";
import { POOL_WORKERS } from "../worker-pool.js";
import { readStoredManifest } from "./source.js";

/** Smaller layers stay as they are: a frame's header and the codec's round trip would cost more than they save. */
export const MIN_COMPRESS_BYTES = 64 << 10;

/** Blobs converted at once. */
export const BLOBS_AT_ONCE = POOL_WORKERS + 1;

export interface CompressResult {
  /** Layers looked at (at least MIN_COMPRESS_BYTES). */
  blobs: number;
  /** Layers converted now. */
  changed: number;
  /** Layers compression would not make smaller (random bytes, already compressed files): kept as they are. */
  keptRaw: number;
  /** Raw and stored bytes of those layers after the run. */
  rawBytes: number;
  storedBytes: number;
}

export interface CompressOptions {
  /** Stores them as they are again. */
  decompress?: boolean;
  /** Told each layer done (for progress). */
  onBlob?: (digest: string, size: number) => void;
}

/** Whether `CAKE_COMPRESS` asks for new blobs to be kept compressed (1, true, yes). */
export const compressByDefault = (): boolean => /^(1|true|yes)$/i.test(process.env.CAKE_COMPRESS ?? "");

/**
 * The dtype a layer is coded as (src/codec/): the one that holds most of its bytes. A pack of a
 * layer's small tensors is mostly one float dtype (norms, biases, the smaller projections): split
 * by its width, it compresses as a tensor does (BF16: ~67 % against deflate's ~79 %) and decodes
 * faster. Any choice decodes to the same bytes. Undefined for a whole file (coded plain).
 */
export function codingDtype(tensors: readonly { dtype: string; size: number }[]): string | undefined {
  const bytes = new Map<string, number>();
  for (const t of tensors) bytes.set(t.dtype, (bytes.get(t.dtype) ?? 0) + t.size);
  return [...bytes].sort((a, b) => b[1] - a[1])[0]?.[0];
}

/** The coding dtype of each layer that holds tensors (see codingDtype). */
function dtypesOf(configBytes: Buffer | undefined, where: string): Map<string, string> {
  const byLayer = new Map<string, { dtype: string; size: number }[]>();
  if (!configBytes) return new Map();
  for (const f of parseConfig(configBytes, `${where} config`).files) {
    for (const t of f.tensors ?? []) byLayer.set(t.digest, [...(byLayer.get(t.digest) ?? []), t]);
  }
  const out = new Map<string, string>();
  for (const [digest, tensors] of byLayer) {
    const dtype = codingDtype(tensors);
    if (dtype) out.set(digest, dtype);
  }
  return out;
}

/** Compresses (or decompresses) the layers of the stored model `ref`, each one crash-safe. */
export async function compressModel(store: Store, ref: string, opts: CompressOptions = {}): Promise<CompressResult> {
  const { manifest } = await readStoredManifest(store, ref);
  return store.withLease(async () => {
    const configBytes = await store.readBlob(manifest.config.digest).catch(() => undefined);
    const dtypes = dtypesOf(configBytes, ref);
    const recipe = recipeLayer(manifest, ref).digest;
    const r: CompressResult = { blobs: 0, changed: 0, keptRaw: 0, rawBytes: 0, storedBytes: 0 };
    const layers = [...new Map(manifest.layers.filter((l) => l.digest !== recipe && l.size >= MIN_COMPRESS_BYTES).map((l) => [l.digest, l])).values()];
    r.blobs = layers.length;
    const one = async (l: (typeof layers)[number]) => {
      if (opts.decompress) {
        if ((await store.decompressBlob(l.digest)) === "decompressed") r.changed++;
      } else {
        const how = await store.compressBlob(l.digest, dtypes.get(l.digest));
        if (how === "compressed") r.changed++;
        else if (how === "kept raw") r.keptRaw++;
      }
      const sizes = await store.blobSizes(l.digest);
      r.rawBytes += sizes?.raw ?? 0;
      r.storedBytes += sizes?.stored ?? 0;
      opts.onBlob?.(l.digest, l.size);
    };
    // A few blobs at once: a blob of a frame or two cannot keep the frame workers busy alone, and
    // one blob's reads, writes and fsync overlap another's coding.
    let next = 0;
    await Promise.all(Array.from({ length: BLOBS_AT_ONCE }, async () => {
      while (next < layers.length) await one(layers[next++]!);
    }));
    return r;
  });
}

/** A model's layers: their raw bytes and what they take in the store (each distinct blob once). */
export async function storedBytes(store: Store, manifest: ImageManifest): Promise<{ raw: number; stored: number }> {
  let raw = 0;
  let stored = 0;
  for (const digest of new Set(manifest.layers.map((l) => l.digest))) {
    const s = await store.blobSizes(digest);
    raw += s?.raw ?? 0;
    stored += s?.stored ?? 0;
  }
  return { raw, stored };
}
