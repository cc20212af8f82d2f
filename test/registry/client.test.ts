/**
 * The registry client against real CNCF distribution (2.8): pushes, pulls, mounts, auth
 * (htpasswd, token with refresh), resumable chunked uploads, and the lies a registry or a
 * middlebox can tell (through the counting proxy). Plus the pure parts: references,
 * challenges, OCI error bodies.
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isCakeError } from "../../src/errors.js";
import { parseWWWAuthenticate } from "../../src/registry/auth/challenge.js";
import { errorCodeFor, parseOciErrors } from "../../src/registry/errors.js";
import {
  MEDIA_TYPE,
  RegistryClient,
  formatReference,
  isPlainHttpHost,
  login,
  lookupCredentials,
  parseReference,
  type RegistryClientOptions,
} from "../../src/registry/index.js";
import { startCountingProxy, type CountingProxy } from "./counting-proxy.js";
import { requireTool, startRegistry, type RunningRegistry, type TokenServer } from "./harness.js";

const MiB = 1024 * 1024;
const FAST_RETRY = { retries: 4, baseDelayMs: 5, maxDelayMs: 20 };
const sha256 = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;
const blob = (size: number) => {
  const bytes = randomBytes(size);
  return { bytes, desc: { digest: sha256(bytes), size } };
};
/** The bytes from `start`, in 64 KiB pieces (as a file stream would give them). */
function pieces(bytes: Buffer, start: number, opts: { failAfter?: number; delayMs?: number } = {}): Readable {
  return Readable.from(
    (async function* () {
      let sent = 0;
      for (let at = start; at < bytes.length; at += 64 * 1024) {
        const piece = bytes.subarray(at, Math.min(bytes.length, at + 64 * 1024));
        if (opts.failAfter !== undefined && sent + piece.length > opts.failAfter) throw new Error("disk went away");
        if (opts.delayMs && (at - start) % MiB === 0) await new Promise((r) => setTimeout(r, opts.delayMs));
        sent += piece.length;
        yield piece;
      }
    })(),
  );
}
const opener = (bytes: Buffer) => (start: number) => pieces(bytes, start);
async function readAll(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}
async function caught(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error("expected a rejection");
}

const EMPTY_CONFIG = Buffer.from("{}");
/** A minimal OCI artifact: artifactType, the empty config, one layer. */
function artifactManifest(layer: { digest: string; size: number }): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPE.ociManifest,
      artifactType: "application/vnd.cake.test.v1",
      config: { mediaType: "application/vnd.oci.empty.v1+json", digest: sha256(EMPTY_CONFIG), size: 2 },
      layers: [{ mediaType: "application/vnd.cake.tensor.v1", digest: layer.digest, size: layer.size }],
    }),
  );
}

const emptyConfigDir = mkdtempSync(join(tmpdir(), "cake-dockercfg-empty-"));
afterAll(() => rmSync(emptyConfigDir, { recursive: true, force: true }));
const clientFor = (registry: string, extra: Partial<RegistryClientOptions> = {}) =>
  new RegistryClient({ registry, dockerConfig: emptyConfigDir, retry: FAST_RETRY, ...extra });

// ---------------------------------------------------------------------------------------------

describe("references", () => {
  const D = `sha256:${"a".repeat(64)}`;
  it.each([
    ["localhost:5000/models/llama:v1", { registry: "localhost:5000", repository: "models/llama", tag: "v1" }],
    ["127.0.0.1:5000/x@" + D, { registry: "127.0.0.1:5000", repository: "x", digest: D }],
    ["ghcr.io/org/a/b:tag@" + D, { registry: "ghcr.io", repository: "org/a/b", tag: "tag", digest: D }],
    ["localhost/foo", { registry: "localhost", repository: "foo" }],
    ["ubuntu", { registry: "registry-1.docker.io", repository: "library/ubuntu" }],
    ["ubuntu:22.04", { registry: "registry-1.docker.io", repository: "library/ubuntu", tag: "22.04" }],
    ["docker.io/ubuntu", { registry: "registry-1.docker.io", repository: "library/ubuntu" }],
    ["docker.io/org/img:t", { registry: "registry-1.docker.io", repository: "org/img", tag: "t" }],
    ["org/img", { registry: "registry-1.docker.io", repository: "org/img" }],
    ["Example.COM:443/a.b_c__d---e/f", { registry: "example.com:443", repository: "a.b_c__d---e/f" }],
    ["[::1]:5000/x:_t.9-", { registry: "[::1]:5000", repository: "x", tag: "_t.9-" }],
  ])("parses %s", (s, want) => {
    expect(parseReference(s)).toEqual(want);
  });

  it.each([
    ["", "empty reference"],
    ["localhost:5000/", "missing repository"],
    ["localhost:5000/Models/x", "must be lowercase"],
    ["localhost:5000/a//b", "empty path component"],
    ["localhost:5000/a_-b", 'component "a_-b"'],
    ["localhost:5000/-a", 'component "-a"'],
    ["localhost:5000/a:", "empty tag"],
    ["localhost:5000/a:-bad", 'tag "-bad"'],
    [`localhost:5000/a:${"t".repeat(129)}`, "tag"],
    ["localhost:5000/a@sha256:abc", 'digest "sha256:abc"'],
    [`localhost:5000/a@md5:${"a".repeat(32)}`, "digest"],
    ["local_host:5000/a", "not a valid registry host"],
    ["localhost:99999/a", "port 99999 out of range"],
    ["a b", "whitespace"],
    [`h.io/${"a".repeat(256)}`, "longer than 255"],
  ])("refuses %j", (s, what) => {
    let err: unknown;
    try {
      parseReference(s);
    } catch (e) {
      err = e;
    }
    expect(isCakeError(err, "E_REF")).toBe(true);
    expect((err as Error).message).toContain(what);
    if (s) expect((err as Error).message.startsWith(`${s}: `)).toBe(true);
  });

  it("formats what it parses", () => {
    for (const s of ["localhost:5000/a/b:v1", `h.io/x:t@sha256:${"b".repeat(64)}`, "registry-1.docker.io/library/x"]) {
      expect(formatReference(parseReference(s))).toBe(s);
    }
    expect(formatReference(parseReference("ubuntu"))).toBe("registry-1.docker.io/library/ubuntu");
  });

  it("speaks plain HTTP only to loopback", () => {
    for (const h of ["localhost", "localhost:5000", "127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "::1"]) expect(isPlainHttpHost(h)).toBe(true);
    for (const h of ["ghcr.io", "10.0.0.1:5000", "localhost.example.com", "128.0.0.1", "127.0.0.256"]) expect(isPlainHttpHost(h)).toBe(false);
  });
});

describe("challenges and error bodies", () => {
  it("parses WWW-Authenticate with quoted commas and several challenges", () => {
    expect(
      parseWWWAuthenticate(
        'Bearer realm="https://auth.example/token",service="reg.example",scope="repository:a/b:pull,push repository:c:pull",error="insufficient_scope", Basic realm=plain',
      ),
    ).toEqual([
      {
        scheme: "bearer",
        params: {
          realm: "https://auth.example/token",
          service: "reg.example",
          scope: "repository:a/b:pull,push repository:c:pull",
          error: "insufficient_scope",
        },
      },
      { scheme: "basic", params: { realm: "plain" } },
    ]);
    expect(parseWWWAuthenticate('Basic realm="a \\"quoted\\" realm"')).toEqual([{ scheme: "basic", params: { realm: 'a "quoted" realm' } }]);
  });

  it("maps OCI error codes to stable cake codes", () => {
    const errors = parseOciErrors('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}');
    expect(errors).toEqual([{ code: "MANIFEST_UNKNOWN", message: "manifest unknown", detail: { Tag: "x" } }]);
    expect(errorCodeFor(404, errors)).toBe("E_NOT_FOUND");
    expect(errorCodeFor(400, [{ code: "BLOB_UNKNOWN" }])).toBe("E_NOT_FOUND");
    expect(errorCodeFor(401, [{ code: "UNAUTHORIZED" }])).toBe("E_AUTH");
    expect(errorCodeFor(403, [])).toBe("E_AUTH");
    expect(errorCodeFor(400, [{ code: "DIGEST_INVALID" }])).toBe("E_DIGEST");
    expect(errorCodeFor(429, [{ code: "TOOMANYREQUESTS" }])).toBe("E_REGISTRY");
    expect(errorCodeFor(502, parseOciErrors("<html>bad gateway</html>"))).toBe("E_HTTP");
  });
});

// ---------------------------------------------------------------------------------------------

describe("against distribution, no auth", () => {
  let reg: RunningRegistry;
  let proxy: CountingProxy;
  let client: RegistryClient;
  beforeAll(async () => {
    reg = await startRegistry();
    proxy = await startCountingProxy(reg.url);
    client = clientFor(proxy.host, { monolithicThreshold: MiB, chunkSize: MiB });
  });
  afterAll(async () => {
    await proxy?.close();
    await reg?.close();
  });

  it("pushes a small blob in one PUT, and skips it with a HEAD the second time", async () => {
    const { bytes, desc } = blob(300_000);
    proxy.reset();
    expect(await client.pushBlob("cake/mono", desc, opener(bytes))).toBe("uploaded");
    expect(proxy.count("POST", "upload")).toBe(1);
    expect(proxy.count("PATCH")).toBe(0);
    expect(proxy.count("PUT", "upload")).toBe(1);
    expect(proxy.bytes("up", "PUT", "upload")).toBe(bytes.length);

    proxy.reset();
    expect(await client.pushBlob("cake/mono", desc, opener(bytes))).toBe("exists");
    expect(proxy.requests.map((r) => `${r.method} ${r.kind}`)).toEqual(["HEAD blob"]);
    expect(proxy.bytes("up")).toBe(0);

    expect(await client.hasBlob("cake/mono", desc.digest)).toBe(bytes.length);
    const got = await client.fetchBlob("cake/mono", desc.digest);
    expect(got.status).toBe(200);
    expect(got.totalSize).toBe(bytes.length);
    expect((await readAll(got.body)).equals(bytes)).toBe(true);
  });

  it("pushes a big blob in PATCH chunks with Content-Range and a final PUT", async () => {
    const { bytes, desc } = blob(3 * MiB + 12345);
    proxy.reset();
    const progress: number[] = [];
    expect(await client.pushBlob("cake/chunked", desc, opener(bytes), { onProgress: (n) => progress.push(n) })).toBe("uploaded");
    const patches = proxy.requests.filter((r) => r.method === "PATCH");
    expect(patches.map((r) => r.requestHeaders["content-range"])).toEqual([
      `0-${MiB - 1}`,
      `${MiB}-${2 * MiB - 1}`,
      `${2 * MiB}-${3 * MiB - 1}`,
      `${3 * MiB}-${bytes.length - 1}`,
    ]);
    expect(patches.every((r) => r.requestHeaders["content-type"] === "application/octet-stream")).toBe(true);
    expect(proxy.bytes("up", "PATCH")).toBe(bytes.length);
    const put = proxy.requests.filter((r) => r.method === "PUT");
    expect(put).toHaveLength(1);
    expect(put[0]!.up).toBe(0);
    expect(put[0]!.path).toContain(`digest=${encodeURIComponent(desc.digest)}`);
    expect(progress).toEqual([MiB, 2 * MiB, 3 * MiB, bytes.length]);
    expect(sha256(await readAll((await client.fetchBlob("cake/chunked", desc.digest)).body))).toBe(desc.digest);
  });

  it("fetches a byte range, and says so when a registry ignores the Range", async () => {
    const { bytes, desc } = blob(100_000);
    await client.pushBlob("cake/range", desc, opener(bytes));
    const part = await client.fetchBlob("cake/range", desc.digest, { start: 1000, end: 2000 });
    expect(part).toMatchObject({ status: 206, start: 1000, totalSize: 100_000 });
    expect((await readAll(part.body)).equals(bytes.subarray(1000, 2000))).toBe(true);

    proxy.fault({ method: "GET", kind: "blob", dropRequestHeaders: ["range"] });
    const whole = await client.fetchBlob("cake/range", desc.digest, { start: 1000 });
    expect(whole).toMatchObject({ status: 200, start: 0, totalSize: 100_000 });
    expect((await readAll(whole.body)).equals(bytes)).toBe(true);

    const missing = await caught(client.fetchBlob("cake/range", sha256(Buffer.from("nope"))));
    expect(missing.code).toBe("E_NOT_FOUND");
    expect(missing.message).toContain(`${proxy.host}/cake/range@sha256:`);
    expect(missing.message).toContain("BLOB_UNKNOWN");
  });

  it("mounts across repositories, and cancels the upload a refused mount opened", async () => {
    const { bytes, desc } = blob(50_000);
    await client.pushBlob("mnt/a", desc, opener(bytes));
    proxy.reset();
    expect(await client.mountBlob("mnt/b", desc.digest, "mnt/a")).toBe(true);
    expect(await client.hasBlob("mnt/b", desc.digest)).toBe(bytes.length);

    proxy.reset();
    expect(await client.pushBlob("mnt/c", desc, opener(bytes), { mountFrom: ["mnt/a"] })).toBe("mounted");
    expect(proxy.count("PATCH") + proxy.count("PUT")).toBe(0);
    expect(proxy.bytes("up")).toBe(0);

    proxy.reset();
    const unknown = sha256(Buffer.from("never pushed"));
    expect(await client.mountBlob("mnt/d", unknown, "mnt/a")).toBe(false);
    expect(proxy.requests.map((r) => `${r.method} ${r.kind} ${r.status}`)).toEqual(["POST upload 202", "DELETE upload 204"]);
  });

  it("puts and gets an OCI artifact manifest by tag and digest; crane reads it", async () => {
    const { bytes, desc } = blob(1000);
    await client.pushBlob("cake/art", { digest: sha256(EMPTY_CONFIG), size: 2 }, opener(EMPTY_CONFIG));
    await client.pushBlob("cake/art", desc, opener(bytes));
    const manifest = artifactManifest(desc);
    const digest = await client.putManifest("cake/art", "v1", manifest, MEDIA_TYPE.ociManifest);
    expect(digest).toBe(sha256(manifest));

    const byTag = await client.getManifest("cake/art", "v1");
    expect(byTag).toEqual({ bytes: manifest, mediaType: MEDIA_TYPE.ociManifest, digest });
    const byDigest = await client.getManifest("cake/art", digest);
    expect(byDigest.bytes.equals(manifest)).toBe(true);
    expect(await client.headManifest("cake/art", "v1")).toEqual({ digest, size: manifest.length, mediaType: MEDIA_TYPE.ociManifest });
    expect(await client.headManifest("cake/art", "nope")).toBeUndefined();

    const missing = await caught(client.getManifest("cake/art", "nope"));
    expect(missing.code).toBe("E_NOT_FOUND");
    expect(missing.message).toMatch(new RegExp(`^${proxy.host}/cake/art:nope: GET .*404 MANIFEST_UNKNOWN`));

    const crane = execFileSync(requireTool("crane"), ["manifest", "--insecure", `${reg.host}/cake/art:v1`]);
    expect(Buffer.from(crane).equals(manifest)).toBe(true);

    expect(await client.putManifest("cake/art", digest, manifest, MEDIA_TYPE.ociManifest)).toBe(digest);
    const wrong = await caught(client.putManifest("cake/art", sha256(Buffer.from("x")), manifest, MEDIA_TYPE.ociManifest));
    expect(wrong.code).toBe("E_DIGEST");
  });

  it("refuses a manifest whose bytes or Docker-Content-Digest lie", async () => {
    const { bytes, desc } = blob(10);
    await client.pushBlob("cake/lie", { digest: sha256(EMPTY_CONFIG), size: 2 }, opener(EMPTY_CONFIG));
    await client.pushBlob("cake/lie", desc, opener(bytes));
    const manifest = artifactManifest(desc);
    const digest = await client.putManifest("cake/lie", "v1", manifest, MEDIA_TYPE.ociManifest);

    // corrupted bytes, and no Docker-Content-Digest to compare with: the digest asked for is the check
    proxy.fault({
      method: "GET",
      kind: "manifest",
      rewrite: (r) => {
        const headers = { ...r.headers };
        delete headers["docker-content-digest"];
        return { headers, body: Buffer.from(r.body.toString().replace("cake.test", "cake.evil")) };
      },
    });
    const corrupt = await caught(client.getManifest("cake/lie", digest));
    expect(corrupt.code).toBe("E_DIGEST");
    expect(corrupt.message).toContain(`cake/lie@${digest}`);

    proxy.fault({ method: "GET", kind: "manifest", rewrite: (r) => ({ headers: { ...r.headers, "docker-content-digest": sha256(Buffer.from("other")) } }) });
    const lyingHeader = await caught(client.getManifest("cake/lie", "v1"));
    expect(lyingHeader.code).toBe("E_DIGEST");

    proxy.fault({ method: "PUT", kind: "manifest", rewrite: (r) => ({ headers: { ...r.headers, "docker-content-digest": sha256(Buffer.from("other")) } }) });
    expect((await caught(client.putManifest("cake/lie", "v2", manifest, MEDIA_TYPE.ociManifest))).code).toBe("E_DIGEST");

    // a small blob read whole (a config): checked against its digest and refused past the limit
    expect((await client.readBlob("cake/lie", desc.digest, 10)).equals(bytes)).toBe(true);
    proxy.fault({ method: "GET", kind: "blob", rewrite: () => ({ body: Buffer.alloc(10) }) });
    const badBlob = await caught(client.readBlob("cake/lie", desc.digest, 100));
    expect(badBlob.code).toBe("E_DIGEST");
    expect(badBlob.message).toContain(`cake/lie@${desc.digest}`);
    const tooBig = await caught(client.readBlob("cake/lie", desc.digest, 9));
    expect(tooBig.code).toBe("E_SIZE");

    const b = blob(100);
    proxy.fault({ method: "PUT", kind: "upload", rewrite: (r) => ({ headers: { ...r.headers, "docker-content-digest": sha256(Buffer.from("other")) } }) });
    expect((await caught(client.pushBlob("cake/lie", b.desc, opener(b.bytes)))).code).toBe("E_DIGEST");
  });

  it("refuses manifests over 4 MiB, declared or streamed, and never sends one", async () => {
    const big = Buffer.alloc(4 * MiB + 1, 0x20);
    proxy.fault({ method: "GET", kind: "manifest", respond: { status: 200, headers: { "content-type": MEDIA_TYPE.ociManifest }, body: big } });
    const declared = await caught(client.getManifest("cake/big", "v1"));
    expect(declared.code).toBe("E_SIZE");
    expect(declared.message).toContain("4 MiB");

    proxy.fault({
      method: "GET",
      kind: "manifest",
      respond: { status: 200, headers: { "content-type": MEDIA_TYPE.ociManifest, "transfer-encoding": "chunked" }, body: big },
    });
    expect((await caught(client.getManifest("cake/big", "v1"))).code).toBe("E_SIZE");

    proxy.reset();
    expect((await caught(client.putManifest("cake/big", "v1", big, MEDIA_TYPE.ociManifest))).code).toBe("E_SIZE");
    expect(proxy.count()).toBe(0);
  });

  it("resumes a chunked upload from the offset the registry reports when the source fails", async () => {
    const { bytes, desc } = blob(3 * MiB + 500);
    const opens: number[] = [];
    const open = (start: number) => {
      opens.push(start);
      return pieces(bytes, start, opens.length === 1 ? { failAfter: 2.5 * MiB } : {});
    };
    proxy.reset();
    expect(await client.pushBlob("cake/resume", desc, open)).toBe("uploaded");
    expect(opens).toEqual([0, 2 * MiB]);
    expect(proxy.count("GET", "upload")).toBe(1);
    expect(proxy.bytes("up", "PATCH")).toBe(bytes.length); // nothing sent twice
    expect(sha256(await readAll((await client.fetchBlob("cake/resume", desc.digest)).body))).toBe(desc.digest);
  });

  it("recovers when the connection drops in the middle of a chunk", async () => {
    const { bytes, desc } = blob(3 * MiB);
    let patches = 0;
    proxy.reset();
    proxy.fault({ method: "PATCH", when: () => ++patches === 2, cutAfterUpBytes: 300_000 });
    expect(await client.pushBlob("cake/cut", desc, opener(bytes))).toBe("uploaded");
    const rs = proxy.requests;
    const cut = rs.findIndex((r) => r.method === "PATCH" && r.status === 0);
    expect(cut).toBeGreaterThan(0);
    // it asked the registry where the upload stood before going on
    const status = rs[cut + 1]!;
    expect(`${status.method} ${status.kind}`).toBe("GET upload");
    const accepted = (from: number) => rs.slice(from).filter((r) => r.method === "PATCH" && r.status === 202).reduce((n, r) => n + r.up, 0);
    if (status.status === 404) {
      // distribution 2.8 cancels an upload whose stored size no longer matches its _state: start over
      expect(`${rs[cut + 2]!.method} ${rs[cut + 2]!.kind}`).toBe("POST upload");
      expect(accepted(cut + 2)).toBe(bytes.length);
    } else {
      expect(status.status).toBe(204);
      expect(accepted(0)).toBe(bytes.length);
    }
    expect(sha256(await readAll((await client.fetchBlob("cake/cut", desc.digest)).body))).toBe(desc.digest);

    // the same for a monolithic PUT: a new upload, the source opened again from 0
    const small = blob(200_000);
    const opens: number[] = [];
    proxy.reset();
    proxy.fault({ method: "PUT", kind: "upload", cutAfterUpBytes: 100_000 });
    expect(await client.pushBlob("cake/cut", small.desc, (start) => (opens.push(start), pieces(small.bytes, start)))).toBe("uploaded");
    expect(opens).toEqual([0, 0]);
    expect(proxy.requests.map((r) => `${r.method} ${r.kind} ${r.status}`)).toEqual([
      "HEAD blob 404",
      "POST upload 202",
      "PUT upload 0",
      "POST upload 202",
      "PUT upload 201",
    ]);
    expect(sha256(await readAll((await client.fetchBlob("cake/cut", small.desc.digest)).body))).toBe(small.desc.digest);
  });

  it("resends a buffered chunk the registry failed with a 5xx, without reopening the source", async () => {
    const { bytes, desc } = blob(3 * MiB);
    let patches = 0;
    const opens: number[] = [];
    proxy.reset();
    proxy.fault({ method: "PATCH", when: () => ++patches === 2, respond: { status: 503, body: '{"errors":[{"code":"UNAVAILABLE","message":"busy"}]}' } });
    expect(await client.pushBlob("cake/5xx", desc, (start) => (opens.push(start), pieces(bytes, start)))).toBe("uploaded");
    expect(opens).toEqual([0]);
    expect(proxy.requests.filter((r) => r.method !== "HEAD").map((r) => `${r.method} ${r.status} ${r.requestHeaders["content-range"] ?? ""}`)).toEqual([
      "POST 202 ",
      `PATCH 202 0-${MiB - 1}`,
      `PATCH 503 ${MiB}-${2 * MiB - 1}`,
      "GET 204 ",
      `PATCH 202 ${MiB}-${2 * MiB - 1}`,
      `PATCH 202 ${2 * MiB}-${3 * MiB - 1}`,
      "PUT 201 ",
    ]);
    expect(sha256(await readAll((await client.fetchBlob("cake/5xx", desc.digest)).body))).toBe(desc.digest);
  });

  it("halves the chunk size when the registry refuses a chunk as too large, and honours OCI-Chunk-Min-Length", async () => {
    const { bytes, desc } = blob(3 * MiB);
    proxy.reset();
    proxy.fault({ method: "PATCH", when: (req) => Number(req.headers["content-length"]) > MiB, times: 100, respond: { status: 413 } });
    expect(await client.pushBlob("cake/halve", desc, opener(bytes), { chunkSize: 2 * MiB })).toBe("uploaded");
    expect(proxy.requests.filter((r) => r.method === "PATCH").map((r) => `${r.status} ${r.requestHeaders["content-length"]}`)).toEqual([
      `413 ${2 * MiB}`,
      `202 ${MiB}`,
      `202 ${MiB}`,
      `202 ${MiB}`,
    ]);
    expect(sha256(await readAll((await client.fetchBlob("cake/halve", desc.digest)).body))).toBe(desc.digest);

    const b = blob(2 * MiB + 10);
    proxy.reset();
    proxy.fault({ method: "POST", kind: "upload", rewrite: (r) => ({ headers: { ...r.headers, "oci-chunk-min-length": String(2 * MiB) } }) });
    await client.pushBlob("cake/minchunk", b.desc, opener(b.bytes), { chunkSize: 512 * 1024 });
    expect(proxy.requests.filter((r) => r.method === "PATCH").map((r) => Number(r.requestHeaders["content-length"]))).toEqual([2 * MiB, 10]);
  });

  it("refuses a source shorter than the descriptor says", async () => {
    const { bytes, desc } = blob(2 * MiB);
    const short = await caught(client.pushBlob("cake/short", { ...desc, size: desc.size + 5 }, opener(bytes)));
    expect(short.code).toBe("E_SIZE");
    const shortMono = await caught(client.pushBlob("cake/short", { digest: desc.digest, size: 1000 }, opener(bytes.subarray(0, 900))));
    expect(shortMono.code).toBe("E_SIZE");
  });

  it("lists tags, following Link pagination", async () => {
    const { bytes, desc } = blob(10);
    await client.pushBlob("cake/tags", { digest: sha256(EMPTY_CONFIG), size: 2 }, opener(EMPTY_CONFIG));
    await client.pushBlob("cake/tags", desc, opener(bytes));
    for (const t of ["v1", "v2", "latest"]) await client.putManifest("cake/tags", t, artifactManifest(desc), MEDIA_TYPE.ociManifest);
    expect((await client.listTags("cake/tags")).sort()).toEqual(["latest", "v1", "v2"]);

    // distribution 2.8 does not paginate tags: the proxy plays a registry that does
    proxy.reset();
    proxy.fault({
      method: "GET",
      kind: "tags",
      times: 2,
      respond: (req) =>
        req.url?.includes("last=b")
          ? { status: 200, body: JSON.stringify({ name: "cake/tags", tags: ["c"] }) }
          : { status: 200, headers: { link: '</v2/cake/tags/tags/list?last=b&n=2>; rel="next"' }, body: JSON.stringify({ name: "cake/tags", tags: ["a", "b"] }) },
    });
    expect(await client.listTags("cake/tags")).toEqual(["a", "b", "c"]);
    expect(proxy.requests.map((r) => r.path)).toEqual(["/v2/cake/tags/tags/list", "/v2/cake/tags/tags/list?last=b&n=2"]);
  });
});

// ---------------------------------------------------------------------------------------------

describe("basic auth (htpasswd)", () => {
  const account = { user: "alice", password: "s3cret:with:colons" };
  let reg: RunningRegistry;
  beforeAll(async () => {
    reg = await startRegistry({ htpasswd: account });
  });
  afterAll(() => reg?.close());

  it("pushes and pulls with the right password", async () => {
    const client = clientFor(reg.host, { username: account.user, password: account.password });
    const { bytes, desc } = blob(1000);
    expect(await client.pushBlob("auth/basic", desc, opener(bytes))).toBe("uploaded");
    expect((await readAll((await client.fetchBlob("auth/basic", desc.digest)).body)).equals(bytes)).toBe(true);
  });

  it("follows a 307 to storage without sending the registry's credentials there", async () => {
    const { bytes, desc } = blob(10_000);
    const client = clientFor(reg.host, { username: account.user, password: account.password });
    await client.pushBlob("auth/redirect", desc, opener(bytes));
    const seen: Array<Record<string, string | string[] | undefined>> = [];
    const storage = createServer((req, res) => {
      seen.push(req.headers);
      const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? "");
      if (!m) return void res.writeHead(200, { "content-length": String(bytes.length) }).end(bytes);
      const part = bytes.subarray(Number(m[1]), Number(m[2]) + 1);
      res.writeHead(206, { "content-range": `bytes ${m[1]}-${m[2]}/${bytes.length}`, "content-length": String(part.length) }).end(part);
    });
    await new Promise<void>((r) => storage.listen(0, "127.0.0.1", r));
    const proxy = await startCountingProxy(reg.url);
    try {
      const storageUrl = `http://127.0.0.1:${(storage.address() as AddressInfo).port}/bucket/blob?sig=1`;
      proxy.fault({ method: "GET", kind: "blob", respond: { status: 307, headers: { location: storageUrl } } });
      const viaProxy = clientFor(proxy.host, { username: account.user, password: account.password });
      expect(await viaProxy.hasBlob("auth/redirect", desc.digest)).toBe(bytes.length); // learns the registry wants Basic
      const got = await viaProxy.fetchBlob("auth/redirect", desc.digest, { start: 10, end: 20 });
      expect(got).toMatchObject({ status: 206, start: 10, totalSize: bytes.length });
      expect((await readAll(got.body)).equals(bytes.subarray(10, 20))).toBe(true);
      expect(seen).toHaveLength(1);
      expect(seen[0]!.authorization).toBeUndefined();
      expect(seen[0]!.range).toBe("bytes=10-19");
      // the registry itself did get them
      expect(proxy.requests.filter((r) => r.kind === "blob").map((r) => r.requestHeaders.authorization?.split(" ")[0])).toContain("Basic");
    } finally {
      await proxy.close();
      await new Promise<void>((r) => storage.close(() => r()));
    }
  });

  it("says whose credentials a registry refused, or that there were none", async () => {
    const wrong = await caught(clientFor(reg.host, { username: account.user, password: "nope" }).hasBlob("auth/basic", sha256(Buffer.from("x"))));
    expect(wrong.code).toBe("E_AUTH");
    expect(wrong.message).toContain(`${reg.host}/auth/basic@sha256:`);
    expect(wrong.message).toContain("returned 401 Unauthorized");
    const wrongGet = await caught(clientFor(reg.host, { username: account.user, password: "nope" }).listTags("auth/basic"));
    expect(wrongGet.code).toBe("E_AUTH");
    expect(wrongGet.message).toContain("401 UNAUTHORIZED: authentication required");
    expect(wrong.message).toContain('user "alice" from --username/--password were not accepted');

    const none = await caught(clientFor(reg.host).listTags("auth/basic"));
    expect(none.code).toBe("E_AUTH");
    expect(none.message).toContain(`no credentials for ${reg.host}`);
  });
});

describe("token auth", () => {
  const account = { user: "bob", password: "hunter2" };
  let reg: RunningRegistry & { tokenServer?: TokenServer };
  let ts: TokenServer;
  let proxy: CountingProxy;
  beforeAll(async () => {
    reg = await startRegistry({ htpasswd: account, token: true });
    ts = reg.tokenServer!;
    proxy = await startCountingProxy(reg.url);
  });
  afterAll(async () => {
    await proxy?.close();
    await reg?.close();
  });

  it("gets a token per scope set and pushes and pulls with it", async () => {
    const client = clientFor(proxy.host, { username: account.user, password: account.password });
    const { bytes, desc } = blob(5000);
    ts.requests.length = 0;
    await client.pushBlob("tok/a", { digest: sha256(EMPTY_CONFIG), size: 2 }, opener(EMPTY_CONFIG));
    expect(await client.pushBlob("tok/a", desc, opener(bytes))).toBe("uploaded");
    const digest = await client.putManifest("tok/a", "v1", artifactManifest(desc), MEDIA_TYPE.ociManifest);
    expect((await client.getManifest("tok/a", "v1")).digest).toBe(digest);
    expect(await client.mountBlob("tok/b", desc.digest, "tok/a")).toBe(true);
    expect(ts.requests.map((r) => `${r.grant} ${r.user} ${r.scopes.join(" ")}`)).toEqual([
      "basic bob repository:tok/a:pull",
      "basic bob repository:tok/a:pull,push",
      "basic bob repository:tok/a:pull repository:tok/b:pull,push",
    ]);
  });

  it("refuses a wrong password at the token server with E_AUTH naming the registry", async () => {
    const err = await caught(clientFor(proxy.host, { username: account.user, password: "wrong" }).getManifest("tok/a", "v1"));
    expect(err.code).toBe("E_AUTH");
    expect(err.message).toContain(`${proxy.host}: token server`);
    expect(err.message).toContain('user "bob"');
  });

  it("fetches a new token when expires_in runs out", async () => {
    const client = clientFor(proxy.host, { username: account.user, password: account.password });
    ts.expiresIn = 1;
    try {
      await client.listTags("tok/a");
      const before = ts.requests.length;
      await client.listTags("tok/a");
      expect(ts.requests.length).toBe(before); // still cached
      await new Promise((r) => setTimeout(r, 1100));
      proxy.reset();
      await client.listTags("tok/a");
      expect(ts.requests.length).toBe(before + 1);
      expect(proxy.requests.map((r) => r.status)).toEqual([200]); // renewed before the registry had to refuse it
    } finally {
      ts.expiresIn = 300;
    }
  });

  it("re-authenticates when the registry refuses a token in the middle of an upload", async () => {
    const client = clientFor(proxy.host, { username: account.user, password: account.password, chunkSize: MiB, monolithicThreshold: MiB });
    const { bytes, desc } = blob(4 * MiB);
    // The registry refuses each token 1-2 s after issue (JWT times are whole seconds: with 1, a token
    // issued late in a second was refused at once, on the first request); the client thinks it lasts
    // 300 s. The upload takes about 2.8 s, so it meets a refusal in the middle.
    ts.validFor = 2;
    try {
      proxy.reset();
      const before = ts.requests.length;
      expect(await client.pushBlob("tok/slow", desc, (start) => pieces(bytes, start, { delayMs: 700 }))).toBe("uploaded");
      const refused = proxy.requests.filter((r) => r.status === 401 && (r.kind === "upload"));
      expect(refused.length).toBeGreaterThan(0);
      expect(ts.requests.length - before).toBeGreaterThanOrEqual(2);
      expect(proxy.bytes("up", "PATCH") - refused.reduce((n, r) => n + r.up, 0)).toBe(bytes.length);
    } finally {
      ts.validFor = 3600;
    }
    const check = clientFor(proxy.host, { username: account.user, password: account.password });
    expect(sha256(await readAll((await check.fetchBlob("tok/slow", desc.digest)).body))).toBe(desc.digest);
  });
});

// ---------------------------------------------------------------------------------------------

describe("docker config credentials and login", () => {
  const account = { user: "carol", password: "pa55" };
  let basicReg: RunningRegistry;
  let tokenReg: RunningRegistry & { tokenServer?: TokenServer };
  let dir: string;
  let helperLog: string;
  const savedPath = process.env.PATH;
  beforeAll(async () => {
    [basicReg, tokenReg] = await Promise.all([startRegistry({ htpasswd: account }), startRegistry({ htpasswd: account, token: true })]);
    dir = mkdtempSync(join(tmpdir(), "cake-dockercfg-"));
    // a credential helper speaking the docker-credential-helpers protocol
    const bin = join(dir, "bin");
    mkdirSync(bin);
    helperLog = join(dir, "helper-store.json");
    writeFileSync(
      join(bin, "docker-credential-caketest"),
      [
        "#!/bin/sh",
        'input=$(cat)',
        'case "$1" in',
        `  get) if [ "$input" = "${basicReg.host}" ]; then echo '{"ServerURL":"${basicReg.host}","Username":"${account.user}","Secret":"${account.password}"}'; else echo "credentials not found in native keychain"; exit 1; fi ;;`,
        `  store) printf '%s' "$input" > '${helperLog}' ;;`,
        "  *) exit 1 ;;",
        "esac",
        "",
      ].join("\n"),
    );
    chmodSync(join(bin, "docker-credential-caketest"), 0o755);
    process.env.PATH = `${bin}${delimiter}${savedPath}`;
  });
  afterAll(async () => {
    process.env.PATH = savedPath;
    await Promise.all([basicReg?.close(), tokenReg?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });
  const configDir = (name: string, config?: unknown) => {
    const d = join(dir, name);
    mkdirSync(d, { recursive: true });
    if (config !== undefined) writeFileSync(join(d, "config.json"), JSON.stringify(config));
    return d;
  };
  const b64 = (s: string) => Buffer.from(s).toString("base64");

  it("uses auths[host].auth for that exact host only", async () => {
    const d = configDir("auths", {
      auths: {
        [`http://${basicReg.host}/v2/`]: { auth: b64(`${account.user}:${account.password}`) },
        "127.0.0.1:1": { auth: b64("mallory:x") },
      },
    });
    expect(await lookupCredentials(basicReg.host, { dockerConfig: d })).toMatchObject({ username: account.user, password: account.password });
    expect(await lookupCredentials("127.0.0.1", { dockerConfig: d })).toBeUndefined();
    const client = new RegistryClient({ registry: basicReg.host, dockerConfig: d, retry: FAST_RETRY });
    expect(await client.listTags("cfg/none").catch((e: { code?: string }) => e.code)).toBe("E_NOT_FOUND"); // authenticated, repo unknown

    const other = configDir("auths-other", { auths: { "127.0.0.1:1": { auth: b64(`${account.user}:${account.password}`) } } });
    const err = await caught(new RegistryClient({ registry: basicReg.host, dockerConfig: other, retry: FAST_RETRY }).listTags("cfg/none"));
    expect(err.code).toBe("E_AUTH");
  });

  it("asks credHelpers / credsStore helpers", async () => {
    const d = configDir("helpers", { credHelpers: { [basicReg.host]: "caketest" } });
    expect(await lookupCredentials(basicReg.host, { dockerConfig: d })).toEqual({
      username: account.user,
      password: account.password,
      source: "docker-credential-caketest",
    });
    const store = configDir("store", { credsStore: "caketest" });
    expect(await lookupCredentials("127.0.0.1:2", { dockerConfig: store })).toBeUndefined();
    const { bytes, desc } = blob(100);
    const client = new RegistryClient({ registry: basicReg.host, dockerConfig: store, retry: FAST_RETRY });
    expect(await client.pushBlob("cfg/helper", desc, opener(bytes))).toBe("uploaded");
  });

  it("uses an identitytoken as an OAuth2 refresh token", async () => {
    const ts = tokenReg.tokenServer!;
    const d = configDir("identity", { auths: { [tokenReg.host]: { identitytoken: ts.refreshToken } } });
    ts.requests.length = 0;
    const client = new RegistryClient({ registry: tokenReg.host, dockerConfig: d, retry: FAST_RETRY });
    const { bytes, desc } = blob(100);
    expect(await client.pushBlob("cfg/identity", desc, opener(bytes))).toBe("uploaded");
    expect(ts.requests.map((r) => `${r.method} ${r.grant} ${r.user}`)).toContain("POST refresh_token carol");
  });

  it("login verifies the password, then writes config.json 0600 keeping other keys", async () => {
    const d = configDir("login", { auths: { "other.example": { auth: b64("x:y") } }, HttpHeaders: { "X-Keep": "1" } });
    const file = join(d, "config.json");
    const bad = await caught(login(basicReg.host, account.user, "wrong", { dockerConfig: d }));
    expect(bad.code).toBe("E_AUTH");
    expect(bad.message).toContain(basicReg.host);
    expect(JSON.parse(readFileSync(file, "utf8")).auths[basicReg.host]).toBeUndefined();

    expect(await login(basicReg.host, account.user, account.password, { dockerConfig: d })).toEqual({ storedIn: file });
    const written = JSON.parse(readFileSync(file, "utf8"));
    expect(written.auths[basicReg.host]).toEqual({ auth: b64(`${account.user}:${account.password}`) });
    expect(written.auths["other.example"]).toEqual({ auth: b64("x:y") });
    expect(written.HttpHeaders).toEqual({ "X-Keep": "1" });
    expect(statSync(file).mode & 0o777).toBe(0o600);

    // through a token server too, into a config dir that does not exist yet
    const fresh = join(dir, "login-fresh");
    await login(tokenReg.host, account.user, account.password, { dockerConfig: fresh });
    expect(JSON.parse(readFileSync(join(fresh, "config.json"), "utf8")).auths[tokenReg.host].auth).toBe(b64(`${account.user}:${account.password}`));
    expect((await caught(login(tokenReg.host, account.user, "wrong", { dockerConfig: fresh }))).code).toBe("E_AUTH");
  });

  it("login hands the password to the credsStore helper when one is configured", async () => {
    const d = configDir("login-store", { credsStore: "caketest" });
    const before = readFileSync(join(d, "config.json"), "utf8");
    expect(await login(basicReg.host, account.user, account.password, { dockerConfig: d })).toEqual({ storedIn: "docker-credential-caketest" });
    expect(JSON.parse(readFileSync(helperLog, "utf8"))).toEqual({ ServerURL: basicReg.host, Username: account.user, Secret: account.password });
    expect(readFileSync(join(d, "config.json"), "utf8")).toBe(before);
  });
});
