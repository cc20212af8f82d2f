/**
 * Reads a compressed blob (format.ts) back: any byte range, starting at the frame that holds its
 * first byte, frames decoded in parallel ahead of the reader, each checked by its crc32. A corrupt
 * blob is an E_DIGEST naming it, never wrong bytes.
 */
import fsp, { type FileHandle } from "node:fs/promises";
import { CakeError } from "../errors.js";
import { corrupt, HEADER_BYTES, indexBytes, parseHeader, parseIndex, type BlobHeader } from "./format.js";
import { decodeFrame, FRAMES_IN_FLIGHT } from "./parallel.js";

export class CompressedFile {
  private constructor(
    private readonly fh: FileHandle,
    readonly header: BlobHeader,
    private readonly starts: number[],
    private readonly what: string,
    private readonly workersOnly: boolean,
  ) {}

  /**
   * Opens `file`; `what` names the blob in errors (its digest). `workersOnly`: frames decode on the
   * worker threads only, never on this one (see decodeFrame).
   */
  static async open(file: string, what: string, opts: { workersOnly?: boolean } = {}): Promise<CompressedFile> {
    const fh = await fsp.open(file, "r");
    try {
      const size = (await fh.stat()).size;
      const head = Buffer.alloc(HEADER_BYTES);
      await fh.read(head, 0, HEADER_BYTES, 0);
      const header = parseHeader(head, what);
      const index = Buffer.alloc(indexBytes(header.frameCount));
      const at = size - index.length;
      if (at < HEADER_BYTES) throw corrupt(what, "cut short");
      await fh.read(index, 0, index.length, at);
      return new CompressedFile(fh, header, parseIndex(index, header, size, what), what, opts.workersOnly === true);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  get rawSize(): number {
    return this.header.rawSize;
  }

  /** Bytes the compressed form takes on disk. */
  get storedSize(): number {
    return this.starts[this.starts.length - 1]! + indexBytes(this.header.frameCount);
  }

  /** The raw bytes [start, end), in pieces of at most a frame. */
  async *read(start = 0, end = this.rawSize): AsyncGenerator<Buffer> {
    if (start < 0 || end > this.rawSize || start > end) throw new CakeError("E_SIZE", `${this.what}: range ${start}-${end} is outside its ${this.rawSize} bytes`);
    if (start === end) return;
    const { frameSize } = this.header;
    const first = Math.floor(start / frameSize);
    const last = Math.ceil(end / frameSize) - 1;
    const inFlight: Promise<Uint8Array>[] = [];
    let next = first;
    for (let i = first; i <= last; i++) {
      while (next <= last && inFlight.length < FRAMES_IN_FLIGHT) inFlight.push(this.frame(next++));
      for (const p of inFlight) p.catch(() => {});
      const raw = await inFlight.shift()!;
      const from = i === first ? start - i * frameSize : 0;
      const to = i === last ? end - i * frameSize : raw.length;
      yield Buffer.from(raw.buffer, raw.byteOffset + from, to - from);
    }
  }

  private async frame(i: number): Promise<Uint8Array> {
    // Not zero-filled first (it is read over whole), and its own memory, so it can move to a worker.
    const coded = Buffer.allocUnsafeSlow(this.starts[i + 1]! - this.starts[i]!);
    const { bytesRead } = await this.fh.read(coded, 0, coded.length, this.starts[i]!);
    if (bytesRead !== coded.length) throw corrupt(this.what, "cut short");
    const rawLength = Math.min(this.header.frameSize, this.rawSize - i * this.header.frameSize);
    try {
      return await decodeFrame(coded, rawLength, Math.max(1, this.header.width), this.workersOnly);
    } catch (err) {
      throw corrupt(this.what, `frame ${i}: ${(err as Error).message}`, err);
    }
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}
