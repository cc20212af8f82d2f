/**
 * A Hugging Face Hub emulator: the HTTP API the real `huggingface_hub` client speaks (model info, tree,
 * paths-info, search, resolve with LFS redirects to a CDN on another host), its error codes, and knobs to
 * make the network bad on purpose (bandwidth, latency, dropped connections, 429, 503); browser logins'
 * token refresh (`/oauth/token`) and a second name for the Hub (`aliasHost`).
 *
 * Three plain node:http servers: the Hub on `host`, the "CDN" on `cdnHost` and the Xet bridge on `xetHost`
 * (xet-bridge.ts), other loopback addresses, so a client that forwards its token off the Hub host is caught
 * (`counters.cdnAuthorizationSeen`).
 * See docs/hub-emulation.md.
 */
import { createHash, createHmac, randomBytes } from "node:crypto";
import { createReadStream, readFileSync } from "node:fs";
import { readdir } from "node:fs/promises";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { join, posix } from "node:path";
import { cutAnswer, type CutPlan } from "../helpers/cut-answer.js";
import { rateLimitHeaders, type RateLimitStyle } from "./rate-limit.js";
import { BlobIndex, entryAt, listTree, Repo, scanDir, type Commit, type RepoFile, type TreeEntry } from "./repo.js";
import { xetBridge, xetHashOf } from "./xet-bridge.js";

export interface HubOptions {
  host?: string; // default "127.0.0.1"
  cdnHost?: string; // default "127.0.0.2" (another loopback address; the CDN is a second HTTP server there)
  port?: number;
  cdnPort?: number; // default 0 = free port
  xetHost?: string; // default "127.0.0.3": the Xet bridge (cas-bridge.xethub.hf.co), a third HTTP server
  xetPort?: number; // default 0 = free port
  pageSize?: number; // tree listing page size (default 1000 like the Hub); tests set it small to force Link pagination
  tokens?: Record<string, { user: string; gatedAccess?: string[] }>; // HF tokens accepted, and gated repos each may read
  /**
   * Refresh tokens `POST /oauth/token` (grant_type=refresh_token) takes, as the Hub does for browser
   * logins: each exchange mints a new access token for that user (`expires_in` 30 days); any other
   * refresh token is `400 {"error":"invalid_grant"}`.
   */
  refreshTokens?: Record<string, { user: string; gatedAccess?: string[] }>;
  /** Also serve the Hub on this address (`Hub.aliasUrl`), another name for it, as hf.co is for huggingface.co. */
  aliasHost?: string;
  bandwidth?: number; // per-connection cap in bytes/second on CDN + resolve bodies (0/undefined = none)
  latencyMs?: number; // added before answering each request
  /** The CDN answers over TLS with this key and certificate (for 127.0.0.2: a client must trust it, e.g. NODE_EXTRA_CA_CERTS). */
  cdnTls?: { key: Buffer; cert: Buffer };
  /** Answer regular files at a branch/tag (`"always"`: at a commit too) with a relative 307 to /api/resolve-cache/… as huggingface.co does (default false). */
  resolveCache?: boolean | "always";
}

export interface HubKnobs {
  bandwidth?: number;
  latencyMs?: number;
  /** Cut (socket destroyed) every `dropEvery`th content request after this many body bytes. */
  dropAfterBytes?: number;
  /** Which content requests `dropAfterBytes` applies to: every Nth; 0 = none. Unset: all of them if dropAfterBytes > 0. */
  dropEvery?: number;
  /** Every Nth request (Hub, CDN or bridge) answers 429 that says to retry in `retryAfterSeconds` (see rateLimitStyle). */
  fail429Every?: number;
  retryAfterSeconds?: number;
  /** Every Nth request (Hub or CDN) answers 503. */
  fail503Every?: number;
  /** `"always"`: also at a full commit sha (what clients' captures of huggingface.co show for small files). */
  resolveCache?: boolean | "always";
  /** LFS files stored with Xet (all with `true`, or those the predicate picks): resolve 302s to the Xet bridge. */
  xet?: boolean | ((path: string) => boolean);
  /** The Xet bridge answers 400 to a GET without Range of a file larger than this (unset: never). */
  xetRangeRequiredAbove?: number;
  /** Lifetime of the signed CDN and bridge links handed out from now on (default 24 h CDN, 1 h bridge). */
  linkTtlSeconds?: number;
  /** What an expired CDN or bridge link answers: 403 (CloudFront/S3, default) or 400. */
  expiredLinkStatus?: 403 | 400;
  /** How injected 429s say when to retry: `Retry-After` (default) or the Hub's `RateLimit` headers, t = retryAfterSeconds. */
  rateLimitStyle?: RateLimitStyle;
  /**
   * Cuts any answer at any byte, the way a CDN, a proxy or a load balancer sometimes does: asked once
   * per request (Hub and CDN alike: JSON, redirects, errors, file bytes), it says how much of the
   * whole answer as sent on the wire (status line, headers, body) goes out before the connection is
   * destroyed: `{ bytes }`, or `{ fraction }` of the whole (headers + Content-Length); undefined = no cut.
   * `n` counts requests from when the knob was set. See `cutEvery` (test/helpers/cut-answer.ts).
   */
  cut?: (r: CutRequest) => CutPlan | undefined;
  /**
   * Rewrites each tree / paths-info entry of a repo as the Hub sends it (a lying listing: another
   * repo's oids and sizes claimed for this one's files). Default: the truth.
   */
  treeEntry?: (repo: string, entry: Record<string, unknown>) => Record<string, unknown>;
  /**
   * What model info's `siblings` lists, given the commit's file names (default: all of them). Tests
   * leave files out or add names the commit lacks, as a trimmed or stale answer would.
   */
  siblings?: (names: string[]) => string[];
  /**
   * Rewrites each tree listing page as sent: its entries (JSON objects) and its `Link` target. Tests
   * serve a listing whose next page loops, or that lies (a path twice, `a` beside `a/b.json`).
   */
  treePage?: (page: { entries: object[]; next?: string }) => { entries: object[]; next?: string };
  /** Every request to the Hub's main address answers 307 to the same path on the alias address (needs `aliasHost`). */
  redirectToAlias?: boolean;
}

export interface CutRequest {
  /** 1 for the first request after the knob was set. */
  n: number;
  server: "hub" | "cdn" | "xet";
  method: string;
  /** Path and query. */
  url: string;
  range?: string;
}
export interface HubCounters {
  requests: number;
  bytesServed: number; // body bytes of file content (resolve + CDN + bridge)
  bytesByFile: Map<string, number>; // key "org/name/path" -> content bytes served
  rangesByFile: Map<string, Array<[number, number]>>; // byte ranges served [start, endExclusive], in order
  cdnAuthorizationSeen: number; // requests reaching the CDN or the Xet bridge that carried an Authorization header (must stay 0 for good clients)
  xetRequests: number; // requests the Xet bridge accepted (signature valid, link alive)
  expiredLinks: number; // CDN or bridge requests refused because their signed link had expired
  resolveCacheRedirects: number; // resolve answers that were a 307 to /api/resolve-cache
  dropped: number;
  /** Answers cut by the `cut` knob (the connection destroyed part-way). */
  cut: number;
  injected429: number;
  injected503: number;
  reset(): void;
}

export interface Hub {
  url: string; // e.g. http://127.0.0.1:PORT  (HF_ENDPOINT)
  aliasUrl?: string; // with `aliasHost`: the Hub under its other name
  cdnUrl: string;
  xetUrl: string;
  addRepo(id: string, opts?: { gated?: boolean; private?: boolean }): void; // "org/name"
  /** Make a commit whose tree is exactly the files under `dir` (read from disk, streamed: files can be GBs). Moves `branch` (default "main") to it, adds tags. Returns the 40-hex commit sha (deterministic: sha1 over the tree + parent). */
  commit(id: string, dir: string, opts?: { branch?: string; tags?: string[]; message?: string }): Promise<string>;
  setKnobs(k: HubKnobs): void;
  counters: HubCounters;
  close(): Promise<void>;
}

const REPO_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9._-]+$/;
const JSON_TYPE = "application/json; charset=utf-8";
/** How long a CDN link stays valid. */
const CDN_TTL_SECONDS = 24 * 3600;
const READ_CHUNK = 256 * 1024;
/**
 * A capped connection sends its bytes in slices of 1/PACE_HZ of a second (at least PACE_MIN bytes),
 * each when its last byte is due: completion times are exact, and the first byte of an answer is at
 * most one slice late. With 50 ms slices every range began 50 ms late (a real link's first byte comes
 * after the round trip alone), a cost no real CDN has; 5 ms is closer to a TCP stream's steady flow.
 */
const PACE_HZ = 200;
const PACE_MIN = 16 * 1024;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const b64url = (s: string | Buffer) => Buffer.from(s).toString("base64url");
const truthy = (v: string | null | undefined) => v === "true" || v === "True" || v === "1";

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string | undefined,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

type Auth = { user?: string; access: Set<string> };

function contentTypeOf(path: string): string {
  const p = path.toLowerCase();
  if (p.endsWith(".json")) return JSON_TYPE;
  if (p.endsWith(".md") || p.endsWith(".txt") || p.endsWith(".py") || p.endsWith(".yaml") || p.endsWith(".yml") || p === ".gitattributes" || p.endsWith("/.gitattributes")) {
    return "text/plain; charset=utf-8";
  }
  return "application/octet-stream";
}

function contentDisposition(path: string): string {
  const name = posix.basename(path);
  return `inline; filename*=UTF-8''${encodeURIComponent(name)}; filename="${name.replace(/["\\]/g, "_")}";`;
}

/** Parses a single `bytes=` range against `size`: null = serve the whole body, "unsatisfiable" = 416. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null | "unsatisfiable" {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return null; // malformed or several ranges: a server may ignore Range and send everything
  const [, a = "", b = ""] = m;
  if (a === "" && b === "") return null;
  if (a === "") {
    const n = Number(b);
    if (n === 0 || size === 0) return "unsatisfiable";
    return { start: Math.max(0, size - n), end: size };
  }
  const start = Number(a);
  if (b !== "" && Number(b) < start) return null; // invalid range: ignored
  if (start >= size) return "unsatisfiable";
  const end = b === "" ? size : Math.min(Number(b) + 1, size);
  return { start, end };
}

export async function startHub(opts: HubOptions & { root?: string } = {}): Promise<Hub> {
  const host = opts.host ?? "127.0.0.1";
  const cdnHost = opts.cdnHost ?? "127.0.0.2";
  const pageSize = Math.max(1, opts.pageSize ?? 1000);
  const tokens = new Map(Object.entries(opts.tokens ?? {}));
  const repos = new Map<string, Repo>();
  const blobs = new BlobIndex();
  const hashCache = new Map<string, RepoFile>();
  const secret = randomBytes(32);
  const knobs: HubKnobs = { bandwidth: opts.bandwidth, latencyMs: opts.latencyMs, resolveCache: opts.resolveCache };
  // Phase counters for the deterministic knobs, restarted whenever the knob is set.
  const phase = { requests: 0, content: 0, cut: 0 };
  let repoSerial = 0;

  const counters: HubCounters = {
    requests: 0,
    bytesServed: 0,
    bytesByFile: new Map(),
    rangesByFile: new Map(),
    cdnAuthorizationSeen: 0,
    xetRequests: 0,
    expiredLinks: 0,
    resolveCacheRedirects: 0,
    dropped: 0,
    cut: 0,
    injected429: 0,
    injected503: 0,
    reset() {
      counters.requests = 0;
      counters.bytesServed = 0;
      counters.bytesByFile.clear();
      counters.rangesByFile.clear();
      counters.cdnAuthorizationSeen = 0;
      counters.xetRequests = 0;
      counters.expiredLinks = 0;
      counters.resolveCacheRedirects = 0;
      counters.dropped = 0;
      counters.cut = 0;
      counters.injected429 = 0;
      counters.injected503 = 0;
    },
  };

  let hubUrl = "";
  let cdnUrl = "";
  let xetUrl = "";
  let aliasUrl: string | undefined;
  let minted = 0;

  // ---------- responses ----------

  const send = (req: IncomingMessage, res: ServerResponse, status: number, body: string | Buffer, headers: Record<string, string>) => {
    const buf = typeof body === "string" ? Buffer.from(body, "utf8") : body;
    res.writeHead(status, { ...headers, "Content-Length": String(buf.length) });
    res.end(req.method === "HEAD" ? undefined : buf);
  };
  const sendJson = (req: IncomingMessage, res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}) =>
    send(req, res, status, JSON.stringify(value), { "Content-Type": JSON_TYPE, ...headers });
  const sendError = (req: IncomingMessage, res: ServerResponse, e: HttpError) => {
    const headers: Record<string, string> = { ...e.headers, "X-Error-Message": e.message };
    if (e.code) headers["X-Error-Code"] = e.code;
    sendJson(req, res, e.status, { error: e.message }, headers);
  };
  const cdnError = (req: IncomingMessage, res: ServerResponse, status: number, code: string, message: string) =>
    send(req, res, status, `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`, {
      "Content-Type": "application/xml",
    });
  const refuseExpired = (req: IncomingMessage, res: ServerResponse) => {
    counters.expiredLinks++;
    if (knobs.expiredLinkStatus === 400) return cdnError(req, res, 400, "ExpiredToken", "The provided token has expired.");
    cdnError(req, res, 403, "AccessDenied", "Request has expired");
  };

  // ---------- access ----------

  const authOf = (req: IncomingMessage): Auth => {
    const h = req.headers.authorization;
    if (h === undefined) return { access: new Set() };
    const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
    const t = m ? tokens.get(m[1]!) : undefined;
    if (!t) throw new HttpError(401, undefined, "Invalid credentials in Authorization header");
    return { user: t.user, access: new Set(t.gatedAccess ?? []) };
  };
  const canRead = (auth: Auth, repo: Repo) => auth.user !== undefined && (auth.user === repo.author || auth.access.has(repo.id));
  /** The repo if `auth` may see it; for content, also checks the gate. */
  const repoFor = (id: string, auth: Auth, content: boolean): Repo => {
    const repo = repos.get(id);
    if (!repo || (repo.private && !canRead(auth, repo))) {
      throw new HttpError(auth.user ? 404 : 401, "RepoNotFound", "Repository not found");
    }
    if (content && repo.gated && !canRead(auth, repo)) {
      if (!auth.user) {
        throw new HttpError(401, "GatedRepo", `Access to model ${id} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
      }
      throw new HttpError(403, "GatedRepo", `Access to model ${id} is restricted and you are not in the authorized list. Visit ${hubUrl}/${id} to ask for access.`);
    }
    return repo;
  };
  const commitFor = (repo: Repo, rev: string): Commit => {
    const c = repo.resolve(rev);
    if (!c) throw new HttpError(404, "RevisionNotFound", `Invalid rev id: ${rev}`);
    return c;
  };

  // ---------- JSON shapes ----------

  const mongoId = (id: string) => createHash("sha1").update(id).digest("hex").slice(0, 24);
  const lastCommitJson = (c: Commit | undefined) => (c ? { id: c.sha, title: c.message.split("\n")[0], date: c.date } : undefined);
  const entryJson = (repo: Repo, commit: Commit, e: TreeEntry, expand: boolean): Record<string, unknown> => {
    const out: Record<string, unknown> =
      e.type === "file"
        ? { type: "file", oid: e.file.oid, size: e.file.size, path: e.path }
        : { type: "directory", oid: e.oid, size: 0, path: e.path };
    if (e.type === "file" && e.file.lfs) out.lfs = { oid: e.file.sha256, size: e.file.size, pointerSize: e.file.pointerSize };
    if (e.type === "file" && bridge.isXet(e.file)) out.xetHash = xetHashOf(e.file);
    if (expand) {
      out.lastCommit = lastCommitJson(repo.lastCommitFor(commit.sha, e.path));
      if (e.type === "file") out.securityFileStatus = { status: "safe", avScan: { virusFound: false, virusNames: null }, pickleImportScan: null };
    }
    return knobs.treeEntry ? knobs.treeEntry(repo.id, out) : out;
  };
  const siblingsOf = (commit: Commit, blobsToo: boolean) => {
    const names = [...commit.files.keys()];
    return (knobs.siblings?.(names) ?? names).map((name) => {
      const f = commit.files.get(name);
      return f ? siblingJson(f, blobsToo) : { rfilename: name };
    });
  };
  const siblingJson = (f: RepoFile, blobsToo: boolean) => {
    if (!blobsToo) return { rfilename: f.path };
    const s: Record<string, unknown> = { rfilename: f.path, size: f.size, blobId: f.oid };
    if (f.lfs) s.lfs = { sha256: f.sha256, size: f.size, pointerSize: f.pointerSize };
    return s;
  };
  const summaryJson = (repo: Repo) => {
    const head = repo.head();
    return {
      _id: mongoId(repo.id),
      id: repo.id,
      modelId: repo.id,
      likes: 0,
      downloads: 0,
      private: repo.private,
      gated: repo.gated ? "manual" : false,
      tags: [] as string[],
      lastModified: head?.date ?? repo.createdAt,
      createdAt: repo.createdAt,
    };
  };
  const infoJson = (repo: Repo, commit: Commit | undefined, blobsToo: boolean) => ({
    _id: mongoId(repo.id),
    id: repo.id,
    modelId: repo.id,
    author: repo.author,
    sha: commit?.sha,
    lastModified: commit?.date ?? repo.createdAt,
    createdAt: repo.createdAt,
    private: repo.private,
    gated: repo.gated ? "manual" : false,
    disabled: false,
    downloads: 0,
    likes: 0,
    tags: [] as string[],
    siblings: commit ? siblingsOf(commit, blobsToo) : [],
    usedStorage: repo.usedStorage(),
    ...(commit ? cardDataOf(commit) : {}),
  });
  /**
   * The model card's metadata, as the Hub gives it in `cardData`: the README's YAML front matter.
   * Only the `base_model` key is read (a string, or a list of `- name` lines), what fine-tunes declare.
   */
  const cardDataOf = (commit: Commit): { cardData?: { base_model: string | string[] } } => {
    const readme = commit.files.get("README.md");
    if (!readme) return {};
    const text = readFileSync(readme.source.file, "utf8");
    const front = /^---\n([\s\S]*?)\n---/.exec(text)?.[1];
    const m = front ? /^base_model:[ \t]*(.*)$((?:\n[ \t]*- .*)*)/m.exec(front) : null;
    if (!m) return {};
    const list = [...m[2]!.matchAll(/- (.+)/g)].map((x) => x[1]!.trim());
    return { cardData: { base_model: m[1]!.trim() || list } };
  };

  // ---------- pagination ----------

  const decodeCursor = (cursor: string | null): number => {
    if (cursor === null) return 0;
    try {
      const o = (JSON.parse(Buffer.from(cursor, "base64url").toString("utf8")) as { o?: unknown }).o;
      if (typeof o === "number" && Number.isSafeInteger(o) && o >= 0) return o;
    } catch {
      // fall through
    }
    throw new HttpError(400, undefined, "Invalid cursor");
  };
  /** Slices `items` at the request's cursor and sets a GitHub-style Link header when more remain. */
  const paginate = <T>(req: IncomingMessage, url: URL, items: T[], size: number, headers: Record<string, string>): T[] => {
    const offset = decodeCursor(url.searchParams.get("cursor"));
    const page = items.slice(offset, offset + size);
    if (offset + size < items.length) {
      const next = new URL(url.toString());
      next.searchParams.set("cursor", b64url(JSON.stringify({ o: offset + size })));
      const origin = `http://${req.headers.host ?? new URL(hubUrl).host}`;
      headers.Link = `<${origin}${next.pathname}${next.search}>; rel="next"`;
    }
    return page;
  };

  // ---------- content ----------

  const cdnLocation = (repo: Repo, f: RepoFile): string => {
    const repoHash = createHash("sha256").update(`models/${repo.id}`).digest("hex");
    // Rounded up: a link lives its lifetime plus less than a second, never less.
    const expires = Math.ceil(Date.now() / 1000 + (knobs.linkTtlSeconds ?? CDN_TTL_SECONDS));
    const policy = b64url(JSON.stringify({ r: repo.id, p: f.path, s: f.sha256, e: expires }));
    const signature = createHmac("sha256", secret).update(policy).digest("base64url");
    const q = new URLSearchParams({
      "response-content-disposition": contentDisposition(f.path),
      "response-content-type": contentTypeOf(f.path),
      Expires: String(expires),
      Policy: policy,
      Signature: signature,
      "Key-Pair-Id": "KEMULATORCAKEHUB",
    });
    return `${cdnUrl}/repos/${repoHash.slice(0, 2)}/${repoHash.slice(2, 4)}/${repoHash}/${f.sha256}?${q.toString()}`;
  };

  /** Writes with backpressure; with `flush`, resolves only once the bytes are handed to the socket. False if the client left. */
  const writeChunk = (res: ServerResponse, buf: Buffer, flush: boolean): Promise<boolean> | boolean => {
    if (res.destroyed) return false;
    if (!flush) {
      if (res.write(buf)) return true;
      return new Promise((resolve) => {
        const done = (ok: boolean) => {
          res.off("drain", onDrain);
          res.off("close", onClose);
          resolve(ok);
        };
        const onDrain = () => done(true);
        const onClose = () => done(false);
        res.on("drain", onDrain);
        res.on("close", onClose);
      });
    }
    return new Promise((resolve) => {
      const onClose = () => resolve(false);
      res.once("close", onClose);
      res.write(buf, (err) => {
        res.off("close", onClose);
        resolve(!err);
      });
    });
  };

  /** Serves `f`'s bytes (whole or one Range), streamed from disk, throttled and cut as the knobs say. */
  const serveContent = async (req: IncomingMessage, res: ServerResponse, repo: Repo, f: RepoFile, headers: Record<string, string>, cdn: boolean) => {
    const source = await blobs.find(f.sha256);
    if (!source) {
      const msg = `emulator: the bytes of ${repo.id}/${f.path} changed on disk since they were committed`;
      if (cdn) return cdnError(req, res, 404, "NoSuchKey", msg);
      throw new HttpError(500, undefined, msg);
    }
    const size = f.size;
    const range = parseRange(req.headers.range, size);
    if (range === "unsatisfiable") {
      return send(req, res, 416, "", { ...headers, "Content-Range": `bytes */${size}`, "Accept-Ranges": "bytes" });
    }
    const start = range ? range.start : 0;
    const end = range ? range.end : size;
    const h: Record<string, string> = { ...headers, "Accept-Ranges": "bytes", "Content-Length": String(end - start) };
    if (range) h["Content-Range"] = `bytes ${start}-${end - 1}/${size}`;
    res.writeHead(range ? 206 : 200, h);
    if (req.method === "HEAD") return void res.end();

    const key = `${repo.id}/${f.path}`;
    const served: [number, number] = [start, start];
    const list = counters.rangesByFile.get(key) ?? [];
    list.push(served);
    counters.rangesByFile.set(key, list);
    const n = ++phase.content;
    // dropAfterBytes alone: 0 means off, N cuts every content request. With dropEvery >= 1: every dropEvery-th
    // request is cut after dropAfterBytes bytes (0 = right after the headers). dropEvery 0 = off.
    const every = knobs.dropEvery ?? ((knobs.dropAfterBytes ?? 0) > 0 ? 1 : 0);
    const dropAt =
      knobs.dropAfterBytes !== undefined && every > 0 && n % every === 0 && knobs.dropAfterBytes < end - start ? knobs.dropAfterBytes : undefined;

    const account = (bytes: number) => {
      counters.bytesServed += bytes;
      counters.bytesByFile.set(key, (counters.bytesByFile.get(key) ?? 0) + bytes);
      served[1] += bytes;
    };
    const cut = () => {
      counters.dropped++;
      res.socket?.destroy();
      res.destroy();
    };
    if (dropAt === 0) {
      res.flushHeaders();
      await new Promise((r) => setImmediate(r));
      return cut();
    }
    if (end === start) return void res.end();

    const stream = createReadStream(source.file, { start, end: end - 1, highWaterMark: READ_CHUNK });
    let sent = 0;
    let bw = 0;
    let t0 = 0;
    let sentAtT0 = 0;
    try {
      for await (const chunk of stream) {
        const buf = chunk as Buffer;
        let off = 0;
        while (off < buf.length) {
          if ((knobs.bandwidth ?? 0) !== bw) {
            bw = knobs.bandwidth ?? 0;
            t0 = performance.now();
            sentAtT0 = sent;
          }
          let len = buf.length - off;
          if (bw > 0) len = Math.min(len, Math.max(PACE_MIN, Math.floor(bw / PACE_HZ)));
          if (dropAt !== undefined) len = Math.min(len, dropAt - sent);
          if (bw > 0) {
            const due = t0 + ((sent - sentAtT0 + len) * 1000) / bw;
            const wait = due - performance.now();
            if (wait > 0) await sleep(wait);
          }
          const last = dropAt !== undefined && sent + len >= dropAt;
          const ok = await writeChunk(res, buf.subarray(off, off + len), last);
          if (!ok) return;
          account(len);
          sent += len;
          off += len;
          if (dropAt !== undefined && sent >= dropAt) return cut();
        }
      }
      res.end();
    } finally {
      stream.destroy();
    }
  };

  const bridge = xetBridge({
    secret,
    knobs,
    counters,
    repoKey: (repo) => mongoId(repo.id),
    serveContent: (req, res, repo, f, headers) => serveContent(req, res, repo, f, headers, true),
    refuse: cdnError,
    refuseExpired,
  });

  // ---------- routes ----------

  const readBody = async (req: IncomingMessage, limit = 16 * 1024 * 1024): Promise<string> => {
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const c of req) {
      total += (c as Buffer).length;
      if (total > limit) throw new HttpError(413, undefined, "Payload too large");
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks).toString("utf8");
  };

  /** `refs/pr/1` etc. may arrive unencoded as three segments; anything else is one (URL-encoded) segment. */
  const splitRev = (segs: string[]): [string, string[]] => {
    if (segs[0] === "refs" && segs.length >= 3 && ["pr", "convert", "heads", "tags"].includes(segs[1]!)) {
      return [segs.slice(0, 3).join("/"), segs.slice(3)];
    }
    return [segs[0] ?? "", segs.slice(1)];
  };
  const cleanPath = (p: string) => p.replace(/^\/+|\/+$/g, "");

  /** GET/HEAD /{id}/resolve/{rev}/{path}; `pinned` for /api/resolve-cache/models/{id}/{commit}/{path}. */
  const resolveRoute = async (req: IncomingMessage, res: ServerResponse, id: string, rest: string[], pinned = false) => {
    const auth = authOf(req);
    const repo = repoFor(id, auth, true);
    const [rev, pathSegs] = splitRev(rest);
    const commit = commitFor(repo, rev);
    const path = pathSegs.join("/");
    const f = commit.files.get(path);
    if (!f) throw new HttpError(404, "EntryNotFound", "Entry not found", { "X-Repo-Commit": commit.sha });
    const headers: Record<string, string> = {
      "X-Repo-Commit": commit.sha,
      "Access-Control-Expose-Headers": "X-Repo-Commit,X-Linked-Etag,X-Linked-Size,X-Xet-Hash,X-Error-Code,X-Error-Message,ETag,Content-Range,Link",
    };
    if (!f.lfs && knobs.resolveCache && !pinned && (rev !== commit.sha || knobs.resolveCache === "always")) {
      // What huggingface.co does for regular files at a branch or tag: a relative redirect to a URL pinned to the
      // commit (cacheable). Clients must follow it on the same host, keeping their token.
      const encoded = path.split("/").map(encodeURIComponent).join("/");
      const location = `/api/resolve-cache/models/${id}/${commit.sha}/${encoded}?etag=${encodeURIComponent(`"${f.contentOid}"`)}`;
      counters.resolveCacheRedirects++;
      return send(req, res, 307, "", { ...headers, Location: location });
    }
    if (f.lfs) {
      return send(req, res, 302, "", {
        ...headers,
        Location: cdnLocation(repo, f),
        "X-Linked-Etag": `"${f.sha256}"`,
        "X-Linked-Size": String(f.size),
        ETag: `"${f.sha256}"`,
        "Accept-Ranges": "bytes",
        ...bridge.redirectHeaders(hubUrl, repo, commit.sha, f),
      });
    }
    await serveContent(req, res, repo, f, { ...headers, ETag: `"${f.contentOid}"`, "Content-Type": contentTypeOf(f.path), "Content-Disposition": contentDisposition(f.path) }, false);
  };

  const listModels = (req: IncomingMessage, res: ServerResponse, url: URL) => {
    const auth = authOf(req);
    const p = url.searchParams;
    const search = (p.get("search") ?? "").toLowerCase();
    const author = p.get("author")?.toLowerCase();
    const filters = p.getAll("filter");
    let items = [...repos.values()].filter(
      (r) =>
        (!r.private || canRead(auth, r)) &&
        r.id.toLowerCase().includes(search) &&
        (author === undefined || r.author.toLowerCase() === author) &&
        filters.length === 0, // emulated repos carry no tags, so any tag filter matches nothing
    );
    const sort = p.get("sort");
    const dir = p.get("direction") === "1" ? 1 : sort ? -1 : 1;
    const keyOf = (r: Repo): string | number => {
      const s = summaryJson(r);
      switch (sort) {
        case "lastModified":
          return s.lastModified;
        case "createdAt":
          return s.createdAt;
        case "downloads":
        case "likes":
        case "trendingScore":
          return 0;
        default:
          return r.id;
      }
    };
    items = items.sort((a, b) => {
      const ka = keyOf(a);
      const kb = keyOf(b);
      return (ka < kb ? -1 : ka > kb ? 1 : 0) * dir || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
    });
    const limitParam = p.get("limit");
    const limit = limitParam === null ? 1000 : Math.min(1000, Math.max(1, Number.parseInt(limitParam, 10) || 1000));
    const headers: Record<string, string> = {};
    const page = paginate(req, url, items, limit, headers);
    const full = truthy(p.get("full"));
    sendJson(
      req,
      res,
      200,
      page.map((r) => {
        const s: Record<string, unknown> = summaryJson(r);
        if (full) {
          const head = r.head();
          s.author = r.author;
          s.sha = head?.sha;
          s.siblings = head ? siblingsOf(head, false) : [];
        }
        return s;
      }),
      headers,
    );
  };

  const modelRoute = async (req: IncomingMessage, res: ServerResponse, url: URL, id: string, rest: string[]) => {
    const auth = authOf(req);
    const method = req.method ?? "GET";
    const [op, ...args] = rest;
    const isGet = method === "GET" || method === "HEAD";
    if (op === undefined && isGet) {
      const repo = repoFor(id, auth, false);
      return sendJson(req, res, 200, infoJson(repo, repo.head(), truthy(url.searchParams.get("blobs"))));
    }
    if (op === "revision" && isGet && args.length > 0) {
      const repo = repoFor(id, auth, false);
      const commit = commitFor(repo, args.join("/"));
      return sendJson(req, res, 200, infoJson(repo, commit, truthy(url.searchParams.get("blobs"))));
    }
    if (op === "tree" && isGet && args.length > 0) {
      const repo = repoFor(id, auth, false);
      const [rev, pathSegs] = splitRev(args);
      const commit = commitFor(repo, rev);
      const path = cleanPath(pathSegs.join("/"));
      const expand = truthy(url.searchParams.get("expand"));
      const entries = listTree(commit, path, truthy(url.searchParams.get("recursive")));
      if (!entries) throw new HttpError(404, "EntryNotFound", `Entry not found: ${path} is not a directory at ${rev}`, { "X-Repo-Commit": commit.sha });
      const headers: Record<string, string> = {};
      const page = paginate(req, url, entries, expand ? Math.min(pageSize, 50) : pageSize, headers);
      let json: object[] = page.map((e) => entryJson(repo, commit, e, expand));
      if (knobs.treePage) {
        const next = /^<([^>]*)>/.exec(headers.Link ?? "")?.[1];
        const out = knobs.treePage({ entries: json, ...(next ? { next } : {}) });
        json = out.entries;
        if (out.next) headers.Link = `<${out.next}>; rel="next"`;
        else delete headers.Link;
      }
      return sendJson(req, res, 200, json, headers);
    }
    if (op === "paths-info" && method === "POST" && args.length > 0) {
      const repo = repoFor(id, auth, false);
      const commit = commitFor(repo, args.join("/"));
      const body = await readBody(req);
      let paths: string[];
      let expand = false;
      if ((req.headers["content-type"] ?? "").includes("application/json")) {
        let parsed: { paths?: unknown; expand?: unknown };
        try {
          parsed = JSON.parse(body) as typeof parsed;
        } catch {
          throw new HttpError(400, undefined, "Invalid JSON body");
        }
        const ps = typeof parsed.paths === "string" ? [parsed.paths] : parsed.paths;
        if (!Array.isArray(ps) || !ps.every((x) => typeof x === "string")) throw new HttpError(400, undefined, "Body must have a 'paths' array of strings");
        paths = ps as string[];
        expand = parsed.expand === true || parsed.expand === "true";
      } else {
        const form = new URLSearchParams(body);
        paths = [...form.getAll("paths"), ...form.getAll("paths[]")];
        expand = truthy(form.get("expand"));
      }
      const seen = new Set<string>();
      const out: unknown[] = [];
      for (const raw of paths) {
        const p = cleanPath(raw);
        if (seen.has(p)) continue;
        seen.add(p);
        const e = entryAt(commit, p);
        if (e) out.push(entryJson(repo, commit, e, expand));
      }
      return sendJson(req, res, 200, out);
    }
    if (op === "refs" && isGet && args.length === 0) {
      const repo = repoFor(id, auth, false);
      const branches = [...repo.branches].filter(([n]) => !n.startsWith("refs/"));
      const prs = [...repo.branches].filter(([n]) => n.startsWith("refs/pr/"));
      const body: Record<string, unknown> = {
        branches: branches.map(([name, sha]) => ({ name, ref: `refs/heads/${name}`, targetCommit: sha })),
        converts: [],
        tags: [...repo.tags].map(([name, sha]) => ({ name, ref: `refs/tags/${name}`, targetCommit: sha })),
      };
      if (truthy(url.searchParams.get("include_prs"))) body.pullRequests = prs.map(([name, sha]) => ({ name, ref: name, targetCommit: sha }));
      return sendJson(req, res, 200, body);
    }
    if (op === "commits" && isGet && args.length > 0) {
      const repo = repoFor(id, auth, false);
      const commit = commitFor(repo, args.join("/"));
      const all = repo.history(commit.sha).map((c) => ({
        id: c.sha,
        title: c.message.split("\n")[0],
        message: c.message,
        authors: [{ user: "cake-hub-emulator" }],
        date: c.date,
      }));
      const headers: Record<string, string> = {};
      return sendJson(req, res, 200, paginate(req, url, all, pageSize, headers), headers);
    }
    if (op === "xet-read-token") {
      throw new HttpError(501, undefined, "hub emulator: the Xet protocol is not emulated; set HF_HUB_DISABLE_XET=1 to download through the Xet bridge");
    }
    throw new HttpError(404, undefined, "Sorry, we can't find the page you are looking for.");
  };

  const hubRoute = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://hub.invalid");
    let segs: string[];
    try {
      segs = url.pathname.split("/").slice(1).map(decodeURIComponent);
    } catch {
      throw new HttpError(400, undefined, "Malformed URL");
    }
    if (segs[segs.length - 1] === "" && segs.length > 1) segs = segs.slice(0, -1);
    const method = req.method ?? "GET";
    if (segs[0] === "oauth" && segs[1] === "token" && segs.length === 2 && method === "POST") {
      const form = new URLSearchParams(await readBody(req));
      const who = form.get("grant_type") === "refresh_token" ? opts.refreshTokens?.[form.get("refresh_token") ?? ""] : undefined;
      if (!who) return sendJson(req, res, 400, { error: "invalid_grant", error_description: "The refresh token is invalid or expired" });
      const access = `hf_oauth_emulator_${++minted}`;
      tokens.set(access, who);
      return sendJson(req, res, 200, { access_token: access, token_type: "bearer", expires_in: 30 * 24 * 3600 });
    }
    if (segs[0] === "api") {
      if (segs[1] === "whoami-v2" && segs.length === 2) {
        const auth = authOf(req);
        if (!auth.user) throw new HttpError(401, undefined, "Invalid username or password.");
        return sendJson(req, res, 200, { type: "user", id: mongoId(auth.user), name: auth.user, fullname: auth.user, auth: { type: "access_token", accessToken: { displayName: "emulator", role: "read" } } });
      }
      if (segs[1] === "resolve-cache" && segs[2] === "models" && segs.length >= 7 && (method === "GET" || method === "HEAD")) {
        return resolveRoute(req, res, `${segs[3]}/${segs[4]}`, segs.slice(5), true);
      }
      if (segs[1] === "models") {
        if (segs.length === 2 && (method === "GET" || method === "HEAD")) return listModels(req, res, url);
        if (segs.length >= 4) return modelRoute(req, res, url, `${segs[2]}/${segs[3]}`, segs.slice(4));
      }
    } else if (segs.length >= 5 && segs[2] === "resolve" && (method === "GET" || method === "HEAD")) {
      return resolveRoute(req, res, `${segs[0]}/${segs[1]}`, segs.slice(3));
    }
    throw new HttpError(404, undefined, "Sorry, we can't find the page you are looking for.");
  };

  const cdnRoute = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://cdn.invalid");
    const m = /^\/repos\/[0-9a-f]{2}\/[0-9a-f]{2}\/[0-9a-f]{64}\/([0-9a-f]{64})$/.exec(url.pathname);
    if (!m || (req.method !== "GET" && req.method !== "HEAD")) return cdnError(req, res, 404, "NoSuchKey", "The specified key does not exist.");
    const policy = url.searchParams.get("Policy") ?? "";
    const signature = url.searchParams.get("Signature") ?? "";
    if (!policy || createHmac("sha256", secret).update(policy).digest("base64url") !== signature) {
      return cdnError(req, res, 403, "AccessDenied", "Missing or invalid signature");
    }
    let p: { r: string; p: string; s: string; e: number };
    try {
      p = JSON.parse(Buffer.from(policy, "base64url").toString("utf8")) as typeof p;
    } catch {
      return cdnError(req, res, 403, "AccessDenied", "Malformed policy");
    }
    if (p.s !== m[1]) return cdnError(req, res, 403, "AccessDenied", "Signature does not match this object");
    if (p.e * 1000 < Date.now()) return refuseExpired(req, res);
    const repo = repos.get(p.r);
    const f = repo ? [...repo.commits.values()].map((c) => c.files.get(p.p)).find((x) => x?.sha256 === p.s) : undefined;
    if (!repo || !f) return cdnError(req, res, 404, "NoSuchKey", "The specified key does not exist.");
    const headers: Record<string, string> = {
      ETag: `"${f.sha256}"`,
      "Content-Type": url.searchParams.get("response-content-type") ?? "application/octet-stream",
      "Cache-Control": "public, max-age=604800, immutable",
    };
    const disp = url.searchParams.get("response-content-disposition");
    if (disp) headers["Content-Disposition"] = disp;
    await serveContent(req, res, repo, f, headers, true);
  };

  const handler = (kind: "hub" | "alias" | "cdn" | "xet") => (req: IncomingMessage, res: ServerResponse) => {
    void (async () => {
      counters.requests++;
      const server = kind === "alias" ? "hub" : kind; // the alias is the Hub under its other name
      if (server !== "hub" && req.headers.authorization !== undefined) counters.cdnAuthorizationSeen++;
      const n = ++phase.requests;
      const plan = knobs.cut?.({ n: ++phase.cut, server, method: req.method ?? "GET", url: req.url ?? "/", ...(req.headers.range ? { range: req.headers.range } : {}) });
      if (plan) cutAnswer(res, plan, () => counters.cut++);
      if (knobs.latencyMs) await sleep(knobs.latencyMs);
      if (knobs.fail429Every && n % knobs.fail429Every === 0) {
        counters.injected429++;
        const headers = rateLimitHeaders(knobs.rateLimitStyle, knobs.retryAfterSeconds ?? 1, server, new URL(req.url ?? "/", "http://x").pathname);
        return sendError(req, res, new HttpError(429, undefined, "Too Many Requests (injected by the hub emulator)", headers));
      }
      if (knobs.fail503Every && n % knobs.fail503Every === 0) {
        counters.injected503++;
        return sendError(req, res, new HttpError(503, undefined, "Service Unavailable (injected by the hub emulator)"));
      }
      if (kind === "hub" && knobs.redirectToAlias && aliasUrl) return send(req, res, 307, "", { Location: `${aliasUrl}${req.url ?? "/"}` });
      if (kind === "xet") await bridge.route(req, res);
      else if (kind === "cdn") await cdnRoute(req, res);
      else await hubRoute(req, res);
    })().catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const e = err instanceof HttpError ? err : new HttpError(500, undefined, `emulator: ${(err as Error)?.message ?? String(err)}`);
      sendError(req, res, e);
    });
  };

  const hubServer = http.createServer(handler("hub"));
  const cdnServer: http.Server = opts.cdnTls ? https.createServer(opts.cdnTls, handler("cdn")) : http.createServer(handler("cdn"));
  const xetServer = http.createServer(handler("xet"));
  const aliasServer = http.createServer(handler("alias"));
  const listen = (server: http.Server, port: number, h: string) =>
    new Promise<number>((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      server.once("error", onError);
      server.listen(port, h, () => {
        server.off("error", onError);
        resolve((server.address() as AddressInfo).port);
      });
    });

  const hubPort = await listen(hubServer, opts.port ?? 0, host);
  hubUrl = `http://${host}:${hubPort}`;
  /** Listens on another loopback address; the URL to reach it there. */
  const listenElsewhere = async (server: http.Server, port: number, at: string): Promise<string> => {
    const scheme = server instanceof https.Server ? "https" : "http";
    try {
      return `${scheme}://${at}:${await listen(server, port, at)}`;
    } catch (err) {
      // Some systems (macOS) only configure 127.0.0.1: serve on the Hub's address under another host name (or
      // another port), which is still another origin for clients.
      if ((err as NodeJS.ErrnoException).code !== "EADDRNOTAVAIL" || host !== "127.0.0.1") throw err;
      return `${scheme}://localhost:${await listen(server, port, host)}`;
    }
  };
  try {
    cdnUrl = await listenElsewhere(cdnServer, opts.cdnPort ?? 0, cdnHost);
    xetUrl = await listenElsewhere(xetServer, opts.xetPort ?? 0, opts.xetHost ?? "127.0.0.3");
    bridge.setUrl(xetUrl);
  } catch (err) {
    for (const s of [hubServer, cdnServer]) if (s.listening) await new Promise<void>((r) => s.close(() => r()));
    throw err;
  }

  if (opts.aliasHost) aliasUrl = `http://${opts.aliasHost}:${await listen(aliasServer, 0, opts.aliasHost)}`;

  const addRepo = (id: string, o: { gated?: boolean; private?: boolean } = {}) => {
    if (!REPO_ID_RE.test(id)) throw new Error(`hub emulator: bad repo id ${JSON.stringify(id)} (want "org/name")`);
    const existing = repos.get(id);
    if (existing) {
      existing.gated = o.gated ?? existing.gated;
      existing.private = o.private ?? existing.private;
      return;
    }
    const createdAt = new Date(Date.UTC(2023, 0, 1) + repoSerial++ * 1000).toISOString();
    repos.set(id, new Repo(id, { ...o, createdAt }));
  };

  const commit = async (id: string, dir: string, o: { branch?: string; tags?: string[]; message?: string } = {}) => {
    if (!repos.has(id)) addRepo(id);
    const files = await scanDir(dir, hashCache);
    for (const f of files.values()) blobs.add(f.sha256, f.source);
    return repos.get(id)!.commit(files, o);
  };

  const hub: Hub = {
    url: hubUrl,
    cdnUrl,
    xetUrl,
    ...(aliasUrl ? { aliasUrl } : {}),
    addRepo,
    commit,
    setKnobs(k) {
      Object.assign(knobs, k);
      if ("fail429Every" in k || "fail503Every" in k) phase.requests = 0;
      if ("dropAfterBytes" in k || "dropEvery" in k) phase.content = 0;
      if ("cut" in k) phase.cut = 0;
    },
    counters,
    async close() {
      const closeOne = (s: http.Server) =>
        new Promise<void>((r) => {
          s.close(() => r());
          s.closeAllConnections();
        });
      await Promise.all([closeOne(hubServer), closeOne(cdnServer), closeOne(xetServer), ...(aliasUrl ? [closeOne(aliasServer)] : [])]);
    },
  };

  if (opts.root) {
    const orgs = await readdir(opts.root, { withFileTypes: true });
    for (const org of orgs.filter((d) => d.isDirectory() && !d.name.startsWith(".")).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const names = await readdir(join(opts.root, org.name), { withFileTypes: true });
      for (const name of names.filter((d) => d.isDirectory() && !d.name.startsWith(".")).sort((a, b) => (a.name < b.name ? -1 : 1))) {
        await commit(`${org.name}/${name.name}`, join(opts.root, org.name, name.name));
      }
    }
  }
  return hub;
}
