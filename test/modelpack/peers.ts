/**
 * Other tools' model artifacts, made the way those tools make them, for the ModelPack pull tests:
 * `oras push` of a folder as a CNCF ModelPack artifact (one raw layer per file, each with
 * org.cncf.model.filepath), and hand-made manifests (tar layers, Docker Model Runner, KitOps, lies)
 * pushed with `oras blob push` / `oras manifest push`.
 */
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { listAll } from "../fixtures/models.js";
import { requireTool } from "../registry/harness.js";

export const MP_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json";
export const MP_CONFIG = "application/vnd.cncf.model.config.v1+json";
export const MP_WEIGHT = "application/vnd.cncf.model.weight.v1.raw";

const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** The ModelPack layer type of a file, as modctl picks it. */
function mediaTypeOf(rel: string): string {
  if (/\.(safetensors|gguf|bin)$/.test(rel)) return MP_WEIGHT;
  if (/readme|license/i.test(rel)) return "application/vnd.cncf.model.doc.v1.raw";
  return "application/vnd.cncf.model.weight.config.v1.raw";
}

function oras(args: string[], cwd?: string): string {
  return execFileSync(requireTool("oras"), args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] }).trim();
}

/** `oras push` of every file of `dir` as a ModelPack artifact at `ref` (plain http); returns the manifest digest. */
export async function orasPushModelPack(dir: string, ref: string, work: string): Promise<void> {
  const files = await listAll(dir);
  const annotations: Record<string, Record<string, string>> = {};
  for (const f of files) annotations[f] = { "org.cncf.model.filepath": f };
  await fs.mkdir(work, { recursive: true });
  const ann = path.join(work, `ann-${path.basename(dir)}.json`);
  const cfg = path.join(work, `cfg-${path.basename(dir)}.json`);
  await fs.writeFile(ann, JSON.stringify(annotations));
  await fs.writeFile(cfg, JSON.stringify({ descriptor: { name: path.basename(dir) }, config: { format: "safetensors" }, modelfs: { type: "layers", diffIds: [] } }));
  oras(["push", "--plain-http", "--artifact-type", MP_ARTIFACT, "--config", `${cfg}:${MP_CONFIG}`, "--annotation-file", ann, ref, ...files.map((f) => `${f}:${mediaTypeOf(f)}`)], dir);
}

export interface HandLayer {
  mediaType: string;
  bytes: Buffer;
  annotations?: Record<string, string>;
  /** Say this size in the manifest instead of the real one (a lying descriptor). */
  claimSize?: number;
}

/**
 * A manifest made by hand, its blobs pushed with `oras blob push` and itself with `oras manifest
 * push` (distribution checks that the blobs exist, not what the manifest says of them).
 */
export function pushHandMade(registry: string, repo: string, tag: string, config: { mediaType: string; bytes: Buffer }, layers: HandLayer[], artifactType?: string): string {
  const blob = (b: Buffer) => {
    const d = sha256(b);
    const tmp = path.join(process.env.TMPDIR ?? "/tmp", `cake-mp-blob-${d.slice(7, 23)}-${process.pid}`);
    writeFileSync(tmp, b);
    oras(["blob", "push", "--plain-http", `${registry}/${repo}@${d}`, tmp]);
    rmSync(tmp);
    return d;
  };
  const manifest = {
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    ...(artifactType ? { artifactType } : {}),
    config: { mediaType: config.mediaType, digest: blob(config.bytes), size: config.bytes.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: blob(l.bytes), size: l.claimSize ?? l.bytes.length, ...(l.annotations ? { annotations: l.annotations } : {}) })),
  };
  const bytes = Buffer.from(JSON.stringify(manifest));
  const tmp = path.join(process.env.TMPDIR ?? "/tmp", `cake-mp-manifest-${process.pid}-${Date.now()}.json`);
  writeFileSync(tmp, bytes);
  oras(["manifest", "push", "--plain-http", "--media-type", "application/vnd.oci.image.manifest.v1+json", `${registry}/${repo}:${tag}`, tmp]);
  rmSync(tmp);
  return sha256(bytes);
}

export interface TarEntry {
  name: string;
  data?: Buffer;
  /** ustar type flag: "0" file (default), "5" folder, "2" symlink, "1" hard link, "3" char device. */
  type?: string;
  linkname?: string;
}

/** A ustar archive of `entries` as written (no checks: the tests make hostile ones too). */
export function makeTar(entries: TarEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const e of entries) {
    const data = e.data ?? Buffer.alloc(0);
    const h = Buffer.alloc(512);
    h.write(e.name, 0, 100, "utf8");
    h.write("0000644\0", 100, "ascii");
    h.write("0000000\0", 108, "ascii");
    h.write("0000000\0", 116, "ascii");
    h.write(`${data.length.toString(8).padStart(11, "0")}\0`, 124, "ascii");
    h.write("00000000000\0", 136, "ascii");
    h.write("        ", 148, "ascii");
    h.write(e.type ?? "0", 156, "ascii");
    if (e.linkname) h.write(e.linkname, 157, 100, "utf8");
    h.write("ustar\0", 257, "ascii");
    h.write("00", 263, "ascii");
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "ascii");
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}
