import { describe, expect, it } from "vitest";
import { DTYPE_BITS, parseSafetensors, serializeSafetensors, type TensorInput } from "../../src/format/safetensors.js";

const enc = (s: string) => Buffer.from(s, "utf8");

/** A file from a raw JSON header text and a data buffer of `dataLen` bytes. */
function raw(json: string, dataLen = 0, lenOverride?: bigint): Buffer {
  const j = enc(json);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenOverride ?? BigInt(j.length));
  return Buffer.concat([len, j, Buffer.alloc(dataLen, 7)]);
}

const bad = (bytes: Buffer, msg: RegExp) => expect(() => parseSafetensors(bytes, "m.safetensors")).toThrow(msg);

describe("safetensors reader", () => {
  it("round-trips every dtype of the spec, 0-d and empty tensors, metadata", () => {
    const tensors: TensorInput[] = Object.keys(DTYPE_BITS).map((dtype, i) => {
      const shape = DTYPE_BITS[dtype]! < 8 ? [2, 4] : [3, 2];
      const bytes = (shape[0]! * shape[1]! * DTYPE_BITS[dtype]!) / 8;
      return { name: `t${i}.${dtype}`, dtype, shape, data: Buffer.alloc(bytes, i + 1) };
    });
    tensors.push({ name: "scalar", dtype: "I64", shape: [], data: Buffer.alloc(8, 9) });
    tensors.push({ name: "empty", dtype: "F32", shape: [0, 5], data: Buffer.alloc(0) });
    const file = serializeSafetensors(tensors, { format: "pt" });
    const h = parseSafetensors(file, "all.safetensors");
    expect(h.metadata).toEqual({ format: "pt" });
    expect(h.tensors.map((t) => t.name).sort()).toEqual(tensors.map((t) => t.name).sort());
    for (const t of h.tensors) {
      const src = tensors.find((x) => x.name === t.name)!;
      expect(t.dtype).toBe(src.dtype);
      expect(t.shape).toEqual(src.shape);
      expect(Buffer.compare(file.subarray(h.dataStart + t.begin, h.dataStart + t.end), Buffer.from(src.data))).toBe(0);
    }
    expect(h.dataStart % 8).toBe(0); // the writer pads the header like the reference writer
  });

  it("rejects a header length beyond the file or above 100 MB", () => {
    bad(raw("{}", 0, 1000n), /runs past the end/);
    bad(raw("{}", 0, 100_000_001n), /above the 100 MB limit/);
    bad(raw("{}", 0, 2n ** 63n), /above the 100 MB limit/);
    bad(Buffer.alloc(5), /shorter than the 8-byte header length/);
  });

  it("rejects JSON that is not an object, and duplicate keys", () => {
    bad(raw("[1,2]  "), /does not start with '\{'/);
    bad(raw("{nope}"), /not valid JSON/);
    bad(raw('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', 2), /duplicate key "a"/);
    bad(raw('{"a":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}}', 1), /duplicate key "dtype"/);
    bad(Buffer.concat([raw("{}").subarray(0, 8), Buffer.from([0x7b, 0xff, 0x7d])].map((b, i) => (i === 0 ? Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]) : b))), /not valid UTF-8/);
  });

  it("rejects a lone surrogate escape in a key or a string, as serde_json does, and keeps a paired one", () => {
    const t = (name: string) => `{"${name}":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`;
    bad(raw(t("a\\ud800"), 1), /m\.safetensors.*lone surrogate \\ud800/);
    bad(raw(t("\\udc00b"), 1), /lone surrogate \\udc00/);
    bad(raw('{"__metadata__":{"k":"\\udbff"}}'), /lone surrogate/);
    const ok = parseSafetensors(raw(t("\\ud83d\\ude00"), 1), "m.safetensors");
    expect(ok.tensors[0]!.name).toBe("\u{1F600}");
  });

  it("rejects unknown dtypes and bad __metadata__", () => {
    bad(raw('{"w":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}', 16), /tensor "w" has unknown dtype "F128"/);
    bad(raw('{"__metadata__":{"k":1}}'), /__metadata__ value for "k" is not a string/);
    bad(raw('{"__metadata__":["x"]}'), /__metadata__ is not an object/);
  });

  it("rejects offsets that overlap, leave holes, overflow, or disagree with dtype x shape", () => {
    bad(raw('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}', 6), /tensor "b" .* overlaps/);
    bad(raw('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[6,10]}}', 10), /tensor "b" .* leaves a hole at byte 4/);
    bad(raw('{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}', 8), /tensor "a" spans 8 bytes but F32 \[4\] needs 16/);
    bad(raw('{"a":{"dtype":"U8","shape":[4],"data_offsets":[4,0]}}', 4), /end before they begin/);
    bad(raw('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,18446744073709551615]}}', 4), /bad data_offsets/);
    bad(raw('{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}', 8), /tensor "a": size overflows/);
    bad(raw('{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}', 1), /bad shape/);
  });

  it("rejects sub-byte dtypes (F4, F6) that do not fill whole bytes", () => {
    bad(raw('{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}', 2), /3 elements of F4 do not fill whole bytes/);
    bad(raw('{"a":{"dtype":"F6_E2M3","shape":[3],"data_offsets":[0,3]}}', 3), /3 elements of F6_E2M3 do not fill whole bytes/);
    // 4 x 6 bits = 3 bytes: fine
    expect(parseSafetensors(raw('{"a":{"dtype":"F6_E3M2","shape":[4],"data_offsets":[0,3]}}', 3), "x").tensors[0]!.end).toBe(3);
  });

  it("rejects a data buffer that does not end at the file's end", () => {
    bad(raw('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}', 5), /cover 4 bytes of data but the file holds 5/);
    bad(raw('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}', 3), /cover 4 bytes of data but the file holds 3/);
  });

  it("names the file and the tensor in every error", () => {
    expect(() => parseSafetensors(raw('{"w.0":{"dtype":"X","shape":[1],"data_offsets":[0,1]}}', 1), "shard-3.safetensors")).toThrow(
      /^shard-3\.safetensors: invalid safetensors: tensor "w\.0"/,
    );
  });
});
