/**
 * Byte ranges of one file of a Hub revision: `GET /{repo}/resolve/{commit}/{path}` with `Range`.
 * Like huggingface_hub, redirects on the Hub's own origin are followed with the token (the Hub's
 * resolve-cache 307s, and between hf.co and huggingface.co); a redirect to another origin (the LFS
 * CDN) ends resolution. Where the bytes
 * live is remembered, so each later range goes straight there (one round trip, not two); the CDN gets
 * no Authorization header, and its signed location is re-resolved when it refuses it (expired).
 */
import type { Readable } from "node:stream";
import { CakeError } from "../errors.js";
import { header, httpRequest } from "../http/request.js";
import { byteWindow } from "../http/window.js";
import { isHubOrigin, type HubParams } from "./config.js";
import { hubError } from "./errors.js";
import { encodePath, encodeRepo, hubHeaders, hubRequest, USER_AGENT } from "./request.js";

export class HubFileReader {
  private where?: Promise<{ url: string; hub: boolean }>;
  readonly what: string;

  constructor(
    private readonly params: HubParams,
    readonly repo: string,
    readonly commit: string,
    readonly path: string,
  ) {
    this.what = `hf://${repo}@${commit.slice(0, 12)}/${path}`;
  }

  get resolveUrl(): string {
    return `${this.params.hubUrl}/${encodeRepo(this.repo)}/resolve/${encodeURIComponent(this.commit)}/${encodePath(this.path)}`;
  }

  /** Where the file's bytes are served: on the Hub's origin (with the token) or on a CDN (without). */
  private location(): Promise<{ url: string; hub: boolean }> {
    this.where ??= (async () => {
      let url = this.resolveUrl;
      for (let hops = 0; hops < 5; hops++) {
        const res = await hubRequest(this.params, url, this.what, { method: "HEAD", followRedirects: false });
        await res.body.dump();
        // The Hub says which commit it resolved (X-Repo-Commit): it must be the one planned from.
        const served = header(res.headers, "x-repo-commit");
        if (served && served !== this.commit) {
          throw new CakeError("E_HTTP", `${this.what}: the Hub served commit ${served}, not ${this.commit}`);
        }
        const loc = header(res.headers, "location");
        if (res.status < 300 || res.status >= 400 || !loc) return { url, hub: true };
        url = new URL(loc, url).toString();
        if (!isHubOrigin(this.params, url)) return { url, hub: false };
      }
      throw new CakeError("E_HTTP", `${this.what}: too many redirects on the Hub`);
    })();
    this.where.catch(() => (this.where = undefined));
    return this.where;
  }

  /**
   * Finds where the file is served (the resolve's round trip) ahead of the reads. A failure is
   * forgotten (see location) and met again by the next read.
   */
  async locate(): Promise<void> {
    await this.location();
  }

  /** Bytes [start, end) of the file. Says where its body starts (0 when the server ignored Range). */
  async open(start: number, end: number, signal?: AbortSignal): Promise<{ body: Readable; start: number }> {
    if (end <= start) throw new RangeError(`empty range ${start}-${end}`);
    const range = `bytes=${start}-${end - 1}`;
    for (let attempt = 0; attempt < 2; attempt++) {
      const loc = await this.location();
      const headers = loc.hub ? hubHeaders(this.params, { range }) : { "user-agent": USER_AGENT, range };
      const res = await httpRequest(loc.url, { headers, ...(signal ? { signal } : {}) });
      if (res.status === 206) {
        const cr = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header(res.headers, "content-range") ?? "");
        if (!cr || Number(cr[1]) !== start) {
          res.body.destroy();
          throw new CakeError("E_HTTP", `${this.what}: asked for ${range}, got Content-Range ${header(res.headers, "content-range")}`);
        }
        return { body: res.body, start };
      }
      if (res.status === 200) return { body: res.body, start: 0 };
      if (!loc.hub && (res.status === 403 || res.status === 410) && attempt === 0) {
        await res.body.dump();
        this.where = undefined; // signed URL expired: resolve again
        continue;
      }
      if (loc.hub) {
        throw await hubError(res, this.what, this.params);
      }
      await res.body.dump();
      throw new CakeError("E_HTTP", `${this.what}: CDN answered HTTP ${res.status} to ${range}`);
    }
    throw new CakeError("E_HTTP", `${this.what}: CDN refused the signed location twice`);
  }

  /** Reads a small range fully into memory (headers). */
  async read(start: number, end: number, signal?: AbortSignal): Promise<Buffer> {
    const { body, start: at } = await this.open(start, end, signal);
    const chunks: Buffer[] = [];
    for await (const { data } of byteWindow(body, at, start, end)) chunks.push(data);
    const buf = Buffer.concat(chunks);
    if (buf.length !== end - start) throw new CakeError("E_SIZE", `${this.what}: short read at ${start}-${end}: ${buf.length} bytes`);
    return buf;
  }
}
