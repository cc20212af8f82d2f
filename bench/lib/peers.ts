/**
 * The peers cake is measured against, installed by the bench itself when missing or at another version
 * (idempotent, pinned as in .ci/setup): huggingface_hub from PyPI, oras and crane with `go install`.
 * CNCF distribution (`docker-registry`) is a Debian package: the bench only checks for it.
 */
import { accessSync, constants } from "node:fs";
import os from "node:os";
import path from "node:path";
import { run } from "./proc.js";

export const HF_HUB_VERSION = "2.4.0";
export const ORAS_VERSION = "v1.3.6";
export const CRANE_VERSION = "v0.22.1";

const goBin = () => path.join(process.env.GOPATH?.split(path.delimiter)[0] ?? path.join(os.homedir(), "go"), "bin");

function executable(p: string): boolean {
  try {
    accessSync(p, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function versionOk(bin: string, args: string[], want: string): Promise<boolean> {
  if (!executable(bin)) return false;
  const r = await run(bin, args).catch(() => undefined);
  return !!r && r.code === 0 && (r.stdout + r.stderr).includes(want.replace(/^v/, ""));
}

async function goInstall(pkg: string): Promise<void> {
  process.stderr.write(`bench: go install ${pkg}\n`);
  const go = executable("/usr/local/go/bin/go") ? "/usr/local/go/bin/go" : "go";
  const r = await run(go, ["install", pkg]);
  if (r.code !== 0) throw new Error(`go install ${pkg} failed: ${r.stderr.slice(-500)}`);
}

/** ~/go/bin/oras at ORAS_VERSION. */
export async function ensureOras(): Promise<string> {
  const bin = path.join(goBin(), "oras");
  if (!(await versionOk(bin, ["version"], ORAS_VERSION))) await goInstall(`oras.land/oras/cmd/oras@${ORAS_VERSION}`);
  return bin;
}

/** ~/go/bin/crane at CRANE_VERSION. */
export async function ensureCrane(): Promise<string> {
  const bin = path.join(goBin(), "crane");
  if (!(await versionOk(bin, ["version"], CRANE_VERSION))) await goInstall(`github.com/google/go-containerregistry/cmd/crane@${CRANE_VERSION}`);
  return bin;
}

/** python3 with huggingface_hub==HF_HUB_VERSION importable. */
export async function ensureHfHub(): Promise<string> {
  const check = ["-c", `import huggingface_hub, sys; sys.exit(huggingface_hub.__version__ != "${HF_HUB_VERSION}")`];
  if ((await run("python3", check)).code !== 0) {
    process.stderr.write(`bench: python3 -m pip install huggingface_hub==${HF_HUB_VERSION}\n`);
    const r = await run("python3", ["-m", "pip", "install", "-q", `huggingface_hub==${HF_HUB_VERSION}`]);
    if (r.code !== 0) throw new Error(`pip install huggingface_hub failed: ${r.stderr.slice(-500)}`);
  }
  return "python3";
}

/** /usr/bin/docker-registry (CNCF distribution), which the registry harness starts. */
export function checkRegistry(): void {
  if (!executable("/usr/bin/docker-registry")) throw new Error("docker-registry (CNCF distribution) is missing: apt-get install docker-registry (see .ci/setup)");
}

/** `cake proxy` exists when its --help answers (it is being written in proxy/). */
export async function cakeProxyAvailable(cakeBin: string): Promise<boolean> {
  const r = await run(process.execPath, [cakeBin, "proxy", "--help"]).catch(() => undefined);
  return !!r && r.code === 0 && /proxy/.test(r.stdout);
}
