/**
 * Runs: the jobs one request can fetch together (neighbouring small blobs of one span source), the
 * ingests such a run writes into side by side, and how its missing bytes are handed out in pieces.
 */
import type { Store } from "../store/layout.js";
import { mergeRanges, type Ingest, type Range } from "../store/ingest.js";
import { writeSpans, type FileSpan } from "../store/vectored.js";
import type { BlobJob } from "./engine.js";
import type { RangeTarget } from "./fetch-range.js";
import type { Pool } from "./pool.js";

/**
 * Jobs in runs that one request can fetch: neighbours in the same span source, contiguous, each
 * smaller than a chunk, together at most a chunk. Any other job is a run of its own.
 */
export function spanRuns(jobs: readonly BlobJob[], chunk: number): number[][] {
  const runs: number[][] = [];
  let run: number[] = [];
  let bytes = 0;
  jobs.forEach((j, i) => {
    const prev = run.length ? jobs[run[run.length - 1]!]! : undefined;
    const joins =
      prev?.span && j.span && j.span.source === prev.span.source && j.span.offset === prev.span.offset + prev.size && j.size < chunk && prev.size < chunk && bytes + j.size <= chunk;
    if (!joins) {
      if (run.length) runs.push(run);
      run = [];
      bytes = 0;
    }
    run.push(i);
    bytes += j.size;
  });
  if (run.length) runs.push(run);
  return runs;
}

/**
 * Takes the first `size` bytes (or fewer) off the front of `work`, and the rest of that range if less
 * than `step` or half a piece would be left: an 11 MB tensor is one request of 11 MB, not 8 MiB and
 * then 2.6 MB (a request costs a round trip and the server's time to first byte, ~50 ms at 30 ms).
 */
export function carve(work: Range[], size: number, step: number): Range | undefined {
  const first = work[0];
  if (!first) return undefined;
  const piece: Range = [first[0], Math.min(first[1], first[0] + size)];
  if (first[1] - piece[1] < Math.max(step, size / 2)) piece[1] = first[1];
  if (piece[1] === first[1]) work.shift();
  else first[0] = piece[1];
  return piece;
}

/** Runs `fn`, holding a slot of `gate` until `fn` calls `ready` (or settles): only its first phase is bounded. */
export function gated<T>(gate: Pool, fn: (ready: () => void) => Promise<T>): Promise<T> {
  let result!: Promise<T>;
  const firstPhase = gate.run(
    () =>
      new Promise<void>((ready) => {
        result = fn(ready);
        result.then(() => ready(), () => ready());
      }),
  );
  return firstPhase.then(() => result);
}

/** Runs `fn` with the ingests of `jobs` all held (taken in order, released in reverse). */
export function withIngests<T>(store: Store, jobs: BlobJob[], fn: (ings: Ingest[]) => Promise<T>, held: Ingest[] = []): Promise<T> {
  if (held.length === jobs.length) return fn(held);
  const job = jobs[held.length]!;
  return store.withIngest(job.key, job.size, (ing) => withIngests(store, jobs, fn, [...held, ing]));
}

export interface SpanPart {
  k: number;
  job: BlobJob;
  ing: Ingest;
  /** Where the blob starts in the span source. */
  offset: number;
}

/**
 * Several ingests laid side by side at their offsets in one source: ranges in the source's
 * coordinates are cut at the blobs' edges, each piece written and journaled in its own ingest.
 */
export class SpanTarget implements RangeTarget {
  /** Journal counters per attempt (fetchRange's `since`) and ingest. */
  private readonly since = new WeakMap<object, { n: number }[]>();
  constructor(private readonly parts: SpanPart[]) {}

  /** The blobs' missing ranges in source coordinates; ranges meeting at a blob edge merge. */
  missing(): Range[] {
    return mergeRanges(this.parts.flatMap((p) => p.ing.missing().map(([a, b]): Range => [p.offset + a, p.offset + b])));
  }

  /** The blobs' partial files, side by side at their offsets. */
  layout(): FileSpan[] {
    // The ingests stay open, their files in place, while the run holds them: made once.
    return (this.spans ??= this.parts.map((p) => ({ ...p.ing.layout()[0]!, at: p.offset })));
  }
  private spans?: FileSpan[];

  async write(pos: number, parts: Buffer[], rangeStart: number, since: { n: number }): Promise<void> {
    writeSpans(this.layout(), pos, parts);
    await this.wrote(pos, parts.reduce((n, b) => n + b.length, 0), rangeStart, since);
  }

  /** Bytes [pos, pos + len) were written: each blob's share counts toward its own journal. */
  async wrote(pos: number, len: number, rangeStart: number, since: { n: number }): Promise<void> {
    let counters = this.since.get(since);
    if (!counters) this.since.set(since, (counters = this.parts.map(() => ({ n: 0 }))));
    for (const [i, p] of this.parts.entries()) {
      const s = Math.max(pos, p.offset);
      const e = Math.min(pos + len, p.offset + p.ing.size);
      if (e > s) await p.ing.wrote(s - p.offset, e - s, Math.max(rangeStart, p.offset) - p.offset, counters[i]!);
    }
  }

  async record([a, b]: Range): Promise<void> {
    for (const p of this.parts) {
      const s = Math.max(a, p.offset);
      const e = Math.min(b, p.offset + p.ing.size);
      if (e > s) await p.ing.record([s - p.offset, e - p.offset]);
    }
  }
}
