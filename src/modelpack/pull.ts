/**
 * `cake pull host/repo:tag` of another tool's model artifact (ModelPack, Docker Model Runner,
 * KitOps: read-manifest.ts) into the store as a cake model, the same mapping as a Hub pull (one
 * tensor per blob, the same layer rule), so export, inspect, diff and push work on it.
 *
 * A raw layer is a file whose sha256 is its digest: it is read like a Hub file whose LFS oid that is
 * (src/model/reuse-convert.ts). A safetensors layer's header comes by a Range request on the blob,
 * then only the tensors the store lacks, each by Range; the layer digest is the proof (the file
 * check). Its ranges are recorded under that sha256, so the same file again, from any registry or
 * the Hub, costs nothing but a proof, and a fine-tune's unchanged tensors are found among the models
 * in the store (speculate.ts). A registry that answers a Range request with the whole blob gets the
 * layer fetched whole, said once. Tar layers are fetched whole (the engine, verified), their files
 * extracted into a private folder under the store's ingest/ and converted from there, then removed.
 */
import fsp from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";
import { zstdDecoder } from "./zstd.js";
import { CakeError, isCakeError } from "../errors.js";
import { hexOf, type Descriptor, type ImageManifest } from "../format/oci.js";
import { PathSet } from "../format/paths.js";
import { sortFiles } from "../format/plan.js";
import type { RegistryClient } from "../registry/client.js";
import { removeOwnTemp, tempPath } from "../store/pid.js";
import type { Store } from "../store/layout.js";
import { DEFAULT_CONCURRENCY } from "../transfer/defaults.js";
import { transferBlobs, type TransferStats } from "../transfer/engine.js";
import { Pool } from "../transfer/pool.js";
import type { ProgressSink } from "../transfer/progress.js";
import type { SourcedFile } from "../model/convert.js";
import { localFileSource, readSafetensorsHeader, registryBlobJob, registryBlobSource, storedBlobSource } from "../model/range-source.js";
import { convertReusing, guessFromStore, once } from "../model/reuse-convert.js";
import { addModelPath, kindName, type ModelLayers, type TarLayer } from "./read-manifest.js";
import { extractTar } from "./tar-layers.js";

export interface ModelPullInput {
  store: Store;
  client: RegistryClient;
  repository: string;
  /** The canonical reference pulled (host/repo:tag), in messages and as the store tag. */
  name: string;
  manifest: ImageManifest;
  manifestDigest: string;
  layers: ModelLayers;
  concurrency?: number;
  chunkSize?: number;
  progress?: ProgressSink;
  signal?: AbortSignal;
  onNotice?: (line: string) => void;
}

export interface ModelPullResult {
  desc: Descriptor;
  stats: TransferStats;
  /** Files of the model. */
  files: number;
  /** Tensors taken from models already in the store (guessed, proven by each file's sha256). */
  reused: { tensors: number; bytes: number; models: string[] };
}

/** A fresh header read takes this much at once (length, header and a few tensor bytes, dropped): as a Hub pull. */
const HEADER_GUESS = 64 << 10;

const sum = (a: TransferStats, b: TransferStats): TransferStats => ({ fetchedBytes: a.fetchedBytes + b.fetchedBytes, skippedBlobs: a.skippedBlobs + b.skippedBlobs });

/** Converts the artifact into a stored cake model (not tagged: the caller tags under its lease). */
export async function pullModelArtifact(input: ModelPullInput): Promise<ModelPullResult> {
  const { store, client, repository, name, layers } = input;
  const server = `${client.registry}/${repository}`;
  const where = `${name} (${kindName(layers.kind)} artifact)`;
  const engine = {
    ...(input.concurrency ? { concurrency: input.concurrency } : {}),
    ...(input.chunkSize ? { chunkSize: input.chunkSize } : {}),
    ...(input.progress ? { progress: input.progress } : {}),
    ...(input.signal ? { signal: input.signal } : {}),
  };
  const rangesOf = once((key: string) => store.knownRanges(key));
  const blobOf = (d: Descriptor, label: string) => registryBlobJob(store, client, repository, d, `${server}@${d.digest} (${label})`, label);

  // Raw layers: safetensors headers by Range; a registry that ignores Range has those layers fetched whole.
  const files: SourcedFile[] = [];
  const reads = new Pool(input.concurrency ?? DEFAULT_CONCURRENCY);
  const wholeLayers: Array<{ desc: Descriptor; path: string }> = [];
  await Promise.all(
    layers.raw.map(async ({ desc, path: p }) => {
      const sha256 = hexOf(desc.digest);
      let ignoresRange = false;
      const source = registryBlobSource(client, repository, desc.digest, desc.size, p, { key: sha256, onWhole: () => (ignoresRange = true) });
      const f: SourcedFile = { path: p, size: desc.size, sha256, source, expect: { sha256 } };
      if (p.endsWith(".safetensors")) {
        const first = (await rangesOf(sha256)).size > 0 ? 8 : HEADER_GUESS;
        f.safetensors = await reads.run(() => readSafetensorsHeader(source, first)).catch((err: unknown) => {
          // The header is the layer's word on itself: name the artifact and the layer, not only the file.
          throw isCakeError(err, "E_SAFETENSORS") ? new CakeError(err.code, `${where} layer ${desc.digest}: ${err.message}`, { cause: err }) : err;
        });
        if (ignoresRange) {
          wholeLayers.push({ desc, path: p });
          return;
        }
      }
      files.push(f);
    }),
  );
  if (wholeLayers.length) input.onNotice?.(`${server}: the registry ignores Range requests; ${wholeLayers.length} safetensors layer(s) fetched whole`);

  // Tar layers, and raw layers the registry would not serve by range: fetched whole through the engine (verified).
  const whole = [...wholeLayers.map((l) => l.desc), ...layers.tars.map((t) => t.desc)];
  const fetched = await transferBlobs(store, whole.map((d) => blobOf(d, layerLabel(d, layers))), engine).catch((err: unknown) => {
    throw sizeLie(err, where);
  });
  for (const { desc, path: p } of wholeLayers) {
    const sha256 = hexOf(desc.digest);
    const source = storedBlobSource(store, desc.digest, p, sha256, desc.size);
    files.push({ path: p, size: desc.size, sha256, source, expect: { sha256 }, safetensors: await readSafetensorsHeader(source) });
  }

  const temp = tempPath(path.join(store.root, "ingest", "layers"));
  try {
    if (layers.tars.length) {
      await fsp.mkdir(temp, { mode: 0o700 });
      const paths = new PathSet();
      for (const f of files) addModelPath(paths, f.path, where);
      for (const [i, t] of layers.tars.entries()) files.push(...(await tarFiles(store, t, path.join(temp, String(i)), `${where} layer ${t.desc.digest}`, paths)));
    }
    const sorted = sortFiles(files);
    const guessed = await guessFromStore(store, sorted, rangesOf, (ref) => ref.startsWith(`${server}:`) || ref.startsWith(`${server}@`), name);
    const converted = await convertReusing(sorted, {
      store,
      server,
      name,
      owner: "the layer's",
      source: { type: "registry", repository: server, manifest: input.manifestDigest },
      where: (p) => `${where} ${p}`,
      label: (f, u) => (u.kind === "file" ? `${f.source.what} (${f.path})` : `${f.source.what} (${f.path}) bytes ${u.begin}-${u.end}`),
      rangesOf,
      guesses: guessed.guesses,
      ...engine,
      ...(input.onNotice ? { onNotice: input.onNotice } : {}),
    }).catch((err: unknown) => {
      throw sizeLie(err, where);
    });
    const took = converted.taken;
    const reused = { tensors: took.reduce((k, g) => k + g.tensors, 0), bytes: took.reduce((n, g) => n + g.bytes, 0), models: [...new Set(took.map((g) => g.model))] };
    return { desc: converted.desc, stats: sum(fetched.stats, converted.stats), files: sorted.length, reused };
  } finally {
    await removeOwnTemp(temp);
  }
}

/**
 * A registry's 416 to a range inside a layer's descriptor size: the blob is smaller than the manifest
 * says. Said as that, with the registry's own line (which names the blob).
 */
function sizeLie(err: unknown, where: string): unknown {
  if (!isCakeError(err) || err.status !== 416) return err;
  return new CakeError("E_SIZE", `${where}: a layer is smaller than its descriptor says (${err.message}); the artifact's manifest is wrong, ask its publisher to push it again`, { cause: err });
}

/** A layer's name in progress and errors: its file path, else its media type. */
function layerLabel(d: Descriptor, layers: ModelLayers): string {
  return layers.raw.find((l) => l.desc.digest === d.digest)?.path ?? d.mediaType;
}

/** The files of a tar layer (in the store, checked against its digest), extracted under `dir`, as local sources. */
async function tarFiles(store: Store, t: TarLayer, dir: string, where: string, paths: PathSet): Promise<SourcedFile[]> {
  await fsp.mkdir(dir, { mode: 0o700 });
  const blob = store.openBlob(t.desc.digest);
  const tar: Readable = t.form === "tar+gzip" ? blob.pipe(createGunzip()) : t.form === "tar+zstd" ? blob.pipe(zstdDecoder(where)) : blob;
  if (t.form !== "tar") blob.on("error", (err) => tar.destroy(err));
  let extracted;
  try {
    extracted = await extractTar(tar as AsyncIterable<Buffer>, dir, where, paths);
  } catch (err) {
    if ((err as { code?: string }).code?.startsWith("Z_")) throw new CakeError("E_RECIPE", `${where}: not gzip data (${(err as Error).message})`);
    throw err;
  } finally {
    tar.destroy();
  }
  return Promise.all(
    extracted.map(async (x) => {
      const source = localFileSource(x.file, x.path, x.sha256, x.size);
      const f: SourcedFile = { path: x.path, size: x.size, sha256: x.sha256, source, expect: { sha256: x.sha256 } };
      if (x.path.endsWith(".safetensors")) f.safetensors = await readSafetensorsHeader(source);
      return f;
    }),
  );
}
