/**
 * Reading an artifact back: the recipe and the manifest come from strangers (a registry, an
 * `oras pull` directory), so every field is checked before it is used: digests well formed, sizes
 * that add up, paths and titles that cannot escape the export directory, safetensors headers that
 * pass the strict reader.
 */
import { CakeError } from "../errors.js";
import { DIGEST_RE, MT, type ImageManifest } from "./oci.js";
import { PathSet, checkRelativePath } from "./paths.js";
import { parseStrictJson } from "./strict-json.js";
import { parseHeader, readHeaderLength } from "./safetensors.js";
import type { ModelConfig, Recipe, RecipeFile } from "./artifact.js";

const isInt = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
const HEX64 = /^[a-f0-9]{64}$/;
const HEX40 = /^[a-f0-9]{40}$/;
/** A commit's date as the config records it: UTC, to the second. */
const ISO_SECONDS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/;

function parseJson(bytes: Uint8Array, where: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = parseStrictJson(Buffer.from(bytes).toString("utf8"));
  } catch (err) {
    throw new CakeError("E_RECIPE", `${where}: not valid JSON (${(err as Error).message})`);
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new CakeError("E_RECIPE", `${where}: not a JSON object`);
  return v as Record<string, unknown>;
}

export function parseRecipe(bytes: Uint8Array, where: string): Recipe {
  const r = parseJson(bytes, where);
  const bad = (what: string): never => {
    throw new CakeError("E_RECIPE", `${where}: ${what}`);
  };
  if (r.mediaType !== MT.recipe || r.schemaVersion !== 1) bad("not a cake recipe v1");
  if (!r.blobs || typeof r.blobs !== "object" || Array.isArray(r.blobs)) bad("blobs missing");
  const blobs = r.blobs as Record<string, { size: unknown; title: unknown }>;
  const titles = new Set<string>();
  for (const [d, b] of Object.entries(blobs)) {
    if (!DIGEST_RE.test(d)) bad(`bad blob digest ${JSON.stringify(d)}`);
    if (!b || !isInt(b.size)) bad(`blob ${d} has no size`);
    checkRelativePath(b.title, `blob ${d} title`);
    if (titles.has(b.title as string)) bad(`two blobs share the title ${JSON.stringify(b.title)}`);
    titles.add(b.title as string);
  }
  if (!Array.isArray(r.files)) bad("files missing");
  const paths = new PathSet();
  for (const f of r.files as RecipeFile[]) {
    checkRelativePath(f?.path, "file path");
    const clash = paths.add(f.path);
    if (clash) bad(`files cannot all be written: ${clash}`);
    const at = `file ${f.path}`;
    if (!isInt(f.size)) bad(`${at}: bad size`);
    if (typeof f.sha256 !== "string" || !HEX64.test(f.sha256)) bad(`${at}: bad sha256`);
    if (f.gitOid !== undefined && (typeof f.gitOid !== "string" || !HEX40.test(f.gitOid))) bad(`${at}: bad gitOid`);
    if (f.lfs !== undefined && f.lfs !== true) bad(`${at}: bad lfs flag`);
    if (f.digest !== undefined) {
      if (f.header !== undefined || f.parts !== undefined) bad(`${at}: both whole and assembled`);
      if (!blobs[f.digest]) bad(`${at}: blob ${f.digest} not listed`);
      if (blobs[f.digest]!.size !== f.size) bad(`${at}: blob size differs from file size`);
      continue;
    }
    if (typeof f.header !== "string" || !Array.isArray(f.parts)) bad(`${at}: neither whole nor assembled`);
    const header = Buffer.from(f.header!, "base64");
    if (header.toString("base64") !== f.header) bad(`${at}: header is not canonical base64`);
    const n = readHeaderLength(header.subarray(0, 8), f.size, f.path);
    if (header.length !== 8 + n) bad(`${at}: header is ${header.length} bytes, its length field says ${8 + n}`);
    parseHeader(header.subarray(8), f.size, f.path);
    let total = header.length;
    for (const d of f.parts!) {
      if (typeof d !== "string" || !blobs[d]) bad(`${at}: part ${JSON.stringify(d)} not listed in blobs`);
      total += blobs[d]!.size as number;
    }
    if (total !== f.size) bad(`${at}: header and parts add up to ${total} bytes, not ${f.size}`);
  }
  return r as unknown as Recipe;
}

/**
 * A cake model config read back (from a registry, an archive, the store), checked as the recipe is:
 * the source, the layer rule, and every file and tensor (paths that cannot escape, sizes and offsets
 * that are integers, digests and hashes well formed) before anything uses them.
 */
export function parseConfig(bytes: Uint8Array, where: string): ModelConfig {
  const c = parseJson(bytes, where);
  const bad = (what: string): never => {
    throw new CakeError("E_RECIPE", `${where}: ${what}`);
  };
  if (c.mediaType !== MT.config || c.schemaVersion !== 1) bad("not a cake model config v1");
  const src = c.source as Record<string, unknown> | undefined;
  if (!src || typeof src !== "object") bad("source missing");
  if (src!.type === "hf") {
    if (typeof src!.repo !== "string" || !/^[^/\s]+\/[^/\s]+$/.test(src!.repo)) bad("source repo is not org/name");
    if (typeof src!.commit !== "string" || !HEX40.test(src!.commit)) bad("source commit is not a 40-hex sha");
    if (src!.date !== undefined && (typeof src!.date !== "string" || !ISO_SECONDS.test(src!.date))) bad("source date is not a UTC time like 2024-05-01T12:00:00Z");
  } else if (src!.type === "registry") {
    if (typeof src!.repository !== "string" || !/^[^/\s]+\/[^\s]+$/.test(src!.repository)) bad("source repository is not host/repo");
    if (typeof src!.manifest !== "string" || !DIGEST_RE.test(src!.manifest)) bad("source manifest is not a sha256 digest");
  } else if (src!.type !== "dir") bad(`unknown source type ${JSON.stringify(src!.type)}`);
  const rule = c.layerRule as Record<string, unknown> | undefined;
  if (!rule || !isInt(rule.threshold) || !isInt(rule.packFactor) || !isInt(rule.maxLayers)) bad("layerRule is not three integers");
  if (!Array.isArray(c.files)) bad("files missing");
  const seen = new Set<string>();
  for (const f of c.files as Array<Record<string, unknown>>) {
    checkRelativePath(f?.path, `${where} file path`);
    const at = `file ${String(f.path)}`;
    if (seen.has(f.path as string)) bad(`${at} listed twice`);
    seen.add(f.path as string);
    if (!isInt(f.size)) bad(`${at}: bad size`);
    if (typeof f.sha256 !== "string" || !HEX64.test(f.sha256)) bad(`${at}: bad sha256`);
    if (f.gitOid !== undefined && (typeof f.gitOid !== "string" || !HEX40.test(f.gitOid))) bad(`${at}: bad gitOid`);
    if (f.format !== "safetensors" && f.format !== "raw") bad(`${at}: unknown format ${JSON.stringify(f.format)}`);
    if (f.metadata !== undefined && (!f.metadata || typeof f.metadata !== "object" || Array.isArray(f.metadata) || !Object.values(f.metadata).every((v) => typeof v === "string"))) {
      bad(`${at}: metadata is not a map of strings`);
    }
    if (f.tensors === undefined) continue;
    if (!Array.isArray(f.tensors)) bad(`${at}: tensors is not a list`);
    for (const t of f.tensors as Array<Record<string, unknown>>) {
      const tat = `${at}: tensor ${JSON.stringify(t?.name)}`;
      if (!t || typeof t.name !== "string" || typeof t.dtype !== "string") bad(`${tat}: no name or dtype`);
      if (!Array.isArray(t.shape) || !t.shape.every(isInt)) bad(`${tat}: bad shape`);
      if (typeof t.digest !== "string" || !DIGEST_RE.test(t.digest)) bad(`${tat}: bad digest`);
      if (!isInt(t.offset) || !isInt(t.size)) bad(`${tat}: bad offset or size`);
      if (t.sha256 !== undefined && (typeof t.sha256 !== "string" || !HEX64.test(t.sha256))) bad(`${tat}: sha256 is not 64 lowercase hex digits`);
    }
  }
  return c as unknown as ModelConfig;
}

/** Checks an image manifest's shape (not only cake's): descriptors well formed, digests unique. */
export function parseManifest(bytes: Uint8Array, where: string): ImageManifest {
  const m = parseJson(bytes, where);
  const bad = (what: string): never => {
    throw new CakeError("E_RECIPE", `${where}: ${what}`);
  };
  if (m.schemaVersion !== 2) bad("schemaVersion is not 2");
  if (m.mediaType !== undefined && m.mediaType !== MT.manifest && m.mediaType !== MT.dockerManifest) {
    bad(`not an image manifest (mediaType ${String(m.mediaType)})`);
  }
  const desc = (d: unknown, what: string) => {
    const x = d as Record<string, unknown>;
    if (!x || typeof x.mediaType !== "string" || typeof x.digest !== "string" || !DIGEST_RE.test(x.digest) || !isInt(x.size)) {
      bad(`${what} is not a valid descriptor`);
    }
  };
  desc(m.config, "config");
  if (!Array.isArray(m.layers)) bad("layers missing");
  const seen = new Set<string>();
  (m.layers as unknown[]).forEach((l, i) => {
    desc(l, `layer ${i}`);
    const d = (l as { digest: string }).digest;
    if (seen.has(d)) bad(`layer ${d} appears twice`);
    seen.add(d);
  });
  return m as unknown as ImageManifest;
}

/** The recipe's descriptor in a cake manifest. */
export function recipeLayer(m: ImageManifest, where: string) {
  const l = m.layers.find((x) => x.mediaType === MT.recipe);
  if (!l || m.artifactType !== MT.artifact) throw new CakeError("E_RECIPE", `${where}: not a cake model artifact (no recipe layer)`);
  return l;
}
