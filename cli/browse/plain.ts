/**
 * `cake browse` when stdin or stdout is not a terminal: the same facts as the screen, printed
 * once as tables (the local store with what each model shares; the search results when a query
 * is given), so a pipe or a script gets something useful instead of escape codes.
 */
import { formatBytes } from "../../src/index.js";
import { formatCount, formatDay } from "../commands/search.js";
import { table } from "../output.js";
import type { Backend } from "./types.js";

export async function printPlain(backend: Backend, query: string, out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<void> {
  const where = backend.describe();
  const models = await backend.local();
  err.write(`cake browse: not a terminal, printing instead; store ${where.store}\n`);
  if (models.length === 0) out.write("the local store is empty\n");
  else {
    table(
      [
        ["MODEL", "REF", "REVISIONS", "FILES", "TENSORS", "SIZE", "SHARED", "SHARED WITH"],
        ...models.map((m) => [
          m.name,
          m.ref,
          m.revisions.join(","),
          String(m.files),
          String(m.tensors),
          formatBytes(m.bytes),
          m.sharedBytes > 0 ? formatBytes(m.sharedBytes) : "-",
          m.sharedWith.join(",") || "-",
        ]),
      ],
      out,
    );
  }
  if (!query) return;
  const { hits, errors } = await backend.search(query);
  for (const e of errors) err.write(`cake browse: search: ${e}\n`);
  out.write(`\n${hits.length} found for ${JSON.stringify(query)}\n`);
  if (hits.length > 0) {
    table(
      [
        ["REF", "DOWNLOADS", "LIKES", "UPDATED", "TASK"],
        ...hits.map((h) =>
          h.source === "hub" ? [h.ref, formatCount(h.downloads ?? 0), formatCount(h.likes ?? 0), formatDay(h.updated), h.pipelineTag ?? "-"] : [h.ref, "-", "-", "-", "registry"],
        ),
      ],
      out,
    );
  }
}
