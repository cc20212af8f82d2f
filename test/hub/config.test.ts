/**
 * The Hub settings read from the environment as huggingface_hub 2.4 reads them (constants.py,
 * utils/_auth.py): tokens cleaned, `~` and `$VAR` in path variables, HF_TOKEN_PATH,
 * HF_HUB_DISABLE_IMPLICIT_TOKEN, TRANSFORMERS_OFFLINE, the hub cache's precedence, the Hub's two names.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { cleanToken, hfHome, hfHubCache, hubParamsFromEnv, isHubOrigin } from "../../src/hub/config.js";
import { defaultStoreDir } from "../../src/store/layout.js";

let home: string;
const VARS = [
  "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HOME", "XDG_CACHE_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
  "CAKE_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_ENDPOINT",
];
const env = (vars: Record<string, string>) => {
  for (const v of VARS) vi.stubEnv(v, vars[v] ?? "");
  vi.stubEnv("HOME", home);
};

beforeAll(() => {
  home = fs.mkdtempSync(path.join(os.tmpdir(), "cake-hubcfg-"));
});
afterEach(() => {
  vi.unstubAllEnvs();
});
afterAll(() => fs.rmSync(home, { recursive: true, force: true }));

describe("Hub settings from the environment", () => {
  it("cleans tokens as huggingface_hub's _clean_token: newlines anywhere, spaces around; empty is none", () => {
    env({ HF_TOKEN: "hf_abc\n" });
    expect(hubParamsFromEnv().accessToken).toBe("hf_abc");
    env({ HUGGING_FACE_HUB_TOKEN: "  hf_le\r\ngacy \t" });
    expect(hubParamsFromEnv().accessToken).toBe("hf_legacy");
    fs.writeFileSync(path.join(home, "token"), "hf_file\n");
    // A token of white space is none: the token file is read, as huggingface_hub does.
    env({ HF_TOKEN: " \n", HF_HOME: home });
    expect(hubParamsFromEnv().accessToken).toBe("hf_file");
    fs.writeFileSync(path.join(home, "token"), "\n");
    expect(hubParamsFromEnv().accessToken).toBeUndefined();
    expect(cleanToken("\u00a0hf_x\u3000")).toBe("hf_x"); // Python's str.strip() white space
  });

  it("reads the token file at HF_TOKEN_PATH and expands ~ and $VAR in every path variable", () => {
    fs.writeFileSync(path.join(home, "my-token"), "hf_from_path\n");
    env({ HF_TOKEN_PATH: "~/my-token" });
    expect(hubParamsFromEnv()).toMatchObject({ accessToken: "hf_from_path", found: { source: `the token file ${path.join(home, "my-token")}` } });
    env({ HF_HOME: "~/hf" });
    expect(hfHome()).toBe(path.join(home, "hf"));
    env({ XDG_CACHE_HOME: "~" });
    expect(hfHome()).toBe(path.join(home, "huggingface"));
    env({ CAKE_HOME: "~/cake-store" });
    expect(defaultStoreDir()).toBe(path.join(home, "cake-store"));
    env({ HUGGINGFACE_HUB_CACHE: "${HOME}/legacy" });
    expect(hfHubCache()).toBe(path.join(home, "legacy"));
  });

  it("sends no token found in the environment or the token file under HF_HUB_DISABLE_IMPLICIT_TOKEN", () => {
    fs.writeFileSync(path.join(home, "token"), "hf_file\n");
    env({ HF_TOKEN: "hf_env", HF_HUB_DISABLE_IMPLICIT_TOKEN: "1" });
    expect(hubParamsFromEnv().accessToken).toBeUndefined();
    env({ HF_HOME: home, HF_HUB_DISABLE_IMPLICIT_TOKEN: "yes" });
    expect(hubParamsFromEnv().accessToken).toBeUndefined();
  });

  it("takes TRANSFORMERS_OFFLINE for HF_HUB_OFFLINE when that one is unset or empty", () => {
    env({ TRANSFORMERS_OFFLINE: "1" });
    expect(hubParamsFromEnv().offline).toBe(true);
    env({ HF_HUB_OFFLINE: "0", TRANSFORMERS_OFFLINE: "1" });
    expect(hubParamsFromEnv().offline).toBeUndefined();
  });

  it("finds the hub cache as constants.HF_HUB_CACHE: HF_HUB_CACHE, else HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub", () => {
    env({ HF_HOME: "/h", HF_HUB_CACHE: "/new", HUGGINGFACE_HUB_CACHE: "/old" });
    expect(hfHubCache()).toBe("/new");
    env({ HF_HOME: "/h", HUGGINGFACE_HUB_CACHE: "/old" });
    expect(hfHubCache()).toBe("/old");
    env({ HF_HOME: "/h" });
    expect(hfHubCache()).toBe("/h/hub");
  });

  it("treats huggingface.co and hf.co (https) as one Hub and every other host as another party", () => {
    const hf = { hubUrl: "https://huggingface.co" };
    expect(isHubOrigin(hf, "https://hf.co/api/models/x")).toBe(true);
    expect(isHubOrigin({ hubUrl: "https://hf.co" }, "https://huggingface.co/x")).toBe(true);
    expect(isHubOrigin(hf, "https://cdn-lfs.hf.co/repos/x")).toBe(false);
    expect(isHubOrigin(hf, "https://cas-bridge.xethub.hf.co/x")).toBe(false);
    expect(isHubOrigin(hf, "http://hf.co/x")).toBe(false);
    expect(isHubOrigin(hf, "https://hf.co:8443/x")).toBe(false);
    expect(isHubOrigin({ hubUrl: "https://hub.example" }, "https://hf.co/x")).toBe(false);
  });
});
