/**
 * The backend registry that replicas share (`--backend host/prefix`): a converted revision is pushed
 * there as `<prefix>/<org>/<model>:<commit>`; a replica that lacks it takes the manifest (with its
 * config and recipe) from there instead of converting again, and a blob it lost, by digest.
 */
import { Readable } from "node:stream";
import {
  ANN,
  MANIFEST_LIMIT,
  CakeError,
  MT,
  clientFor,
  formatHfRef,
  indexReference,
  ociRefName,
  parseManifest,
  pushModelIndex,
  pushToRegistry,
  registryBlobJob,
  transferBlobs,
  type IndexSource,
  type RegistryAccess,
  type Store,
} from "../src/index.js";

/** The claim artifact's annotations: which replica converts the revision, and until when (ms since epoch). */
const CLAIM_OWNER = "dev.cake.proxy.claim.owner";
const CLAIM_EXPIRES = "dev.cake.proxy.claim.expires";
const EMPTY = Buffer.from("{}");
const LOOKUP_RETRY = { retries: 1, maxServerWaitMs: 5_000 };
const EMPTY_DESC = { mediaType: MT.empty, digest: "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", size: 2 };

/** A replica's claim on converting one revision, as read back from the backend. */
export interface Claim {
  owner: string;
  expires: number;
}

export class Backend {
  constructor(
    /** `host[:port]/prefix`. */
    private readonly prefix: string,
    private readonly access: RegistryAccess | undefined,
    private readonly store: Store,
    private readonly log: (event: Record<string, unknown>) => void,
    /** Told the bytes each fetch from the backend moved (the proxy's metrics). */
    private readonly fetched: (bytes: number) => void = () => {},
  ) {}

  /**
   * For what a client's first manifest waits on (is it converted, claimed): one retry at most and no
   * long rate-limit wait, so a backend that is down costs a cold manifest a second, not the half
   * minute of retries a blob is worth; the replica then converts on its own.
   */
  private lookupClient(registry: string) {
    return clientFor(registry, this.access, { retry: LOOKUP_RETRY });
  }

  /** The same naming as index artifacts': what a replica pushes here serves as an index too. */
  private ref(repo: string, commit: string) {
    return indexReference(this.prefix, repo, commit);
  }

  /** Another replica converted it: take the manifest (and config + recipe) from the backend and tag it here. */
  async fetchConverted(repo: string, commit: string): Promise<string | undefined> {
    const b = this.ref(repo, commit);
    const head = await this.lookupClient(b.registry).headManifest(b.repository, b.tag);
    if (!head) return undefined;
    const client = clientFor(b.registry, this.access);
    const { bytes, digest } = await client.getManifest(b.repository, b.tag);
    const manifest = parseManifest(bytes, b.full);
    const store = this.store;
    // Config and recipe now (small, needed for access probes and export); tensors on demand.
    const small = [manifest.config, ...manifest.layers.filter((l) => l.mediaType === MT.recipe)];
    const { stats } = await transferBlobs(
      store,
      small.map((d) => registryBlobJob(store, client, b.repository, d, `${b.full} blob ${d.digest}`)),
    );
    this.fetched(stats.fetchedBytes + bytes.length);
    if ((await store.putBytes(bytes)) !== digest) throw new CakeError("E_DIGEST", `${b.full}: manifest digest mismatch`);
    const ref = formatHfRef({ repo, revision: commit });
    await store.tag(ref, ociRefName(ref), { mediaType: MT.manifest, digest, size: bytes.length, artifactType: MT.artifact }, { [ANN.hfRepo]: repo, [ANN.hfCommit]: commit });
    this.log({ event: "backend-hit", ref, digest });
    return digest;
  }

  /** A blob of `repo@commit` (whose manifest the store has) from the backend, verified. */
  async fetchBlob(repo: string, commit: string, digest: string): Promise<void> {
    const { registry, repository } = this.ref(repo, commit);
    const client = clientFor(registry, this.access);
    const store = this.store;
    const manifest = parseManifest(await store.readBlob((await store.resolve(formatHfRef({ repo, revision: commit })))!.digest, MANIFEST_LIMIT), repo);
    const desc = [manifest.config, ...manifest.layers].find((d) => d.digest === digest);
    if (!desc) return;
    const { stats } = await transferBlobs(store, [registryBlobJob(store, client, repository, desc, `${registry}/${repository} blob ${digest}`)]);
    this.fetched(stats.fetchedBytes);
  }

  /**
   * The claim on converting `repo@commit` (tag `<commit>-claim`, a tiny OCI artifact whose annotations
   * name the owner and expiry), if one is there.
   */
  async readClaim(repo: string, commit: string): Promise<Claim | undefined> {
    const b = this.ref(repo, commit);
    const client = this.lookupClient(b.registry);
    if (!(await client.headManifest(b.repository, `${b.tag}-claim`))) return undefined;
    const { bytes } = await client.getManifest(b.repository, `${b.tag}-claim`);
    const a = (JSON.parse(bytes.toString()) as { annotations?: Record<string, string> }).annotations ?? {};
    return { owner: a[CLAIM_OWNER] ?? "", expires: Number(a[CLAIM_EXPIRES] ?? 0) };
  }

  /**
   * Writes the claim (last writer wins: a registry has no compare-and-swap, so the caller reads it back
   * and converts only if it is still its own). `expires` 0 releases it.
   */
  async writeClaim(repo: string, commit: string, claim: Claim): Promise<void> {
    const b = this.ref(repo, commit);
    const client = this.lookupClient(b.registry);
    if ((await client.hasBlob(b.repository, EMPTY_DESC.digest)) === undefined) await client.pushBlob(b.repository, EMPTY_DESC, () => Readable.from([EMPTY]));
    const manifest = {
      schemaVersion: 2,
      mediaType: MT.manifest,
      artifactType: "application/vnd.cake.proxy.claim.v1",
      config: EMPTY_DESC,
      layers: [EMPTY_DESC],
      annotations: { [CLAIM_OWNER]: claim.owner, [CLAIM_EXPIRES]: String(claim.expires) },
    };
    await client.putManifest(b.repository, `${b.tag}-claim`, Buffer.from(JSON.stringify(manifest)), MT.manifest);
  }

  /**
   * Where a replica that takes over a revision finds what its dead converter pushed already: the
   * index entry `<commit>-index` (config and recipe: every unit's digest), which `push` writes before
   * any tensor, and the blobs beside it — taken from here, the Hub asked only for the rest.
   */
  resumeSource(commit: string): IndexSource {
    return { prefix: this.prefix, access: this.access ?? {}, tag: `${commit}-index`, holdsBlobs: true, quiet: true };
  }

  /** Pushes a converted revision there, for the other replicas: its index entry first, the manifest tag last. */
  async push(repo: string, commit: string, signal?: AbortSignal): Promise<void> {
    const b = this.ref(repo, commit);
    const storeRef = formatHfRef({ repo, revision: commit });
    await pushModelIndex(storeRef, this.prefix, { store: this.store, ...this.access, tag: `${commit}-index`, ...(signal ? { signal } : {}) });
    const r = await pushToRegistry(storeRef, b.full, { store: this.store, ...this.access, ...(signal ? { signal } : {}) });
    this.log({ event: "backend-push", ref: b.full, uploaded: r.counts.uploaded, bytes: r.uploadedBytes });
  }
}
