/**
 * docker-credential-* helper processes, spoken to as docker does: the action as the only argument,
 * the server (get) or a JSON record (store) on stdin, JSON on stdout
 * (https://github.com/docker/docker-credential-helpers#development).
 */
import { spawn } from "node:child_process";
import { CakeError } from "../../errors.js";
import type { Credentials } from "./docker-config.js";

const HELPER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const HELPER_TIMEOUT_MS = 60_000;

function runHelper(name: string, action: "get" | "store" | "erase", input: string): Promise<{ code: number; stdout: string; stderr: string }> {
  if (!HELPER_NAME.test(name)) throw new CakeError("E_AUTH", `credential helper name "${name}" is not valid`);
  const program = `docker-credential-${name}`;
  return new Promise((resolve, reject) => {
    const child = spawn(program, [action], { stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => child.kill("SIGKILL"), HELPER_TIMEOUT_MS);
    child.stdout.on("data", (b: Buffer) => {
      size += b.length;
      if (size <= 1 << 20) out.push(b);
    });
    child.stderr.on("data", (b: Buffer) => {
      if (err.length < 64) err.push(b);
    });
    child.on("error", (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new CakeError(
          "E_AUTH",
          e.code === "ENOENT"
            ? `${program} not found on PATH (configured as a credential helper in docker's config.json)`
            : `${program}: ${e.message}`,
          { cause: e },
        ),
      );
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") });
    });
    child.stdin.on("error", () => {
      /* the helper may exit without reading; its exit status tells */
    });
    child.stdin.end(input);
  });
}

export async function helperGet(name: string, server: string): Promise<Credentials | undefined> {
  const { code, stdout, stderr } = await runHelper(name, "get", server);
  const program = `docker-credential-${name}`;
  if (code !== 0) {
    if (/credentials not found/i.test(stdout + stderr)) return undefined;
    throw new CakeError("E_AUTH", `${program} get ${server} failed: ${(stdout || stderr).trim().split("\n")[0] ?? `exit ${code}`}`);
  }
  let parsed: { Username?: unknown; Secret?: unknown };
  try {
    parsed = JSON.parse(stdout) as typeof parsed;
  } catch {
    throw new CakeError("E_AUTH", `${program} get ${server}: output is not JSON`);
  }
  if (typeof parsed.Secret !== "string" || parsed.Secret === "") return undefined;
  if (parsed.Username === "<token>") return { identityToken: parsed.Secret, source: program };
  return { username: typeof parsed.Username === "string" ? parsed.Username : "", password: parsed.Secret, source: program };
}

export async function helperStore(name: string, server: string, username: string, secret: string): Promise<void> {
  const { code, stdout, stderr } = await runHelper(name, "store", JSON.stringify({ ServerURL: server, Username: username, Secret: secret }));
  if (code !== 0) {
    throw new CakeError("E_AUTH", `docker-credential-${name} store ${server} failed: ${(stdout || stderr).trim().split("\n")[0] ?? `exit ${code}`}`);
  }
}

/** Removes the helper's credentials for `server`; false when it had none. */
export async function helperErase(name: string, server: string): Promise<boolean> {
  const { code, stdout, stderr } = await runHelper(name, "erase", server);
  if (code === 0) return true;
  if (/credentials not found/i.test(stdout + stderr)) return false;
  throw new CakeError("E_AUTH", `docker-credential-${name} erase ${server} failed: ${(stdout || stderr).trim().split("\n")[0] ?? `exit ${code}`}`);
}
