/**
 * The ceiling of a download on this machine: what a client that does nothing with the bytes gets from
 * the same server with the same request pattern as cake (16 MiB Range requests, N in flight), so that
 * cake's rate can be read as a fraction of what the emulation and loopback can deliver at all.
 *
 *   node dist/bench/drain.js '{"files":[{"url":"…/resolve/main/x","size":123}],"concurrency":16,"chunk":16777216}'
 *
 * Follows the Hub's redirect to the CDN once per file (HEAD, as cake does). Prints `bytes seconds`.
 */
import { request } from "undici";

interface Job {
  files: { url: string; size: number }[];
  concurrency: number;
  chunk: number;
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
  const worker = async () => {
    while (next < ranges.length) {
      const r = ranges[next++]!;
      const res = await request(r.url, { headers: { range: `bytes=${r.start}-${r.end - 1}` } });
      for await (const c of res.body) bytes += (c as Buffer).length;
    }
  };
  await Promise.all(Array.from({ length: job.concurrency }, worker));
  process.stdout.write(`${bytes} ${((performance.now() - t0) / 1000).toFixed(3)}\n`);
}

main().catch((err) => {
  process.stderr.write(`drain: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
