/**
 * The codec's two hot loops on WebAssembly: joining byte streams back into elements (SIMD byte
 * shuffles, 16 elements a step) and decoding a Huffman-coded stream (huffman.ts: one table lookup
 * yields up to 4 bytes). Measured on a 1 MiB BF16 frame of trained-like weights: the join ~0.15 ms
 * with its copies against ~0.8 ms for a word-at-a-time JS loop; the exponent stream's decoding
 * ~0.4 ms against ~1.0 ms for zlib's inflate of its Huffman-only deflate.
 *
 * The module is written out here as bytes (a few hundred, no toolchain). `makeKernels` is
 * self-contained: its source text runs in the frame workers too (parallel.ts). Where WebAssembly
 * is missing (node --jitless) it returns undefined and the callers use their JS loops.
 */

/** The little of WebAssembly used here (Node has it; the compiler's libs here do not declare it). */
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: unknown };
};

export interface Kernels {
  /**
   * Writes the first 16 × `blocks` elements of `streams` (2 or 4, each at least that long), joined,
   * to the start of `raw`; false when it cannot (no SIMD, no memory), and nothing was written.
   */
  join(streams: Uint8Array[], raw: Uint8Array, blocks: number): boolean;
  /**
   * Decodes `want` bytes from `bits` (an LSB-first bit stream) with `table` (2048 entries of two
   * u32: up to 4 symbol bytes; then bit length | count << 8); undefined when it cannot.
   */
  huffman(bits: Uint8Array, table: Uint32Array, want: number): Uint8Array | undefined;
}

export function makeKernels(): Kernels | undefined {
  const uleb = (n: number) => {
    const out: number[] = [];
    do {
      const b = n & 0x7f;
      n >>>= 7;
      out.push(n ? b | 0x80 : b);
    } while (n);
    return out;
  };
  /** A signed LEB128 immediate (i32.const, i64.const): 64 takes two bytes, one would read as -64. */
  const sleb = (n: number) => {
    const out: number[] = [];
    for (;;) {
      const b = n & 0x7f;
      n >>= 7;
      if ((n === 0 && !(b & 0x40)) || (n === -1 && b & 0x40)) return [...out, b];
      out.push(b | 0x80);
    }
  };
  const I32 = 0x7f;
  const I64 = 0x7e;
  const V128 = 0x7b;
  const get = (i: number) => [0x20, i];
  const set = (i: number) => [0x21, i];
  const i32 = (n: number) => [0x41, ...sleb(n)];
  const i64 = (n: number) => [0x42, ...sleb(n)];
  const add = 0x6a;
  const sub = 0x6b;
  const range = (from: number, n: number) => Array.from({ length: n }, (_, k) => from + k);
  /** block { loop { if (cond) break; body; continue } }: `cond` and `body` are instructions. */
  const whileNot = (cond: number[], body: number[]) => [0x02, 0x40, 0x03, 0x40, ...cond, 0x0d, 1, ...body, 0x0c, 0, 0x0b, 0x0b];

  // ---- join2(a, b, out, blocks), join4(a, b, c, d, out, blocks) ----
  const load = (i: number) => [...get(i), 0xfd, 0x00, 0, 0]; // v128.load at pointer param i
  const shuffle = (lanes: number[]) => [0xfd, 0x0d, ...lanes];
  const storeAt = (offset: number) => [0xfd, 0x0b, 0, ...uleb(offset)];
  // Bytes a0 b0 a1 b1 … from two vectors (lanes 0-15 the first, 16-31 the second); then 16-bit pairs.
  const zip8 = (half: number) => range(8 * half, 8).flatMap((k) => [k, k + 16]);
  const zip16 = (half: number) => range(4 * half, 4).flatMap((k) => [2 * k, 2 * k + 1, 2 * k + 16, 2 * k + 17]);
  /** Loop over `blocks` (param n) steps: `step`, then each pointer param i moved on by strides[i]. */
  const steps = (n: number, step: number[], strides: number[]) =>
    whileNot([...get(n), 0x45], [...step, ...strides.flatMap((by, i) => [...get(i), ...i32(by), add, ...set(i)]), ...get(n), ...i32(1), sub, ...set(n)]);
  const join2 = [0, ...steps(3, [...get(2), ...load(0), ...load(1), ...shuffle(zip8(0)), ...storeAt(0), ...get(2), ...load(0), ...load(1), ...shuffle(zip8(1)), ...storeAt(16)], [16, 16, 32]), 0x0b];
  // v128 locals 6-9: a|b and c|d zipped, low and high halves.
  const zipped = (local: number, x: number, y: number, half: number) => [...load(x), ...load(y), ...shuffle(zip8(half)), ...set(local)];
  const out4 = (offset: number, ab: number, cd: number, half: number) => [...get(4), ...get(ab), ...get(cd), ...shuffle(zip16(half)), ...storeAt(offset)];
  const step4 = [...zipped(6, 0, 1, 0), ...zipped(7, 0, 1, 1), ...zipped(8, 2, 3, 0), ...zipped(9, 2, 3, 1), ...out4(0, 6, 8, 0), ...out4(16, 6, 8, 1), ...out4(32, 7, 9, 0), ...out4(48, 7, 9, 1)];
  const join4 = [1, 4, V128, ...steps(5, step4, [16, 16, 16, 16, 64]), 0x0b];

  // ---- huffman(src, dst, dstEnd, table) -> where src got to ----
  // Locals: bits i64 (4), n i32 bits held (5), entry i64 (6), len i64 (7). Before each lookup at
  // least 32 bits are held (a code is at most 11), refilled 32 at a time; an entry stores 4 bytes
  // at dst (those past its count are overwritten next), moves dst on by its count and drops its
  // bit length. Every entry has count and length >= 1, so any input ends in want / 1 lookups.
  const SRC = 0, DST = 1, END = 2, TABLE = 3, BITS = 4, N = 5, E = 6, LEN = 7;
  const refill = [
    ...[...get(N), ...i32(32), 0x49, 0x04, 0x40], // if n < 32
    ...[...get(BITS), ...get(SRC), 0x35, 2, 0, ...get(N), 0xad, 0x86, 0x84, ...set(BITS)], // bits |= u64(load32(src)) << n
    ...[...get(SRC), ...i32(4), add, ...set(SRC), ...get(N), ...i32(32), add, ...set(N), 0x0b],
  ];
  const lookup = [
    ...[...get(TABLE), ...get(BITS), 0xa7, ...i32(2047), 0x71, ...i32(3), 0x74, add, 0x29, 3, 0, ...set(E)], // e = table[bits & 2047]
    ...[...get(DST), ...get(E), 0xa7, 0x36, 2, 0], // store32(dst, e)
    ...[...get(DST), ...get(E), ...i64(40), 0x88, 0xa7, add, ...set(DST)], // dst += e >> 40
    ...[...get(E), ...i64(32), 0x88, ...i64(255), 0x83, ...set(LEN)], // len = e >> 32 & 255
    ...[...get(BITS), ...get(LEN), 0x88, ...set(BITS), ...get(N), ...get(LEN), 0xa7, sub, ...set(N)],
  ];
  const huffman = [3, 1, I64, 1, I32, 2, I64, ...whileNot([...get(DST), ...get(END), 0x4f], [...refill, ...lookup]), ...get(SRC), 0x0b];

  const fn = (body: number[]) => [...uleb(body.length), ...body];
  const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
  const type = (params: number, results: number[]) => [0x60, params, ...Array<number>(params).fill(I32), results.length, ...results];
  const name = (s: string) => [s.length, ...Array.from(s, (c) => c.charCodeAt(0))];
  const bytes = new Uint8Array([
    ...[0, 0x61, 0x73, 0x6d, 1, 0, 0, 0],
    ...section(1, [3, ...type(4, []), ...type(6, []), ...type(4, [I32])]),
    ...section(3, [3, 0, 1, 2]),
    ...section(5, [1, 0, 1]),
    ...section(7, [4, ...name("memory"), 2, 0, ...name("join2"), 0, 0, ...name("join4"), 0, 1, ...name("huffman"), 0, 2]),
    ...section(10, [3, ...fn(join2), ...fn(join4), ...fn(huffman)]),
  ]);
  interface Exports {
    memory: { buffer: ArrayBuffer; grow(pages: number): number };
    join2(a: number, b: number, out: number, blocks: number): void;
    join4(a: number, b: number, c: number, d: number, out: number, blocks: number): void;
    huffman(src: number, dst: number, dstEnd: number, table: number): number;
  }
  let x: Exports;
  try {
    x = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports as Exports;
  } catch {
    return undefined;
  }
  /** The module's memory as bytes, at least `bytes` of it; undefined when it cannot grow so far. */
  const memory = (bytes: number) => {
    try {
      const have = x.memory.buffer.byteLength;
      if (have < bytes) x.memory.grow(Math.ceil((bytes - have) / 65536));
      return new Uint8Array(x.memory.buffer);
    } catch {
      return undefined;
    }
  };

  return {
    join(streams, raw, blocks) {
      const w = streams.length;
      const n = 16 * blocks;
      const mem = (w === 2 || w === 4) && blocks > 0 ? memory(2 * w * n) : undefined;
      if (!mem) return false;
      streams.forEach((s, k) => mem.set(s.subarray(0, n), k * n));
      const at = w * n;
      if (w === 2) x.join2(0, n, at, blocks);
      else x.join4(0, n, 2 * n, 3 * n, at, blocks);
      raw.set(mem.subarray(at, at + w * n));
      return true;
    },
    huffman(bits, table, want) {
      // [table 16 KiB][dst: want + 8][src + 16 zero bytes: reads run up to 8 past its end]
      const dst = table.byteLength;
      const src = dst + want + 8;
      const mem = memory(src + bits.length + 16);
      if (!mem) return undefined;
      new Uint32Array(mem.buffer, 0, table.length).set(table);
      mem.set(bits, src);
      mem.fill(0, src + bits.length, src + bits.length + 16);
      x.huffman(src, dst, dst + want, 0);
      return mem.slice(dst, dst + want);
    },
  };
}
