/**
 * Opening the store's files that keep a fixed name (partial blobs, their journals, the ranges and
 * locations records) for writing: never through a symbolic link. A link planted at such a name would
 * have cake truncate or append to whatever file it points at.
 */
import fs from "node:fs";
import fsp from "node:fs/promises";
import { promisify } from "node:util";
import { CakeError } from "../errors.js";

const { O_RDWR, O_WRONLY, O_CREAT, O_TRUNC, O_APPEND } = fs.constants;
/** Absent on Windows, where creating a link needs rights a planter would not have. */
const O_NOFOLLOW = fs.constants.O_NOFOLLOW ?? 0;

const FLAGS = {
  /** Created, or emptied ("w+"). */
  fresh: O_RDWR | O_CREAT | O_TRUNC,
  /** Read and written where it is ("r+"). */
  update: O_RDWR,
  /** Appended to, created if missing ("a"). */
  append: O_WRONLY | O_CREAT | O_APPEND,
};

export async function openOwn(file: string, how: keyof typeof FLAGS): Promise<fsp.FileHandle> {
  try {
    return await fsp.open(file, FLAGS[how] | O_NOFOLLOW, 0o666);
  } catch (err) {
    throw linkRefused(file, err);
  }
}

const openFd = promisify(fs.open);

/** openOwn as a bare file descriptor, for a file used with synchronous writes (see store/ingest.ts). */
export async function openOwnFd(file: string, how: keyof typeof FLAGS): Promise<number> {
  try {
    return await openFd(file, FLAGS[how] | O_NOFOLLOW, 0o666);
  } catch (err) {
    throw linkRefused(file, err);
  }
}

function linkRefused(file: string, err: unknown): unknown {
  if ((err as NodeJS.ErrnoException).code !== "ELOOP") return err;
  return new CakeError("E_IO", `${file} is a symbolic link, which cake never writes through: remove it`, { cause: err });
}

export async function appendOwn(file: string, text: string): Promise<void> {
  const fh = await openOwn(file, "append");
  try {
    await fh.write(text);
  } finally {
    await fh.close();
  }
}
