/**
 * The OCI content graph (oras-go content/graph.go `Successors`): what a manifest or an index points
 * at, read strictly from its bytes, and a walk over everything a descriptor reaches. One reading for
 * gc, save, load, pull, push and the proxy, so none of them can see less of a model than another.
 *
 * - an image manifest (https://github.com/opencontainers/image-spec/blob/main/manifest.md): its
 *   config, its layers, and its `subject`;
 * - an image index (https://github.com/opencontainers/image-spec/blob/main/image-index.md): its
 *   manifests, and its `subject`;
 * - any other media type: nothing (a leaf).
 * Bytes whose descriptor says manifest or index and that do not parse as one are an error
 * (E_RECIPE, naming the digest): skipping them would make everything under them look unused.
 */
import { CakeError } from "../errors.js";
import { DIGEST_RE, MT, type Descriptor } from "./oci.js";
import { parseStrictJson } from "./strict-json.js";

/** How deep indexes (and subjects) may nest under a root. */
export const MAX_GRAPH_DEPTH = 4;

export const isManifestType = (mediaType: string): boolean => mediaType === MT.manifest || mediaType === MT.dockerManifest;
export const isIndexType = (mediaType: string): boolean => mediaType === MT.index || mediaType === MT.dockerList;
/** Whether a descriptor's bytes must be read to know what it reaches (a manifest or an index). */
export const hasSuccessors = (d: Descriptor): boolean => isManifestType(d.mediaType) || isIndexType(d.mediaType);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** How errors name a manifest or an index: "index sha256:…". */
export const nameOf = (d: Descriptor): string => `${isIndexType(d.mediaType) ? "index" : "manifest"} ${d.digest}`;

/** A descriptor from untrusted JSON, checked enough to use its media type, digest and size. */
export function descriptorOf(v: unknown, where: string): Descriptor {
  if (
    !isObject(v) ||
    typeof v.mediaType !== "string" ||
    typeof v.digest !== "string" ||
    !DIGEST_RE.test(v.digest) ||
    typeof v.size !== "number" ||
    !Number.isSafeInteger(v.size) ||
    v.size < 0 ||
    (v.artifactType !== undefined && typeof v.artifactType !== "string") ||
    (v.annotations !== undefined && !isObject(v.annotations))
  ) {
    throw new CakeError("E_RECIPE", `${where}: not a descriptor with a mediaType, a sha256 digest and a size`);
  }
  return v as unknown as Descriptor;
}

/**
 * What `desc` points at, read from its bytes `bytes`: config, layers and subject of a manifest;
 * manifests and subject of an index; nothing for any other media type. `where` names it in errors.
 */
export function successors(desc: Descriptor, bytes: Buffer, where = nameOf(desc)): Descriptor[] {
  const index = isIndexType(desc.mediaType);
  if (!index && !isManifestType(desc.mediaType)) return [];
  let doc: unknown;
  try {
    doc = parseStrictJson(bytes.toString("utf8"));
  } catch (err) {
    throw new CakeError("E_RECIPE", `${where}: not valid JSON (${(err as Error).message})`, { cause: err });
  }
  if (!isObject(doc)) throw new CakeError("E_RECIPE", `${where}: not a JSON object`);
  if (doc.mediaType !== undefined && (typeof doc.mediaType !== "string" || (index ? !isIndexType(doc.mediaType) : !isManifestType(doc.mediaType)))) {
    throw new CakeError("E_RECIPE", `${where}: its mediaType is ${JSON.stringify(doc.mediaType)}, not an image ${index ? "index" : "manifest"} as its descriptor says`);
  }
  const list = (v: unknown, what: string) => {
    if (!Array.isArray(v)) throw new CakeError("E_RECIPE", `${where}: ${what} is not an array`);
    return v.map((d, i) => descriptorOf(d, `${where} ${what}[${i}]`));
  };
  const subject = doc.subject === undefined ? [] : [descriptorOf(doc.subject, `${where} subject`)];
  if (index) return [...list(doc.manifests, "manifests"), ...subject];
  return [descriptorOf(doc.config, `${where} config`), ...list(doc.layers, "layers"), ...subject];
}

export interface WalkOptions {
  /** Digests already visited (shared across walks: each digest once in all). */
  seen?: Set<string>;
  /** What the walk calls a root's parent in `visit` (a reference, a file). */
  parent?: string;
  /** How a node's bytes turn into what it points at: `successors` unless given. */
  successorsOf?: Successors;
}

export type Successors = (desc: Descriptor, bytes: Buffer, where: string) => Descriptor[] | Promise<Descriptor[]>;

/**
 * Visits every node `root` reaches, each digest once: a node first, then what it points at (a
 * manifest's or index's successors, depth first). `read` gives the bytes of a manifest or index,
 * after `visit` has seen it; a node nested deeper than MAX_GRAPH_DEPTH is an error.
 */
export async function walkGraph(
  root: Descriptor,
  read: (d: Descriptor) => Promise<Buffer>,
  visit: (d: Descriptor, parent: string) => void | Promise<void>,
  opts: WalkOptions = {},
): Promise<void> {
  const seen = opts.seen ?? new Set<string>();
  const successorsOf = opts.successorsOf ?? successors;
  const step = async (desc: Descriptor, parent: string, depth: number): Promise<void> => {
    if (seen.has(desc.digest)) return;
    seen.add(desc.digest);
    await visit(desc, parent);
    if (!hasSuccessors(desc)) return;
    if (depth > MAX_GRAPH_DEPTH) throw new CakeError("E_RECIPE", `${parent}: ${desc.digest} is nested more than ${MAX_GRAPH_DEPTH} deep`);
    const where = nameOf(desc);
    for (const next of await successorsOf(desc, await read(desc), where)) await step(next, where, depth + 1);
  };
  await step(root, opts.parent ?? "", 0);
}

/** A graph read whole: its manifests and indexes with their bytes (parents before children), and its other blobs. */
export interface GraphContent {
  documents: { desc: Descriptor; bytes: Buffer }[];
  blobs: Descriptor[];
}

/** Everything `root` reaches, for a copy (oras-go copy.go): blobs to move, then documents children first. */
export async function collectGraph(root: Descriptor, read: (d: Descriptor) => Promise<Buffer>, parent: string): Promise<GraphContent> {
  const out: GraphContent = { documents: [], blobs: [] };
  await walkGraph(
    root,
    async (desc) => {
      const bytes = await read(desc);
      out.documents.push({ desc, bytes });
      return bytes;
    },
    (d) => {
      if (!hasSuccessors(d)) out.blobs.push(d);
    },
    { parent },
  );
  return out;
}
