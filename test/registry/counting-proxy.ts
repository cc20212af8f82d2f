/**
 * A counting HTTP proxy for registry tests: forwards everything to a real registry and records
 * each request (method, path kind, status, body bytes each way), so a test can say "the second
 * push sent no PATCH" or "only the changed bytes crossed the wire". Faults can be injected for
 * the rare case a real registry will not provoke: a canned answer, a connection cut mid-body,
 * a request header dropped, a rewritten answer, an answer cut at any byte (headers included).
 *
 * The Host header is forwarded unchanged, so the registry's Location URLs point back through
 * the proxy.
 */
import { createServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { cutAnswer, type CutPlan } from "../helpers/cut-answer.js";

export type PathKind = "base" | "manifest" | "blob" | "upload" | "tags" | "catalog" | "other";

export function pathKind(path: string): PathKind {
  const p = path.split("?")[0] ?? "";
  if (p === "/v2/" || p === "/v2") return "base";
  if (p === "/v2/_catalog") return "catalog";
  if (/^\/v2\/.+\/manifests\/[^/]+$/.test(p)) return "manifest";
  if (/^\/v2\/.+\/blobs\/uploads\/?/.test(p)) return "upload";
  if (/^\/v2\/.+\/blobs\/[^/]+$/.test(p)) return "blob";
  if (/^\/v2\/.+\/tags\/list$/.test(p)) return "tags";
  return "other";
}

export interface ProxiedRequest {
  method: string;
  path: string;
  kind: PathKind;
  /** 0 when the connection was cut before an answer. */
  status: number;
  /** Request body bytes that reached the registry. */
  up: number;
  /** Response body bytes sent to the client. */
  down: number;
  requestHeaders: IncomingHttpHeaders;
  faulted: boolean;
}

export interface CannedResponse {
  status: number;
  headers?: Record<string, string>;
  body?: Buffer | string;
}

export interface Fault {
  method?: string;
  kind?: PathKind;
  when?: (req: IncomingMessage) => boolean;
  /** How many matching requests it applies to (default 1). */
  times?: number;
  /** Answer without asking the registry (the request body is read and dropped). */
  respond?: CannedResponse | ((req: IncomingMessage, body: Buffer) => CannedResponse);
  /** Forward this many request body bytes, then cut both connections. */
  cutAfterUpBytes?: number;
  /** Stream the registry's answer at most this many bytes per second (to kill a transfer mid-blob). */
  throttle?: number;
  /** Forward the request body at most this many bytes per second (to kill an upload mid-blob). */
  throttleUp?: number;
  /** Cut the answer (status line, headers or body) at this point, then the connection (test/helpers/cut-answer.ts). */
  cutAnswer?: CutPlan | ((req: IncomingMessage) => CutPlan);
  /** Request headers removed before forwarding. */
  dropRequestHeaders?: string[];
  /** Hold the request until this settles (to order it after another). */
  hold?: Promise<unknown>;
  /** Change the registry's answer (read whole, Content-Length fixed up). */
  rewrite?: (res: { status: number; headers: IncomingHttpHeaders; body: Buffer }) => Partial<{
    status: number;
    headers: IncomingHttpHeaders;
    body: Buffer;
  }> | void;
}

export interface CountingProxy {
  /** `http://127.0.0.1:PORT` */
  url: string;
  /** `127.0.0.1:PORT` */
  host: string;
  requests: ProxiedRequest[];
  count(method?: string, kind?: PathKind): number;
  bytes(direction: "up" | "down", method?: string, kind?: PathKind): number;
  reset(): void;
  fault(f: Fault): void;
  close(): Promise<void>;
}

export async function startCountingProxy(targetUrl: string): Promise<CountingProxy> {
  const target = new URL(targetUrl);
  const faults: Array<Fault & { left: number }> = [];
  const requests: ProxiedRequest[] = [];
  const server: Server = createServer((req, res) => {
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    const kind = pathKind(path);
    const record: ProxiedRequest = { method, path, kind, status: 0, up: 0, down: 0, requestHeaders: req.headers, faulted: false };
    requests.push(record);
    const fault = faults.find(
      (f) => f.left > 0 && (!f.method || f.method === method) && (!f.kind || f.kind === kind) && (!f.when || f.when(req)),
    );
    if (fault) {
      fault.left--;
      record.faulted = true;
      if (fault.cutAnswer) cutAnswer(res, typeof fault.cutAnswer === "function" ? fault.cutAnswer(req) : fault.cutAnswer);
    }

    if (fault?.respond) {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        const canned = typeof fault.respond === "function" ? fault.respond(req, Buffer.concat(chunks)) : fault.respond!;
        const body = canned.body === undefined ? Buffer.alloc(0) : Buffer.from(canned.body);
        record.status = canned.status;
        const chunked = canned.headers?.["transfer-encoding"] === "chunked";
        res.writeHead(canned.status, { ...(chunked ? {} : { "content-length": String(body.length) }), ...canned.headers });
        if (method !== "HEAD") record.down += body.length;
        res.end(method === "HEAD" ? undefined : body);
      });
      return;
    }

    const headers = { ...req.headers };
    for (const h of fault?.dropRequestHeaders ?? []) delete headers[h.toLowerCase()];
    const forward = () => forwardTo(req, res, record, fault, headers);
    if (fault?.hold) {
      req.pause();
      void fault.hold.then(forward, forward);
    } else forward();
  });
  const forwardTo = (req: IncomingMessage, res: ServerResponse, record: ProxiedRequest, fault: (Fault & { left: number }) | undefined, headers: IncomingHttpHeaders) => {
    const method = req.method ?? "GET";
    const path = req.url ?? "/";
    const upstream = httpRequest(
      { host: target.hostname, port: target.port, method, path, headers },
      (ures) => {
        record.status = ures.statusCode ?? 0;
        if (fault?.rewrite) {
          const chunks: Buffer[] = [];
          ures.on("data", (c: Buffer) => chunks.push(c));
          ures.on("end", () => {
            const orig = { status: ures.statusCode ?? 0, headers: { ...ures.headers }, body: Buffer.concat(chunks) };
            const out = { ...orig, ...(fault.rewrite!(orig) ?? {}) };
            const h: IncomingHttpHeaders = { ...out.headers };
            delete h["transfer-encoding"];
            if (method !== "HEAD") h["content-length"] = String(out.body.length);
            record.status = out.status;
            res.writeHead(out.status, h as Record<string, string>);
            if (method !== "HEAD") record.down += out.body.length;
            res.end(method === "HEAD" ? undefined : out.body);
          });
          return;
        }
        res.writeHead(ures.statusCode ?? 502, ures.headers as Record<string, string>);
        ures.on("data", (c: Buffer) => {
          record.down += c.length;
          res.write(c);
          if (fault?.throttle) {
            ures.pause();
            setTimeout(() => ures.resume(), (c.length / fault.throttle) * 1000);
          }
        });
        ures.on("end", () => res.end());
        ures.on("error", () => res.destroy());
      },
    );
    upstream.on("error", () => res.destroy());
    let cut = false;
    req.on("data", (c: Buffer) => {
      if (cut) return;
      if (fault?.cutAfterUpBytes !== undefined && record.up + c.length >= fault.cutAfterUpBytes) {
        const part = c.subarray(0, fault.cutAfterUpBytes - record.up);
        record.up += part.length;
        cut = true;
        upstream.write(part, () => {
          // let the registry take the partial body, then cut both sides
          setTimeout(() => {
            upstream.destroy();
            req.socket.destroy();
          }, 50);
        });
        return;
      }
      record.up += c.length;
      upstream.write(c);
      if (fault?.throttleUp) {
        req.pause();
        setTimeout(() => req.resume(), (c.length / fault.throttleUp) * 1000);
      }
    });
    req.on("end", () => {
      if (!cut) upstream.end();
    });
    req.on("error", () => upstream.destroy());
    req.resume(); // held by `hold` until now
  };
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  const match = (r: ProxiedRequest, method?: string, kind?: PathKind) => (!method || r.method === method) && (!kind || r.kind === kind);
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    requests,
    count: (method, kind) => requests.filter((r) => match(r, method, kind)).length,
    bytes: (direction, method, kind) => requests.filter((r) => match(r, method, kind)).reduce((n, r) => n + r[direction], 0),
    reset: () => {
      requests.length = 0;
      faults.length = 0;
    },
    fault: (f) => faults.push({ ...f, left: f.times ?? 1 }),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
