/** `cake load`: an OCI archive into the store, every blob verified, tags last (see archive.ts). */
import fs from "node:fs";
import fsp from "node:fs/promises";
import path from "node:path";
import type tar from "tar-stream";
import { CakeError, isCakeError } from "../errors.js";
import { successors, walkGraph } from "../format/graph.js";
import { ANN, MANIFEST_LIMIT, MT, type Descriptor } from "../format/oci.js";
import { parseStrictJson } from "../format/strict-json.js";
import { isUnverified } from "./catalog.js";
import { isHfRef, ociRefName } from "./ref.js";
import { canonicalRef } from "./source.js";
import type { ProgressSink } from "../transfer/progress.js";
import type { Store } from "../store/layout.js";
import { BLOB_ENTRY, MAX_ARCHIVE_INDEX, MAX_OCI_LAYOUT, tarStream } from "./archive-parts.js";

export interface LoadOptions {
  progress?: ProgressSink;
  /**
   * Take the archive's Hub references as checked: tagged without `dev.cake.hf.unverified`, replacing
   * what the store holds under them. Without it a Hub reference is tagged unverified, and one the
   * store holds as pulled from the Hub is never replaced by other content.
   */
  trust?: boolean;
}

export interface LoadResult {
  /** The store references the archive's manifests now have; `unverified`: a Hub reference not confirmed by the Hub yet. */
  tagged: { ref: string; digest: string; unverified: boolean }[];
  /** Manifests without a `dev.cake.ref` or ref.name that parses as a reference: loaded, not tagged. */
  untagged: { digest: string; name?: string }[];
  /** Blobs written to the store / already there. */
  blobs: number;
  reused: number;
  bytes: number;
}

/** An entry's bytes, refused past `limit` (its header says how many before any is read). */
async function readEntry(entry: tar.Entry, limit: number, what: string): Promise<Buffer> {
  if ((entry.header.size ?? 0) > limit) throw new CakeError("E_RECIPE", `${what} is ${entry.header.size} bytes, more than the ${limit} allowed`);
  const parts: Buffer[] = [];
  for await (const c of entry) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

/** Reads an entry to its end, keeping nothing. */
async function drain(entry: AsyncIterable<unknown>): Promise<void> {
  for await (const chunk of entry) void chunk;
}

/**
 * The store reference a manifest of the archive gets: its `dev.cake.ref`, else its ref.name, in
 * the canonical form every command looks up (`acme/m:v1` -> `registry-1.docker.io/acme/m:v1`).
 */
function refFrom(desc: Descriptor): { ref?: string; name?: string } {
  const name = desc.annotations?.[ANN.cakeRef] ?? desc.annotations?.[ANN.refName];
  if (typeof name !== "string" || name.length > 1024) return {};
  try {
    return { ref: canonicalRef(name), name };
  } catch {
    return { name };
  }
}

/**
 * Loads the OCI archive `tarPath` into the store: every `blobs/sha256/<hex>` entry is hashed while
 * written and becomes visible only under the digest it hashes to (a corrupted entry: E_DIGEST,
 * nothing loaded is tagged). Entries with any other name are skipped, never written. Then each
 * manifest in `index.json` whose blobs are all present is tagged as its `dev.cake.ref`
 * annotation, else its `org.opencontainers.image.ref.name`. A Hub reference is only the archive's
 * claim: tagged `dev.cake.hf.unverified` until `cake pull` has the Hub confirm it, and never over a
 * tag the store pulled from the Hub with other content (E_CONFLICT), unless `trust`.
 */
export async function loadArchive(store: Store, tarPath: string, opts: LoadOptions = {}): Promise<LoadResult> {
  const st = await fsp.stat(tarPath).catch((err: NodeJS.ErrnoException) => {
    throw new CakeError(err.code === "ENOENT" ? "E_NOT_FOUND" : "E_IO", `${tarPath}: ${err.code === "ENOENT" ? "no such archive" : err.message}`, { cause: err });
  });
  if (!st.isFile()) throw new CakeError("E_USAGE", `${tarPath}: not a file`);
  opts.progress?.addTotal(st.size);
  await store.init();
  const release = await store.lease();
  try {
    let indexBytes: Buffer | undefined;
    let layout: Buffer | undefined;
    let blobs = 0;
    let reused = 0;
    let bytes = 0;

    const src = fs.createReadStream(tarPath, { highWaterMark: 1 << 20 });
    const extract = (await tarStream()).extract();
    src.on("error", (err) => extract.destroy(err));
    if (opts.progress) src.on("data", (c) => opts.progress!.bytes(c.length));
    src.pipe(extract);
    try {
      for await (const entry of extract) {
        const name = entry.header.name.replace(/^\.\//, "");
        const isFile = entry.header.type === "file" || entry.header.type === "contiguous-file";
        const blob = isFile ? BLOB_ENTRY.exec(name) : null;
        if (blob) {
          const hex = blob[1]!;
          const digest = `sha256:${hex}`;
          const size = entry.header.size ?? 0;
          if (await store.hasBlob(digest, size)) {
            await drain(entry);
            reused++;
            opts.progress?.item();
            continue;
          }
          await store.withIngest(hex, size, async (ing) => {
            let pos = 0;
            const since = { n: 0 };
            for await (const chunk of entry) {
              await ing.write(pos, [chunk as Buffer], 0, since);
              pos += (chunk as Buffer).length;
            }
            await ing.record([0, pos]);
            return store.commit(ing, digest, `${tarPath}: entry ${name}`);
          });
          blobs++;
          bytes += size;
          opts.progress?.item();
        } else if (isFile && name === "index.json") {
          if (indexBytes) throw new CakeError("E_RECIPE", `${tarPath}: holds index.json twice`);
          indexBytes = await readEntry(entry, MAX_ARCHIVE_INDEX, `${tarPath}: index.json`);
        } else if (isFile && name === "oci-layout") {
          layout = await readEntry(entry, MAX_OCI_LAYOUT, `${tarPath}: oci-layout`);
        } else {
          await drain(entry); // anything else: not ours, never written
        }
      }
    } catch (err) {
      if (isCakeError(err)) throw err;
      throw new CakeError("E_RECIPE", `${tarPath}: not a readable tar archive (${(err as Error).message})`, { cause: err });
    } finally {
      src.destroy();
    }

    if (!layout || !indexBytes) throw new CakeError("E_RECIPE", `${tarPath}: not an OCI archive (no ${layout ? "index.json" : "oci-layout"})`);
    let version: unknown;
    try {
      version = (parseStrictJson(layout.toString("utf8")) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
    } catch {
      version = undefined;
    }
    if (typeof version !== "string" || !version.startsWith("1.")) throw new CakeError("E_RECIPE", `${tarPath}: oci-layout is not image layout version 1.x`);
    const manifests = successors({ mediaType: MT.index, digest: "", size: indexBytes.length }, indexBytes, `${tarPath}: index.json`);

    // Every manifest whole (itself, its config and layers) before any tag moves.
    const seen = new Set<string>();
    for (const m of manifests) {
      await walkGraph(
        m,
        (d) => store.readBlob(d.digest, MANIFEST_LIMIT),
        async (d, parent) => {
          if (!(await store.hasBlob(d.digest, d.size))) {
            throw new CakeError("E_NOT_FOUND", `${tarPath}: ${parent} needs blob ${d.digest} (${d.size} bytes), which is neither in the archive nor in the store`);
          }
        },
        { seen, parent: "index.json" },
      );
    }
    const tagged: LoadResult["tagged"] = [];
    const untagged: LoadResult["untagged"] = [];
    const held = new Map((await store.tags()).map((t) => [t.ref, t.descriptor]));
    const moves: { m: Descriptor; ref: string; unverified: boolean }[] = [];
    // Every reference judged before any tag moves: one refused, none moved.
    for (const m of manifests) {
      const { ref, name } = refFrom(m);
      if (!ref) {
        untagged.push({ digest: m.digest, ...(name !== undefined ? { name } : {}) });
        continue;
      }
      const have = held.get(ref);
      const checked = have !== undefined && !isUnverified(have);
      if (opts.trust || !isHfRef(ref)) moves.push({ m, ref, unverified: false });
      else if (checked && have.digest === m.digest) tagged.push({ ref, digest: m.digest, unverified: false }); // the Hub's already: left as it is
      else if (checked) {
        throw new CakeError(
          "E_CONFLICT",
          `${tarPath}: ${ref} is ${m.digest} in the archive, but the store holds ${have.digest}, checked against the Hub; not replaced (cake rm ${ref} first, or cake load --trust to take the archive's)`,
        );
      } else moves.push({ m, ref, unverified: true });
    }
    for (const { m, ref, unverified } of moves) {
      const extra: Record<string, string> = {};
      for (const [k, v] of Object.entries(m.annotations ?? {})) if (typeof v === "string" && k !== ANN.refName && k !== ANN.cakeRef && k !== ANN.hfUnverified) extra[k] = v;
      if (unverified) extra[ANN.hfUnverified] = path.basename(tarPath);
      await store.tag(ref, ociRefName(ref), m, extra);
      tagged.push({ ref, digest: m.digest, unverified });
    }
    return { tagged, untagged, blobs, reused, bytes };
  } finally {
    opts.progress?.done();
    await release();
  }
}
