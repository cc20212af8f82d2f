/**
 * The conversion of files whose bytes are named by their sha256 (a Hub file's LFS oid, a registry
 * layer's digest: the key of `cake/ranges/<sha256>`), reusing what the store holds: recorded ranges
 * (this server's, or another's once this server has shown it serves the same bytes: reuse-proof.ts)
 * and guessed units (speculate.ts, or an index), each file's hash the proof. A wrong guess costs one
 * pass more with the guessed units fetched for real. `pullHf` and the registry pull of a ModelPack
 * artifact (src/modelpack/) are this with their own files, guesses and names.
 */
import { isCakeError } from "../errors.js";
import type { Artifact, ModelConfig } from "../format/artifact.js";
import type { Descriptor } from "../format/oci.js";
import { planUnits, type Unit } from "../format/plan.js";
import type { Store } from "../store/layout.js";
import type { RangeRecord } from "../store/records.js";
import type { TransferStats } from "../transfer/engine.js";
import type { ProgressSink } from "../transfer/progress.js";
import { readConfig } from "./catalog.js";
import { convertFiles, type SourcedFile } from "./convert.js";
import { proveServed, type HeldUnit } from "./reuse-proof.js";
import { blobKey, candidatesFrom, guessUnits, MIN_GUESS, type Guess, type GuessStats } from "./speculate.js";

/** A unit's identity across plans: its file and byte range. */
export const unitId = (u: { path: string; begin: number; end: number }) => `${u.path}:${u.begin}-${u.end}`;

/** `make`, called once per key: later calls with the same key get the first call's value. */
export function once<K, V>(make: (key: K) => V): (key: K) => V {
  const made = new Map<K, V>();
  return (key) => {
    if (!made.has(key)) made.set(key, make(key));
    return made.get(key)!;
  };
}

export const NO_GUESSES = (): { guesses: Map<string, Guess>; stats: GuessStats } => ({ guesses: new Map(), stats: { sampled: 0, windows: 0, windowBytes: 0 } });

/**
 * Guesses for the tensor units the store holds no range of, from the models already in the store
 * (not `self`); the models `preferred` names (a repo's declared base model) first. Windows are read
 * from each file's own source.
 */
export async function guessFromStore(
  store: Store,
  files: SourcedFile[],
  rangesOf: (key: string) => Promise<Map<string, RangeRecord>>,
  preferred: (ref: string) => boolean,
  self: string,
): Promise<{ guesses: Map<string, Guess>; stats: GuessStats }> {
  const models: Array<{ ref: string; config: ModelConfig }> = [];
  const seen = new Set<string>();
  for (const t of await store.tags()) {
    if (t.ref === self || seen.has(t.descriptor.digest)) continue;
    seen.add(t.descriptor.digest);
    const config = await readConfig(store, t.descriptor.digest);
    if (config) models.push({ ref: t.ref, config });
  }
  const candidates = candidatesFrom(models, preferred);
  if (candidates.size === 0) return NO_GUESSES();
  const byPath = new Map(files.map((f) => [f.path, f]));
  const misses = await store.guessMisses();
  const skip = (path: string, model: string) => misses.has(`${byPath.get(path)!.source.key} ${model}`);
  const wanted: Array<{ path: string; unit: Unit; key: string }> = [];
  for (const u of planUnits(files).units) {
    if (u.kind === "file" || u.end - u.begin < MIN_GUESS) continue;
    if ((await rangesOf(byPath.get(u.path)!.source.key)).has(`${u.begin}-${u.end}`)) continue;
    const first = u.tensors[0]!.begin;
    const key = blobKey(u.tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, offset: t.begin - first })));
    wanted.push({ path: u.path, unit: u, key });
  }
  const { guesses, stats } = await guessUnits(store, wanted, candidates, (path, a, b) => byPath.get(path)!.source.read(a, b), skip);
  return { guesses: new Map([...guesses].map(([u, g]) => [unitId(u), g])), stats };
}

export interface ReuseConvertOptions {
  store: Store;
  /** Who serves the files: the range records name it, and bytes recorded from others are proven against it. */
  server: string;
  /** The reference being pulled, in notices. */
  name: string;
  /** Whose files these are, in the wrong-guess notice ("the Hub's", "the registry's"). */
  owner: string;
  source: ModelConfig["source"];
  /** A file of this pull, in proof errors. */
  where(path: string): string;
  label(f: SourcedFile, u: Unit): string;
  /** The store's ranges record of a file key, read once (shared with the caller's header reads). */
  rangesOf(key: string): Promise<Map<string, RangeRecord>>;
  /** Units' digests guessed before a byte moves (speculation or an index), by unitId. */
  guesses: Map<string, Guess>;
  /** The guesses are an index's: a unit fetched for other bytes than it named counts as `indexWrong`. */
  byIndex?: boolean;
  concurrency?: number;
  chunkSize?: number;
  /** Writes each unit's compressed form as it lands (convert.ts `compress`). */
  compress?: boolean;
  progress?: ProgressSink;
  signal?: AbortSignal;
  onNotice?: (line: string) => void;
  onBlob?(u: Unit, digest: string): void;
}

export interface ReuseConvertResult {
  artifact: Artifact;
  desc: Descriptor;
  stats: TransferStats;
  /** The guesses the transfer took and the files proved right: the unit, its file, its tensors and bytes. */
  taken: Array<Guess & { path: string; tensors: number; bytes: number }>;
  /** Files whose guesses failed their hash (fetched again). */
  wrongFiles: number;
  /** Units an index named other bytes for than the server's. */
  indexWrong: number;
}

/** Converts `files` (sorted, safetensors ones with headers; each source keyed by its sha256) reusing the store's bytes. */
export async function convertReusing(files: SourcedFile[], opts: ReuseConvertOptions): Promise<ReuseConvertResult> {
  const { store, server, guesses } = opts;
  const byPath = new Map(files.map((f) => [f.path, f]));
  const unitsOf = new Map<string, Unit[]>();
  // Bytes the store holds from another server's copy of a file serve this one only once this server
  // has shown it serves them (see reuse-proof.ts); asked once per file, recorded for next time.
  const proven = once(async (path: string) => {
    const f = byPath.get(path)!;
    const key = f.source.key;
    const records = await store.knownRanges(key);
    const foreign: HeldUnit[] = [];
    for (const u of unitsOf.get(path) ?? []) {
      const rec = records.get(`${u.begin}-${u.end}`);
      if (rec && !rec.repos.has(server) && (await store.hasBlob(rec.digest, u.end - u.begin))) foreign.push({ begin: u.begin, end: u.end, digest: rec.digest });
    }
    if (foreign.length === 0) return;
    await proveServed(store, foreign, (a, b) => f.source.read(a, b), opts.where(path));
    for (const u of foreign) await store.recordRange(key, u.begin, u.end, u.digest, server);
  });
  let indexWrong = 0;
  const taken = new Map<string, Guess & { path: string; tensors: number; bytes: number }>(); // unit -> the guess the transfer took
  const wrong = new Set<string>(); // files whose guesses failed the file check
  const convert = (noGuess: Set<string>) =>
    convertFiles(files, {
      store,
      source: opts.source,
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
      ...(opts.chunkSize ? { chunkSize: opts.chunkSize } : {}),
      ...(opts.compress ? { compress: true } : {}),
      ...(opts.progress ? { progress: opts.progress } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      label: opts.label,
      existing: async (f, u, underLock) => {
        const key = f.source.key;
        const rec = (await (underLock ? store.knownRanges(key) : opts.rangesOf(key))).get(`${u.begin}-${u.end}`);
        if (rec && (await store.hasBlob(rec.digest, u.end - u.begin))) {
          if (!rec.repos.has(server)) await proven(u.path);
          return rec.digest;
        }
        const g = noGuess.has(u.path) ? undefined : guesses.get(unitId(u));
        if (!g || !(await store.hasBlob(g.digest, u.end - u.begin))) return undefined;
        taken.set(unitId(u), { ...g, path: u.path, tensors: u.tensors.length, bytes: u.end - u.begin });
        return g.digest;
      },
      done: (f, u, digest) => {
        // Fetched from the server: an index that named other bytes for it was wrong (it cost nothing here).
        const named = opts.byIndex ? guesses.get(unitId(u)) : undefined;
        if (named && named.digest !== digest) indexWrong++;
        return store.recordRange(f.source.key, u.begin, u.end, digest, server);
      },
      // The file's guesses were right: record them as this server's ranges (proven by the file's hash).
      checked: async (f) => {
        for (const u of unitsOf.get(f.path) ?? []) {
          const g = taken.get(unitId(u));
          if (g) await store.recordRange(f.source.key, u.begin, u.end, g.digest, server);
        }
      },
      mismatch: async (f) => {
        const guessesOf = (unitsOf.get(f.path) ?? []).map((u) => taken.get(unitId(u))).filter((g) => g !== undefined);
        if (guessesOf.length === 0) return store.forgetRanges(f.source.key); // a file that did not hash to its sha256: fetched again next time
        // A wrong guess, not a bad range: the file's real ranges stay; its guessed tensors are fetched for real next.
        wrong.add(f.path);
        for (const model of new Set(guessesOf.map((g) => g.model))) await store.recordGuessMiss(`${f.source.key} ${model}`);
      },
      ...(opts.onBlob ? { onBlob: opts.onBlob } : {}),
      planned: (units) => {
        unitsOf.clear();
        for (const u of units) unitsOf.set(u.path, [...(unitsOf.get(u.path) ?? []), u]);
      },
    });
  let converted;
  try {
    converted = await convert(new Set());
  } catch (err) {
    if (wrong.size === 0 || !isCakeError(err, "E_DIGEST")) throw err;
    // One pass more, the engine as usual: the files whose guesses failed, their guessed tensors fetched for real.
    opts.onNotice?.(`${opts.name}: ${[...wrong].join(", ")}: tensors taken from a local model did not make ${opts.owner} file; fetching them`);
    for (const [id, g] of [...taken]) if (wrong.has(g.path)) taken.delete(id);
    converted = await convert(wrong);
  }
  return { ...converted, taken: [...taken.values()], wrongFiles: wrong.size, indexWrong };
}
