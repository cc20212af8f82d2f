/**
 * Proof of possession before bytes cross repos. The store keys a Hub file's bytes by the sha256 the
 * tree listing claims for it, and a listing can lie: a public repo that claims a gated repo's oids
 * and sizes would otherwise be "converted" from the gated bytes already in the store, without a byte
 * of its own. So bytes recorded from repo A serve repo B only once B's own CDN has served the same
 * bytes at places nobody could predict: a window inside every reused unit (a unit smaller than a
 * window, with its small neighbours, is compared whole). One mismatch and the pull fails, nothing
 * tagged. The proof is recorded (the ranges gain B), so it is paid once per repo and file.
 */
import { randomInt } from "node:crypto";
import { CakeError } from "../errors.js";
import type { ContentStore } from "../store/content.js";
import { Pool } from "../transfer/pool.js";

/**
 * Bytes compared per window. What makes a window a proof is where it lies (a random place in every
 * reused unit, so serving it takes the unit's bytes), not its length: 256 bytes proves as much as
 * 4 KiB and costs a sixteenth (a 7B shard's ~100 units: 25 KB, not 400 KB).
 */
export const PROOF_WINDOW = 256;
/** Windows asked for at once. */
const PROOF_CONCURRENCY = 8;

/** A unit of a file (its byte range) that the store holds as blob `digest`. */
export interface HeldUnit {
  begin: number;
  end: number;
  digest: string;
}

/**
 * Where to compare: in file coordinates, one window at a random place inside each unit larger than
 * a window; runs of contiguous smaller units taken whole, a window's worth at a time.
 */
export function proofWindows(units: readonly HeldUnit[], window = PROOF_WINDOW): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  let run: [number, number] | undefined;
  for (const u of [...units].sort((a, b) => a.begin - b.begin)) {
    const size = u.end - u.begin;
    if (size === 0) continue;
    if (size > window) {
      if (run) out.push(run);
      run = undefined;
      const at = u.begin + randomInt(0, size - window + 1);
      out.push([at, at + window]);
      continue;
    }
    if (run && run[1] === u.begin && u.end - run[0] <= window) run[1] = u.end;
    else {
      if (run) out.push(run);
      run = [u.begin, u.end];
    }
  }
  if (run) out.push(run);
  return out;
}

/** The store's bytes [start, end) of the file, from the blobs of the units that hold them. */
async function heldBytes(store: ContentStore, units: readonly HeldUnit[], start: number, end: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (const u of [...units].sort((x, y) => x.begin - y.begin)) {
    const a = Math.max(start, u.begin);
    const b = Math.min(end, u.end);
    if (b > a) parts.push(await store.readRange(u.digest, a - u.begin, b - u.begin));
  }
  return Buffer.concat(parts);
}

/**
 * Checks that `read` (the requesting repo's own copy of the file) serves the bytes the store holds
 * in `units`; throws E_DIGEST naming the file and the first window that differs.
 */
export async function proveServed(
  store: ContentStore,
  units: readonly HeldUnit[],
  read: (start: number, end: number) => Promise<Buffer>,
  what: string,
): Promise<{ windows: number; bytes: number }> {
  const windows = proofWindows(units);
  const pool = new Pool(PROOF_CONCURRENCY);
  await Promise.all(
    windows.map(([a, b]) =>
      pool.run(async () => {
        const [theirs, ours] = await Promise.all([read(a, b), heldBytes(store, units, a, b)]);
        if (!theirs.equals(ours)) {
          throw new CakeError(
            "E_DIGEST",
            `${what}: the Hub serves other bytes at ${a}-${b} than the file its listing names (sha256 claimed by another repository's copy); ` +
              "not reusing them, nothing tagged: the repository's listing does not match its files",
          );
        }
      }),
    ),
  );
  return { windows: windows.length, bytes: windows.reduce((n, [a, b]) => n + (b - a), 0) };
}
