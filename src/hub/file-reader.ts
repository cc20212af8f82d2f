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
import { discard, header, httpReadAll, httpRequest, parseContentRange } from "../http/request.js";
import { isHubOrigin, type HubParams } from "./config.js";
import { hubError, hubErrorOf } from "./errors.js";
import { encodePath, encodeRepo, hubHeaders, hubRequest, unreachable, USER_AGENT } from "./request.js";

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

  /** The headers for a Range request to where the file is served: the token only on the Hub. */
  private rangeHeaders(loc: { hub: boolean }, range: string): Record<string, string> {
    return loc.hub ? hubHeaders(this.params, { range }) : { "user-agent": USER_AGENT, range };
  }

  /**
   * The CDN refused a signed location it gave out: it expired, and resolving again gives a fresh one.
   * CloudFront/S3 answer 403 (410 some), the Xet bridge and some CDNs 400. Any 400 counts, whatever its
   * body says: the bodies differ by CDN (S3 XML, HTML, plain text), the signature is the only part of
   * the request that goes stale, and a wrong guess costs one HEAD on the Hub before the same answer is
   * reported with its status.
   */
  private expired(loc: { hub: boolean }, status: number): boolean {
    return !loc.hub && (status === 400 || status === 403 || status === 410);
  }

  /**
   * Sends a request to where the file is served; a CDN that refuses the signed location as expired
   * gets one more try at a location resolved again (once for all the reads that met it).
   */
  private async atLocation<T extends { status: number }>(send: (loc: { url: string; hub: boolean }) => Promise<T>, drop: (res: T) => Promise<unknown>): Promise<{ res: T; loc: { url: string; hub: boolean } }> {
    for (let attempt = 0; ; attempt++) {
      const located = this.location();
      const loc = await located;
      let res: T;
      try {
        res = await send(loc);
      } catch (err) {
        throw unreachable(this.params, this.what, err);
      }
      if (!this.expired(loc, res.status) || attempt > 0) return { res, loc };
      await drop(res);
      if (this.where === located) this.where = undefined;
    }
  }

  /** Bytes [start, end) of the file. Says where its body starts (0 when the server ignored Range). */
  async open(start: number, end: number, signal = this.params.signal): Promise<{ body: Readable; start: number }> {
    if (end <= start) throw new RangeError(`empty range ${start}-${end}`);
    const range = `bytes=${start}-${end - 1}`;
    const { res, loc } = await this.atLocation(
      (l) => httpRequest(l.url, { headers: this.rangeHeaders(l, range), ...(signal ? { signal } : {}) }),
      (r) => r.body.dump(),
    );
    if (res.status === 206) {
      const cr = parseContentRange(header(res.headers, "content-range"));
      if (!cr || cr.start !== start) {
        discard(res.body);
        throw new CakeError("E_HTTP", `${this.what}: asked for ${range}, got Content-Range ${header(res.headers, "content-range")}`);
      }
      return { body: res.body, start };
    }
    if (res.status === 200) return { body: res.body, start: 0 };
    if (loc.hub) throw await hubError(res, this.what, this.params);
    await res.body.dump();
    throw new CakeError("E_HTTP", `${this.what}: CDN answered HTTP ${res.status} to ${range}`, { status: res.status });
  }

  /**
   * Reads a small range whole into memory (a safetensors header): one request whose answer, if it
   * is cut, continues from its last byte (src/http `httpReadAll`).
   */
  async read(start: number, end: number, signal = this.params.signal): Promise<Buffer> {
    if (end <= start) throw new RangeError(`empty range ${start}-${end}`);
    const range = `bytes=${start}-${end - 1}`;
    const { res, loc } = await this.atLocation(
      (l) => httpReadAll(l.url, { headers: this.rangeHeaders(l, range), limit: end - start, what: this.what, ...(signal ? { signal } : {}) }),
      async () => {},
    );
    if (res.status === 206 || res.status === 200) {
      if (res.bytes.length !== end - start) throw new CakeError("E_SIZE", `${this.what}: short read at ${start}-${end}: ${res.bytes.length} bytes`);
      return res.bytes;
    }
    if (loc.hub) throw hubErrorOf(res, this.what, this.params);
    throw new CakeError("E_HTTP", `${this.what}: CDN answered HTTP ${res.status} to ${range}`, { status: res.status });
  }
}
