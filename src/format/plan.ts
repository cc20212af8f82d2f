/**
 * How a model's files are cut into blobs ("units"): the layer rule of docs/format.md.
 *
 * - A whole non-safetensors file is one unit.
 * - In a safetensors file, tensors are taken in the order their bytes lie. A tensor of at least
 *   `threshold` bytes is a unit of its own (per-tensor dedup where the bytes are). Runs of adjacent
 *   smaller tensors are packed, greedily, into units of at most 16 x threshold bytes; a pack is a
 *   contiguous byte range of the file, so it is also one Range request.
 * - The threshold starts at 1 MiB and doubles until the artifact has at most MAX_LAYERS layers, so
 *   a 30,000-tensor mixture-of-experts model still fits registries' manifest and layer limits.
 *
 * The rule reads only sizes from the headers, so the cut is known before a byte of data is fetched,
 * and the same model always gets the same cut.
 */
import type { SafetensorsHeader, TensorInfo } from "./safetensors.js";

export const START_THRESHOLD = 1 << 20;
export const PACK_FACTOR = 16;
/** Layer cap: ECR has been reported to refuse ~500+ layers; the 4 MiB manifest cap allows ~12,000. */
export const MAX_LAYERS = 500;

export interface ModelFile {
  path: string;
  size: number;
  /** sha256 of the whole file (the Hub's LFS oid, or computed); hex. */
  sha256?: string;
  /** git blob oid (sha1 hex), when the source has one. */
  gitOid?: string;
  /** Stored with Git LFS on the Hub (its ETag is then the sha256, else the git oid). */
  lfs?: boolean;
  safetensors?: { headerBytes: Buffer; header: SafetensorsHeader };
}

export interface Unit {
  /** The file the bytes come from. */
  path: string;
  /** Absolute byte range in that file, [begin, end). */
  begin: number;
  end: number;
  kind: "file" | "tensor" | "pack";
  /** Tensors inside (offsets relative to the data buffer), in file order; empty for whole files. */
  tensors: TensorInfo[];
}

export interface Plan {
  threshold: number;
  units: Unit[];
  /** Layers the artifact will have at most: units + recipe (identical bytes collapse further). */
  layerCount: number;
}

function cut(files: readonly ModelFile[], threshold: number): Unit[] {
  const packMax = threshold * PACK_FACTOR;
  const units: Unit[] = [];
  for (const f of files) {
    if (!f.safetensors) {
      units.push({ path: f.path, begin: 0, end: f.size, kind: "file", tensors: [] });
      continue;
    }
    const base = f.safetensors.header.dataStart;
    let pack: TensorInfo[] = [];
    const flush = () => {
      if (pack.length === 0) return;
      const begin = base + pack[0]!.begin;
      const end = base + pack[pack.length - 1]!.end;
      // A run of empty tensors has no bytes: no blob at all.
      if (end > begin) units.push({ path: f.path, begin, end, kind: "pack", tensors: pack });
      pack = [];
    };
    for (const t of f.safetensors.header.tensors) {
      const size = t.end - t.begin;
      if (size >= threshold) {
        flush();
        units.push({ path: f.path, begin: base + t.begin, end: base + t.end, kind: "tensor", tensors: [t] });
        continue;
      }
      const packBytes = pack.length ? pack[pack.length - 1]!.end - pack[0]!.begin : 0;
      if (pack.length && packBytes + size > packMax) flush();
      pack.push(t);
    }
    flush();
  }
  return units;
}

/** Files must already be sorted by path (see sortFiles). */
export function planUnits(files: readonly ModelFile[], maxLayers = MAX_LAYERS): Plan {
  const largest = Math.max(1, ...files.map((f) => f.size));
  let threshold = START_THRESHOLD;
  for (;;) {
    const units = cut(files, threshold);
    const layerCount = units.length + 1;
    if (layerCount <= maxLayers || threshold > largest) return { threshold, units, layerCount };
    threshold *= 2;
  }
}

/** The one order of files everywhere in the format: by path, compared as UTF-8 bytes. */
export function sortFiles<T extends { path: string }>(files: readonly T[]): T[] {
  return [...files].sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
}
