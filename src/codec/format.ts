/**
 * The byte layout of a compressed blob (docs/format.md, "The compressed local form"): a header, the
 * frames, a frame index, a trailer. All integers little-endian.
 *
 *   header (40 bytes)   "CKZF", version u8 = 1, width u8, 0 u16, frame size u32, frame count u32,
 *                       raw size u64, dtype (8 bytes ASCII, zero-padded), crc32 of bytes 0..32, 0 u32
 *   frames              frame i holds raw bytes [i × frame size, …), framed as in frame.ts
 *   index               frame count + 1 u64: where each frame starts, then where the index starts
 *   trailer (8 bytes)   crc32 of the index, "CKZI"
 *
 * `width` is how many byte streams a frame's elements are split into (2 for BF16, 4 for F32, …);
 * 0 is a plain frame (deflate of the bytes as they are), for packs, whole files and unknown dtypes.
 */
import { crc32 } from "node:zlib";
import { CakeError } from "../errors.js";
import { DTYPE_BITS } from "../format/safetensors.js";

export const HEADER_BYTES = 40;
export const TRAILER_BYTES = 8;
const MAGIC = "CKZF";
const INDEX_MAGIC = "CKZI";
const VERSION = 1;
/**
 * Raw bytes per frame: a Range read decodes at most one frame it does not need at each end, and a
 * frame is the unit of parallel work (Huffman coding ~250 MB/s a core, so ~4 ms a frame).
 */
export const FRAME_BYTES = 1 << 20;
/** The most streams a frame splits into (F64, I64, U64). */
export const MAX_WIDTH = 8;

/** A compressed blob that does not decode: `what` names it (the store passes its digest and file). */
export function corrupt(what: string, why: string, cause?: unknown): CakeError {
  return new CakeError("E_DIGEST", `${what} is corrupt (${why}): delete that file and pull the model again`, cause === undefined ? undefined : { cause });
}

export interface BlobHeader {
  width: number;
  frameSize: number;
  frameCount: number;
  rawSize: number;
  dtype: string;
}

/** How a blob of `dtype` is split: its element size in bytes, or 0 (plain) for packs and unknown or sub-byte dtypes. */
export function widthOf(dtype: string | undefined): number {
  if (dtype === "C64") return 4; // two F32s
  const bits = dtype === undefined ? undefined : DTYPE_BITS[dtype];
  return bits !== undefined && bits >= 8 && bits % 8 === 0 && bits / 8 <= MAX_WIDTH ? bits / 8 : 0;
}

export function frameCountOf(rawSize: number, frameSize = FRAME_BYTES): number {
  return Math.ceil(rawSize / frameSize);
}

export function encodeHeader(h: BlobHeader): Buffer {
  const b = Buffer.alloc(HEADER_BYTES);
  b.write(MAGIC, 0, "latin1");
  b.writeUInt8(VERSION, 4);
  b.writeUInt8(h.width, 5);
  b.writeUInt32LE(h.frameSize, 8);
  b.writeUInt32LE(h.frameCount, 12);
  b.writeBigUInt64LE(BigInt(h.rawSize), 16);
  b.write(h.dtype.slice(0, 8), 24, "latin1");
  b.writeUInt32LE(crc32(b.subarray(0, 32)), 32);
  return b;
}

/** Reads a header back; `what` names the blob in the error (a corrupt or foreign file). */
export function parseHeader(b: Buffer, what: string): BlobHeader {
  const bad = (why: string) => corrupt(what, why);
  if (b.length < HEADER_BYTES || b.toString("latin1", 0, 4) !== MAGIC) throw bad("no CKZF header");
  if (b.readUInt32LE(32) !== crc32(b.subarray(0, 32))) throw bad("header checksum");
  if (b.readUInt8(4) !== VERSION) throw bad(`format version ${b.readUInt8(4)}, this cake reads ${VERSION}`);
  const h: BlobHeader = {
    width: b.readUInt8(5),
    frameSize: b.readUInt32LE(8),
    frameCount: b.readUInt32LE(12),
    rawSize: Number(b.readBigUInt64LE(16)),
    dtype: b.toString("latin1", 24, 32).replace(/\0+$/, ""),
  };
  if (h.width > MAX_WIDTH || h.frameSize === 0 || h.frameCount !== frameCountOf(h.rawSize, h.frameSize)) throw bad("header fields");
  return h;
}

/** Bytes of the index and trailer after the frames. */
export const indexBytes = (frameCount: number) => 8 * (frameCount + 1) + TRAILER_BYTES;

/** The index and trailer: `starts` holds where each frame begins and, last, where the index begins. */
export function encodeIndex(starts: readonly number[]): Buffer {
  const b = Buffer.alloc(indexBytes(starts.length - 1));
  starts.forEach((s, i) => b.writeBigUInt64LE(BigInt(s), 8 * i));
  const end = 8 * starts.length;
  b.writeUInt32LE(crc32(b.subarray(0, end)), end);
  b.write(INDEX_MAGIC, end + 4, "latin1");
  return b;
}

/** Where each frame starts, and last where the index starts, checked against the file's size. */
export function parseIndex(b: Buffer, h: BlobHeader, fileSize: number, what: string): number[] {
  const bad = (why: string) => corrupt(what, why);
  const end = 8 * (h.frameCount + 1);
  if (b.length !== end + TRAILER_BYTES || b.toString("latin1", end + 4, end + 8) !== INDEX_MAGIC) throw bad("no frame index");
  if (b.readUInt32LE(end) !== crc32(b.subarray(0, end))) throw bad("index checksum");
  const starts: number[] = [];
  for (let i = 0; i <= h.frameCount; i++) starts.push(Number(b.readBigUInt64LE(8 * i)));
  const ok = starts[0] === HEADER_BYTES && starts[h.frameCount] === fileSize - b.length && starts.every((s, i) => i === 0 || s > starts[i - 1]!);
  if (!ok) throw bad("frame index does not fit the file");
  return starts;
}
