/**
 * The real backend of `cake browse` (cli/browse/backend.ts) on a real store and the Hub emulation:
 * a base model and a fine-tune of it pulled through it, then what the screen would show — shared
 * bytes per model, which tensors each shares with which, search hits, a Hub model's files, a diff,
 * an export and a removal.
 */
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { libraryBackend, splitRef } from "../../cli/browse/backend.js";
import { uiProgress } from "../../cli/browse/progress.js";
import type { Backend, TaskProgress } from "../../cli/browse/types.js";
import { Store } from "../../src/store/layout.js";
import { hashTree, makeFineTune, makeLlamaLike } from "../fixtures/models.js";
import { startHub, type Hub } from "../hub/emulator.js";

let hub: Hub;
let tmp: string;
let base: string;
let ft: string;
let backend: Backend;
let baseCommit: string;
const CHANGED = ["model.layers.1.mlp.down_proj.weight", "lm_head.weight"];

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), "cake-browse-"));
  base = path.join(tmp, "base");
  ft = path.join(tmp, "ft");
  await makeLlamaLike(base, { hidden: 256, layers: 2, vocab: 2048, shards: 2 });
  await makeFineTune(base, ft, CHANGED);
  hub = await startHub();
  hub.addRepo("acme/base");
  baseCommit = await hub.commit("acme/base", base);
  hub.addRepo("acme/base-ft");
  await hub.commit("acme/base-ft", ft);
  backend = libraryBackend({ store: new Store(path.join(tmp, "store")), hub: { hubUrl: hub.url } });
});
afterAll(async () => {
  await hub?.close();
  await fs.rm(tmp, { recursive: true, force: true });
});

describe("browse backend", () => {
  it("names revisions the way the list shows them", () => {
    expect(splitRef(`hf://acme/m@${"a".repeat(40)}`)).toEqual({ name: "hf://acme/m", revision: "aaaaaaaaaaaa", pinned: true });
    expect(splitRef("hf://acme/m@v1.0")).toEqual({ name: "hf://acme/m", revision: "v1.0", pinned: false });
    expect(splitRef("127.0.0.1:5000/acme/m:v1")).toEqual({ name: "127.0.0.1:5000/acme/m", revision: "v1", pinned: false });
  });

  it("pulls with progress, then lists both models with the bytes they share", async () => {
    const reports: TaskProgress[] = [];
    const r = await backend.pull("hf://acme/base", uiProgress((p) => reports.push(p)));
    expect(r).toEqual({ text: `hf://acme/base@main: pulled commit ${baseCommit.slice(0, 12)}`, ref: "hf://acme/base@main" });
    const last = reports.at(-1)!;
    expect(last.bytesTotal).toBeGreaterThan(0);
    expect(last.bytesDone).toBe(last.bytesTotal);
    expect(last.itemsDone).toBe(last.itemsTotal);
    await backend.pull("hf://acme/base-ft", uiProgress(() => {}));

    const models = await backend.local();
    expect(models.map((m) => m.ref)).toEqual(["hf://acme/base@main", "hf://acme/base-ft@main"]);
    const [b, f] = models as [(typeof models)[0], (typeof models)[0]];
    expect(b.revisions).toEqual(["main", baseCommit.slice(0, 12)]);
    expect(b.refs).toEqual(["hf://acme/base@main", `hf://acme/base@${baseCommit}`]);
    expect(b.sharedWith).toEqual(["hf://acme/base-ft@main"]);
    expect(f.sharedWith).toEqual(["hf://acme/base@main"]);
    for (const m of [b, f]) {
      expect(m.sharedBytes).toBeGreaterThan(0);
      expect(m.sharedBytes).toBeLessThan(m.bytes);
    }
  });

  it("details a local model: every tensor, and which local model holds the same bytes", async () => {
    const f = (await backend.local()).find((m) => m.ref === "hf://acme/base-ft@main")!;
    const d = await backend.detail({ kind: "local", model: f });
    expect(d.where).toBe("store");
    expect(d.files.map((x) => x.path).sort()).toEqual((await fs.readdir(ft)).sort());
    const tensors = d.tensors!;
    expect(tensors.length).toBe(f.tensors);
    // shared: exactly what `cake diff` counts as shared (the same bytes: every tensor but the changed
    // ones, even the small ones packed next to a changed one)
    const diff = await backend.diff("hf://acme/base@main", "hf://acme/base-ft@main");
    const shared = tensors.filter((t) => t.sharedWith.length > 0);
    expect(shared.map((t) => t.name).sort()).toEqual([...diff.shared.names].sort());
    expect(shared.map((t) => t.name).sort()).toEqual(tensors.map((t) => t.name).filter((n) => !CHANGED.includes(n)).sort());
    for (const t of shared) expect(t.sharedWith).toEqual(["hf://acme/base@main"]);
    for (const name of CHANGED) expect(tensors.find((t) => t.name === name)!.sharedWith).toEqual([]);
    expect(tensors.find((t) => t.name === "model.embed_tokens.weight")!.sharedWith).toEqual(["hf://acme/base@main"]);
    expect(tensors.find((t) => t.name === "lm_head.weight")).toMatchObject({ dtype: "F16", shape: [2048, 256] });
    expect(d.summary.at(-1)).toMatch(new RegExp(`^shares ${shared.length} of ${tensors.length} tensors \\([0-9.]+ [KM]iB\\) with other local models$`));
  });

  it("searches the Hub and shows a Hub model's files before it is pulled", async () => {
    const { hits, errors } = await backend.search("acme/base");
    expect(errors).toEqual([]);
    expect(hits.map((h) => h.ref)).toEqual(["hf://acme/base", "hf://acme/base-ft"]);
    const d = await backend.detail({ kind: "remote", hit: hits[0]! });
    expect(d.where).toBe("hub");
    expect(d.summary[0]).toBe(`commit ${baseCommit}`);
    expect(d.files.map((x) => x.path).sort()).toEqual((await fs.readdir(base)).sort());
    expect(d.tensors).toBeUndefined();
  });

  it("diffs, exports byte for byte, and removes", async () => {
    const d = await backend.diff("hf://acme/base@main", "hf://acme/base-ft@main");
    for (const name of CHANGED) expect(d.changed.names).toContain(name);
    expect(d.shared.names).toContain("model.embed_tokens.weight");
    const out = path.join(tmp, "out");
    await backend.export("hf://acme/base-ft@main", out, uiProgress(() => {}));
    expect(await hashTree(out)).toEqual(await hashTree(ft));

    const f = (await backend.local()).find((m) => m.ref === "hf://acme/base-ft@main")!;
    expect((await backend.remove(f)).text).toMatch(/^removed hf:\/\/acme\/base-ft@main, hf:\/\/acme\/base-ft@[a-f0-9]{40} \(blobs stay until cake gc\)$/);
    const left = await backend.local();
    expect(left.map((m) => m.ref)).toEqual(["hf://acme/base@main"]);
    expect(left[0]!.sharedBytes).toBe(0);
  });
});
