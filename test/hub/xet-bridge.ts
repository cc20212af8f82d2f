/**
 * The Hub emulator's Xet storage: what huggingface.co answers for a file stored with Xet, and the
 * "bridge" host (`cas-bridge.xethub.hf.co` on the Hub) that serves its bytes over plain HTTP Range.
 *
 * The Hub answers `resolve` of a Xet file with a 302 to a signed bridge URL plus `X-Xet-Hash` and
 * `Link: <…/xet-read-token/…>; rel="xet-auth", <…/reconstructions/…>; rel="xet-reconstruction-info"`.
 * huggingface_hub 2.4.0 reads the hash and the xet-auth link (utils/_xet.py
 * `parse_xet_file_data_from_response`); with `HF_HUB_DISABLE_XET=1` it GETs the resolve URL and follows
 * the 302 to the bridge without its token. The Xet protocol itself (read token, chunk reconstruction)
 * is not emulated. See docs/hub-emulation.md.
 */
import { createHash, createHmac } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { parseRange, type HubCounters, type HubKnobs } from "./emulator.js";
import type { Repo, RepoFile } from "./repo.js";

/** How long a bridge link stays valid on the Hub (`X-Amz-Expires`). */
const BRIDGE_TTL_SECONDS = 3600;

export interface XetBridgeDeps {
  secret: Buffer;
  knobs: HubKnobs;
  counters: HubCounters;
  /** A 24-hex id of the repo, as in the Hub's bridge paths. */
  repoKey(repo: Repo): string;
  serveContent(req: IncomingMessage, res: ServerResponse, repo: Repo, f: RepoFile, headers: Record<string, string>): Promise<void>;
  /** An S3-style XML error. */
  refuse(req: IncomingMessage, res: ServerResponse, status: number, code: string, message: string): void;
  /** What an expired signed link answers (knob `expiredLinkStatus`). */
  refuseExpired(req: IncomingMessage, res: ServerResponse): void;
}

/** A stand-in for the Xet hash (on the Hub, a Merkle hash over the file's chunks): 64 hex, stable per content. */
export const xetHashOf = (f: RepoFile): string => createHash("sha256").update("xet\0").update(f.sha256).digest("hex");

const amzDate = (ms: number) => new Date(Math.floor(ms / 1000) * 1000).toISOString().replace(/[-:]/g, "").replace(/\.\d{3}/, "");
const amzDateMs = (s: string) => {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s);
  return m ? Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!) : NaN;
};

export function xetBridge(deps: XetBridgeDeps) {
  const { knobs, counters } = deps;
  /** `repoKey/xetHash` -> the file it names, filled as links are handed out. */
  const files = new Map<string, { repo: Repo; f: RepoFile }>();
  const sign = (path: string, date: string, expires: string) => createHmac("sha256", deps.secret).update(`${path}\n${date}\n${expires}`).digest("hex");
  let bridgeUrl = "";

  const isXet = (f: RepoFile): boolean => {
    const k = knobs.xet;
    return f.lfs && (k === true || (typeof k === "function" && k(f.path)));
  };

  return {
    isXet,
    setUrl(url: string) {
      bridgeUrl = url;
    },

    /** Headers that turn the Hub's 302 for an LFS file into the one for a Xet file (Location included); none for other files. */
    redirectHeaders(hubUrl: string, repo: Repo, commit: string, f: RepoFile): Record<string, string> {
      if (!isXet(f)) return {};
      const hash = xetHashOf(f);
      const key = deps.repoKey(repo);
      files.set(`${key}/${hash}`, { repo, f });
      const path = `/xet-bridge-us/${key}/${hash}`;
      const date = amzDate(Date.now());
      const expires = String(knobs.linkTtlSeconds ?? BRIDGE_TTL_SECONDS);
      const q = new URLSearchParams({
        "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
        "X-Amz-Content-Sha256": "UNSIGNED-PAYLOAD",
        "X-Amz-Credential": `cas/${date.slice(0, 8)}/us-east-1/s3/aws4_request`,
        "X-Amz-Date": date,
        "X-Amz-Expires": expires,
        "X-Amz-Signature": sign(path, date, expires),
        "X-Amz-SignedHeaders": "host",
        "X-Xet-Cas-Uid": "public",
        "response-content-disposition": `inline; filename*=UTF-8''${encodeURIComponent(f.path.split("/").pop()!)}`,
        "x-id": "GetObject",
      });
      return {
        Location: `${bridgeUrl}${path}?${q.toString()}`,
        "X-Xet-Hash": hash,
        Link: `<${hubUrl}/api/models/${repo.id}/xet-read-token/${commit}>; rel="xet-auth", <${bridgeUrl}/v1/reconstructions/${hash}>; rel="xet-reconstruction-info"`,
      };
    },

    /** GET/HEAD on the bridge host. */
    async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
      const url = new URL(req.url ?? "/", "http://bridge.invalid");
      const m = /^\/xet-bridge-us\/([0-9a-f]{24})\/([0-9a-f]{64})$/.exec(url.pathname);
      const hit = m ? files.get(`${m[1]}/${m[2]}`) : undefined;
      if (!hit || (req.method !== "GET" && req.method !== "HEAD")) return deps.refuse(req, res, 404, "NoSuchKey", "The specified key does not exist.");
      const q = url.searchParams;
      const date = q.get("X-Amz-Date") ?? "";
      const expires = q.get("X-Amz-Expires") ?? "";
      if (q.get("X-Amz-Signature") !== sign(url.pathname, date, expires)) {
        return deps.refuse(req, res, 403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.");
      }
      // The date has whole seconds: a link lives its X-Amz-Expires plus up to one second, never less.
      if (!((amzDateMs(date) + (Number(expires) + 1) * 1000) > Date.now())) return deps.refuseExpired(req, res);
      counters.xetRequests++;
      const { repo, f } = hit;
      const limit = knobs.xetRangeRequiredAbove;
      if (req.method === "GET" && limit !== undefined && f.size > limit && parseRange(req.headers.range, f.size) === null) {
        return deps.refuse(req, res, 400, "InvalidRequest", `A Range header is required for objects larger than ${limit} bytes.`);
      }
      const headers: Record<string, string> = { ETag: `"${f.sha256}"`, "Content-Type": "application/octet-stream", "Cache-Control": "public, max-age=604800, immutable" };
      const disp = q.get("response-content-disposition");
      if (disp) headers["Content-Disposition"] = disp;
      await deps.serveContent(req, res, repo, f, headers);
    },
  };
}
