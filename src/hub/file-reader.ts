/**
 * Byte ranges of one file of a Hub revision: `GET /{repo}/resolve/{commit}/{path}` with `Range`.
 * LFS files answer with a 302 to the CDN; the signed location is remembered so each later range
 * goes straight to the CDN (one round trip, not two), without the Authorization header, and is
 * re-resolved when the CDN refuses it (expired signature).
 */
import type { Readable } from "node:stream";
import { CakeError } from "../errors.js";
import { header, httpRequest } from "../http/request.js";
import { byteWindow } from "../http/window.js";
import type { HubParams } from "./config.js";
import { hubError } from "./errors.js";
import { encodePath, encodeRepo, hubHeaders, hubRequest, USER_AGENT } from "./request.js";

export class HubFileReader {
  private cdn?: Promise<string | undefined>;
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

  /** The CDN location of an LFS file, or undefined when the Hub serves it itself. */
  private location(): Promise<string | undefined> {
    this.cdn ??= (async () => {
      const res = await hubRequest(this.params, this.resolveUrl, this.what, { method: "HEAD", followRedirects: false });
      await res.body.dump();
      const loc = header(res.headers, "location");
      return res.status >= 300 && res.status < 400 && loc ? new URL(loc, this.resolveUrl).toString() : undefined;
    })();
    this.cdn.catch(() => (this.cdn = undefined));
    return this.cdn;
  }

  /** Bytes [start, end) of the file. Says where its body starts (0 when the server ignored Range). */
  async open(start: number, end: number, signal?: AbortSignal): Promise<{ body: Readable; start: number }> {
    if (end <= start) throw new RangeError(`empty range ${start}-${end}`);
    const range = `bytes=${start}-${end - 1}`;
    for (let attempt = 0; attempt < 2; attempt++) {
      const loc = await this.location();
      const res = loc
        ? await httpRequest(loc, { headers: { "user-agent": USER_AGENT, range }, ...(signal ? { signal } : {}) })
        : await httpRequest(this.resolveUrl, { headers: hubHeaders(this.params, { range }), ...(signal ? { signal } : {}) });
      if (res.status === 206) {
        const cr = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header(res.headers, "content-range") ?? "");
        if (!cr || Number(cr[1]) !== start) {
          res.body.destroy();
          throw new CakeError("E_HTTP", `${this.what}: asked for ${range}, got Content-Range ${header(res.headers, "content-range")}`);
        }
        return { body: res.body, start };
      }
      if (res.status === 200) return { body: res.body, start: 0 };
      if (loc && (res.status === 403 || res.status === 410) && attempt === 0) {
        await res.body.dump();
        this.cdn = undefined; // signed URL expired: resolve again
        continue;
      }
      if (!loc) {
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
