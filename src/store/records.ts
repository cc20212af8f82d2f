/**
 * The store's two append-only records about blobs (under `cake/`), each a folder of small text files:
 *
 *   cake/ranges/<file-key>        "begin end digest repo": which blob holds which byte range of a Hub
 *                                 file, and a repo known to serve it (resume, re-pull, proof of
 *                                 possession before bytes cross repos: src/model/reuse-proof.ts)
 *   cake/locations/<registry>     "digest repository": where blobs are known to live on a registry
 *                                 (cross-repository mounts on push)
 *
 * Appended with O_NOFOLLOW (open-own.ts); a torn last line is skipped when read.
 */
import fsp from "node:fs/promises";
import path from "node:path";
import { CakeError } from "../errors.js";
import { DIGEST_RE } from "../format/oci.js";
import { appendOwn } from "./open-own.js";
import { removeFile } from "./remove.js";

/** A Hub file's byte range in the store: the blob holding it and the repos known to serve it. */
export interface RangeRecord {
  digest: string;
  repos: Set<string>;
}

export class RangeRecords {
  constructor(private readonly dir: string) {}

  private file(fileKey: string) {
    if (!/^[A-Za-z0-9._-]+$/.test(fileKey)) throw new CakeError("E_IO", `bad file key ${fileKey}`);
    return path.join(this.dir, fileKey);
  }

  /** For each range "begin-end" of the file: the blob that holds it and the repos known to serve it. */
  async known(fileKey: string): Promise<Map<string, RangeRecord>> {
    const out = new Map<string, RangeRecord>();
    try {
      for (const line of (await fsp.readFile(this.file(fileKey), "utf8")).split("\n")) {
        const m = /^(\d+) (\d+) (sha256:[a-f0-9]{64})(?: (\S+))?$/.exec(line);
        if (!m) continue;
        const key = `${m[1]}-${m[2]}`;
        let rec = out.get(key);
        if (!rec || rec.digest !== m[3]) out.set(key, (rec = { digest: m[3]!, repos: new Set() }));
        if (m[4]) rec.repos.add(m[4]);
      }
    } catch {
      /* none yet */
    }
    return out;
  }

  /** Records that `repo` served bytes [begin, end) of the file, held by blob `digest`. */
  async record(fileKey: string, begin: number, end: number, digest: string, repo: string): Promise<void> {
    if (/\s/.test(repo)) throw new CakeError("E_IO", `bad repo id ${JSON.stringify(repo)}`);
    await appendOwn(this.file(fileKey), `${begin} ${end} ${digest} ${repo}\n`);
  }

  async forget(fileKey: string): Promise<void> {
    await removeFile(this.file(fileKey));
  }
}

export class LocationRecords {
  constructor(private readonly dir: string) {}

  private file(registry: string) {
    return path.join(this.dir, registry.replace(/[^A-Za-z0-9._-]/g, "_"));
  }

  /** Records that `repository` on `registry` holds these blobs. */
  async record(registry: string, repository: string, digests: readonly string[]): Promise<void> {
    await fsp.mkdir(this.dir, { recursive: true });
    await appendOwn(this.file(registry), digests.map((d) => `${d} ${repository}\n`).join(""));
  }

  /** digest -> repositories of `registry` known to hold it. */
  async of(registry: string): Promise<Map<string, string[]>> {
    const out = new Map<string, string[]>();
    const text = await fsp.readFile(this.file(registry), "utf8").catch(() => "");
    for (const line of text.split("\n")) {
      const [d, repo] = line.split(" ");
      if (!d || !repo || !DIGEST_RE.test(d)) continue;
      const list = out.get(d) ?? [];
      if (!list.includes(repo)) list.push(repo);
      out.set(d, list);
    }
    return out;
  }
}

/**
 * `cake/guess-misses`: "<file key> <model>" lines — a file whose tensors were guessed from that
 * model and did not make its hash (src/model/speculate.ts): the pair is not guessed again.
 */
export class GuessMisses {
  constructor(private readonly file: string) {}

  async all(): Promise<Set<string>> {
    const text = await fsp.readFile(this.file, "utf8").catch(() => "");
    return new Set(text.split("\n").filter(Boolean));
  }

  async record(pair: string): Promise<void> {
    if (/\n/.test(pair)) throw new CakeError("E_IO", `bad guess record ${JSON.stringify(pair)}`);
    await appendOwn(this.file, `${pair}\n`);
  }
}
