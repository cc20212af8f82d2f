/**
 * Cross-process locks as files holding the owner's pid, created atomically (see `tryLock`). A lock
 * whose owner is gone (killed pull) is stale and taken over, so a crash never wedges the store.
 * A pull takes a lock per blob: reading, linking and removing a lock file are synchronous (each
 * takes microseconds, less than handing it to libuv's threads and back, see store/ingest.ts);
 * creating the file stays on libuv's threads (~0.3 ms on the bench VM).
 */
import fs from "node:fs";
import fsp from "node:fs/promises";
import { CakeError } from "../errors.js";
import { sleep } from "../http/retry.js";
import { pidAlive, tempPath } from "./pid.js";
import { removeFile } from "./remove.js";

/** The pid a lock file names (0 if it names none), or undefined when there is no such file. */
async function holder(path: string): Promise<number | undefined> {
  let text: string;
  try {
    text = fs.readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
  const pid = Number(text.trim());
  return Number.isInteger(pid) && pid > 0 ? pid : 0;
}

/** The lock file's owner pid, if the lock exists and its owner lives. */
export async function lockOwner(path: string): Promise<number | undefined> {
  const pid = await holder(path);
  return pid && pidAlive(pid) ? pid : undefined;
}

/** Links `mine` (a file holding our pid) as `path`; false when `path` exists. */
async function linkNew(mine: string, path: string): Promise<boolean> {
  try {
    fs.linkSync(mine, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  }
}

/**
 * Removes the lock `path` if it still names the dead `pid`. Done under a second lock
 * (`<path>.break`): two processes that found the same stale lock must not both remove it, or the
 * second would remove the first's fresh lock and both would hold it. False when another process is
 * breaking it now.
 */
async function breakStale(path: string, pid: number, mine: string): Promise<boolean> {
  const breaker = `${path}.break`;
  if (!(await linkNew(mine, breaker))) {
    // Whoever breaks it was killed too: clear the way for the next try (two faults at once can still tie here).
    const b = await holder(breaker);
    if (b !== undefined && !pidAlive(b)) await removeFile(breaker);
    return false;
  }
  try {
    if ((await holder(path)) === pid) await removeFile(path);
    return true;
  } finally {
    await removeFile(breaker);
  }
}

/**
 * Tries once; true when this process now holds the lock. The lock file appears with its owner's pid
 * already in it: written aside, then hard-linked into place (which fails if the lock exists). Created
 * empty and written after, another process could read it in between, take it for stale (no live
 * pid) and take it over: two holders of one ingest, seen as concurrent pulls failing on each other's
 * partial files.
 */
export async function tryLock(path: string): Promise<boolean> {
  const mine = tempPath(path);
  await fsp.writeFile(mine, String(process.pid), { flag: "wx" });
  try {
    for (let i = 0; i < 2; i++) {
      if (await linkNew(mine, path)) return true;
      const pid = await holder(path);
      if (pid === undefined) continue; // released (or being replaced) in between: try again
      if (pidAlive(pid) || !(await breakStale(path, pid, mine))) return false;
    }
    return false;
  } finally {
    await removeFile(mine);
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
    await removeFile(path);
  }
}
