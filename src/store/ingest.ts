/**
 * A blob being written: `ingest/<key>.partial` plus an append-only journal of the byte ranges that
 * are on disk, so that a killed transfer, run again, fetches only what is missing. Nothing here is
 * visible as a blob: `commit` hashes, checks, fsyncs and renames into blobs/ (see layout.ts).
 *
 * Several ranges may be written at once (parallel Range requests). The file is hashed once at
 * commit, read back from the page cache on a worker thread (hasher.ts), while the main thread goes
 * on receiving the other blobs. (Hashing a blob that arrives in order as it is written, on the
 * receiving thread, measured the same on 2 cores, 512 MB from distribution or the Hub emulation,
 * and would make that thread the limit on a big machine.)
 *
 * Its writes are synchronous: a write of WRITE_BATCH bytes into the page cache takes tens of
 * microseconds, about what handing it to libuv's thread pool and back costs the main thread alone
 * (on the 2-core bench VM each hand-off wakes a sleeping thread: ~45 us of the main thread's time,
 * 4000 times for 512 MB). Creating the files and fsync stay on the pool: they take longer.
 */
import fs from "node:fs";
import { promisify } from "node:util";
import { CakeError } from "../errors.js";
import { hashParts } from "./hasher.js";
import { openOwnFd } from "./open-own.js";
import { removeFile } from "./remove.js";
import { writeAllAt, type FileSpan } from "./vectored.js";

const fsync = promisify(fs.fsync);

/** How often (bytes) a running range records its progress: at most this much is fetched again after a kill. */
const JOURNAL_EVERY = 256 << 10;

export type Range = [start: number, end: number];

/** `ranges` sorted, those that overlap or meet merged into one (new arrays: the input is not changed). */
export function mergeRanges(ranges: readonly Range[]): Range[] {
  const merged: Range[] = [];
  for (const [a, b] of [...ranges].sort((x, y) => x[0] - y[0])) {
    const last = merged[merged.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else merged.push([a, b]);
  }
  return merged;
}

export class Ingest {
  private done: Range[] = [];
  /** File descriptors of the journal and the partial file, while open. */
  private journal?: number;
  private fd?: number;

  constructor(
    readonly partialPath: string,
    readonly journalPath: string,
    readonly size: number,
    readonly key: string,
  ) {}

  async open(): Promise<this> {
    // No journal (the usual case): nothing on disk yet. Looked for without an exception: a missed
    // readFileSync costs ~10 us (an error and its stack), a missed statSync ~1 us.
    const journal = fs.statSync(this.journalPath, { throwIfNoEntry: false });
    const text = journal ? fs.readFileSync(this.journalPath, "utf8") : "";
    for (const line of text.split("\n")) {
      const m = /^(\d+) (\d+)$/.exec(line);
      if (m) this.add([Number(m[1]), Number(m[2])]);
    }
    if (this.done.length) {
      // The journal may claim bytes the partial file lost (a crash of the machine): trust the file size.
      const st = fs.statSync(this.partialPath, { throwIfNoEntry: false });
      if (!st) this.done = [];
      else this.done = this.done.map(([a, b]): Range => [a, Math.min(b, st.size)]).filter(([a, b]) => b > a);
    }
    // Created on libuv's threads (creating a file takes ~0.3 ms on the bench VM), both at once.
    [this.fd, this.journal] = await Promise.all([openOwnFd(this.partialPath, this.done.length ? "update" : "fresh"), openOwnFd(this.journalPath, "append")]);
    return this;
  }

  private add(r: Range) {
    this.done = mergeRanges([...this.done, r]);
  }

  /** Bytes already on disk. */
  get have(): number {
    return this.done.reduce((n, [a, b]) => n + (b - a), 0);
  }

  /** The ranges still missing (the engine cuts them into requests). */
  missing(): Range[] {
    const gaps: Range[] = [];
    let at = 0;
    for (const [a, b] of this.done) {
      if (a > at) gaps.push([at, a]);
      at = Math.max(at, b);
    }
    if (at < this.size) gaps.push([at, this.size]);
    return gaps;
  }

  /**
   * Writes `parts` (consecutive pieces) at `pos`, within a range being fetched, in one vectored
   * write; records progress in the journal every JOURNAL_EVERY bytes.
   */
  async write(pos: number, parts: Uint8Array[], rangeStart: number, sinceJournal: { n: number }): Promise<void> {
    let len = 0;
    for (const p of parts) len += p.length;
    if (pos + len > this.size) {
      throw new CakeError("E_SIZE", `${this.key}: more bytes than the ${this.size} expected`);
    }
    writeAllAt(this.fd!, parts, pos);
    await this.wrote(pos, len, rangeStart, sinceJournal);
  }

  /** Where its bytes go: the partial file, while open (a receive worker writes there too). */
  layout(): FileSpan[] {
    return [{ fd: this.fd!, at: 0, size: this.size }];
  }

  /** `len` bytes at `pos` were written (here or by a receive worker): recorded every JOURNAL_EVERY bytes. */
  async wrote(pos: number, len: number, rangeStart: number, sinceJournal: { n: number }): Promise<void> {
    sinceJournal.n += len;
    if (sinceJournal.n >= JOURNAL_EVERY) {
      sinceJournal.n = 0;
      await this.record([rangeStart, pos + len]);
    }
  }

  /** Marks [start, end) as on disk. */
  async record(r: Range): Promise<void> {
    if (r[1] <= r[0]) return;
    this.add(r);
    // One write call (the journal is opened to append), every JOURNAL_EVERY bytes fetched.
    const line = Buffer.from(`${r[0]} ${r[1]}\n`);
    for (let at = 0; at < line.length; ) at += fs.writeSync(this.journal!, line, at);
  }

  /** Hashes what is on disk (on a hash worker) while it is fsynced; checks the size; closes. */
  async finish(): Promise<string> {
    if (this.have !== this.size) throw new CakeError("E_SIZE", `${this.key}: ${this.have} of ${this.size} bytes arrived`);
    if (fs.fstatSync(this.fd!).size !== this.size) fs.ftruncateSync(this.fd!, this.size);
    const [{ sha256 }] = await Promise.all([hashParts({ parts: [{ file: this.partialPath, start: 0, end: this.size }] }), fsync(this.fd!)]);
    await this.close();
    return `sha256:${sha256}`;
  }

  async close(): Promise<void> {
    const fds = [this.fd, this.journal];
    this.fd = this.journal = undefined;
    for (const fd of fds) {
      try {
        if (fd !== undefined) fs.closeSync(fd);
      } catch {
        // nothing to do about a file that fails to close: its bytes were fsynced, or are dropped
      }
    }
  }

  /** Forgets everything (bad bytes): the next attempt starts from zero. */
  async discard(): Promise<void> {
    await this.close();
    await removeFile(this.partialPath);
    await removeFile(this.journalPath);
  }
}
