/**
 * The safetensors format (https://github.com/huggingface/safetensors#format), read strictly.
 *
 *   [8 bytes: N, u64 little-endian][N bytes: JSON header, may end in spaces][data buffer]
 *
 * Every tensor's `data_offsets` are relative to the data buffer. The reader rejects anything the
 * reference implementation rejects, and a little more (duplicate keys): a hostile header must never
 * reach the store or the planner.
 */
import { CakeError } from "../errors.js";
import { parseStrictJson, StrictJsonError } from "./strict-json.js";

/** Bits per element for every dtype of the current safetensors spec. */
export const DTYPE_BITS: Readonly<Record<string, number>> = Object.freeze({
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
});

/** The reference implementation refuses headers above 100 MB; so do we. */
export const MAX_HEADER_BYTES = 100_000_000;

export interface TensorInfo {
  name: string;
  dtype: string;
  shape: number[];
  /** Byte offsets into the data buffer, [begin, end). */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** N: the JSON header's length in bytes. */
  headerLength: number;
  /** 8 + N: where the data buffer starts in the file. */
  dataStart: number;
  /** The size of the whole file: dataStart + the data buffer. */
  fileSize: number;
  metadata: Record<string, string> | undefined;
  /** Sorted by `begin`: the order the bytes lie in the file. */
  tensors: TensorInfo[];
}

const fail = (file: string, what: string): never => {
  throw new CakeError("E_SAFETENSORS", `${file}: invalid safetensors: ${what}`);
};

/** Reads N from the file's first 8 bytes and checks it against the file size. */
export function readHeaderLength(first8: Uint8Array, fileSize: number, file: string): number {
  if (first8.length < 8 || fileSize < 8) fail(file, `file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const n = Buffer.from(first8.buffer, first8.byteOffset, 8).readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER_BYTES)) fail(file, `header length ${n} is above the 100 MB limit`);
  const len = Number(n);
  if (len < 2) fail(file, `header length ${len} is too small for a JSON object`);
  if (8 + len > fileSize) fail(file, `header length ${len} runs past the end of the ${fileSize}-byte file`);
  return len;
}

/** Bytes taken by `shape` elements of `dtype`; throws when they do not fill whole bytes. */
export function tensorByteSize(dtype: string, shape: readonly number[], file: string, name: string): number {
  const bits = DTYPE_BITS[dtype];
  if (bits === undefined) return fail(file, `tensor ${JSON.stringify(name)} has unknown dtype ${JSON.stringify(dtype)}`);
  let elements = 1n;
  for (const d of shape) elements *= BigInt(d);
  const totalBits = elements * BigInt(bits);
  if (totalBits % 8n !== 0n) fail(file, `tensor ${JSON.stringify(name)}: ${elements} elements of ${dtype} do not fill whole bytes`);
  const bytes = totalBits / 8n;
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) fail(file, `tensor ${JSON.stringify(name)}: size overflows`);
  return Number(bytes);
}

const isU64 = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/**
 * Parses and validates the JSON header (`json` is exactly the N header bytes) of a file of `fileSize` bytes.
 * `file` names the file in error messages.
 */
export function parseHeader(json: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  const headerLength = json.length;
  const dataStart = 8 + headerLength;
  if (dataStart > fileSize) fail(file, `header runs past the end of the ${fileSize}-byte file`);
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(json);
  } catch {
    return fail(file, "header is not valid UTF-8");
  }
  if (!text.startsWith("{")) fail(file, "header does not start with '{'");
  let parsed: unknown;
  try {
    parsed = parseStrictJson(text);
  } catch (err) {
    const why = err instanceof StrictJsonError ? err.message : String(err);
    return fail(file, `header is not valid JSON: ${why}`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) fail(file, "header is not a JSON object");
  const obj = parsed as Record<string, unknown>;

  let metadata: Record<string, string> | undefined;
  const tensors: TensorInfo[] = [];
  for (const name of Object.keys(obj)) {
    const entry = obj[name];
    if (name === "__metadata__") {
      if (entry === null || typeof entry !== "object" || Array.isArray(entry)) fail(file, "__metadata__ is not an object");
      metadata = Object.create(null) as Record<string, string>;
      for (const [k, v] of Object.entries(entry as Record<string, unknown>)) {
        if (typeof v !== "string") fail(file, `__metadata__ value for ${JSON.stringify(k)} is not a string`);
        metadata[k] = v as string;
      }
      continue;
    }
    const q = JSON.stringify(name);
    if (entry === null || typeof entry !== "object" || Array.isArray(entry)) fail(file, `tensor ${q} is not an object`);
    const t = entry as Record<string, unknown>;
    for (const k of Object.keys(t)) {
      if (k !== "dtype" && k !== "shape" && k !== "data_offsets") fail(file, `tensor ${q} has unknown field ${JSON.stringify(k)}`);
    }
    if (typeof t.dtype !== "string") fail(file, `tensor ${q} has no dtype`);
    const dtype = t.dtype as string;
    if (!Array.isArray(t.shape) || !t.shape.every(isU64)) fail(file, `tensor ${q} has a bad shape (want an array of non-negative integers)`);
    const shape = t.shape as number[];
    const offs = t.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isU64)) fail(file, `tensor ${q} has bad data_offsets (want [begin, end] integers)`);
    const [begin, end] = offs as [number, number];
    if (end < begin) fail(file, `tensor ${q} has data_offsets [${begin}, ${end}] that end before they begin`);
    const want = tensorByteSize(dtype, shape, file, name);
    if (end - begin !== want) fail(file, `tensor ${q} spans ${end - begin} bytes but ${dtype} ${JSON.stringify(shape)} needs ${want}`);
    tensors.push({ name, dtype, shape, begin, end });
  }

  // The data buffer must be covered exactly: no overlap, no hole, nothing after the last tensor.
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end || (a.name < b.name ? -1 : 1));
  let cursor = 0;
  for (const t of tensors) {
    const q = JSON.stringify(t.name);
    if (t.begin < cursor) fail(file, `tensor ${q} at [${t.begin}, ${t.end}] overlaps the tensor before it`);
    if (t.begin > cursor) fail(file, `tensor ${q} at [${t.begin}, ${t.end}] leaves a hole at byte ${cursor}`);
    cursor = t.end;
  }
  const dataLength = fileSize - dataStart;
  if (cursor !== dataLength) {
    fail(file, `tensors cover ${cursor} bytes of data but the file holds ${dataLength} after the header`);
  }
  return { headerLength, dataStart, fileSize, metadata, tensors };
}

/** Reads the header of a whole safetensors file held in memory (tests, small files). */
export function parseSafetensors(bytes: Uint8Array, file: string): SafetensorsHeader {
  const n = readHeaderLength(bytes.subarray(0, 8), bytes.length, file);
  return parseHeader(bytes.subarray(8, 8 + n), bytes.length, file);
}

export interface TensorInput {
  name: string;
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

/**
 * Serializes tensors the way the reference writer does: keys sorted, data laid out in that order,
 * header padded with spaces to a multiple of 8. Returns the header bytes (8 + N); the data follows
 * as the tensors' bytes in `order`.
 */
export function encodeHeader(
  tensors: readonly Omit<TensorInput, "data">[],
  metadata?: Record<string, string>,
): { header: Buffer; order: string[] } {
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const obj: Record<string, unknown> = {};
  if (metadata) obj.__metadata__ = metadata;
  let offset = 0;
  for (const t of sorted) {
    const size = tensorByteSize(t.dtype, t.shape, "<writer>", t.name);
    obj[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size] };
    offset += size;
  }
  let json = Buffer.from(JSON.stringify(obj), "utf8");
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return { header: Buffer.concat([len, json]), order: sorted.map((t) => t.name) };
}

/** A whole safetensors file in memory (tests and small fixtures; big fixtures stream, see test/fixtures). */
export function serializeSafetensors(tensors: readonly TensorInput[], metadata?: Record<string, string>): Buffer {
  for (const t of tensors) {
    const size = tensorByteSize(t.dtype, t.shape, "<writer>", t.name);
    if (size !== t.data.length) throw new CakeError("E_SAFETENSORS", `tensor ${JSON.stringify(t.name)}: ${t.data.length} bytes given, ${size} needed`);
  }
  const { header, order } = encodeHeader(tensors, metadata);
  const byName = new Map(tensors.map((t) => [t.name, t.data]));
  return Buffer.concat([header, ...order.map((n) => byName.get(n)!)]);
}
