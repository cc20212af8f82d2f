/**
 * Files that belong to a process: locks and leases hold its pid, temp files carry it in their
 * name (`<file>.<pid>-<time>-<n>.tmp`), so that whoever finds one later can tell a live writer's file from
 * a dead one's (a killed pull) without any other bookkeeping.
 */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

let seq = 0;

/** A fresh temp name beside `file`, owned by this process. */
export const tempPath = (file: string): string => `${file}.${process.pid}-${Date.now()}-${seq++}.tmp`;

/** For a file name: undefined if it is not a temp file, else whether its writer still runs. */
export function tempWriterAlive(name: string): boolean | undefined {
  const m = /\.(\d+)-\d+-\d+\.tmp$/.exec(name);
  return m ? pidAlive(Number(m[1])) : undefined;
}
