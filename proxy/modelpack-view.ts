/**
 * The proxy's ModelPack view, `mp/<org>/<model>:<rev>` (and `mp/<alias>`): the CNCF ModelPack
 * artifact of the same Hub revision as `hf/` (src/modelpack/build.ts), for tools that read only
 * ModelPack (modctl, KitOps, Docker Model Runner, modelpack-client). Names and aliases are `hf/`'s
 * (names.ts). A tag is resolved, converted and access-checked by the `hf/` path itself
 * (ProxyService.manifest: single flight, the same checks for gated and private repos); the view is
 * then derived from the stored cake artifact, kept in memory, and each file layer is served
 * assembled from the tensor blobs (Range included): no second copy on disk.
 */
import { Readable } from "node:stream";
import { ANN, fileSegments, openFileRange, storedModelPack, type Recipe, type RecipeFile, type StoredModelPack } from "../src/index.js";
import { assertBlobDigest, isWellFormedDigest } from "./names.js";
import { OciError } from "./oci-errors.js";
import type { ProxyService } from "./service.js";

const PREFIX = "mp/";
/** Views kept in memory (a few KB each: a manifest and a config per revision). */
const MAX_VIEWS = 256;
const SHA256 = /^sha256:[a-f0-9]{64}$/;

export const isModelPackName = (name: string) => name.startsWith(PREFIX);

interface Revision {
  commit: string;
  /** The store reference of its cake artifact (`hf://org/name@commit`). */
  ref: string;
  cakeDigest: string;
}

type View = StoredModelPack & { commit: string };
export type BlobAnswer = { size: number; open(start: number, end: number): Readable };

export class ModelPackView {
  /** By cake manifest digest: built once, shared by concurrent requests. */
  private readonly views = new Map<string, Promise<View>>();
  /** The store's converted revisions by repo, as of the tags' version. */
  private tagged?: { version: number; byRepo: Map<string, Revision[]> };
  /** Files whose tensor blobs were all found in the store (they stay: a tagged model's blobs are never collected). */
  private readonly complete = new Set<string>();

  constructor(private readonly service: ProxyService) {}

  /** A ModelPack manifest by tag (converting as `hf/` does) or by digest (of a revision converted here). */
  async manifest(name: string, reference: string, token: string | undefined): Promise<{ digest: string; bytes: Buffer }> {
    if (!reference.includes(":")) {
      const cake = await this.service.manifest(name, reference, token);
      const repo = await this.repoOf(name, token);
      const of = async (fresh: boolean) => (await this.revisions(repo, fresh)).find((r) => r.cakeDigest === cake.digest);
      // Just converted: its tag may have landed within the same millisecond as the tags read last.
      const rev = (await of(false)) ?? (await of(true));
      if (!rev) throw new OciError("MANIFEST_UNKNOWN", `${name}:${reference}: converted, but not tagged in the store`);
      const { view } = await this.viewOf(rev);
      return { digest: view.manifestDigest, bytes: view.manifestBytes };
    }
    if (!isWellFormedDigest(reference)) throw new OciError("DIGEST_INVALID", `${name}@${reference}: not a valid digest (sha256: 64 lower-case hex digits)`);
    const found = SHA256.test(reference) && (await this.find(name, token, (v) => v.view.manifestDigest === reference));
    if (!found) throw new OciError("MANIFEST_UNKNOWN", `${name}@${reference}: not a manifest of this model (ask by tag first)`);
    return { digest: reference, bytes: found.view.manifestBytes };
  }

  /** The config, or a file assembled from the store's tensor blobs. */
  async blob(name: string, digest: string, token: string | undefined): Promise<BlobAnswer> {
    assertBlobDigest(name, digest);
    const found = await this.find(name, token, (v) => v.view.configDesc.digest === digest || v.view.layers.some((l) => l.desc.digest === digest));
    if (!found) throw new OciError("BLOB_UNKNOWN", `${name}: no blob ${digest} in this model`);
    const { view, recipe } = found;
    if (view.configDesc.digest === digest) {
      const bytes = view.configBytes;
      return { size: bytes.length, open: (start, end) => Readable.from([bytes.subarray(start, end)]) };
    }
    const file = view.layers.find((l) => l.desc.digest === digest)!.file;
    await this.ensureParts(name, recipe, file, token);
    return { size: file.size, open: (start, end) => openFileRange(this.service.opts.store, recipe, file, start, end, `${name}: ${file.path}`) };
  }

  tags(name: string, token: string | undefined): Promise<string[]> {
    return this.service.tags(name, token);
  }

  private repoOf(name: string, token: string | undefined): Promise<string> {
    return this.service.names.repoFor(name, this.service.hubFor(token));
  }

  /**
   * The view of `name`'s revisions in the store that `match`es, once this client may read it. A
   * replica that lacks it (round-robin sent the manifest elsewhere) takes the repo's revisions from
   * the backend first, as `hf/` does for its digests.
   */
  private async find(name: string, token: string | undefined, match: (v: View) => boolean): Promise<View | undefined> {
    const hub = this.service.hubFor(token);
    const repo = await this.repoOf(name, token);
    const here = async () => {
      for (const rev of await this.revisions(repo)) {
        const v = await this.viewOf(rev);
        if (match(v)) return v;
      }
      return undefined;
    };
    let found = await here();
    if (!found) await this.service.findRevisionWith(repo, hub, async () => (found = await here())?.commit);
    if (!found) return undefined;
    await this.service.access.authorize(repo, found.commit, hub);
    return found;
  }

  /**
   * `repo`'s revisions in the store: its tags by commit, as the proxy (and `cake pull`) writes them;
   * read again only when the store's tags change (a blob request must not re-read index.json).
   */
  private async revisions(repo: string, fresh = false): Promise<Revision[]> {
    const store = this.service.opts.store;
    const version = await store.tagsVersion();
    if (fresh || this.tagged?.version !== version) {
      const byRepo = new Map<string, Revision[]>();
      for (const t of await store.tags()) {
        const a = t.descriptor.annotations;
        const commit = a?.[ANN.hfCommit];
        const r = a?.[ANN.hfRepo];
        if (!r || !commit || !t.ref.endsWith(`@${commit}`)) continue;
        byRepo.set(r, [...(byRepo.get(r) ?? []), { commit, ref: t.ref, cakeDigest: t.descriptor.digest }]);
      }
      this.tagged = { version, byRepo };
    }
    return this.tagged.byRepo.get(repo) ?? [];
  }

  private viewOf(rev: Revision): Promise<View> {
    let v = this.views.get(rev.cakeDigest);
    if (!v) {
      v = storedModelPack(this.service.opts.store, rev.ref).then((s) => ({ ...s, commit: rev.commit }));
      v.catch(() => this.views.delete(rev.cakeDigest));
      if (this.views.size >= MAX_VIEWS) this.views.delete(this.views.keys().next().value!);
      this.views.set(rev.cakeDigest, v);
    }
    return v;
  }

  /**
   * Every tensor blob of `file` in the store before its first byte is sent: one the store lacks (a
   * replica that took the manifest from the backend) is fetched through the `hf/` path, verified.
   */
  private async ensureParts(name: string, recipe: Recipe, file: RecipeFile, token: string | undefined): Promise<void> {
    const key = `sha256:${file.sha256}`;
    if (this.complete.has(key)) return;
    const store = this.service.opts.store;
    for (const s of fileSegments(recipe, file)) {
      if ("digest" in s && !(await store.hasBlob(s.digest, s.size))) await this.service.blob(name, s.digest, token);
    }
    if (this.complete.size >= 100_000) this.complete.clear(); // a bound, not an eviction policy: rechecking is a few stats
    this.complete.add(key);
  }
}
