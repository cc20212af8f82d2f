/**
 * `/_cake/ready`: whether this replica can do its work now, for a load balancer's health check or a
 * Kubernetes readiness probe (`/v2/` stays the liveness answer: the process serves HTTP). Not ready
 * when the store cannot be written (a conversion would fail) or the backend registry does not
 * answer (replicas would convert again what another already has, or not share what they convert).
 */
import fsp from "node:fs/promises";
import path from "node:path";
import { isPlainHttpHost, oneLine, type RegistryAccess, type Store } from "../src/index.js";

export interface Readiness {
  ready: boolean;
  /** One line per failed check, naming what and why. */
  reasons: string[];
}

/** How long one backend answer is trusted: probes every second or two cost the backend little. */
const BACKEND_CACHE_MS = 3_000;
/** A backend slower than this to answer `/v2/` is as good as down for a probe. */
const BACKEND_TIMEOUT_MS = 2_000;

export class ReadinessCheck {
  private backendAnswer: { at: number; reason: Promise<string | undefined> } | undefined;

  constructor(
    private readonly store: Store,
    /** `host[:port]/prefix` of the shared backend, if any. */
    private readonly backend?: string,
    private readonly access: RegistryAccess = {},
  ) {}

  async check(): Promise<Readiness> {
    const reasons = (await Promise.all([this.storeWritable(), this.backendReachable()])).filter((r): r is string => r !== undefined);
    return { ready: reasons.length === 0, reasons };
  }

  /** A temp file created and removed where the store keeps its own records (cake/). */
  private async storeWritable(): Promise<string | undefined> {
    const probe = path.join(this.store.root, "cake", `.ready-${process.pid}-${Date.now()}`);
    try {
      await fsp.writeFile(probe, "");
      await fsp.rm(probe, { force: true });
      return undefined;
    } catch (err) {
      return `store ${this.store.root} is not writable: ${oneLine(err)}`;
    }
  }

  private backendReachable(): Promise<string | undefined> {
    if (!this.backend) return Promise.resolve(undefined);
    const now = Date.now();
    if (!this.backendAnswer || now - this.backendAnswer.at > BACKEND_CACHE_MS) this.backendAnswer = { at: now, reason: this.pingBackend() };
    return this.backendAnswer.reason;
  }

  /** `GET /v2/`: any answer but a 5xx means the registry is up (401 included: credentials are checked on use). */
  private async pingBackend(): Promise<string | undefined> {
    const registry = this.backend!.split("/")[0]!;
    const url = `${this.access.plainHttp || isPlainHttpHost(registry) ? "http" : "https"}://${registry}/v2/`;
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(BACKEND_TIMEOUT_MS), redirect: "manual" });
      await res.body?.cancel();
      return res.status >= 500 ? `backend ${url} answered HTTP ${res.status}` : undefined;
    } catch (err) {
      const cause = (err as { cause?: unknown }).cause;
      return `backend ${url} is unreachable: ${oneLine(cause ?? err)}`;
    }
  }
}
