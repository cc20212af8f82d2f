/**
 * Whether a client may read a repo, asked of the Hub with the client's own credentials (or the
 * server's token when it has none), so cached bytes of a gated or private repo never reach a client
 * the Hub would refuse. Model info enforces private repos; a gated repo's metadata is public, so a
 * file of the commit is probed too. Decisions are reused per credentials and repo for a while.
 */
import { createHash } from "node:crypto";
import { HubError, fileAccess, formatHfRef, modelInfo, readConfig, type CakeError, type HubParams, type Store } from "../src/index.js";
import { OciError } from "./oci-errors.js";

export class AccessCheck {
  private readonly decisions = new Map<string, { until: number; decision: Promise<void> }>();

  constructor(
    private readonly store: Store,
    /** How long a decision is reused, ms. */
    private readonly ttlMs = 60_000,
  ) {}

  /**
   * Throws UNAUTHORIZED (no credentials) or DENIED (credentials the Hub refuses) unless these
   * credentials may read `repo` on the Hub right now.
   */
  async authorize(repo: string, commit: string | undefined, hub: HubParams): Promise<void> {
    const who = hub.accessToken ? createHash("sha256").update(hub.accessToken).digest("hex").slice(0, 16) : "anonymous";
    const key = `${who}|${repo}`;
    const hit = this.decisions.get(key);
    if (hit && hit.until > Date.now()) return hit.decision;
    const decision = (async () => {
      // The client's own words: an oras or docker user sets no HF_TOKEN, it logs in to this proxy (sendOciError says how).
      const refuse = (why: string) =>
        hub.accessToken
          ? new OciError("DENIED", `${repo}: ${why}: your Hugging Face token has not been granted access; request it on the Hub`)
          : new OciError("UNAUTHORIZED", `${repo}: ${why}: log in with a Hugging Face token that has access`);
      let info;
      try {
        info = await modelInfo(hub, repo, commit ?? "main");
      } catch (err) {
        const e = err as CakeError;
        if (err instanceof HubError && err.hubCode === "RevisionNotFound") throw new OciError("MANIFEST_UNKNOWN", e.message);
        // A 401 without a repo code is about the token itself (the Hub's "Invalid credentials"), not this repo.
        if (hub.accessToken && err instanceof HubError && err.status === 401 && err.hubCode === undefined) {
          throw new OciError("UNAUTHORIZED", `${repo}: the Hub refused this token (wrong, expired or revoked): log in again with a valid Hugging Face token`);
        }
        if (e.code === "E_NOT_FOUND" || e.code === "E_AUTH" || e.code === "E_GATED") throw refuse("no such model, or a private or gated one");
        throw err;
      }
      if (!info.gated && !info.private) return;
      const probe = await this.probePath(repo, info.sha);
      if (probe && (await fileAccess(hub, repo, info.sha, probe)) === "denied") throw refuse("gated repository");
    })();
    this.decisions.set(key, { until: Date.now() + this.ttlMs, decision });
    decision.catch(() => this.decisions.delete(key));
    return decision;
  }

  /** A file of the commit to probe access with: a weights file when known, else config.json. */
  private async probePath(repo: string, commit: string): Promise<string | undefined> {
    const desc = await this.store.resolve(formatHfRef({ repo, revision: commit }));
    if (!desc) return "config.json";
    const cfg = await readConfig(this.store, desc.digest);
    return cfg?.files.find((f) => f.format === "safetensors")?.path ?? cfg?.files[0]?.path;
  }
}
