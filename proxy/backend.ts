/**
 * The backend registry that replicas share (`--backend host/prefix`): a converted revision is pushed
 * there as `<prefix>/<org>/<model>:<commit>`; a replica that lacks it takes the manifest (with its
 * config and recipe) from there instead of converting again, and a blob it lost, by digest.
 */
import {
  ANN,
  MANIFEST_LIMIT,
  CakeError,
  MT,
  clientFor,
  digestJob,
  formatHfRef,
  indexReference,
  ociRefName,
  parseManifest,
  pushToRegistry,
  registryBlobSource,
  transferBlobs,
  type RegistryAccess,
  type Store,
} from "../src/index.js";

export class Backend {
  constructor(
    /** `host[:port]/prefix`. */
    private readonly prefix: string,
    private readonly access: RegistryAccess | undefined,
    private readonly store: Store,
    private readonly log: (event: Record<string, unknown>) => void,
  ) {}

  /** The same naming as index artifacts': what a replica pushes here serves as an index too. */
  private ref(repo: string, commit: string) {
    return indexReference(this.prefix, repo, commit);
  }

  /** Another replica converted it: take the manifest (and config + recipe) from the backend and tag it here. */
  async fetchConverted(repo: string, commit: string): Promise<string | undefined> {
    const b = this.ref(repo, commit);
    const client = clientFor(b.registry, this.access);
    const head = await client.headManifest(b.repository, b.tag);
    if (!head) return undefined;
    const { bytes, digest } = await client.getManifest(b.repository, b.tag);
    const manifest = parseManifest(bytes, b.full);
    const store = this.store;
    // Config and recipe now (small, needed for access probes and export); tensors on demand.
    const small = [manifest.config, ...manifest.layers.filter((l) => l.mediaType === MT.recipe)];
    await transferBlobs(
      store,
      small.map((d) => digestJob(store, d.digest, d.size, registryBlobSource(client, b.repository, d.digest, d.size, d.digest), `${b.full} blob ${d.digest}`)),
    );
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
    await transferBlobs(store, [digestJob(store, digest, desc.size, registryBlobSource(client, repository, digest, desc.size, digest), `${registry}/${repository} blob ${digest}`)]);
  }

  /** Pushes a converted revision there, for the other replicas. */
  async push(repo: string, commit: string): Promise<void> {
    const b = this.ref(repo, commit);
    const r = await pushToRegistry(formatHfRef({ repo, revision: commit }), b.full, { store: this.store, ...this.access });
    this.log({ event: "backend-push", ref: b.full, uploaded: r.counts.uploaded, bytes: r.uploadedBytes });
  }
}
