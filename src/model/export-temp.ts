/**
 * Where an export writes its files before renaming them into place: a private folder (0700) that
 * it creates in the target folder, named by `tempPath` (`.cake-export.<pid>-<time>-<random>.tmp`).
 * Nobody else can create anything in it, so a link planted in a shared target folder is never
 * written through, and a file being written is never seen under its real name. A killed export
 * leaves its folder behind; the next export into that folder removes those of dead processes.
 */
import fsp from "node:fs/promises";
import path from "node:path";
import { pidAlive, removeDeadTemps, removeOwnTemp, tempPath } from "../store/pid.js";

const BASE = ".cake-export";

/** Creates this export's private temp folder in `dir` (mkdir fails on anything already there, links included). */
export async function makeExportTemp(dir: string): Promise<string> {
  const tmp = tempPath(path.join(dir, BASE));
  await fsp.mkdir(tmp, { mode: 0o700 });
  return tmp;
}

/** Before the private folder, each file's temp file stood beside it as `.<name>.cake-<pid>-<n>.tmp`. */
const OLD_TEMP = /^\..+\.cake-(\d+)-\d+\.tmp$/;

/** Removes from each of `dirs` the temp folders and files that killed exports left there. */
export async function removeStaleExportTemps(dirs: Iterable<string>): Promise<void> {
  for (const dir of new Set(dirs)) {
    await removeDeadTemps(dir, BASE);
    for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
      const m = OLD_TEMP.exec(name);
      if (m && !pidAlive(Number(m[1]))) await removeOwnTemp(path.join(dir, name));
    }
  }
}
