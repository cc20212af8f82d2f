/**
 * HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY, read as curl reads them: the rules
 * (src/http/proxy-env.ts), then the built CLI through a real forward proxy (squid, test/http/squid.ts)
 * against the Hub emulation and an HTTPS registry, checked by the proxy's own access log.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseNoProxy, parseProxyUrl, proxyFor, readProxyEnv } from "../../src/http/proxy-env.js";
import { makeLlamaLike } from "../fixtures/models.js";
import { cake } from "../helpers/cli.js";
import { startHub, type Hub } from "../hub/emulator.js";
import { freePort, startRegistry } from "../registry/harness.js";
import { startSquid, type Squid } from "./squid.js";

describe("proxy variables, as curl reads them", () => {
  it("NO_PROXY: names match themselves and their subdomains, a leading dot or not", () => {
    const skip = parseNoProxy("example.com, .corp.internal localhost");
    expect(skip("example.com", 443)).toBe(true);
    expect(skip("hub.example.com", 443)).toBe(true);
    expect(skip("EXAMPLE.com.", 80)).toBe(true);
    expect(skip("notexample.com", 443)).toBe(false);
    expect(skip("corp.internal", 443)).toBe(true);
    expect(skip("registry.corp.internal", 5000)).toBe(true);
    expect(skip("localhost", 5000)).toBe(true);
    expect(skip("example.org", 443)).toBe(false);
    // As curl: a name does not match an address.
    expect(skip("127.0.0.1", 5000)).toBe(false);
  });

  it("NO_PROXY: addresses and CIDR ranges, IPv4 and IPv6, match address hosts only", () => {
    const skip = parseNoProxy("10.0.0.0/8,192.168.1.7,fd00::/8,::1,127.0.0.0/33");
    expect(skip("10.20.30.40", 443)).toBe(true);
    expect(skip("11.0.0.1", 443)).toBe(false);
    expect(skip("192.168.1.7", 80)).toBe(true);
    expect(skip("192.168.1.8", 80)).toBe(false);
    expect(skip("[fd12::1]", 443)).toBe(true);
    expect(skip("[::1]", 443)).toBe(true);
    expect(skip("[fe80::1]", 443)).toBe(false);
    // Not a range (/33): ignored, as curl ignores it.
    expect(skip("127.0.0.1", 443)).toBe(false);
  });

  it("NO_PROXY: an entry with :port matches that port only; * matches everything", () => {
    const skip = parseNoProxy("registry.local:5000,[::1]:8080,127.0.0.1:9000");
    expect(skip("registry.local", 5000)).toBe(true);
    expect(skip("registry.local", 443)).toBe(false);
    expect(skip("[::1]", 8080)).toBe(true);
    expect(skip("[::1]", 8081)).toBe(false);
    expect(skip("127.0.0.1", 9000)).toBe(true);
    expect(skip("127.0.0.1", 9001)).toBe(false);
    expect(parseNoProxy("*")("anything.example", 443)).toBe(true);
    expect(parseNoProxy("")("anything.example", 443)).toBe(false);
  });

  it("picks the proxy by scheme, lower case first, ALL_PROXY as the fallback, none for NO_PROXY hosts", () => {
    expect(readProxyEnv({ NO_PROXY: "example.com" })).toBeUndefined();
    expect(readProxyEnv({ HTTPS_PROXY: "" })).toBeUndefined();
    const env = readProxyEnv({
      http_proxy: "http://lower:3128",
      HTTP_PROXY: "http://upper:3128",
      ALL_PROXY: "all.proxy:8080",
      no_proxy: "hub.internal",
      NO_PROXY: "ignored.example",
    })!;
    expect(proxyFor(env, new URL("http://registry.example/v2/"))).toEqual({ url: "http://lower:3128", variable: "http_proxy" });
    expect(proxyFor(env, new URL("https://huggingface.co/api/models/x"))).toEqual({ url: "http://all.proxy:8080", variable: "ALL_PROXY" });
    expect(proxyFor(env, new URL("https://hub.internal/api/models/x"))).toBeUndefined();
    expect(proxyFor(env, new URL("https://ignored.example/"))).toBeDefined();
    expect(proxyFor(readProxyEnv({ HTTPS_PROXY: "http://p:1" })!, new URL("http://registry.example/v2/"))).toBeUndefined();
    // HTTP_PROXY in a CGI program is a request header (httpoxy): not a proxy.
    expect(readProxyEnv({ HTTP_PROXY: "http://attacker:80", REQUEST_METHOD: "GET" })).toBeUndefined();
  });

  it("proxy URLs: http:// when no scheme, curl's default ports, credentials kept out of the printable URL", () => {
    expect(parseProxyUrl("proxy.corp", "HTTPS_PROXY")).toEqual({ url: "http://proxy.corp:1080", variable: "HTTPS_PROXY" });
    expect(parseProxyUrl("http://proxy.corp:80/", "HTTPS_PROXY").url).toBe("http://proxy.corp:80");
    expect(parseProxyUrl("https://proxy.corp", "HTTPS_PROXY").url).toBe("https://proxy.corp:443");
    const withAuth = parseProxyUrl("http://us%40er:p%3Ass@proxy.corp:3128", "HTTPS_PROXY");
    expect(withAuth).toEqual({
      url: "http://proxy.corp:3128",
      variable: "HTTPS_PROXY",
      authorization: `Basic ${Buffer.from("us@er:p:ss").toString("base64")}`,
    });
    expect(() => parseProxyUrl("socks5://user:secret@proxy.corp:1080", "ALL_PROXY")).toThrow(
      "ALL_PROXY=socks5://***@proxy.corp:1080: cake speaks to HTTP proxies only (http:// or https://)",
    );
  });
});

describe("cake through a real forward proxy", () => {
  let tmp: string;
  let model: string;
  let hub: Hub;
  let squid: Squid;
  let reg: Awaited<ReturnType<typeof startRegistry>>;
  const REGISTRY_NAME = "registry.cake.test"; // only the proxy resolves it

  beforeAll(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-proxy-env-"));
    model = path.join(tmp, "tiny");
    await makeLlamaLike(model, { hidden: 64, layers: 1, vocab: 256, shards: 1 });
    hub = await startHub();
    hub.addRepo("acme/tiny");
    await hub.commit("acme/tiny", model);
    reg = await startRegistry({ tls: { names: [REGISTRY_NAME] }, token: true });
    const regPort = Number(new URL(reg.url).port);
    squid = await startSquid({ hosts: { [REGISTRY_NAME]: "127.0.0.1" }, connectPorts: [regPort] });
  });
  afterAll(async () => {
    await squid?.close();
    await reg?.close();
    await hub?.close();
    await fs.rm(tmp, { recursive: true, force: true });
  });

  let n = 0;
  const env = (extra: Record<string, string>) => ({
    CAKE_HOME: path.join(tmp, `store-${n++}`),
    DOCKER_CONFIG: path.join(tmp, "docker"),
    HF_ENDPOINT: hub.url,
    HF_TOKEN: "",
    HF_HOME: path.join(tmp, `hf-${n}`),
    ...extra,
  });
  /** What went through the proxy during `run`. */
  const through = async <T>(run: () => Promise<T>): Promise<{ result: T; requests: string[] }> => {
    const before = squid.requests().length;
    const result = await run();
    return { result, requests: squid.requests().slice(before) };
  };
  const hubHost = () => new URL(hub.url).host;
  const cdnHost = () => new URL(hub.cdnUrl).host;

  it("pulls from the Hub through HTTP_PROXY: the Hub's and the CDN's requests go through it", async () => {
    const { result: pull, requests } = await through(() => cake(["pull", "hf://acme/tiny"], env({ HTTP_PROXY: squid.url })));
    expect(pull.stderr).toContain("pulled commit");
    expect(pull.code).toBe(0);
    expect(requests).toContainEqual(`GET http://${hubHost()}/api/models/acme/tiny/revision/main 200`);
    expect(requests.some((r) => r.startsWith(`GET http://${cdnHost()}/repos/`) && r.endsWith(" 206"))).toBe(true);
    expect(requests.filter((r) => !r.startsWith(`GET http://${hubHost()}/`) && !r.startsWith(`HEAD http://${hubHost()}/`) && !r.startsWith(`GET http://${cdnHost()}/`))).toEqual([]);
  });

  it("goes direct to the hosts NO_PROXY names, per host across the Hub's redirect to its CDN", async () => {
    const all = await through(() => cake(["pull", "hf://acme/tiny"], env({ http_proxy: squid.url, NO_PROXY: "127.0.0.0/8,localhost" })));
    expect(all.result.code).toBe(0);
    expect(all.requests).toEqual([]);

    // The CDN on NO_PROXY: the Hub's answers come through the proxy, the file bytes straight from the CDN.
    const cdn = await through(() => cake(["pull", "hf://acme/tiny"], env({ http_proxy: squid.url, no_proxy: new URL(hub.cdnUrl).hostname })));
    expect(cdn.result.code).toBe(0);
    expect(cdn.requests.length).toBeGreaterThan(0);
    expect(cdn.requests.filter((r) => !/^(GET|HEAD) /.test(r) || !r.includes(` http://${hubHost()}/`))).toEqual([]);

    // And the other way: the Hub on NO_PROXY, its CDN through the proxy.
    const hubDirect = await through(() => cake(["pull", "hf://acme/tiny"], env({ http_proxy: squid.url, no_proxy: `${hubHost()}` })));
    expect(hubDirect.result.code).toBe(0);
    expect(hubDirect.requests.length).toBeGreaterThan(0);
    expect(hubDirect.requests.filter((r) => !r.startsWith(`GET http://${cdnHost()}/repos/`))).toEqual([]);
  });

  it("pushes to and pulls from an HTTPS registry through HTTPS_PROXY (CONNECT), its token server through HTTP_PROXY", async () => {
    const ref = `${REGISTRY_NAME}:${new URL(reg.url).port}/acme/tiny:v1`;
    const proxied = {
      HTTPS_PROXY: squid.url,
      HTTP_PROXY: squid.url,
      NODE_EXTRA_CA_CERTS: reg.certPath!,
    };
    const login = ["--username", "cake", "--password", "cake-secret"];
    const { result: push, requests } = await through(() => cake(["push", "-q", ...login, model, ref], env(proxied)));
    expect(push.stderr).toBe("");
    expect(push.code).toBe(0);
    const pull = await cake(["pull", "-q", ...login, ref], env(proxied));
    expect(pull.stderr).toBe("");
    expect(pull.code).toBe(0);
    expect(pull.stdout).toBe(push.stdout);
    // The registry's name resolves nowhere but at the proxy: every request went through its tunnel.
    expect(requests).toContainEqual(`CONNECT ${REGISTRY_NAME}:${new URL(reg.url).port} 200`);
    expect(requests.some((r) => r.startsWith(`GET ${reg.tokenServer!.realm}?`))).toBe(true);
  });

  it("names a proxy that cannot be reached, once, without its credentials", async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const reg = await cake(["pull", `${REGISTRY_NAME}:443/acme/tiny:v1`], env({ HTTPS_PROXY: `http://cake:s3cret@${dead}`, CAKE_HTTP_RETRIES: "0" }));
    expect(reg.stderr).toBe(
      `cake: ${REGISTRY_NAME}:443/acme/tiny:v1: GET https://${REGISTRY_NAME}/v2/acme/tiny/manifests/v1: cannot reach the proxy http://${dead} (from HTTPS_PROXY) for ${REGISTRY_NAME}:443: connect ECONNREFUSED\n`,
    );
    expect(reg.code).toBe(1);

    const fromHub = await cake(["pull", "hf://acme/tiny"], env({ http_proxy: dead, CAKE_HTTP_RETRIES: "0" }));
    expect(fromHub.stderr).toContain(`cannot reach the proxy http://${dead} (from http_proxy) for ${hubHost()}: connect ECONNREFUSED`);
    expect(fromHub.stderr.trim().split("\n")).toHaveLength(1);
    expect(fromHub.code).toBe(1);
  });

  it("sends the credentials in the proxy URL, and says so when the proxy wants some (407)", async () => {
    const guarded = await startSquid({ auth: { user: "cake", password: "pr0xy-pass" } });
    try {
      const port = guarded.port;
      const ok = await cake(["pull", "hf://acme/tiny"], env({ HTTP_PROXY: `http://cake:pr0xy-pass@127.0.0.1:${port}` }));
      expect(ok.code).toBe(0);
      expect(guarded.requests().some((r) => r.startsWith(`GET http://${hubHost()}/api/models/acme/tiny/`) && r.endsWith(" 200"))).toBe(true);

      const none = await cake(["pull", "hf://acme/tiny"], env({ HTTP_PROXY: `127.0.0.1:${port}` }));
      expect(none.stderr).toBe(
        `cake: the proxy http://127.0.0.1:${port} (from HTTP_PROXY) asks for a user and password (407) for ${hubHost()}: ` +
          "put them in HTTP_PROXY as http://user:password@host:port\n",
      );
      expect(none.code).toBe(1);

      const wrong = await cake(["pull", `${REGISTRY_NAME}:443/acme/tiny:v1`], env({ HTTPS_PROXY: `http://cake:wrong-pass@127.0.0.1:${port}` }));
      expect(wrong.stderr).toBe(
        `cake: the proxy http://127.0.0.1:${port} (from HTTPS_PROXY) refused the user and password in HTTPS_PROXY (407) for ${REGISTRY_NAME}:443\n`,
      );
      expect(wrong.code).toBe(1);
    } finally {
      await guarded.close();
    }
  });
});
