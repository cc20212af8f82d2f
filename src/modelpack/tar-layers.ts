/**
 * The files of a tar layer (POSIX ustar, with pax and GNU long names: what Go's archive/tar, Python's
 * tarfile and GNU tar write), written into a fresh folder of cake's own. Only regular files and
 * folders are accepted: a link (symbolic or hard), a device, a fifo, a path that is absolute or has a
 * `..`, a path twice, is refused in one line naming the layer and the path, before it is written. The
 * folder is private and new, and nothing in it is a link, so no write can leave it.
 */
import { createHash } from "node:crypto";
import fsp from "node:fs/promises";
import path from "node:path";
import { CakeError } from "../errors.js";
import { PathSet } from "../format/paths.js";
import { addModelPath, checkModelPath } from "./read-manifest.js";

const BLOCK = 512;

export interface TarFile {
  /** Its path in the model ('/'-separated, checked). */
  path: string;
  /** Where it was written. */
  file: string;
  size: number;
  sha256: string;
}

/** Reads exact byte counts from a stream of chunks. */
class ByteReader {
  private buf = Buffer.alloc(0);
  private readonly it: AsyncIterator<Buffer>;
  private done = false;
  constructor(source: AsyncIterable<Buffer>) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async fill(n: number): Promise<void> {
    while (this.buf.length < n && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else this.buf = this.buf.length ? Buffer.concat([this.buf, r.value]) : Buffer.from(r.value);
    }
  }

  /** The next `n` bytes, or fewer at the end of the stream. */
  async take(n: number): Promise<Buffer> {
    await this.fill(n);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(out.length);
    return out;
  }

  /** The next `n` bytes in pieces of whatever size came; throws at a stream shorter than that. */
  async *pieces(n: number, short: () => never): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0) await this.fill(1);
      if (this.buf.length === 0) short();
      const piece = this.buf.subarray(0, Math.min(left, this.buf.length));
      this.buf = this.buf.subarray(piece.length);
      left -= piece.length;
      yield piece;
    }
  }
}

const text = (b: Buffer) => {
  const z = b.indexOf(0);
  return b.subarray(0, z < 0 ? b.length : z).toString("utf8");
};

/** A numeric header field: octal text, or GNU's base-256 (high bit set) for big sizes. */
function number(b: Buffer): number {
  if (b[0]! & 0x80) {
    let v = b[0]! & 0x7f;
    for (let i = 1; i < b.length; i++) v = v * 256 + b[i]!;
    return v;
  }
  const s = text(b).trim();
  return s === "" ? 0 : parseInt(s, 8);
}

/** The pax records of an extended header (`<len> key=value\n` each). */
function paxRecords(b: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let at = 0;
  while (at < b.length) {
    const sp = b.indexOf(0x20, at);
    if (sp < 0) break;
    const len = parseInt(b.subarray(at, sp).toString("ascii"), 10);
    if (!(len > 0) || at + len > b.length) break;
    const rec = b.subarray(sp + 1, at + len - 1).toString("utf8");
    const eq = rec.indexOf("=");
    if (eq > 0) out.set(rec.slice(0, eq), rec.slice(eq + 1));
    at += len;
  }
  return out;
}

const KIND: Record<string, string> = { "1": "a hard link", "2": "a symbolic link", "3": "a character device", "4": "a block device", "6": "a fifo" };

/**
 * Writes the files of the tar stream `tar` (already decompressed) under `dir` (a new, empty folder
 * of cake's), each hashed as it is written. `where` names the layer in errors. `paths`: the paths
 * the artifact's other layers hold already (a file in two layers is refused too).
 */
export async function extractTar(tar: AsyncIterable<Buffer>, dir: string, where: string, paths: PathSet): Promise<TarFile[]> {
  const r = new ByteReader(tar);
  const out: TarFile[] = [];
  let longName: string | undefined;
  let pax = new Map<string, string>();
  const bad = (what: string): never => {
    throw new CakeError("E_RECIPE", `${where}: ${what}`);
  };
  for (;;) {
    const h = await r.take(BLOCK);
    if (h.length === 0) break; // a tar without its end blocks: what came is all there is
    if (h.length < BLOCK) bad("the tar ends inside a header");
    if (h.every((x) => x === 0)) break;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
    if (number(h.subarray(148, 156)) !== sum) bad("not a tar (a header's checksum is wrong)");
    const type = String.fromCharCode(h[156]! || 0x30);
    const size = Number(pax.get("size") ?? number(h.subarray(124, 136)));
    if (!Number.isSafeInteger(size) || size < 0) bad("a tar entry has an invalid size");
    const short = (): never => bad("the tar is cut short inside an entry");
    const padded = Math.ceil(size / BLOCK) * BLOCK;
    if (type === "x" || type === "g" || type === "L" || type === "K") {
      if (size > 1 << 20) bad("a tar extended header is larger than 1 MiB");
      const body = (await r.take(padded)).subarray(0, size);
      if (body.length < size) short();
      if (type === "x") pax = paxRecords(body);
      if (type === "L") longName = text(body);
      continue; // global headers (g) and long link names (K) change nothing cake keeps
    }
    const prefix = h.subarray(257, 263).toString("latin1").startsWith("ustar") ? text(h.subarray(345, 500)) : "";
    const raw = pax.get("path") ?? longName ?? (prefix ? `${prefix}/${text(h.subarray(0, 100))}` : text(h.subarray(0, 100)));
    pax = new Map();
    longName = undefined;
    const name = raw.replace(/^(\.\/)+/, "").replace(/\/+$/, "");
    if (KIND[type]) bad(`tar entry ${JSON.stringify(raw)} is ${KIND[type]}; only files and folders are accepted`);
    if (type === "5") {
      if (name !== "" && name !== ".") checkModelPath(name, where, "tar entry");
      for await (const piece of r.pieces(padded, short)) void piece;
      continue;
    }
    if (type !== "0" && type !== "7") bad(`tar entry ${JSON.stringify(raw)} has type ${JSON.stringify(type)}; only files and folders are accepted`);
    if (raw.startsWith("/")) bad(`tar entry ${JSON.stringify(raw)} is an absolute path`);
    const p = checkModelPath(name, where, "tar entry");
    addModelPath(paths, p, where);
    const file = path.join(dir, ...p.split("/"));
    await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
    const fh = await fsp.open(file, "wx", 0o600);
    const hash = createHash("sha256");
    try {
      for await (const piece of r.pieces(size, short)) {
        hash.update(piece);
        await fh.write(piece);
      }
    } finally {
      await fh.close();
    }
    for await (const piece of r.pieces(padded - size, short)) void piece;
    out.push({ path: p, file, size, sha256: hash.digest("hex") });
  }
  return out;
}
