/**
 * Files that belong to a process: locks and leases hold its pid, temp files carry it in their
 * name (`<file>.<pid>-<time>-<random>.tmp`), so that whoever finds one later can tell a live writer's file from
 * a dead one's (a killed pull, a killed export) without any other bookkeeping.
 */
import { randomBytes } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";

export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * A fresh temp name beside `file`, owned by this process. The random part is what makes it safe
 * where others may write (an export's target folder, /tmp): a name they could predict (pid and a
 * counter) lets them plant a symbolic link there first. Callers create it with O_EXCL ("wx").
 */
export const tempPath = (file: string): string => `${file}.${process.pid}-${Date.now()}-${randomBytes(8).toString("hex")}.tmp`;

/** tempPath's tail; the counter that stood for the random part before is still recognised (its leftovers). */
const TEMP_TAIL = /\.(\d+)-\d+-(?:\d+|[0-9a-f]{16})\.tmp$/;

/** For a file name: undefined if it is not a temp file, else whether its writer still runs. */
export function tempWriterAlive(name: string): boolean | undefined {
  const m = TEMP_TAIL.exec(name);
  return m ? pidAlive(Number(m[1])) : undefined;
}

/**
 * Removes `file` (a temp file, or a private temp folder with what is in it) if this user owns it;
 * never through a link: a link is removed itself, what it points at is left alone.
 */
export async function removeOwnTemp(file: string): Promise<void> {
  const st = await fsp.lstat(file).catch(() => undefined);
  if (!st || (process.getuid && st.uid !== process.getuid())) return;
  if (st.isDirectory()) await fsp.rm(file, { recursive: true, force: true });
  else await fsp.rm(file, { force: true });
}

/**
 * Removes from `dir` what tempPath named for `dir/<base>` and whose process is gone: the leftovers
 * of a killed writer, which nothing else would ever remove. Nothing else is touched.
 */
export async function removeDeadTemps(dir: string, base: string): Promise<void> {
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    if (name.replace(TEMP_TAIL, "") === base && tempWriterAlive(name) === false) {
      await removeOwnTemp(path.join(dir, name));
    }
  }
}
