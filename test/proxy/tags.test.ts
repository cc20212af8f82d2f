/**
 * Tags through the proxy as crane and skopeo ask for them: `crane ls` / `skopeo list-tags` list the
 * repo's revisions even when the Hub answers the refs listing oddly (its default branch at least,
 * never a misleading "file not found"), and no tag (`:latest`, what crane, skopeo and docker ask
 * when given none) is the repo's default branch. The real tools against the proxy, with the Hub
 * emulation behind a forwarder that spoils the refs listing.
 */
import { execFile } from "node:child_process";
import fsp from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startProxy, type RunningProxy } from "../../proxy/index.js";
import { makeLlamaLike } from "../fixtures/models.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { requireTool } from "../registry/harness.js";

const run = promisify(execFile);
let hub: Hub;
let forwarder: http.Server;
let proxy: RunningProxy;
let tmp: string;
/** How the forwarder answers `/api/models/<repo>/refs`: the Hub's answer, or a spoilt one. */
let refsAnswer: "hub" | "entry-not-found" | "nameless" = "hub";

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "cake-proxy-tags-"));
  const model = path.join(tmp, "model");
  await makeLlamaLike(model, { hidden: 64, layers: 1, vocab: 256 });
  hub = await startHub();
  hub.addRepo("acme/tiny-llama");
  await hub.commit("acme/tiny-llama", model, { tags: ["v1"] });
  const upstream = new URL(hub.url);
  forwarder = http.createServer((req, res) => {
    if (/^\/api\/models\/[^?]+\/refs(\?|$)/.test(req.url ?? "") && refsAnswer !== "hub") {
      if (refsAnswer === "entry-not-found") res.writeHead(404, { "x-error-code": "EntryNotFound", "content-type": "application/json" }).end('{"error":"Entry not found"}');
      else res.writeHead(200, { "content-type": "application/json" }).end('{"branches":[{"ref":"refs/heads/main"}],"tags":null}');
      return;
    }
    const out = http.request({ host: upstream.hostname, port: upstream.port, path: req.url, method: req.method, headers: { ...req.headers, host: upstream.host } }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    req.pipe(out);
  });
  await new Promise<void>((r) => forwarder.listen(0, "127.0.0.1", r));
  const hubUrl = `http://127.0.0.1:${(forwarder.address() as AddressInfo).port}`;
  proxy = await startProxy({ host: "127.0.0.1", port: 0, hub: hubUrl, store: path.join(tmp, "proxy-store"), aliases: {}, quiet: true });
}, 60_000);
afterAll(async () => {
  await proxy?.close();
  await new Promise((r) => forwarder?.close(r));
  await hub?.close();
  await fsp.rm(tmp, { recursive: true, force: true });
});

const craneLs = async () => (await run(requireTool("crane"), ["ls", "--insecure", `${proxy.host}/hf/acme/tiny-llama`])).stdout.trim().split("\n");
const skopeoTags = async () =>
  (JSON.parse((await run(requireTool("skopeo"), ["list-tags", "--tls-verify=false", `docker://${proxy.host}/hf/acme/tiny-llama`])).stdout) as { Tags: string[] }).Tags;

describe("tags through the proxy", () => {
  it("crane ls and skopeo list-tags list the branches and tags; a refs listing answered oddly still lists the default branch", async () => {
    refsAnswer = "hub";
    expect(await craneLs()).toEqual(["main", "v1"]);
    expect(await skopeoTags()).toEqual(["main", "v1"]);
    for (const odd of ["entry-not-found", "nameless"] as const) {
      refsAnswer = odd;
      expect(await craneLs(), odd).toEqual(["main"]);
      expect(await skopeoTags(), odd).toEqual(["main"]);
    }
    refsAnswer = "hub";
  });

  it("no tag (:latest) is the default branch", async () => {
    const crane = requireTool("crane");
    const main = (await run(crane, ["digest", "--insecure", `${proxy.host}/hf/acme/tiny-llama:main`])).stdout.trim();
    expect(main).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect((await run(crane, ["digest", "--insecure", `${proxy.host}/hf/acme/tiny-llama`])).stdout.trim()).toBe(main);
  });
});
