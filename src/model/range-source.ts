/**
 * The byte-source seam: whatever a model file's bytes can be read from by range — a file on the Hub
 * (its CDN), a local file (`cake push ./dir`), a registry blob read by Range (a ModelPack layer) —
 * is a RangeSource. The header reader, the unit plan, the file check and the transfer engine are
 * written once over it (src/model/convert.ts); each source is a small adapter.
 */
import fs from "node:fs";
import fsp from "node:fs/promises";
import type { Readable } from "node:stream";
import { CakeError } from "../errors.js";
import { parseHeader, readHeaderLength } from "../format/safetensors.js";
import type { ModelFile } from "../format/plan.js";
import type { HubFileReader } from "../hub/file-reader.js";
import type { RegistryClient } from "../registry/client.js";
import type { ContentStore } from "../store/content.js";
import type { BlobJob } from "../transfer/engine.js";

export interface RangeSource {
  /** Names the bytes in ingest keys and in the store's ranges record (e.g. the file's sha256). */
  readonly key: string;
  /** Names the source in transfer errors: `hf://org/m@abc/model.safetensors`, `./dir/model.safetensors`. */
  readonly what: string;
  /** The file's path in the model: what format errors name (`model.safetensors: invalid safetensors: …`). */
  readonly name: string;
  readonly size: number;
  /** A stream of bytes [start, end); says where its body starts (0 when a server ignored the Range). */
  open(start: number, end: number, signal?: AbortSignal): Promise<{ body: Readable; start: number }>;
  /** Bytes [start, end) whole, in memory (headers, proof windows). */
  read(start: number, end: number, signal?: AbortSignal): Promise<Buffer>;
}

/** A file of a Hub revision, read through its CDN location (`key`: its sha256, or `git-<oid>`). */
export function hubFileSource(reader: HubFileReader, key: string, size: number): RangeSource {
  return {
    key,
    what: reader.what,
    name: reader.path,
    size,
    open: (start, end, signal) => reader.open(start, end, signal),
    read: (start, end, signal) => reader.read(start, end, signal),
  };
}

/** A file on this machine. */
export function localFileSource(file: string, name: string, key: string, size: number): RangeSource {
  const what = file;
  return {
    key,
    what,
    name,
    size,
    open: async (start, end) => ({ body: fs.createReadStream(file, { start, end: end - 1 }), start }),
    read: async (start, end) => {
      const fh = await fsp.open(file, "r");
      try {
        const buf = Buffer.alloc(end - start);
        const { bytesRead } = await fh.read(buf, 0, buf.length, start);
        if (bytesRead !== buf.length) throw new CakeError("E_SIZE", `${what}: short read at ${start}-${end}: ${bytesRead} bytes`);
        return buf;
      } finally {
        await fh.close();
      }
    },
  };
}

/** A blob in the store, read through the content store (whatever form it is stored in). */
export function storedBlobSource(store: ContentStore, digest: string, name: string, key: string, size: number): RangeSource {
  return {
    key,
    what: `blob ${digest} (${name})`,
    name,
    size,
    open: async (start, end) => ({ body: store.openBlob(digest, start, end), start }),
    read: (start, end) => store.readRange(digest, start, end),
  };
}

/**
 * A blob of a registry repository, read by Range (distribution serves blob ranges). `key`: what
 * names its bytes in ingest keys and range records (a ModelPack layer's: its sha256, as a Hub
 * file's LFS oid). `onWhole`: told when the registry answered a Range request with the whole blob.
 */
export function registryBlobSource(
  client: RegistryClient,
  repo: string,
  digest: string,
  size: number,
  name: string,
  opts: { key?: string; onWhole?: () => void } = {},
): RangeSource {
  const what = `${client.registry}/${repo}@${digest}`;
  const open: RangeSource["open"] = async (start, end, signal) => {
    const b = await client.fetchBlob(repo, digest, { start, end }, signal);
    if (b.status === 200 && (start > 0 || end < size)) opts.onWhole?.();
    return { body: b.body, start: b.start };
  };
  const read: RangeSource["read"] = async (start, end, signal) => {
    const r = await client.readBlobRange(repo, digest, start, end, signal);
    if (r.ignoredRange && (start > 0 || end < size)) opts.onWhole?.();
    return r.bytes;
  };
  return { key: opts.key ?? digest.replace(":", "-"), what, name, size, open, read };
}

/**
 * The engine's job for one blob of known digest, whose bytes are `size` bytes of `source` from
 * `offset` (a registry blob is all of its source; a Hub unit, a window of its file). Checked against
 * the digest before it is visible; skipped when the store has it.
 */
export function digestJob(store: ContentStore, digest: string, size: number, source: RangeSource, label: string, offset = 0): BlobJob {
  return {
    key: digest.slice(7),
    size,
    expected: digest,
    label,
    existing: async () => ((await store.hasBlob(digest, size)) ? digest : undefined),
    open: (s, e, signal) => source.open(offset + s, offset + e, signal).then((r) => ({ body: r.body, start: r.start - offset })),
  };
}

/**
 * The engine's job for a whole blob of a registry repository (`blob`: its digest and size), read by
 * Range from the registry and checked against its digest; `name` is what format errors call it.
 */
export function registryBlobJob(store: ContentStore, client: RegistryClient, repo: string, blob: { digest: string; size: number }, label: string, name = blob.digest): BlobJob {
  return digestJob(store, blob.digest, blob.size, registryBlobSource(client, repo, blob.digest, blob.size, name), label);
}

/**
 * A safetensors file's length and header, the length checked against the file's size before more
 * is asked for. With `first` > 8, the length and header come in one read of that many bytes (a 7B
 * shard's header is ~20 KB; a longer one takes a second read for the rest); else 8 bytes then N, so
 * that no byte already on disk is read again (a killed pull run again).
 */
export async function readSafetensorsHeader(src: RangeSource, first = 8): Promise<NonNullable<ModelFile["safetensors"]>> {
  const head = src.size < 8 ? Buffer.alloc(0) : await src.read(0, Math.min(src.size, Math.max(8, first)));
  const n = readHeaderLength(head, src.size, src.name);
  const json = 8 + n <= head.length ? head.subarray(8, 8 + n) : Buffer.concat([head.subarray(8), await src.read(head.length, 8 + n)]);
  return { headerBytes: Buffer.concat([head.subarray(0, 8), json]), header: parseHeader(json, src.size, src.name) };
}
