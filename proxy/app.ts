/**
 * The OCI distribution API, read side (distribution-spec v1.1 "Pull" and "Content discovery"),
 * over Hub repos: express routes that parse, ask the ProxyService, and answer with the headers
 * clients rely on (Docker-Content-Digest, Content-Type, Content-Length, Range).
 */
import express, { type NextFunction, type Request, type Response } from "express";
import { MT, oneLine } from "../src/index.js";
import { OciError, ociErrorOf, sendOciError } from "./oci-errors.js";
import { ModelPackView, isModelPackName } from "./modelpack-view.js";
import { ReadinessCheck } from "./readiness.js";
import type { ProxyService } from "./service.js";

/** The client's Hub token: the password of Basic credentials (`oras login`), or a Bearer token. */
export function clientToken(req: Request): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const [scheme, value = ""] = h.split(" ", 2);
  if (/^bearer$/i.test(scheme ?? "")) return value.trim() || undefined;
  if (/^basic$/i.test(scheme ?? "")) {
    const decoded = Buffer.from(value, "base64").toString("utf8");
    const pass = decoded.slice(decoded.indexOf(":") + 1);
    return pass || undefined;
  }
  return undefined;
}

/**
 * `bytes=a-b` (one range) against `size`: null = the whole blob, "bad" = 416. A Range that does not
 * parse (`bytes=5-2`: "last-pos < first-pos" makes the range-spec invalid, RFC 9110 §14.1.1; several
 * ranges; another unit) is ignored and the whole blob sent (200), as §14.2 allows; only a valid range
 * that starts past the end is unsatisfiable.
 */
function parseRange(h: string | undefined, size: number): { start: number; end: number } | null | "bad" {
  if (!h) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(h.trim());
  if (!m) return null;
  const [, a = "", b = ""] = m;
  if (a === "" && b === "") return null;
  if (a === "") {
    const n = Number(b);
    return n === 0 || size === 0 ? "bad" : { start: Math.max(0, size - n), end: size };
  }
  const start = Number(a);
  if (b !== "" && Number(b) < start) return null;
  if (start >= size) return "bad";
  return { start, end: b === "" ? size : Math.min(Number(b) + 1, size) };
}

/** A path segment decoded, or a 400 for a malformed percent-escape (Go's server, so distribution, refuses those too). */
function decodeSegment(segment: string, path: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new OciError("NAME_INVALID", `${path}: malformed percent-escape; names, tags and digests are plain ASCII`);
  }
}

const ROUTE = /^\/v2\/(.+)\/(manifests|blobs|tags|referrers)\/(.+)$/;
/** Referrers API (spec end-12a): nothing on the Hub refers to a converted model, so always an empty index. */
const EMPTY_REFERRERS = JSON.stringify({ schemaVersion: 2, mediaType: MT.index, manifests: [] });

/** What the routes read from: the `hf/` service or its ModelPack view. */
type View = Pick<ProxyService, "manifest" | "blob" | "tags">;

/** How often a cake client waiting on a conversion is told 102 Processing (its idle timeout is 30 s by default). */
const PROCESSING_EVERY_MS = 10_000;

export function createApp(service: ProxyService, opts: { log?: (e: Record<string, unknown>) => void } = {}): express.Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);

  // One structured log line per request.
  app.use((req: Request, res: Response, next: NextFunction) => {
    const t0 = Date.now();
    service.metrics.requests++;
    // "close" fires for every request, also when the connection was cut mid-body.
    res.on("close", () => {
      if (res.statusCode >= 400) service.metrics.errors++;
      opts.log?.({ event: "request", method: req.method, path: req.path, status: res.statusCode, ms: Date.now() - t0, bytes: Number(res.getHeader("content-length") ?? 0) });
    });
    res.setHeader("Docker-Distribution-API-Version", "registry/2.0");
    next();
  });

  app.get("/v2/", (_req, res) => {
    res.type("application/json").send("{}");
  });
  app.head("/v2/", (_req, res) => {
    res.type("application/json").end();
  });

  const modelPack = new ModelPackView(service);
  const readiness = new ReadinessCheck(service.opts.store, service.opts.backend, service.opts.backendAccess);
  app.get("/_cake/ready", async (_req, res) => {
    const r = await readiness.check();
    res.status(r.ready ? 200 : 503).json(r);
  });

  app.get("/metrics", (_req, res) => {
    res.type("text/plain; version=0.0.4").send(service.metrics.prometheus(service.conversions.size));
  });
  app.get("/_cake/status", (_req, res) => {
    res.json({ conversions: [...service.conversions.values()].map((c) => c.status), metrics: service.metrics });
  });
  /** Starts converting a revision without waiting for it (`cake proxy warm`); poll /_cake/status. */
  app.post("/_cake/warm", async (req, res) => {
    const name = String(req.query.name ?? "");
    const tag = String(req.query.tag ?? "main");
    try {
      const done = service.manifest(name, tag, clientToken(req));
      const first = await Promise.race([done.then((m) => m.digest), new Promise<undefined>((r) => setTimeout(() => r(undefined), 200))]);
      done.catch(() => {});
      res.status(first ? 200 : 202).json({ name, tag, digest: first ?? null, converting: !first });
    } catch (err) {
      sendOciError(res, ociErrorOf(err, "MANIFEST_UNKNOWN"));
    }
  });

  app.use(async (req: Request, res: Response, next: NextFunction) => {
    const m = ROUTE.exec(req.path);
    if (!m || (req.method !== "GET" && req.method !== "HEAD")) return next();
    const [, name = "", kind, ref = ""] = m;
    const head = req.method === "HEAD";
    // `mp/…` is the ModelPack view of the same repos (modelpack-view.ts); everything else is `hf/`.
    const view = isModelPackName(name) ? modelPack : service;
    try {
      if (kind === "manifests") return await manifest(req, res, view, name, decodeSegment(ref, req.path), head);
      if (kind === "blobs") return await blob(req, res, view, name, ref, head);
      if (kind === "tags" && ref === "list") return await tags(req, res, view, name);
      if (kind === "referrers" && !head) {
        await service.names.repoFor(name, service.hubFor(clientToken(req)));
        res.setHeader("Content-Type", MT.index); // exactly, no charset: clients compare it
        res.end(EMPTY_REFERRERS);
        return;
      }
      return next();
    } catch (err) {
      const what = kind === "blobs" ? "BLOB_UNKNOWN" : "MANIFEST_UNKNOWN";
      const e = ociErrorOf(err, what);
      if (!(err instanceof OciError)) opts.log?.({ event: "error", path: req.path, error: oneLine(err) });
      if (!res.headersSent) sendOciError(res, e, head);
      else res.destroy();
    }
  });

  async function manifest(req: Request, res: Response, view: View, name: string, ref: string, head: boolean): Promise<void> {
    const accept = String(req.headers.accept ?? "");
    if (accept && !accept.includes(MT.manifest) && !accept.includes("*/*") && !accept.includes("application/json")) {
      throw new OciError("MANIFEST_UNKNOWN", `${name}:${ref}: only ${MT.manifest} is served (Accept: ${accept})`);
    }
    // A conversion can take minutes before the manifest exists. cake (the client) gives up on an answer
    // whose headers do not come within its idle timeout; an informational 102 renews it. Only to cake:
    // Go's clients (oras, crane, skopeo) refuse more than five 1xx answers, and they wait anyway.
    const keepAlive = /^cake\//.test(String(req.headers["user-agent"] ?? "")) ? setInterval(() => res.writeProcessing(), service.opts.processingEveryMs ?? PROCESSING_EVERY_MS) : undefined;
    let found;
    try {
      found = await view.manifest(name, ref, clientToken(req));
    } finally {
      clearInterval(keepAlive);
    }
    const { digest, bytes } = found;
    res.setHeader("Content-Type", MT.manifest);
    res.setHeader("Docker-Content-Digest", digest);
    res.setHeader("Content-Length", String(bytes.length));
    if (head) {
      res.end();
      return;
    }
    service.metrics.servedBytes += bytes.length;
    res.end(bytes);
  }

  async function blob(req: Request, res: Response, view: View, name: string, digest: string, head: boolean): Promise<void> {
    const blob = await view.blob(name, digest, clientToken(req));
    const size = blob.size;
    res.setHeader("Docker-Content-Digest", digest);
    res.setHeader("Accept-Ranges", "bytes");
    res.setHeader("Content-Type", "application/octet-stream");
    const range = parseRange(req.headers.range, size);
    if (range === "bad") {
      res.setHeader("Content-Range", `bytes */${size}`);
      throw new OciError("BLOB_UNKNOWN", `${digest}: range ${req.headers.range} not satisfiable`, 416);
    }
    const { start, end } = range ?? { start: 0, end: size };
    if (range) {
      res.status(206);
      res.setHeader("Content-Range", `bytes ${start}-${end - 1}/${size}`);
    }
    res.setHeader("Content-Length", String(end - start));
    if (head || end === start) {
      res.end();
      return;
    }
    const stream = blob.open(start, end);
    stream.on("data", (c) => (service.metrics.servedBytes += c.length));
    stream.on("error", () => res.destroy());
    res.on("close", () => stream.destroy());
    stream.pipe(res);
  }

  async function tags(req: Request, res: Response, view: View, name: string) {
    let list = await view.tags(name, clientToken(req));
    const last = req.query.last ? String(req.query.last) : undefined;
    if (last) list = list.filter((t) => t > last);
    const n = req.query.n !== undefined ? Number(req.query.n) : undefined;
    if (n !== undefined && Number.isInteger(n) && n >= 0 && list.length > n) {
      list = list.slice(0, n);
      res.setHeader("Link", `</v2/${name}/tags/list?n=${n}&last=${encodeURIComponent(list[list.length - 1] ?? "")}>; rel="next"`);
    }
    res.json({ name, tags: list });
  }

  app.use((req: Request, res: Response) => {
    sendOciError(res, new OciError("UNSUPPORTED", `${req.method} ${req.path}: this registry is a read-only Hub proxy`, req.path.startsWith("/v2/") ? 405 : 404), req.method === "HEAD");
  });
  return app;
}
