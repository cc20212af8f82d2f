/**
 * One frame of a compressed blob, encoded and decoded: the part that runs on worker threads, so
 * `makeFrameCodec` is self-contained (its source text is the worker's; it uses only what it is
 * handed: zlib, the WebAssembly kernels, the Huffman code). A frame:
 *
 *   raw length u32, crc32 of the raw bytes u32, streams u8 (n), then n × (method u8, length u32),
 *   then the n streams' bytes
 *
 * Stream k of a frame split by width w holds the bytes at positions k, k + w, k + 2w, … (the
 * exponent of a BF16 is mostly in byte 1, whose values cluster: it entropy-codes to ~1/3; the
 * mantissa bytes look random and stay as they are). Method 0: stored; 1: raw deflate (RFC 1951);
 * 2: canonical Huffman (huffman.ts). Measured on 1 MiB of normal (sigma 0.02) BF16, exponent
 * stream: Huffman 34 % of raw (zlib's Huffman-only deflate the same, deflate level 1 44 %, level 6
 * 40 % in 55 ms); the mantissa stream 100 % with every method. So split streams use method 2,
 * which also decodes ~2.5x as fast as inflate; plain frames (packs, whole files) deflate.
 */
import type * as Zlib from "node:zlib";
import type { Huffman } from "./huffman.js";
import type { Kernels } from "./kernels.js";

/** What a frame is coded as: split by `width` (Huffman-coded streams), or plain (`width` 0: deflate level 1). */
export interface FrameRequest {
  raw: Uint8Array;
  width: number;
}

export function makeFrameCodec(zlib: typeof Zlib, kernels: Kernels | undefined, huffman: Huffman) {
  const STORED = 0;
  const DEFLATE = 1;
  const HUFFMAN = 2;
  const fail = (why: string) => Object.assign(new Error(why), { code: "E_DIGEST" });

  /** Whether typed views hold their elements little-endian (every platform Node runs on, in practice). */
  const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  /** Whether the bulk of a split by `w` can go through a typed view of `raw`: a word at a time, ~3x a byte at a time. */
  const wordWise = (raw: Uint8Array, w: number) => littleEndian && (w === 2 || w === 4) && raw.byteOffset % w === 0;

  /** `raw` split into `w` streams: stream k holds the bytes at positions k, k + w, k + 2w, …. */
  const split = (raw: Uint8Array, w: number) => {
    const streams = Array.from({ length: w }, (_, k) => new Uint8Array(Math.floor((raw.length - k + w - 1) / w)));
    const words = Math.floor(raw.length / w);
    let done = 0;
    if (wordWise(raw, w) && w === 2) {
      const v = new Uint16Array(raw.buffer, raw.byteOffset, words);
      const [a, b] = streams as [Uint8Array, Uint8Array];
      for (let i = 0; i < words; i++) {
        const x = v[i]!;
        a[i] = x;
        b[i] = x >>> 8;
      }
      done = words;
    } else if (wordWise(raw, w)) {
      const v = new Uint32Array(raw.buffer, raw.byteOffset, words);
      const [a, b, c, d] = streams as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
      for (let i = 0; i < words; i++) {
        const x = v[i]!;
        a[i] = x;
        b[i] = x >>> 8;
        c[i] = x >>> 16;
        d[i] = x >>> 24;
      }
      done = words;
    }
    streams.forEach((s, k) => {
      for (let i = done, j = done * w + k; j < raw.length; i++, j += w) s[i] = raw[j]!;
    });
    return streams;
  };

  /** The `rawLength` bytes that `split` made `streams` of. */
  const join = (streams: Uint8Array[], rawLength: number) => {
    const w = streams.length;
    const raw = new Uint8Array(rawLength);
    const words = Math.floor(rawLength / w);
    let done = 0;
    if (kernels?.join(streams, raw, Math.floor(words / 16))) done = 16 * Math.floor(words / 16);
    else if (wordWise(raw, w) && w === 2) {
      // Two elements a store: a quarter faster than one.
      const pairs = words >>> 1;
      const v = new Uint32Array(raw.buffer, 0, pairs);
      const [a, b] = streams as [Uint8Array, Uint8Array];
      for (let i = 0, j = 0; i < pairs; i++, j += 2) v[i] = a[j]! | (b[j]! << 8) | (a[j + 1]! << 16) | (b[j + 1]! << 24);
      done = 2 * pairs;
    } else if (wordWise(raw, w)) {
      const v = new Uint32Array(raw.buffer, 0, words);
      const [a, b, c, d] = streams as [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
      for (let i = 0; i < words; i++) v[i] = a[i]! | (b[i]! << 8) | (c[i]! << 16) | (d[i]! << 24);
      done = words;
    }
    streams.forEach((s, k) => {
      for (let i = done, j = done * w + k; i < s.length; i++, j += w) raw[j] = s[i]!;
    });
    return raw;
  };
  type Coded = { method: number; body: Uint8Array };
  /** The smallest of `tries` (undefined ones did not pay), when smaller than `plain`. */
  const smallest = (plain: Uint8Array, tries: (Coded | undefined)[]) =>
    tries.reduce<Coded | undefined>((best, t) => (t && t.body.length < (best?.body ?? plain).length ? t : best), undefined);
  /**
   * Whether Huffman coding can pay at all: the stream's order-0 entropy (what Huffman-only coding
   * approaches from above) under 7.9 bits a byte. A mantissa byte measures ~7.99: not coded, which
   * saves the coding's time on half (BF16) or three quarters (F32) of the bytes. Counted on every
   * 8th byte of a long stream (a 1 MiB BF16 frame's: 64 Ki samples, which read the entropy of random
   * bytes low by ~0.003 bits): an eighth of the time, the same choice.
   */
  const clusters = (s: Uint8Array) => {
    const counts = new Uint32Array(256);
    const step = s.length >= 1 << 16 ? 8 : 1;
    let n = 0;
    for (let i = 0; i < s.length; i += step, n++) counts[s[i]!]!++;
    let bits = 0;
    for (const c of counts) if (c) bits -= c * Math.log2(c / n);
    return bits / n < 7.9;
  };

  function encode({ raw, width }: FrameRequest): Uint8Array {
    const streams = width > 1 ? split(raw, width) : [raw];
    const coded = streams.map((s) => {
      if (s.length === 0) return undefined;
      const code = () => {
        const body = huffman.encode(s);
        return body && { method: HUFFMAN, body };
      };
      const level1 = () => ({ method: DEFLATE, body: zlib.deflateRawSync(s, { level: 1 }) });
      // 8-bit elements (FP8, int8) try both and keep the smaller; a plain frame deflates.
      if (width === 0) return smallest(s, [level1()]);
      if (width > 1) return clusters(s) ? smallest(s, [code()]) : undefined;
      return smallest(s, [code(), level1()]);
    });
    const head = 9 + 5 * streams.length;
    const size = head + streams.reduce((n, s, k) => n + (coded[k]?.body ?? s).length, 0);
    const out = new Uint8Array(size);
    const view = new DataView(out.buffer);
    view.setUint32(0, raw.length, true);
    view.setUint32(4, zlib.crc32(raw), true);
    out[8] = streams.length;
    let at = head;
    streams.forEach((s, k) => {
      const body = coded[k]?.body ?? s;
      out[9 + 5 * k] = coded[k]?.method ?? STORED;
      view.setUint32(10 + 5 * k, body.length, true);
      out.set(body, at);
      at += body.length;
    });
    return out;
  }

  /** The raw bytes of `frame`, which must hold `rawLength` of them; throws (code E_DIGEST) on any inconsistency. */
  function decode(frame: Uint8Array, rawLength: number, maxWidth: number): Uint8Array {
    if (frame.length < 9) throw fail("frame too short");
    const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
    if (view.getUint32(0, true) !== rawLength) throw fail("frame length");
    const n = frame[8]!;
    if (n === 0 || n > maxWidth || frame.length < 9 + 5 * n) throw fail("frame streams");
    const w = n === 1 ? 1 : n;
    let at = 9 + 5 * n;
    const streams: Uint8Array[] = [];
    for (let k = 0; k < n; k++) {
      const method = frame[9 + 5 * k]!;
      const len = view.getUint32(10 + 5 * k, true);
      if (at + len > frame.length) throw fail("stream length");
      const body = frame.subarray(at, at + len);
      at += len;
      const want = Math.floor((rawLength - k + w - 1) / w);
      let s: Uint8Array;
      if (method === STORED) s = body;
      else if (method === DEFLATE) {
        try {
          // One output chunk of the stream's size: no loop over 16 KiB chunks and no join of them (~12 % of the inflate).
          s = zlib.inflateRawSync(body, { maxOutputLength: Math.max(1, want), chunkSize: Math.max(64, want) });
        } catch (err) {
          throw fail(`stream ${k}: ${(err as Error).message}`);
        }
      } else if (method === HUFFMAN) {
        try {
          s = huffman.decode(body, want);
        } catch (err) {
          throw fail(`stream ${k}: ${(err as Error).message}`);
        }
      } else throw fail(`stream method ${method}`);
      if (s.length !== want) throw fail(`stream ${k} length`);
      streams.push(s);
    }
    if (at !== frame.length) throw fail("frame length");
    const raw = n === 1 ? streams[0]! : join(streams, rawLength);
    if (zlib.crc32(raw) !== view.getUint32(4, true)) throw fail("frame checksum");
    return raw;
  }

  return { encode, decode };
}

export type FrameCodec = ReturnType<typeof makeFrameCodec>;
