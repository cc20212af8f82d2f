/**
 * What ModelPack's config says about the weights (model-spec docs/config.md, `paramSize` and
 * `precision`), read from the safetensors headers the cake config records: no tensor byte is needed.
 */
import type { ConfigTensor } from "../format/artifact.js";

/** safetensors dtypes -> ModelPack's precision names; a dtype the spec does not list is written in lower case. */
const PRECISION: Record<string, string> = {
  F64: "float64",
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
  F8_E4M3: "float8_e4m3",
  F8_E5M2: "float8_e5m2",
  C64: "complex64",
  I64: "int64",
  I32: "int32",
  I16: "int16",
  I8: "int8",
  U64: "uint64",
  U32: "uint32",
  U16: "uint16",
  U8: "uint8",
  BOOL: "bool",
};

/**
 * The precisions of the weights, comma-separated (the spec's form for several), the one holding the
 * most bytes first (ties by name): `bfloat16,float32` for bf16 matrices with fp32 norms.
 */
export function precisionOf(tensors: readonly Pick<ConfigTensor, "dtype" | "size">[]): string | undefined {
  const bytes = new Map<string, number>();
  for (const t of tensors) {
    const p = PRECISION[t.dtype] ?? t.dtype.toLowerCase();
    bytes.set(p, (bytes.get(p) ?? 0) + t.size);
  }
  const order = [...bytes].sort(([a, x], [b, y]) => y - x || (a < b ? -1 : a > b ? 1 : 0));
  return order.length ? order.map(([p]) => p).join(",") : undefined;
}

const SCALES: [number, string][] = [
  [1e15, "Q"],
  [1e12, "T"],
  [1e9, "B"],
  [1e6, "M"],
  [1e3, "K"],
];

/**
 * The parameter count as `<count><scale-prefix>`, at most one digit after the point (`6.7B`, `100M`,
 * `2.1M`); a model under a thousand parameters is counted in K (`0.5K`). Undefined
 * under 50 parameters (it would be `0.0K`).
 */
export function paramSize(tensors: readonly Pick<ConfigTensor, "shape">[]): string | undefined {
  const n = tensors.reduce((sum, t) => sum + t.shape.reduce((p, d) => p * d, 1), 0);
  if (n === 0) return undefined;
  const [scale, prefix] = SCALES.find(([s]) => n >= s) ?? SCALES[SCALES.length - 1]!;
  const count = Math.round((n / scale) * 10) / 10;
  if (count === 0) return undefined; // under 50 parameters: no size the spec's form can write
  return `${Number.isInteger(count) ? count.toFixed(0) : count.toFixed(1)}${prefix}`;
}
