/**
 * A canonical Huffman code for one byte stream of a frame (method 2 in frame.ts): what the
 * exponent bytes of a float tensor compress with. zlib's Huffman-only deflate gave the same size
 * (~34 % of a BF16 exponent stream) but decodes a symbol at a time at ~500 MB/s, which bounded a
 * proxy serving from a compressed store; this code is limited to 11 bits so that one lookup in a
 * 2048-entry table decodes up to 4 bytes (kernels.ts), and its encoding is a few JS lines.
 *
 *   256 code lengths, 4 bits each (low nibble first; 0: the byte does not occur), then the codes
 *   of the stream's bytes, LSB first, each code's bits reversed (the decoder indexes by low bits)
 *
 * Self-contained (its source runs in the frame workers); `kernels` may be undefined: JS decodes.
 */
import type { Kernels } from "./kernels.js";

export function makeHuffman(kernels: Kernels | undefined) {
  const MAX_BITS = 11;
  const TABLE = 1 << MAX_BITS;
  const HEAD = 128;

  /** Code lengths (<= MAX_BITS) for byte counts: Huffman's, the longest then shortened until they fit (Kraft). */
  const lengthsOf = (counts: Uint32Array) => {
    const lengths = new Uint8Array(256);
    const used = Array.from(counts.keys()).filter((s) => counts[s]! > 0);
    if (used.length === 1) lengths[used[0]!] = 1;
    if (used.length <= 1) return lengths;
    // Two-queue Huffman over the sorted leaves: parents are made in order of weight.
    const leaves = used.sort((a, b) => counts[a]! - counts[b]! || a - b);
    const weight: number[] = leaves.map((s) => counts[s]!);
    const parent: number[] = [];
    let leaf = 0;
    let node = leaves.length;
    const take = () => (node < weight.length && (leaf >= leaves.length || weight[node]! < weight[leaf]!) ? node++ : leaf++);
    while (leaves.length - leaf + (weight.length - node) > 1) {
      const a = take();
      const b = take();
      parent[a] = parent[b] = weight.length;
      weight.push(weight[a]! + weight[b]!);
    }
    const depth = new Array<number>(weight.length).fill(0);
    for (let i = weight.length - 2; i >= 0; i--) depth[i] = depth[parent[i]!]! + 1;
    leaves.forEach((s, i) => (lengths[s] = Math.min(depth[i]!, MAX_BITS)));
    // Clamping may break Kraft's inequality: lengthen the longest codes still short of the limit.
    let kraft = 0;
    for (const s of leaves) kraft += TABLE >> lengths[s]!;
    for (let i = 0; kraft > TABLE; i = (i + 1) % leaves.length) {
      const s = leaves[i]!;
      if (lengths[s]! < MAX_BITS) {
        kraft -= TABLE >> (lengths[s]! + 1);
        lengths[s]!++;
      }
    }
    return lengths;
  };

  /** Each byte's code, bits reversed (canonical: by length, then by byte). */
  const codesOf = (lengths: Uint8Array) => {
    const codes = new Uint16Array(256);
    let code = 0;
    for (let len = 1; len <= MAX_BITS; len++) {
      for (let s = 0; s < 256; s++) {
        if (lengths[s] !== len) continue;
        let r = 0;
        for (let b = 0; b < len; b++) r |= ((code >> b) & 1) << (len - 1 - b);
        codes[s] = r;
        code++;
      }
      code <<= 1;
    }
    return codes;
  };

  /** The coded stream, or undefined when it would not be smaller than `s`. */
  function encode(s: Uint8Array): Uint8Array | undefined {
    const counts = new Uint32Array(256);
    for (let i = 0; i < s.length; i++) counts[s[i]!]!++;
    const lengths = lengthsOf(counts);
    let bits = 0;
    for (let b = 0; b < 256; b++) bits += counts[b]! * lengths[b]!;
    const size = HEAD + Math.ceil(bits / 8);
    if (size >= s.length) return undefined;
    const out = new Uint8Array(size);
    for (let b = 0; b < 256; b++) out[b >> 1] = out[b >> 1]! | (lengths[b]! << ((b & 1) * 4));
    const codes = codesOf(lengths);
    // One lookup a byte: its code | its length << 16.
    const entry = new Uint32Array(256);
    for (let b = 0; b < 256; b++) entry[b] = codes[b]! | (lengths[b]! << 16);
    let acc = 0;
    let n = 0;
    let o = HEAD;
    for (let i = 0; i < s.length; i++) {
      const e = entry[s[i]!]!;
      acc |= (e & 0xffff) << n;
      n += e >>> 16;
      if (n >= 16) {
        out[o++] = acc;
        out[o++] = acc >>> 8;
        acc >>>= 16;
        n -= 16;
      }
    }
    for (; n > 0; n -= 8, acc >>>= 8) out[o++] = acc;
    return out;
  }

  /**
   * The decoding table of a stream's lengths: per 11-bit window, up to 4 bytes whose codes fit in
   * it, their total length, their count. A window no code starts (lengths that do not add up, as in
   * a corrupt stream) decodes to one 0 byte of 1 bit: wrong bytes, caught by the frame's crc32.
   */
  const tableOf = (lengths: Uint8Array) => {
    const one = new Uint16Array(TABLE); // byte | length << 8 per window, for the first code in it
    const codes = codesOf(lengths);
    for (let s = 0; s < 256; s++) {
      const len = lengths[s]!;
      if (len) for (let i = codes[s]!; i < TABLE; i += 1 << len) one[i] = s | (len << 8);
    }
    const table = new Uint32Array(2 * TABLE);
    for (let w = 0; w < TABLE; w++) {
      let x = w;
      let left = MAX_BITS;
      let bytes = 0;
      let count = 0;
      while (count < 4) {
        const e = one[x]!;
        const len = e >> 8;
        if (len === 0 || len > left) break;
        bytes |= (e & 0xff) << (8 * count++);
        x >>= len;
        left -= len;
      }
      table[2 * w] = bytes;
      table[2 * w + 1] = count ? MAX_BITS - left + (count << 8) : 1 + (1 << 8);
    }
    return table;
  };

  /** `want` bytes decoded from a coded stream; throws on one that is cut short. */
  function decode(body: Uint8Array, want: number): Uint8Array {
    if (body.length < HEAD) throw new Error("code lengths cut short");
    const lengths = new Uint8Array(256);
    for (let b = 0; b < 256; b++) lengths[b] = (body[b >> 1]! >> ((b & 1) * 4)) & 15;
    if (lengths.some((l) => l > MAX_BITS)) throw new Error("code length over 11 bits");
    const table = tableOf(lengths);
    const bits = body.subarray(HEAD);
    const fast = kernels?.huffman(bits, table, want);
    if (fast) return fast;
    const out = new Uint8Array(want + 4);
    let acc = 0;
    let n = 0;
    let i = 0;
    for (let o = 0; o < want; ) {
      while (n <= 24) {
        acc |= (bits[i++] ?? 0) << n;
        n += 8;
      }
      const w = 2 * (acc & (TABLE - 1));
      const bytes = table[w]!;
      const count = table[w + 1]! >> 8;
      for (let k = 0; k < count; k++) out[o + k] = bytes >>> (8 * k);
      o += count;
      const len = table[w + 1]! & 0xff;
      acc >>>= len;
      n -= len;
    }
    return out.subarray(0, want);
  }

  return { encode, decode };
}

export type Huffman = ReturnType<typeof makeHuffman>;
