/**
 * What `cake browse` shows and the one interface it reaches the library through (`Backend`): the
 * app and its state never touch the store, the Hub or a registry themselves, so tests can give
 * them a fake backend and the real one is a thin layer over src/index.ts (backend.ts).
 */
import type { ModelDiff, ProgressSink } from "../../src/index.js";

/** One manifest in the store, with every reference that names it. */
export interface LocalModel {
  /** The manifest digest: two refs to the same manifest are one model. */
  digest: string;
  /** `hf://org/name` or `host/repo`. */
  name: string;
  /** The reference actions use (a branch or tag rather than a bare commit when there is one). */
  ref: string;
  /** Every store reference naming this manifest. */
  refs: string[];
  /** What those references say after the name: `main`, `v1.0`, a short commit. */
  revisions: string[];
  commit?: string;
  files: number;
  tensors: number;
  /** The model's file bytes. */
  bytes: number;
  /** Bytes of its blobs that other models in the store use too. */
  sharedBytes: number;
  /** The models it shares blobs with (their `ref`). */
  sharedWith: string[];
}

/** A model found by a search: on the Hub (`hf://id`) or in a registry (`host/repo:tag`). */
export interface RemoteHit {
  source: "hub" | "registry";
  /** What `cake pull` takes. */
  ref: string;
  downloads?: number;
  likes?: number;
  /** ISO date. */
  updated?: string;
  pipelineTag?: string;
  /** "gated", "private", … */
  flags?: string;
}

export interface DetailFile {
  path: string;
  size: number;
  format?: "safetensors" | "raw";
  tensors?: number;
}

export interface DetailTensor {
  name: string;
  dtype: string;
  shape: number[];
  size: number;
  file: string;
  /** Local models holding exactly these bytes (same blob, same place in it). */
  sharedWith: string[];
}

/** The detail pane of one model. */
export interface ModelDetail {
  ref: string;
  where: "store" | "hub" | "registry";
  /** Lines under the title: commit, digest, counts, sizes. */
  summary: string[];
  files: DetailFile[];
  /** Undefined when the source does not describe tensors (a Hub model not yet pulled). */
  tensors?: DetailTensor[];
  note?: string;
}

/** Bytes and items of a running task, as the progress sink counts them. */
export interface TaskProgress {
  bytesTotal: number;
  bytesDone: number;
  itemsTotal: number;
  itemsDone: number;
}

export type DetailTarget = { kind: "local"; model: LocalModel } | { kind: "remote"; hit: RemoteHit };

export interface Backend {
  /** Where things are, for the header line. */
  describe(): { store: string; hub: string; registry?: string };
  local(): Promise<LocalModel[]>;
  search(query: string): Promise<{ hits: RemoteHit[]; errors: string[] }>;
  detail(target: DetailTarget): Promise<ModelDetail>;
  /** Resolves with a line to show and the store reference the model landed under. */
  pull(ref: string, progress: ProgressSink): Promise<{ text: string; ref: string }>;
  export(ref: string, dir: string, progress: ProgressSink): Promise<{ text: string }>;
  remove(model: LocalModel): Promise<{ text: string }>;
  diff(a: string, b: string): Promise<ModelDiff>;
}
