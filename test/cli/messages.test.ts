/**
 * What a new user types and reads: each mistake answered by one line that says what to do, as git
 * and docker do (a reference without `hf://`, a revision after ':', a Hub page address pasted from
 * the browser, a folder that is not there, a mistyped command, a bad option value, a proxy that is
 * not running). The built binary against the Hub emulation and an in-process proxy.
 */
import { spawnSync } from "node:child_process";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request } from "undici";
import { startProxy, type RunningProxy } from "../../proxy/index.js";
import { makeLlamaLike } from "../fixtures/models.js";
import { CAKE, cake } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";

let hub: Hub;
let proxy: RunningProxy;
let tmp: string;
let env: Record<string, string>;

beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), "cake-messages-"));
  const model = path.join(tmp, "model");
  await makeLlamaLike(model, { hidden: 64, layers: 1, vocab: 256 });
  hub = await startHub({ tokens: { hf_alice: { user: "alice", gatedAccess: [] } } });
  hub.addRepo("acme/tiny-llama");
  await hub.commit("acme/tiny-llama", model, { tags: ["v1"] });
  hub.addRepo("acme/gated", { gated: true });
  await hub.commit("acme/gated", model);
  proxy = await startProxy({ host: "127.0.0.1", port: 0, hub: hub.url, store: path.join(tmp, "proxy-store"), aliases: {}, quiet: true });
  env = { CAKE_HOME: path.join(tmp, "store"), HF_ENDPOINT: hub.url, HF_TOKEN: "", HF_HOME: path.join(tmp, "hf") };
}, 60_000);
afterAll(async () => {
  await proxy?.close();
  await hub?.close();
  await fsp.rm(tmp, { recursive: true, force: true });
});

/** Runs cake expecting one line on stderr and the exit code. */
async function oneLine(args: string[], code: number): Promise<string> {
  const r = await cake(args, env);
  expect(r.stderr.split("\n").filter(Boolean), args.join(" ")).toHaveLength(1);
  expect(r.code, args.join(" ")).toBe(code);
  return r.stderr.trim();
}

describe("references as users type them", () => {
  it("a name without hf:// is not sent to Docker Hub: did you mean hf://…", async () => {
    expect(await oneLine(["pull", "acme/tiny-llama"], 2)).toBe("cake: acme/tiny-llama: no registry named: did you mean hf://acme/tiny-llama? (Docker Hub: docker.io/acme/tiny-llama)");
    expect(await oneLine(["pull", "acme/tiny-llama:v1"], 2)).toContain("did you mean hf://acme/tiny-llama@v1?");
  });

  it("a Hub revision after ':' hints '@'", async () => {
    expect(await oneLine(["pull", "hf://acme/tiny-llama:main"], 2)).toBe("cake: hf://acme/tiny-llama:main: a Hub revision follows @, not ':': did you mean hf://acme/tiny-llama@main?");
  });

  it("a model page's address pasted from the browser pulls that model (and that revision)", async () => {
    const plain = await cake(["pull", "-q", "hf://acme/tiny-llama"], env);
    expect(plain.code).toBe(0);
    for (const url of ["https://huggingface.co/acme/tiny-llama", "https://huggingface.co/acme/tiny-llama/tree/v1", "https://hf.co/acme/tiny-llama/blob/main/config.json"]) {
      const r = await cake(["pull", "-q", url], env);
      expect(r.stderr, url).toBe("");
      expect(r.stdout, url).toBe(plain.stdout);
    }
    expect((await cake(["ls"], env)).stdout).toContain("hf://acme/tiny-llama@v1");
  });

  it("a repository that does not exist: says so, and that a private one needs a token", async () => {
    expect(await oneLine(["pull", "hf://nope"], 1)).toBe("cake: hf://nope@main: not found on the Hub: no such repository, or a private one that needs a token (no HF_TOKEN set)");
  });

  it("push of a folder that is not there says so", async () => {
    expect(await oneLine(["push", "./nope", "127.0.0.1:9/acme/m:v1"], 1)).toBe(
      "cake: ./nope: no such folder (push takes a folder of safetensors, hf://org/name[@rev] or a store reference)",
    );
  });
});

describe("usage errors: one line, exit 2", () => {
  it("a mistyped command: did you mean, no page of help", async () => {
    expect(await oneLine(["pul"], 2)).toBe("cake: unknown command 'pul': did you mean pull?");
  });

  it("--port and --hub values are checked, naming the option", async () => {
    expect(await oneLine(["proxy", "--port", "abc"], 2)).toBe("cake: option '--port <n>' argument 'abc' is invalid. not a port (0-65535): abc");
    expect(await oneLine(["proxy", "--hub", "notaurl"], 2)).toBe("cake: option '--hub <url>' argument 'notaurl' is invalid. not an http:// or https:// URL: notaurl");
  });
});

describe("proxy warm", () => {
  it("takes host:port/… without http://, and says what a 404 and a proxy that is not running mean", async () => {
    const ok = await cake(["proxy", "warm", "-q", `${proxy.host}/hf/acme/tiny-llama:main`], env);
    expect(ok.stderr).toBe("");
    expect(ok.stdout).toMatch(/^sha256:[0-9a-f]{64}\n$/);
    expect(await oneLine(["proxy", "warm", `${proxy.host}/hf/acme/tiny-llama:nope`], 1)).toBe(
      "cake: hf/acme/tiny-llama:nope: no such model or revision on the Hub (the proxy answered HTTP 404): check the name and the tag (a branch, a tag or a commit)",
    );
    expect(await oneLine(["proxy", "warm", "127.0.0.1:9/hf/acme/tiny-llama:main"], 1)).toBe(
      "cake: http://127.0.0.1:9: no proxy answers there (ECONNREFUSED): start one with cake proxy, or check the address",
    );
  });
});

describe("the proxy and a gated model", () => {
  it("tells an oras user how to log in to it, a token without access that it has none, a wrong token that it is wrong", async () => {
    const ask = async (auth?: string) => {
      const res = await request(`${proxy.url}/v2/hf/acme/gated/manifests/main`, { headers: { accept: "application/vnd.oci.image.manifest.v1+json", ...(auth ? { authorization: auth } : {}) } });
      const body = (await res.body.json()) as { errors: { message: string }[] };
      return `${res.statusCode} ${body.errors[0]!.message}`;
    };
    expect(await ask()).toBe(`401 acme/gated: gated repository: log in with a Hugging Face token that has access (oras login ${proxy.host} -u hf -p <token>; docker login the same)`);
    const basic = (token: string) => `Basic ${Buffer.from(`hf:${token}`).toString("base64")}`;
    expect(await ask(basic("hf_alice"))).toBe("403 acme/gated: gated repository: your Hugging Face token has not been granted access; request it on the Hub");
    // a wrong token reads as one, not as a token without access
    const wrong = await request(`${proxy.url}/v2/hf/acme/gated/tags/list`, { headers: { authorization: basic("hf_wrong") } });
    expect(wrong.statusCode).toBe(401);
    expect(((await wrong.body.json()) as { errors: { message: string }[] }).errors[0]!.message).toBe(
      `acme/gated: the Hub refused this token (wrong, expired or revoked): log in again with a valid Hugging Face token (oras login ${proxy.host} -u hf -p <token>; docker login the same)`,
    );
  });
});

describe("a Hub that does not answer", () => {
  it("is retried saying so on a terminal, silently into a pipe", async () => {
    const down = { ...env, HF_ENDPOINT: "http://127.0.0.1:9", CAKE_HTTP_RETRIES: "2", CAKE_HOME: path.join(tmp, "down") };
    const retrying = "cake: GET http://127.0.0.1:9/api/models/acme/m/revision/main: connect ECONNREFUSED 127.0.0.1:9; trying again (try 3 of 3)";
    // script(1) gives the command a terminal, as a user's shell does
    const tty = spawnSync("script", ["-qec", `${process.execPath} ${CAKE} pull hf://acme/m`, "/dev/null"], { env: { ...process.env, ...down }, encoding: "utf8" });
    expect(tty.stdout).toContain(retrying);
    const piped = await cake(["pull", "hf://acme/m"], down);
    expect(piped.stderr).not.toContain("trying again");
    expect(piped.stderr).toContain("cannot reach the Hub at http://127.0.0.1:9");
  });
});
