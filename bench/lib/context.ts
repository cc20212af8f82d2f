/**
 * What every scenario shares: the command-line options, the generated models (made once per bench
 * invocation, or kept in --models DIR across invocations), and the client environments (cake's store,
 * huggingface_hub's cache) pointed at the servers the scenario started.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { Hub } from "../../test/hub/emulator.js";
import { makeRealisticModel, makeTopLayersFineTune, reshard, type BenchModel } from "./models.js";

export interface Options {
  runs: number;
  /** Model size, MB (1e6 bytes). */
  mb: number;
  /** The second size of the RSS scenario, MB. */
  mb2: number;
  /** Per-connection cap of the Hub emulation, MB/s (0 = none). */
  bandwidth: number;
  latencyMs: number;
  /** Decoder layers the fine-tune changes. */
  ftLayers: number;
  shards: number;
  /** Keep generated models here (not removed); default: a temp dir removed at the end. */
  models?: string;
  write: boolean;
}

export const DEFAULTS: Options = { runs: 3, mb: 512, mb2: 2048, bandwidth: 40, latencyMs: 30, ftLayers: 2, shards: 3, write: true };

export interface FineTune {
  dir: string;
  changedBytes: number;
  changedTensors: number;
}

export class Models {
  private made = new Map<string, Promise<unknown>>();
  private tmp?: string;

  constructor(private readonly opts: Options) {}

  private async root(): Promise<string> {
    if (this.opts.models) {
      await fs.mkdir(this.opts.models, { recursive: true });
      return this.opts.models;
    }
    this.tmp ??= await fs.mkdtemp(path.join(os.tmpdir(), "cake-bench-models-"));
    return this.tmp;
  }

  private once<T>(key: string, make: () => Promise<T>): Promise<T> {
    if (!this.made.has(key)) this.made.set(key, make());
    return this.made.get(key) as Promise<T>;
  }

  /** Where a generated model named `name` lives (kept with --models DIR). */
  async pathOf(name: string): Promise<string> {
    return path.join(await this.root(), name);
  }

  base(mbSize = this.opts.mb): Promise<BenchModel> {
    return this.once(`base-${mbSize}`, async () => {
      const dir = path.join(await this.root(), `llama-${mbSize}mb-${this.opts.shards}shards`);
      process.stderr.write(`bench: model ${dir}\n`);
      return makeRealisticModel(dir, mbSize * 1e6, this.opts.shards);
    });
  }

  fineTune(mbSize = this.opts.mb): Promise<FineTune> {
    return this.once(`ft-${mbSize}`, async () => {
      const base = await this.base(mbSize);
      const dir = `${base.dir}-ft${this.opts.ftLayers}`;
      process.stderr.write(`bench: fine-tune ${dir}\n`);
      return makeTopLayersFineTune(base, dir, this.opts.ftLayers);
    });
  }

  /** The fine-tune with the same tensors in `shards + 1` files. */
  resharded(mbSize = this.opts.mb): Promise<string> {
    return this.once(`reshard-${mbSize}`, async () => {
      const ft = await this.fineTune(mbSize);
      const dir = `${ft.dir}-reshard${this.opts.shards + 1}`;
      process.stderr.write(`bench: resharded fine-tune ${dir}\n`);
      return reshard(ft.dir, dir, this.opts.shards + 1);
    });
  }

  async cleanup(): Promise<void> {
    if (this.tmp) await fs.rm(this.tmp, { recursive: true, force: true });
  }
}

/** cake pointed at the Hub emulation, with its own store. */
export const cakeEnv = (hub: Pick<Hub, "url"> | undefined, store: string): NodeJS.ProcessEnv => ({
  ...process.env,
  CAKE_HOME: store,
  ...(hub ? { HF_ENDPOINT: hub.url } : {}),
});

/** huggingface_hub pointed at the Hub emulation, plain HTTP downloads (no Xet), its cache in `home`. */
export const hfEnv = (hub: Pick<Hub, "url">, home: string): NodeJS.ProcessEnv => ({
  ...process.env,
  HF_ENDPOINT: hub.url,
  HF_HOME: home,
  HF_HUB_DISABLE_XET: "1",
  HF_HUB_DISABLE_TELEMETRY: "1",
  HF_HUB_DISABLE_PROGRESS_BARS: "1",
});

/** `snapshot_download(repo)` with its defaults (8 workers), into the HF cache. */
export const hfSnapshotArgs = (repo: string) => ["-c", `from huggingface_hub import snapshot_download; snapshot_download(${JSON.stringify(repo)})`];

/** The Hub's default worker count for snapshot_download (huggingface_hub 2.4.0). */
export const HF_WORKERS = 8;
