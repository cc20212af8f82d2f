/**
 * Where an export writes. Its files go first into a private folder (0700) that it creates beside a
 * new target folder or inside an existing one, named by `tempPath`
 * (`.cake-export.<pid>-<time>-<random>.tmp`), and are renamed into place from there once all are
 * written (export.ts). Nobody else can create anything in it, so a link planted in a shared
 * target folder is never written through, and a file being written is never seen under its real
 * name. A killed export leaves its folder behind; the next export into that folder removes those
 * of dead processes. The folders below the target folder are never reached through a link.
 */
import fsp from "node:fs/promises";
import path from "node:path";
import { CakeError } from "../errors.js";
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

/**
 * Creates each of `dirs` (at or below `root`, which the user named and may itself be a link) one
 * level at a time, refusing a symbolic link on the way: `out/sub -> /elsewhere`, planted in a
 * shared folder, would have `sub/file` written outside `root`.
 */
export async function makeDirsBelow(root: string, dirs: Iterable<string>): Promise<void> {
  await fsp.mkdir(root, { recursive: true });
  for (const dir of new Set(dirs)) {
    let at = root;
    for (const part of path.relative(root, dir).split(path.sep).filter(Boolean)) {
      at = path.join(at, part);
      const st = await fsp.lstat(at).catch(() => undefined);
      if (st?.isSymbolicLink()) throw new CakeError("E_IO", `${at} is a symbolic link, which cake never writes through: remove it and export again`);
      if (!st) await fsp.mkdir(at).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== "EEXIST") throw err; // another file's folder, made meanwhile
      });
    }
  }
}
