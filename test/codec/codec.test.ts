/**
 * The compressed form round-trips every dtype (odd sizes, empty blobs, packs), reads any range
 * across frame edges, is smaller than raw for trained-like weights, and refuses a corrupt blob with
 * an error naming it.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import zlib from "node:zlib";
import { CompressedFile, encodeFile } from "../../src/codec/index.js";
import { makeHuffman } from "../../src/codec/huffman.js";
import { makeKernels } from "../../src/codec/kernels.js";
import { makeFrameCodec } from "../../src/codec/frame.js";
import { normalBytes } from "../fixtures/weights.js";

let tmp: string;
beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-codec-"));
});
afterAll(() => fs.rm(tmp, { recursive: true, force: true }));

let n = 0;
/** Encodes `raw` as `dtype` with `frameSize`; returns the compressed file's path and size. */
async function encode(raw: Buffer, dtype: string | undefined, frameSize?: number) {
  const src = path.join(tmp, `raw-${n}`);
  const dst = path.join(tmp, `z-${n++}`);
  await fs.writeFile(src, raw);
  const out = await fs.open(dst, "wx");
  try {
    const r = await encodeFile(src, raw.length, dtype, out, frameSize);
    expect(r.storedSize).toBe((await out.stat()).size);
    return { file: dst, stored: r.storedSize };
  } finally {
    await out.close();
  }
}

async function decode(file: string, start?: number, end?: number): Promise<Buffer> {
  const z = await CompressedFile.open(file, "blob sha256:test");
  try {
    const parts: Buffer[] = [];
    for await (const b of z.read(start, end)) parts.push(Buffer.from(b));
    return Buffer.concat(parts);
  } finally {
    await z.close();
  }
}

describe("round trip", () => {
  const cases: [string, string | undefined, Buffer][] = [
    ["BF16 weights", "BF16", normalBytes("BF16", 300_001)],
    ["F16 weights", "F16", normalBytes("F16", 70_000)],
    ["F32 weights", "F32", normalBytes("F32", 200_003)],
    ["F32 of an odd byte count (a length no element divides)", "F32", normalBytes("F32", 5000).subarray(0, 19_999)],
    ["I8", "I8", Buffer.from(Array.from({ length: 100_000 }, (_, i) => (i * 7) % 13))],
    ["F8_E4M3 random", "F8_E4M3", randomBytes(70_001)],
    ["I64", "I64", Buffer.from(new BigInt64Array(Array.from({ length: 9000 }, (_, i) => BigInt(i))).buffer)],
    ["an empty tensor", "BF16", Buffer.alloc(0)],
    ["one byte", "BF16", Buffer.from([7])],
    ["a pack of mixed tensors", undefined, Buffer.concat([normalBytes("F32", 3000), normalBytes("BF16", 5001), Buffer.from("x")])],
    ["a whole text file", undefined, Buffer.from(JSON.stringify({ vocab: Array.from({ length: 20000 }, (_, i) => `tok${i}`) }))],
    ["an unknown dtype", "F4", randomBytes(1000)],
  ];
  it.each(cases)("%s", async (_name, dtype, raw) => {
    for (const frame of [undefined, 4096]) {
      const { file } = await encode(raw, dtype, frame);
      expect((await decode(file)).equals(raw)).toBe(true);
    }
  });
});

describe("one frame", () => {
  // Elements are split a word at a time where the bytes are aligned, a byte at a time for the rest.
  // With the WebAssembly kernels (SIMD join, table decoding) and without them (the JS loops, as under --jitless).
  const codecs = [["kernels", makeKernels()], ["JS", undefined]] as const;
  it.each(codecs.flatMap(([name, k]) => [2, 4].map((width) => [width, name, k] as const)))("width %i, %s: any length, at any offset of its buffer, decodes to its bytes", (width, _name, kernels) => {
    expect(makeKernels()).toBeDefined();
    const codec = makeFrameCodec(zlib, kernels, makeHuffman(kernels));
    const bytes = normalBytes(width === 2 ? "BF16" : "F32", 4099);
    for (const [offset, length] of [[0, bytes.length - 1], [1, 8001], [3, 4097], [2, 6], [0, 1000]]) {
      const raw = new Uint8Array(bytes.buffer, bytes.byteOffset + offset!, length);
      const frame = codec.encode({ raw, width });
      expect(Buffer.from(codec.decode(frame, length!, width)).equals(raw)).toBe(true);
    }
  });
});

describe("frames written before the Huffman code", () => {
  it("a split frame whose exponent stream is raw deflate (method 1, the first stores) still decodes", () => {
    const raw = normalBytes("BF16", 3001);
    const lo = raw.filter((_, i) => i % 2 === 0);
    const hi = zlib.deflateRawSync(raw.filter((_, i) => i % 2 === 1), { strategy: zlib.constants.Z_HUFFMAN_ONLY });
    const head = Buffer.alloc(9 + 10);
    head.writeUInt32LE(raw.length, 0);
    head.writeUInt32LE(zlib.crc32(raw), 4);
    head[8] = 2;
    head[9] = 0;
    head.writeUInt32LE(lo.length, 10);
    head[14] = 1;
    head.writeUInt32LE(hi.length, 15);
    const kernels = makeKernels();
    const codec = makeFrameCodec(zlib, kernels, makeHuffman(kernels));
    expect(Buffer.from(codec.decode(Buffer.concat([head, lo, hi]), raw.length, 2)).equals(raw)).toBe(true);
  });
});

describe("Huffman code", () => {
  const kernels = makeKernels();
  const codes = [makeHuffman(kernels), makeHuffman(undefined)];
  const roundTrip = (s: Uint8Array) => {
    for (const h of codes) {
      const body = h.encode(s);
      if (body) expect(Buffer.from(h.decode(body, s.length)).equals(s)).toBe(true);
    }
    return codes[0]!.encode(s);
  };
  it("codes skewed, flat, one-byte and every-byte streams, its codes never longer than 11 bits", () => {
    // Counts falling by half from byte to byte: plain Huffman would give the rarest codes of ~40 bits.
    const skewed = Uint8Array.from({ length: 1 << 20 }, (_, i) => Math.min(39, Math.clz32(i ^ 0xfffff) + (i % 3)) * 3);
    const coded = roundTrip(skewed)!;
    expect(coded.length).toBeLessThan(skewed.length / 3);
    for (let b = 0; b < 256; b++) expect((coded[b >> 1]! >> ((b & 1) * 4)) & 15).toBeLessThanOrEqual(11);
    expect(roundTrip(new Uint8Array(5000).fill(7))!.length).toBeLessThan(1000);
    expect(roundTrip(Uint8Array.from({ length: 256 * 40 }, (_, i) => (i * 7) % 256))).toBeUndefined();
    roundTrip(Uint8Array.from({ length: 256 * 64 }, (_, i) => (i % 256 < 200 ? 5 : i % 256)));
    roundTrip(Uint8Array.of(1, 2));
  });
  it("a corrupt stream gives wrong bytes or an error, never a hang or bytes past the length asked", () => {
    const s = normalBytes("BF16", 50_000).filter((_, i) => i % 2 === 1);
    const body = codes[0]!.encode(s)!;
    for (const h of codes) {
      for (const at of [0, 3, 64, 127, 128, 500, body.length - 1]) {
        const bad = Uint8Array.from(body);
        bad[at] = bad[at]! ^ 0x5a;
        let out: Uint8Array | undefined;
        try {
          out = h.decode(bad, s.length);
        } catch {
          continue;
        }
        expect(out.length).toBe(s.length);
      }
      expect(() => h.decode(body.subarray(0, 100), s.length)).toThrow(/cut short/);
    }
  });
});

describe("size", () => {
  it("BF16 weights take at most 70 % and F32 at most 87 % of their raw bytes; random bytes do not grow past a frame header per frame", async () => {
    const bf16 = normalBytes("BF16", 1 << 20);
    const f32 = normalBytes("F32", 1 << 19);
    const rnd = randomBytes(1 << 21);
    expect((await encode(bf16, "BF16")).stored / bf16.length).toBeLessThanOrEqual(0.7);
    expect((await encode(f32, "F32")).stored / f32.length).toBeLessThanOrEqual(0.87);
    expect((await encode(rnd, "BF16")).stored).toBeLessThan(rnd.length + 200);
  });
});

describe("ranges", () => {
  it("any range, across frame edges, reads the raw bytes from the frame that holds its start", async () => {
    const raw = normalBytes("BF16", 20_000);
    const { file } = await encode(raw, "BF16", 4096);
    for (const [s, e] of [
      [0, 1],
      [4095, 4097],
      [4096, 8192],
      [100, 39_999],
      [12_287, 12_289],
      [39_999, 40_000],
      [5000, 5000],
    ] as const) {
      expect((await decode(file, s, e)).equals(raw.subarray(s, e)), `${s}-${e}`).toBe(true);
    }
  });
});

describe("corruption", () => {
  it("a flipped byte anywhere is an E_DIGEST naming the blob, never other bytes", async () => {
    const raw = normalBytes("BF16", 10_000);
    const { file, stored } = await encode(raw, "BF16", 4096);
    const good = await fs.readFile(file);
    // The header, a frame's stream table, Huffman-coded bytes, stored bytes, the index, the trailer.
    for (const at of [5, 50, 60, 200, 2100, stored - 30, stored - 2]) {
      const bad = Buffer.from(good);
      bad[at]! ^= 0x10;
      await fs.writeFile(file, bad);
      await expect(decode(file), `byte ${at}`).rejects.toMatchObject({ code: "E_DIGEST", message: expect.stringMatching(/^blob sha256:test is corrupt \(.+\): delete that file/) });
    }
  });
});
