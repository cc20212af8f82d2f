/**
 * Cross-process locks as files holding the owner's pid, created atomically (see `tryLock`). A lock
 * whose owner is gone (killed pull) is stale and taken over, so a crash never wedges the store.
 */
import fs from "node:fs/promises";
import { CakeError } from "../errors.js";
import { sleep } from "../http/retry.js";

function alive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The lock file's owner pid, if the lock exists and its owner lives. */
export async function lockOwner(path: string): Promise<number | undefined> {
  try {
    const pid = Number((await fs.readFile(path, "utf8")).trim());
    return alive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

let seq = 0;

/** Where `pid` writes a lock before linking it into place (see `lockTempOwnerAlive`). */
const lockTempName = (path: string, pid: number, n: number) => `${path}.${pid}-${n}.tmp`;

/**
 * For a file name in a lock's folder: undefined if it is not a lock being written, else whether its
 * writer still runs (a sweep must leave those alone: the writer is about to link it).
 */
export function lockTempOwnerAlive(name: string): boolean | undefined {
  const m = /\.lock\.(\d+)-\d+\.tmp$/.exec(name);
  return m ? alive(Number(m[1])) : undefined;
}

/**
 * Tries once; true when this process now holds the lock. The lock file appears with its owner's pid
 * already in it: written aside, then hard-linked into place (which fails if the lock exists). Created
 * empty and written after, another process could read it in between, take it for stale (no live
 * pid) and take it over: two holders of one ingest, seen as concurrent pulls failing on each other's
 * partial files.
 */
export async function tryLock(path: string): Promise<boolean> {
  const mine = lockTempName(path, process.pid, seq++);
  await fs.writeFile(mine, String(process.pid));
  try {
    for (let i = 0; i < 2; i++) {
      try {
        await fs.link(mine, path);
        return true;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        if ((await lockOwner(path)) !== undefined) return false;
        // Stale: its owner died. Remove and try again. (Two processes that find the same stale lock in
        // the same instant can both take it: left as is, it needs a killed owner and a tie.)
        await fs.rm(path, { force: true });
      }
    }
    return false;
  } finally {
    await fs.rm(mine, { force: true });
  }
}

export async function withLock<T>(path: string, what: string, fn: () => Promise<T>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let wait = 5;
  while (!(await tryLock(path))) {
    if (Date.now() > deadline) throw new CakeError("E_LOCK", `${what} is locked by process ${await lockOwner(path)}`);
    await sleep(wait);
    wait = Math.min(wait * 2, 200);
  }
  try {
    return await fn();
  } finally {
    await fs.rm(path, { force: true });
  }
}
