/**
 * The OCI distribution-spec conformance suite (github.com/opencontainers/distribution-spec/conformance,
 * pinned and built outside the repo by test/proxy/conformance-build.sh) against `cake proxy` serving a
 * model from the Hub emulation: every pull test that a read-only registry can take must pass. The
 * suite runs in read-only mode (push and delete off, the proxy's tag and digests handed to it), and
 * its report tree on stdout is checked leaf by leaf against the table below, where each test that
 * does not apply says why. (Its junit.xml cannot be used: with push off the suite's own report writer
 * panics before it gets there.) See docs/proxy.md, "Conformance".
 */
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProxy, type RunningProxy } from "../../proxy/index.js";
import { makeFineTune, makeLlamaLike } from "../fixtures/models.js";
import { startHub, type Hub } from "../hub/emulator.js";

const run = promisify(execFile);
const BUILD_SCRIPT = "test/proxy/conformance-build.sh";
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const NAME = "hf/acme/tiny";
const OCI = "application/vnd.oci.image.manifest.v1+json";
const T = "OCI Conformance Test";

type Status = "Pass" | "FAIL" | "Skip" | "Disabled" | "Error" | "Unknown";
interface Leaf {
  name: string;
  status: Status;
  errors: string[];
}
interface Outcome {
  leaves: Leaf[];
  overall: string;
  stdout: string;
  stderr: string;
}

/**
 * Every leaf of the read-only run. "Pass": a pull test that applies. "Disabled": does not apply to a
 * read-only registry (the reason says why). "FAIL": a known deviation of the proxy, kept here so that
 * the day it is fixed this test says so (then make it "Pass").
 */
const EXPECTED: Record<string, { status: Status; why: string; error?: string }> = {
  [`${T}/ping`]: { status: "Pass", why: "GET /v2/ answers (no status is checked)" },
  [`${T}/empty/tag list`]: { status: "Pass", why: "GET /v2/<name>/tags/list (200 or 404 accepted)" },
  [`${T}/read-only/tag-list`]: { status: "Pass", why: "tags/list names main and v1.0; ?last= pagination" },
  [`${T}/read-only/head/manifest-head-by-tag`]: { status: "Pass", why: "HEAD manifest by tag: 200, empty body" },
  [`${T}/read-only/head/manifest-head-by-digest`]: { status: "Pass", why: "HEAD manifest by digest: 200, empty body" },
  [`${T}/read-only/head/blob-head`]: { status: "Pass", why: "HEAD blob: 200, empty body, Docker-Content-Digest matches" },
  [`${T}/read-only/pull/manifest-by-tag`]: { status: "Pass", why: "GET manifest by tag: 200" },
  [`${T}/read-only/pull/manifest-by-digest`]: { status: "Pass", why: "GET manifest by digest: 200" },
  [`${T}/read-only/pull/blob-get`]: { status: "Pass", why: "GET blob: 200, Docker-Content-Digest matches" },
  [`${T}/missing-manifest/by-digest`]: { status: "Pass", why: "GET manifest by an unknown digest: 404" },
  [`${T}/missing-manifest/by-tag`]: { status: "Pass", why: "GET manifest by an unknown tag: 404" },
  [`${T}/invalid-digest-format/manifest-get`]: { status: "Pass", why: "GET manifest sha256:baddigeststring: 404 or 400" },

  [`${T}/sha256 blobs`]: { status: "Disabled", why: "the blob-API group starts by pushing blobs (upload, mount, chunked, range reads of a pushed blob); its one pull-only test, get-missing, is run on its own below" },
  [`${T}/sha512 blobs`]: { status: "Disabled", why: "as sha256 blobs, with sha512 digests; get-missing is run on its own below" },
  [`${T}/read-only/push/manifest-by-tag`]: { status: "Disabled", why: "push: the proxy is read-only (writes answer 405 UNSUPPORTED)" },
  [`${T}/read-only/push/manifest-by-digest`]: { status: "Disabled", why: "push: the proxy is read-only" },
  [`${T}/read-only/delete/manifest-delete`]: { status: "Disabled", why: "delete: the proxy is read-only (turned off so the suite never deletes what it reads; the proxy answers 405, which the spec allows when deletion is disabled)" },
  [`${T}/read-only/delete/blob-delete`]: { status: "Disabled", why: "delete: the proxy is read-only" },
  [`${T}/invalid-digest-format/manifest-put`]: { status: "Disabled", why: "push of a manifest under a bad digest: the proxy is read-only" },
  [`${T}/invalid-digest-format/delete/manifest-delete`]: { status: "Disabled", why: "delete: the proxy is read-only" },
  [`${T}/invalid-digest-format/delete/blob-delete`]: { status: "Disabled", why: "delete: the proxy is read-only" },

  [`${T}/empty/referrers`]: { status: "Pass", why: "GET /v2/<name>/referrers/<digest>: 200 with an empty OCI image index (nothing on the Hub refers to a converted model)" },
};

/** The report tree the suite prints between "Test results" and "Configuration:", as its leaves. */
function parseReport(stdout: string): { leaves: Leaf[]; overall: string } {
  const lines = stdout.split("\n");
  const start = lines.indexOf("Test results");
  const end = lines.indexOf("Configuration:", start);
  if (start < 0 || end < 0) throw new Error("no report tree in the suite's output");
  const node = /^( *)(OCI Conformance Test(?:\/.*)?): (Pass|FAIL|Skip|Disabled|Error|Unknown)$/;
  const nodes: (Leaf & { depth: number })[] = [];
  for (const line of lines.slice(start + 1, end)) {
    const m = node.exec(line);
    if (m) nodes.push({ depth: m[1]!.length, name: m[2]!, status: m[3] as Status, errors: [] });
    else if (line.trim() && nodes.length) nodes[nodes.length - 1]!.errors.push(line.trim().replace(/^- /, ""));
  }
  const leaves = nodes.filter((n, i) => !(nodes[i + 1] && nodes[i + 1]!.depth > n.depth)).map(({ name, status, errors }) => ({ name, status, errors }));
  const overall = /^OCI Conformance Result: (\S+)$/m.exec(stdout)?.[1] ?? "none";
  return { leaves, overall };
}

let tmp: string;
let hub: Hub | undefined;
let proxy: RunningProxy | undefined;
let bin: string;
/** Set when the suite could not be built: every test then fails with it (never skips). */
let buildError: Error | undefined;
const ready = () => {
  if (buildError) throw buildError;
};
const manifests: string[] = [];
const blobs = new Set<string>();

async function conformance(env: Record<string, string>, label: string): Promise<Outcome> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("OCI_"))) as Record<string, string>;
  const cwd = await fs.mkdtemp(path.join(tmp, `run-${label}-`)); // no stray oci-conformance.yaml is read
  const all = {
    ...base,
    OCI_VERSION: "1.1",
    OCI_REGISTRY: proxy!.host,
    OCI_TLS: "disabled",
    OCI_REPO1: NAME,
    OCI_REPO2: NAME,
    OCI_API_TAGS_DELETE: "false",
    OCI_API_MANIFESTS_DELETE: "false",
    OCI_API_BLOBS_DELETE: "false",
    OCI_RESULTS_DIR: path.join(cwd, "results"),
    ...env,
  };
  // Async child: the proxy and the Hub emulation serve it from this process.
  let stdout: string;
  let stderr: string;
  try {
    ({ stdout, stderr } = await run(bin, [], { cwd, env: all, timeout: 60_000, maxBuffer: 64 << 20 }));
  } catch (err) {
    // It exits non-zero on any failure, and (with push off) panics writing its results.yaml after
    // printing the report; the report on stdout is what counts.
    const e = err as { stdout?: string; stderr?: string; killed?: boolean };
    if (e.killed) throw new Error(`the conformance suite timed out (${label}):\n${e.stderr ?? ""}`);
    stdout = e.stdout ?? "";
    stderr = e.stderr ?? "";
  }
  try {
    return { ...parseReport(stdout), stdout, stderr };
  } catch (err) {
    throw new Error(`${(err as Error).message} (${label})\nstdout:\n${stdout}\nstderr:\n${stderr}`);
  }
}

const show = (o: Outcome, leaves: Leaf[]) => `${leaves.map((l) => `${l.name}: ${l.status}${l.errors.length ? `\n  ${l.errors.join("\n  ")}` : ""}`).join("\n")}\n--- stderr ---\n${o.stderr.slice(-4000)}`;

beforeAll(async () => {
  try {
    const { stdout } = await run("bash", [path.join(ROOT, BUILD_SCRIPT)], { cwd: ROOT, timeout: 540_000, maxBuffer: 16 << 20 });
    bin = stdout.trim().split("\n").pop() ?? "";
    await fs.access(bin, fs.constants.X_OK);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    buildError = new Error(`the OCI conformance suite could not be built by ${BUILD_SCRIPT} (run it to see why): ${e.message}\n${e.stderr ?? ""}`);
    return;
  }
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-conformance-"));
  const base = path.join(tmp, "base");
  const ft = path.join(tmp, "ft");
  await makeLlamaLike(base, { hidden: 256, layers: 1, vocab: 1024, shards: 1 });
  await makeFineTune(base, ft, ["lm_head.weight"]);
  hub = await startHub();
  hub.addRepo("acme/tiny");
  await hub.commit("acme/tiny", base, { tags: ["v1.0"] });
  await hub.commit("acme/tiny", ft); // main moves on: two tags, two manifests
  proxy = await startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store: path.join(tmp, "store"), aliases: {}, quiet: true });
  // The digests handed to the suite come from the proxy itself (this first GET converts the revision).
  for (const tag of ["main", "v1.0"]) {
    const r = await fetch(`${proxy.url}/v2/${NAME}/manifests/${tag}`, { headers: { Accept: OCI } });
    expect(r.status).toBe(200);
    const m = (await r.json()) as { config: { digest: string }; layers: { digest: string }[] };
    manifests.push(r.headers.get("docker-content-digest")!);
    for (const d of [m.config, ...m.layers]) blobs.add(d.digest);
  }
  expect(new Set(manifests).size).toBe(2);
}, 600_000);

afterAll(async () => {
  await proxy?.close();
  await hub?.close();
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

describe("OCI distribution-spec conformance, pull (read-only mode)", () => {
  let o: Outcome;
  beforeAll(async () => {
    if (buildError) return;
    o = await conformance(
      {
        OCI_API_PUSH: "false",
        OCI_API_PULL: "true",
        OCI_API_TAGS_LIST: "true",
        OCI_API_REFERRER: "true",
        OCI_RO_DATA_TAGS: "main v1.0",
        OCI_RO_DATA_MANIFESTS: manifests.join(" "),
        OCI_RO_DATA_BLOBS: [...blobs].join(" "),
      },
      "read-only",
    );
  }, 90_000);

  it("every pull test that applies passes", () => {
    ready();
    const applicable = Object.keys(EXPECTED).filter((n) => EXPECTED[n]!.status === "Pass");
    const bad = o.leaves.filter((l) => applicable.includes(l.name) && l.status !== "Pass");
    expect(bad, show(o, bad)).toEqual([]);
    for (const n of applicable) expect(o.leaves.some((l) => l.name === n), `${n} did not run\n${show(o, o.leaves)}`).toBe(true);
    // each tag, manifest and blob handed over was read, by GET and by HEAD
    const count = (n: string) => o.leaves.filter((l) => l.name === `${T}/read-only/${n}`).length;
    expect([count("pull/manifest-by-tag"), count("head/manifest-head-by-tag")]).toEqual([2, 2]);
    expect([count("pull/manifest-by-digest"), count("head/manifest-head-by-digest")]).toEqual([2, 2]);
    expect([count("pull/blob-get"), count("head/blob-head")]).toEqual([blobs.size, blobs.size]);
  });

  it("the tests that don't apply are disabled, and nothing else is in the report", () => {
    ready();
    const unknown = o.leaves.filter((l) => !EXPECTED[l.name]);
    expect(unknown, `tests not in EXPECTED (say whether they apply):\n${show(o, unknown)}`).toEqual([]);
    const off = o.leaves.filter((l) => EXPECTED[l.name]!.status === "Disabled" && l.status !== "Disabled");
    expect(off, show(o, off)).toEqual([]);
    expect(o.leaves.filter((l) => l.status === "Skip" || l.status === "Error" || l.status === "Unknown")).toEqual([]);
  });

  it("the overall result is a pass", () => {
    ready();
    expect(o.overall, show(o, o.leaves.filter((l) => l.status === "FAIL"))).not.toBe("FAIL");
  });
});

/**
 * "get-missing" (GET of a blob that was never pushed must be 404) is a pull test, but the suite files
 * it under the blob-push group, so it only runs with push on; a test filter keeps every other test of
 * the run (all pushes included) from running.
 */
describe("OCI distribution-spec conformance, get-missing blobs", () => {
  const only = async (algo: string) => {
    ready();
    const target = `${T}/${algo} blobs/get-missing`;
    const o = await conformance({ OCI_API_PUSH: "true", OCI_FILTER_TEST: target }, `missing-${algo}`);
    const ran = o.leaves.filter((l) => l.status !== "Disabled" && l.status !== "Unknown");
    expect(ran.map((l) => l.name), show(o, o.leaves)).toEqual([target]);
    return { o, leaf: ran[0]! };
  };

  it("sha256: 404", async () => {
    const { o, leaf } = await only("sha256");
    expect(leaf.status, show(o, [leaf])).toBe("Pass");
  });

  it("sha512: 404 (a well-formed digest of another algorithm is simply not here)", async () => {
    const { o, leaf } = await only("sha512");
    expect(leaf.status, show(o, [leaf])).toBe("Pass");
  });
});
