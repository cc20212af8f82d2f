/** Reading and writing tar files whole, to make damaged or forged archives. */
import fs from "node:fs";
import { pipeline } from "node:stream/promises";
import tar from "tar-stream";

export interface TarEntry {
  header: tar.Headers;
  data: Buffer;
}

export async function readTar(file: string): Promise<TarEntry[]> {
  const ex = tar.extract();
  fs.createReadStream(file).pipe(ex);
  const out: TarEntry[] = [];
  for await (const e of ex) {
    const parts: Buffer[] = [];
    for await (const c of e) parts.push(c as Buffer);
    out.push({ header: e.header, data: Buffer.concat(parts) });
  }
  return out;
}

export async function writeTar(file: string, entries: TarEntry[]): Promise<void> {
  const pack = tar.pack();
  const done = pipeline(pack, fs.createWriteStream(file));
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (e.header.type === "file") pack.entry({ ...e.header, size: e.data.length }, e.data, cb);
      else pack.entry({ ...e.header, size: 0 }, cb);
    });
  }
  pack.finalize();
  await done;
}
