/**
 * cake's units (src/format/plan.ts: a tensor of its own, or a pack of small ones) for a generated
 * repo on disk or for a Llama shape on paper, and what speculation would sample in them
 * (src/model/speculate.ts): the windows a model of a real size costs, computed without its bytes.
 */
import { createHash } from "node:crypto";
import { open, readdir, stat } from "node:fs/promises";
import path from "node:path";
import { encodeHeader, tensorByteSize, type TensorInfo } from "../../src/format/safetensors.js";
import { planUnits, sortFiles, type ModelFile, type Unit } from "../../src/format/plan.js";
import { guessWindows, MIN_GUESS } from "../../src/model/speculate.js";
import { splitEvenly } from "../../test/fixtures/models.js";
import { llamaTensorsOf, readHeaderOf, shardName, type LlamaShape } from "./models.js";

/** The plan of a repo on disk: its files, safetensors headers read. */
export async function planOfDir(dir: string): Promise<Unit[]> {
  const files: ModelFile[] = [];
  for (const f of await readdir(dir)) {
    const p = path.join(dir, f);
    const size = (await stat(p)).size;
    files.push(f.endsWith(".safetensors") ? { path: f, size, safetensors: { headerBytes: Buffer.alloc(0), header: await readHeaderOf(p) } } : { path: f, size });
  }
  return planUnits(sortFiles(files)).units;
}

/** The plan of a Llama repo of `shape` in `shards` files (as models.ts lays them out), no bytes written. */
export function planOfShape(shape: LlamaShape, shards: number): Unit[] {
  const groups = splitEvenly(llamaTensorsOf(shape), shards);
  const files = groups.map((g, i): ModelFile => {
    const byName = new Map(g.map((t) => [t.name, t]));
    let at = 0;
    const tensors: TensorInfo[] = encodeHeader(g).order.map((name) => {
      const t = byName.get(name)!;
      const size = tensorByteSize(t.dtype, t.shape, "<bench>", name);
      return { name, dtype: t.dtype, shape: t.shape, begin: at, end: (at += size) };
    });
    const header = { headerLength: 0, dataStart: 0, fileSize: at, metadata: undefined, tensors };
    return { path: shardName(i, groups.length), size: at, safetensors: { headerBytes: Buffer.alloc(0), header } };
  });
  return planUnits(sortFiles(files)).units;
}

/** Units speculation samples (tensors and packs of at least MIN_GUESS), and their windows. */
export function windowsOf(units: Unit[]): { units: number; windows: number } {
  const sampled = units.filter((u) => u.kind !== "file" && u.end - u.begin >= MIN_GUESS);
  const windows = sampled.reduce((n, u) => n + u.tensors.reduce((k, t) => k + guessWindows(t.end - t.begin, t.name).length, 0), 0);
  return { units: sampled.length, windows };
}

async function rangeHash(file: string, begin: number, end: number): Promise<string> {
  const fh = await open(file, "r");
  try {
    const h = createHash("sha256");
    const buf = Buffer.allocUnsafe(1 << 20);
    for (let pos = begin; pos < end; ) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - pos), pos);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    return h.digest("hex");
  } finally {
    await fh.close();
  }
}

/** Bytes of the units of `b` whose bytes differ from the same range of `a` (same layout): the floor for a unit-by-unit client. */
export async function changedUnitBytes(a: string, b: string): Promise<number> {
  let n = 0;
  for (const u of await planOfDir(b)) {
    const [x, y] = await Promise.all([rangeHash(path.join(a, u.path), u.begin, u.end).catch(() => ""), rangeHash(path.join(b, u.path), u.begin, u.end)]);
    if (x !== y) n += u.end - u.begin;
  }
  return n;
}
