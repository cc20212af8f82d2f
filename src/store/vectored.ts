/**
 * Vectored writes of received pieces (no copy): at a file position, or at a position of a target
 * laid over several files (a run of neighbouring blobs, each in its own partial file).
 *
 * Made once per thread, from `writevSync`: the main thread's here below, and one in each receive
 * worker (src/http/receive-workers.ts), which gets this function's source text. So it uses only what
 * it is handed and its own body.
 */
import fs from "node:fs";

/** Bytes [at, at + size) of a target are bytes [0, size) of the file open as `fd`. */
export interface FileSpan {
  fd: number;
  at: number;
  size: number;
}

export function makeVectored(writevSync: typeof fs.writevSync) {
  /** What is left of `parts` after its first `skip` bytes (after a short vectored write). */
  function remaining(parts: readonly Uint8Array[], skip: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const p of parts) {
      if (skip >= p.length) {
        skip -= p.length;
        continue;
      }
      out.push(skip > 0 ? p.subarray(skip) : p);
      skip = 0;
    }
    return out;
  }

  /** Writes `parts` (consecutive pieces) at `pos` of `fd`, all of them (a short write goes on). */
  function writeAllAt(fd: number, parts: readonly Uint8Array[], pos: number): number {
    let len = 0;
    for (const p of parts) len += p.length;
    let done = 0;
    let rest = parts;
    while (done < len) {
      done += writevSync(fd, rest as Uint8Array[], pos + done);
      if (done < len) rest = remaining(parts, done);
    }
    return len;
  }

  /** The first `n` bytes of `parts`, and the rest (no copies: subarrays). */
  function splitParts<T extends Uint8Array>(parts: readonly T[], n: number): [T[], T[]] {
    const head: T[] = [];
    for (let i = 0; i < parts.length; i++) {
      const b = parts[i]!;
      if (n >= b.length) {
        head.push(b);
        n -= b.length;
        continue;
      }
      if (n > 0) head.push(b.subarray(0, n) as T);
      return [head, [b.subarray(n) as T, ...parts.slice(i + 1)]];
    }
    return [head, []];
  }

  /**
   * Writes `parts` at position `at` of a target laid out as `spans` (sorted, side by side), each
   * piece into its own file. A byte outside every span is refused before anything is written.
   */
  function writeSpans(spans: readonly FileSpan[], at: number, parts: readonly Uint8Array[]): void {
    let len = 0;
    for (const p of parts) len += p.length;
    const first = spans[0];
    const last = spans[spans.length - 1];
    const outside = () => Object.assign(new Error(`bytes ${at}-${at + len} fall outside the blobs being written`), { code: "E_SIZE" });
    if (!first || at < first.at || at + len > last!.at + last!.size) throw outside();
    let pieces = parts;
    for (const s of spans) {
      if (pieces.length === 0) break;
      if (s.at + s.size <= at) continue;
      if (s.at > at) throw outside();
      const [mine, rest] = splitParts(pieces, s.at + s.size - at);
      at += writeAllAt(s.fd, mine, at - s.at);
      pieces = rest;
    }
  }

  return { writeAllAt, splitParts, writeSpans };
}

export const { writeAllAt, splitParts, writeSpans } = makeVectored(fs.writevSync);
