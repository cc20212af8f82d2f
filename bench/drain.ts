/**
 * The ceiling of a download on this machine: what a client that does nothing with the bytes gets from
 * the same server with the same request pattern as cake (its DEFAULT_CHUNK Range requests, N in flight), so that
 * cake's rate can be read as a fraction of what the emulation and loopback can deliver at all.
 * With `"store": DIR` it also does the least a verifying client must: sha256 of each range as it
 * streams and each network chunk written at its offset (FileHandle.write), the cost of Node itself.
 *
 *   node dist/bench/drain.js '{"files":[{"url":"…/resolve/main/x","size":123}],"concurrency":16,"chunk":16777216}'
 *
 * Follows the Hub's redirect to the CDN once per file (HEAD, as cake does). Prints `bytes seconds`.
 */
import { createHash } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { request } from "undici";

interface Job {
  files: { url: string; size: number }[];
  concurrency: number;
  chunk: number;
  store?: string;
}

async function location(url: string): Promise<string> {
  const res = await request(url, { method: "HEAD" });
  await res.body.dump();
  const loc = res.headers.location;
  return typeof loc === "string" ? new URL(loc, url).toString() : url;
}

async function main() {
  const job = JSON.parse(process.argv[2] ?? "{}") as Job;
  const t0 = performance.now();
  const ranges: { url: string; start: number; end: number }[] = [];
  const urls = await Promise.all(job.files.map((f) => location(f.url)));
  job.files.forEach((f, i) => {
    for (let s = 0; s < f.size; s += job.chunk) ranges.push({ url: urls[i]!, start: s, end: Math.min(f.size, s + job.chunk) });
  });
  let bytes = 0;
  let next = 0;
  const handles = job.store ? await Promise.all(urls.map((_, i) => fs.open(path.join(job.store!, `f${i}`), "w"))) : [];
  const worker = async () => {
    while (next < ranges.length) {
      const r = ranges[next++]!;
      const res = await request(r.url, { headers: { range: `bytes=${r.start}-${r.end - 1}` } });
      const fh = handles[urls.indexOf(r.url)];
      const hash = fh ? createHash("sha256") : undefined;
      let at = r.start;
      for await (const c of res.body) {
        const b = c as Buffer;
        bytes += b.length;
        if (fh) {
          hash!.update(b);
          await fh.write(b, 0, b.length, at);
          at += b.length;
        }
      }
      hash?.digest();
    }
  };
  await Promise.all(Array.from({ length: job.concurrency }, worker));
  for (const fh of handles) await fh.close();
  process.stdout.write(`${bytes} ${((performance.now() - t0) / 1000).toFixed(3)}\n`);
}

main().catch((err) => {
  process.stderr.write(`drain: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
