/**
 * What a RegistryClient is given and gives back: its options, the sizes that matter for push
 * (REGISTRY_DEFAULTS), the manifest media types it accepts, and the blob descriptors and results
 * its roles (transport.ts, manifests.ts, blobs.ts, upload.ts, tags.ts) share. Exported through client.ts.
 */
import type { Readable } from "node:stream";
import type { Dispatcher } from "undici";
import { MANIFEST_LIMIT, MT } from "../format/oci.js";
import type { RetryPolicy } from "../http/retry.js";

export const MiB = 1024 * 1024;

/**
 * Sizes that matter for push speed and memory. A chunk is held in memory so it can be sent again
 * after a failure; 8 MiB keeps a 16-wide transfer pool under 150 MiB, and is halved (down to
 * 1 MiB) on registries that refuse it.
 */
export const REGISTRY_DEFAULTS = {
  /** Blobs up to this size go up as POST + one streamed PUT. */
  monolithicThreshold: 16 * MiB,
  /** First PATCH size for bigger blobs. */
  chunkSize: 8 * MiB,
  /** Halving a refused chunk stops here. */
  minChunkSize: 1 * MiB,
  /** Manifests bigger than this are refused, both ways (distribution's own limit). */
  manifestLimit: MANIFEST_LIMIT,
  /** One page of a tag listing. */
  tagsPageLimit: 16 * MiB,
} as const;

/** The manifest media types a registry may answer with (their strings live in format/oci.ts). */
export const MEDIA_TYPE = {
  ociManifest: MT.manifest,
  ociIndex: MT.index,
  dockerManifest: MT.dockerManifest,
  dockerManifestList: MT.dockerList,
} as const;

export interface RegistryClientOptions {
  /** `host[:port]`; `docker.io` means Docker Hub. */
  registry: string;
  /** Speak HTTP instead of HTTPS (default: only for localhost, 127.0.0.0/8, ::1). */
  plainHttp?: boolean;
  /** Explicit credentials win over the docker config. */
  username?: string;
  password?: string;
  /** Docker config directory (default `$DOCKER_CONFIG` or `~/.docker`). */
  dockerConfig?: string;
  userAgent?: string;
  /** See REGISTRY_DEFAULTS. */
  monolithicThreshold?: number;
  chunkSize?: number;
  retry?: Partial<RetryPolicy>;
  dispatcher?: Dispatcher;
}

export interface BlobDescriptor {
  digest: string;
  size: number;
}

export interface PushBlobOptions {
  /** First PATCH size (default: the client's, see REGISTRY_DEFAULTS). */
  chunkSize?: number;
  /** Bytes of this blob sent so far (can go back after a failed chunk). */
  onProgress?: (bytes: number) => void;
  signal?: AbortSignal;
  /** Repositories on the same registry that may already hold the blob: tried as mounts first. */
  mountFrom?: string[];
}

export type PushBlobResult = "exists" | "mounted" | "uploaded";

export interface FetchedBlob {
  body: Readable;
  status: number;
  /** Offset of the first byte of `body`: 0 when the registry ignored the Range and sent it all. */
  start: number;
  totalSize?: number;
}
