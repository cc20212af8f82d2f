/**
 * `cake gc` and the leases it respects.
 *
 * A lease (`cake/leases/<pid…>`) marks a process working in the store: blobs it writes or relies on
 * before it tags them are safe from gc. gc takes its lock and then looks for leases; a lease appears
 * and then looks for gc's lock: of the two that start at once, at least one sees the other (gc
 * refuses, or the lease waits for its end).
 *
 * gc deletes every blob no index.json entry reaches (the whole OCI graph: see
 * src/format/graph.ts), stale temp and ingest files, and the records of what it deleted. Refuses
 * while another cake process holds a lease (its blobs are not tagged yet); a lease taken while gc
 * runs waits for it (see leases.ts). Blobs written since gc started are kept whatever reaches them.
 */
import fsp from "node:fs/promises";
import path from "node:path";
import { noticeLine, sleep } from "../http/retry.js";
import { CakeError, isCakeError } from "../errors.js";
import { descriptorOf, walkGraph, type Successors } from "../format/graph.js";
import { ANN } from "../format/oci.js";
import { lockOwner, tryLock } from "./lock.js";
import { removeOwnTemp, tempPath, tempWriterAlive } from "./pid.js";
import { removeFile } from "./remove.js";
import { annotationOf, cakeRefOf } from "./tags.js";

/** What gc needs of the store's layout. */
export interface GcFiles {
  root: string;
  /** A path inside the store. */
  at(...parts: string[]): string;
  /** index.json's entries, as they are (other tools' too). */
  entries(): Promise<unknown[]>;
  readManifest(digest: string): Promise<Buffer>;
  /** Replaces a file atomically. */
  rewrite(file: string, content: string): Promise<void>;
}

/** Takes a lease in the store at `root` (`at` makes paths in it); resolves to its release. */
export async function takeLease(root: string, at: (...parts: string[]) => string): Promise<() => Promise<void>> {
  const tmp = tempPath(at("cake", "lease"));
  const file = at("cake", "leases", path.basename(tmp, ".tmp"));
  // Written aside and renamed in: gc must never see a lease without its pid (it would take it for stale).
  await fsp.writeFile(tmp, String(process.pid), { flag: "wx" });
  await fsp.rename(tmp, file);
  try {
    await waitForGc(root, at("cake", "gc.lock"));
  } catch (err) {
    await removeFile(file);
    throw err;
  }
  return () => removeFile(file);
}

/** Waits while a live `cake gc` (not this process) holds `gcLock`, saying so once. */
async function waitForGc(root: string, gcLock: string): Promise<void> {
  let told = false;
  for (let wait = 5; ; wait = Math.min(wait * 2, 200)) {
    const owner = await lockOwner(gcLock);
    if (owner === undefined || owner === process.pid) return;
    if (!told) noticeLine(`${root}: waiting for cake gc (process ${owner}) to finish`);
    told = true;
    await sleep(wait);
  }
}

export async function collectGarbage(files: GcFiles, successorsOf: Successors): Promise<{ removed: number; bytes: number; kept: number }> {
    const gcLock = files.at("cake", "gc.lock");
    if (!(await tryLock(gcLock))) throw new CakeError("E_LOCK", `gc is already running in ${files.root} (process ${await lockOwner(gcLock)})`);
    try {
      // The store's own clock: a blob renamed into blobs/ (or made read-only) at or after this moment is new.
      const started = (await fsp.stat(gcLock)).mtimeMs;
      for (const name of await fsp.readdir(files.at("cake", "leases"))) {
        const owner = await lockOwner(files.at("cake", "leases", name));
        if (owner === undefined) await removeFile(files.at("cake", "leases", name));
        else if (owner !== process.pid) throw new CakeError("E_LOCK", `another cake process (${owner}) is using ${files.root}; run gc when it ends`);
      }
      // Marked from every index.json entry, other tools' too; an entry, manifest or index it cannot
      // read or parse stops gc before anything is deleted (what it reaches would look unused).
      const live = new Set<string>();
      for (const [i, entry] of (await files.entries()).entries()) {
        const ref = cakeRefOf(entry);
        const name = ref ?? annotationOf(entry, ANN.refName);
        const where = `${files.at("index.json")} entry ${i}`;
        try {
          await walkGraph(descriptorOf(entry, where), (d) => files.readManifest(d.digest), () => {}, { seen: live, parent: name ?? where, successorsOf });
        } catch (err) {
          const why = `${name ? `${name}: ` : ""}${err instanceof Error ? err.message : String(err)}`;
          const fix = ref ? `cake rm ${ref}` : `remove that entry from ${files.at("index.json")}`;
          throw new CakeError(isCakeError(err) ? err.code : "E_IO", `gc: ${why}; nothing deleted (${fix}, then gc)`, { cause: err });
        }
      }
      let removed = 0;
      let bytes = 0;
      let kept = 0;
      // Blobs as they are and compressed (cake/compressed/<hex>: see compressed.ts), alike.
      const stored: [string, string][] = [];
      for (const dir of [["blobs", "sha256"], ["cake", "compressed"]]) {
        for (const hex of await fsp.readdir(files.at(...dir))) if (/^[0-9a-f]{64}$/.test(hex)) stored.push([hex, files.at(...dir, hex)]);
      }
      for (const [hex, file] of stored) {
        const digest = `sha256:${hex}`;
        if (!live.has(digest)) {
          const st = await fsp.stat(file).catch(() => undefined);
          if (!st) continue;
          if (Math.max(st.mtimeMs, st.ctimeMs) < started) {
            bytes += st.size;
            await removeFile(file);
            removed++;
            continue;
          }
          live.add(digest); // new since gc started: kept, with its ranges and verified record
        }
        kept++;
      }
      // Temp files of killed processes (a live one's is about to be renamed or linked into place).
      for (const dir of [[], ["cake"], ["cake", "ranges"], ["cake", "compressed"], ["ingest"]]) {
        for (const name of await fsp.readdir(files.at(...dir))) {
          // removeOwnTemp: a killed registry pull's folder of extracted tar layers too (src/modelpack/).
          if (tempWriterAlive(name) === false) await removeOwnTemp(files.at(...dir, name));
        }
      }
      // Partial downloads nobody holds: a later pull would resume them, but gc means "free the space".
      for (const name of await fsp.readdir(files.at("ingest"))) {
        if (/\.lock(\.break)?$/.test(name) || tempWriterAlive(name) !== undefined) continue;
        const key = name.replace(/\.(partial|journal)$/, "");
        if ((await lockOwner(files.at("ingest", `${key}.lock`))) !== undefined) continue;
        await removeFile(files.at("ingest", name));
      }
      for (const hex of await fsp.readdir(files.at("cake", "verified"))) {
        if (!live.has(`sha256:${hex}`)) await removeFile(files.at("cake", "verified", hex));
      }
      for (const name of await fsp.readdir(files.at("cake", "ranges"))) {
        if (tempWriterAlive(name) !== undefined) continue;
        const text = await fsp.readFile(files.at("cake", "ranges", name), "utf8");
        const keep = text.split("\n").filter((l) => l && live.has(l.split(" ")[2]!));
        if (keep.length === 0) await removeFile(files.at("cake", "ranges", name));
        else await files.rewrite(files.at("cake", "ranges", name), keep.join("\n") + "\n");
      }
      return { removed, bytes, kept };
    } finally {
      await removeFile(gcLock);
    }
}
