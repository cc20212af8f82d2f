/**
 * Fine-tune dedup straight from the Hub, which publishes no per-tensor hashes, only each file's
 * sha256. Before a safetensors file's tensors are fetched, each tensor big enough to be a blob of its
 * own is looked up among the tensors of the models already in the store (same name, dtype and
 * shape; the model the repo names as its base first): small windows of the tensor, read from this
 * repo's own CDN at places nobody can predict, are compared with each candidate's bytes. A tensor
 * whose windows all match one candidate is taken from the store. That is a guess; the proof is the
 * file's running sha256 (src/model/convert.ts FileCheck), which must equal the Hub's LFS oid before
 * anything is tagged. A file whose guess was wrong is fetched for real (the caller's second pass),
 * said in one line, and the pair (file, model) is not guessed again.
 *
 * Packs of small tensors (norms, biases) are guessed as a whole, by their layout; units so small
 * that their windows would cost about what they do (under MIN_GUESS) are simply fetched. The windows also prove this repo serves those bytes (the same proof
 * as src/model/reuse-proof.ts): a repo whose listing lies gets nothing from other repos' copies.
 */
import { randomInt } from "node:crypto";
import type { ModelConfig } from "../format/artifact.js";
import type { Unit } from "../format/plan.js";
import type { ContentStore } from "../store/content.js";
import { Pool } from "../transfer/pool.js";

/** Bytes compared per window. */
export const GUESS_WINDOW = 4 << 10;
/** Windows asked for at once. */
const GUESS_CONCURRENCY = 16;
/** Units smaller than this are fetched, not guessed: the samples would cost about what they save. */
export const MIN_GUESS = 64 << 10;
/** At most this many candidates are compared for one tensor. */
const MAX_CANDIDATES = 3;

/** A tensor of a model in the store that is a blob of its own. */
export interface Candidate {
  /** The store reference of the model it is in (e.g. hf://acme/base@<commit>). */
  model: string;
  digest: string;
  size: number;
}

/** What a candidate must share with the tensor: name, dtype and shape. */
export const tensorKey = (name: string, dtype: string, shape: readonly number[]) => `${name}|${dtype}|${shape.join(",")}`;

/**
 * What a blob holds, as a key: its tensors (name, dtype, shape) at their offsets in it. A tensor of
 * its own is `key@0`; a pack of small tensors (norms, biases) the same list for each, so a pack laid
 * out the same in another model (a fine-tune that left that layer alone) is a candidate as a whole.
 */
export const blobKey = (tensors: ReadonlyArray<{ name: string; dtype: string; shape: readonly number[]; offset: number }>) =>
  tensors.map((t) => `${tensorKey(t.name, t.dtype, t.shape)}@${t.offset}`).join(";");

/**
 * The blobs of the models in the store, by blobKey; the models `preferred` names (the repo's
 * declared base) first.
 */
export function candidatesFrom(models: Array<{ ref: string; config: ModelConfig }>, preferred: (ref: string) => boolean): Map<string, Candidate[]> {
  const out = new Map<string, Candidate[]>();
  const ordered = [...models].sort((a, b) => Number(preferred(b.ref)) - Number(preferred(a.ref)));
  for (const { ref, config } of ordered) {
    for (const f of config.files) {
      const blobs = new Map<string, NonNullable<ModelConfig["files"][number]["tensors"]>>();
      for (const t of f.tensors ?? []) blobs.set(t.digest, [...(blobs.get(t.digest) ?? []), t]);
      for (const [digest, ts] of blobs) {
        ts.sort((a, b) => a.offset - b.offset);
        const size = ts[ts.length - 1]!.offset + ts[ts.length - 1]!.size;
        if (ts[0]!.offset !== 0 || size === 0) continue;
        const key = blobKey(ts);
        const list = out.get(key) ?? [];
        if (!list.some((c) => c.digest === digest)) list.push({ model: ref, digest, size });
        out.set(key, list);
      }
    }
  }
  return out;
}

/**
 * Where to sample a tensor of `size` bytes: its first and last bytes, and windows at random places
 * between; more for bigger tensors, and many spread over the rows of an embedding or an LM head
 * (fine-tunes that add tokens change a few rows of those only).
 */
export function guessWindows(size: number, name: string): Array<[number, number]> {
  if (size <= 0) return []; // an empty tensor has no bytes to compare
  if (size <= 2 * GUESS_WINDOW) return [[0, size]];
  const spread = /embed|lm_head|wte|wpe|tok_embeddings|output\.weight$/.test(name);
  const random = size < 8 << 20 ? 1 : size < 64 << 20 ? 2 : 4;
  const out: Array<[number, number]> = [
    [0, GUESS_WINDOW],
    [size - GUESS_WINDOW, size],
  ];
  for (let i = 0; i < random; i++) {
    const at = randomInt(0, size - GUESS_WINDOW + 1);
    out.push([at, at + GUESS_WINDOW]);
  }
  if (spread) for (let i = 1; i < 16; i++) {
    const at = Math.floor(((size - GUESS_WINDOW) * i) / 16);
    out.push([at, at + GUESS_WINDOW]);
  }
  return out;
}

export interface Guess {
  digest: string;
  model: string;
}

export interface GuessStats {
  /** Tensors sampled (had candidates). */
  sampled: number;
  /** Windows read and their bytes. */
  windows: number;
  windowBytes: number;
}

/**
 * For each tensor unit of `units` with candidates: the candidate whose bytes equal the tensor's at
 * every window, read through `read` (the file's own source, file coordinates). Keyed by unit.
 */
export async function guessUnits(
  store: ContentStore,
  units: readonly { path: string; unit: Unit; key: string }[],
  candidates: Map<string, Candidate[]>,
  read: (path: string, start: number, end: number) => Promise<Buffer>,
  skip: (path: string, model: string) => boolean,
): Promise<{ guesses: Map<Unit, Guess>; stats: GuessStats }> {
  const guesses = new Map<Unit, Guess>();
  const stats: GuessStats = { sampled: 0, windows: 0, windowBytes: 0 };
  const pool = new Pool(GUESS_CONCURRENCY);
  await Promise.all(
    units.map(async ({ path, unit, key }) => {
      const size = unit.end - unit.begin;
      const list: Candidate[] = [];
      for (const c of candidates.get(key) ?? []) {
        if (list.length === MAX_CANDIDATES) break;
        if (c.size === size && !skip(path, c.model) && (await store.hasBlob(c.digest, size))) list.push(c);
      }
      if (list.length === 0) return;
      stats.sampled++;
      // Windows in every tensor of the unit: a pack's changed tensor may sit between unchanged ones.
      const first = unit.tensors[0]?.begin ?? 0;
      const windows = unit.tensors.flatMap((t) => guessWindows(t.end - t.begin, t.name).map(([a, b]): [number, number] => [t.begin - first + a, t.begin - first + b]));
      const theirs = await Promise.all(
        windows.map(([a, b]) =>
          pool.run(async () => {
            stats.windows++;
            stats.windowBytes += b - a;
            return read(path, unit.begin + a, unit.begin + b);
          }),
        ),
      );
      for (const c of list) {
        let all = true;
        for (const [i, [a, b]] of windows.entries()) {
          if (!theirs[i]!.equals(await store.readRange(c.digest, a, b))) {
            all = false;
            break;
          }
        }
        if (all) {
          guesses.set(unit, { digest: c.digest, model: c.model });
          return;
        }
      }
    }),
  );
  return { guesses, stats };
}
