/**
 * The store's tags: index.json of its OCI image layout. The entries with a `dev.cake.ref` are cake's
 * tags; entries other tools wrote (skopeo, oras: no annotations, no cake reference, any media type)
 * are not cake models and stay as they are (gc keeps what they reach). index.json is rewritten
 * atomically under its own lock (`cake/index.lock`).
 */
import fsp from "node:fs/promises";
import { CakeError } from "../errors.js";
import { ANN, MT, type Descriptor, type ImageIndex } from "../format/oci.js";
import { atomicWrite } from "./atomic-write.js";
import { withLock } from "./lock.js";

export interface Tag {
  /** cake's reference string, e.g. "hf://acme/tiny-llama@main" or "127.0.0.1:5000/acme/m:v1". */
  ref: string;
  descriptor: Descriptor;
}

/** index.json's content in a new store. */
export function emptyIndex(): ImageIndex {
  return { schemaVersion: 2, mediaType: MT.index, manifests: [] };
}

/** An annotation of an index.json entry, whatever other tools wrote there. */
export function annotationOf(entry: unknown, key: string): string | undefined {
  const a = (entry as { annotations?: unknown } | null)?.annotations;
  const v = typeof a === "object" && a !== null ? (a as Record<string, unknown>)[key] : undefined;
  return typeof v === "string" ? v : undefined;
}

/** The cake reference an index.json entry is tagged as; undefined for another tool's entry. */
export const cakeRefOf = (entry: unknown): string | undefined => annotationOf(entry, ANN.cakeRef);

/** index.json (`file`) of a store whose layout exists (Store.init), changed under `lockFile`. */
export class TagIndex {
  constructor(
    private readonly file: string,
    private readonly lockFile: string,
  ) {}

  /** index.json's entries as they are (other tools' too). */
  async entries(): Promise<Descriptor[]> {
    return (await this.read()).manifests;
  }

  private async read(): Promise<ImageIndex> {
    let idx: ImageIndex;
    try {
      idx = JSON.parse(await fsp.readFile(this.file, "utf8")) as ImageIndex;
    } catch (err) {
      throw new CakeError("E_IO", `${this.file}: not readable JSON (${(err as Error).message})`, { cause: err });
    }
    if (typeof idx !== "object" || idx === null || !Array.isArray(idx.manifests)) throw new CakeError("E_IO", `${this.file}: no manifests array`);
    return idx;
  }

  private update(fn: (idx: ImageIndex) => void): Promise<void> {
    return withLock(this.lockFile, this.file, async () => {
      const idx = await this.read();
      fn(idx);
      await atomicWrite(this.file, JSON.stringify(idx, null, 2));
    });
  }

  /** index.json's mtime: changes whenever a tag changes. */
  async version(): Promise<number> {
    return (await fsp.stat(this.file)).mtimeMs;
  }

  /** cake's tags: the entries with a `dev.cake.ref`. */
  async list(): Promise<Tag[]> {
    return (await this.entries()).flatMap((d) => {
      const ref = cakeRefOf(d);
      return ref === undefined ? [] : [{ ref, descriptor: d }];
    });
  }

  /** Points `ref` (and the OCI ref.name `refName`) at `desc`, replacing what either pointed at. */
  async set(ref: string, refName: string, desc: Descriptor, extra: Record<string, string>): Promise<void> {
    await this.update((idx) => {
      idx.manifests = idx.manifests.filter((d) => cakeRefOf(d) !== ref && annotationOf(d, ANN.refName) !== refName);
      idx.manifests.push({
        mediaType: desc.mediaType,
        digest: desc.digest,
        size: desc.size,
        ...(desc.artifactType ? { artifactType: desc.artifactType } : {}),
        annotations: { ...extra, [ANN.refName]: refName, [ANN.cakeRef]: ref },
      });
      // cake's tags in reference order; other tools' entries (no cake reference) first, in their own order.
      const key = (d: unknown) => cakeRefOf(d) ?? "";
      idx.manifests.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
    });
  }

  /** Removes the tag `ref`; whether it was there. */
  async remove(ref: string): Promise<boolean> {
    let found = false;
    await this.update((idx) => {
      const before = idx.manifests.length;
      idx.manifests = idx.manifests.filter((d) => cakeRefOf(d) !== ref);
      found = idx.manifests.length !== before;
    });
    return found;
  }
}
