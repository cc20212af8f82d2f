/**
 * The `cake browse` screen drawn by ink (ink-testing-library): what a user sees after each key,
 * against a fake backend whose answers the test controls (a pull that stays running until the test
 * lets it finish, so its progress bar can be read). Plus the plain output for pipes.
 */
import { createElement } from "react";
import { render } from "ink-testing-library";
import { afterEach, describe, expect, it } from "vitest";
import { App } from "../../cli/browse/App.js";
import { printPlain } from "../../cli/browse/plain.js";
import type { Backend, LocalModel, ModelDetail, RemoteHit } from "../../cli/browse/types.js";
import type { ModelDiff, ProgressSink } from "../../src/index.js";
import { waitFor } from "../helpers/cli.js";

const MiB = 1 << 20;
const base: LocalModel = {
  digest: `sha256:${"a".repeat(64)}`,
  name: "hf://acme/base",
  ref: "hf://acme/base@main",
  refs: ["hf://acme/base@main", `hf://acme/base@${"1".repeat(40)}`],
  revisions: ["main", "111111111111"],
  commit: "1".repeat(40),
  files: 4,
  tensors: 12,
  bytes: 6 * MiB,
  sharedBytes: 4 * MiB,
  sharedWith: ["hf://acme/ft@main"],
};
const ft: LocalModel = { ...base, digest: `sha256:${"b".repeat(64)}`, name: "hf://acme/ft", ref: "hf://acme/ft@main", refs: ["hf://acme/ft@main"], revisions: ["main"], sharedWith: ["hf://acme/base@main"] };
const tiny: LocalModel = { ...base, digest: `sha256:${"c".repeat(64)}`, name: "hf://acme/tiny-llama", ref: "hf://acme/tiny-llama@main", refs: ["hf://acme/tiny-llama@main"], revisions: ["main"], sharedBytes: 0, sharedWith: [] };

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
}
const deferred = <T>(): Deferred<T> => {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
};

/** A backend with a store of `models`, a Hub that knows `hub`, and pulls the test finishes by hand. */
function fakeBackend(models: LocalModel[], hub: RemoteHit[]) {
  const store = [...models];
  const calls: string[] = [];
  let pullProgress: ProgressSink | undefined;
  const pullDone = deferred<void>();
  const backend: Backend = {
    describe: () => ({ store: "/tmp/store", hub: "http://hub.test" }),
    local: async () => [...store],
    search: async (q) => {
      calls.push(`search ${q}`);
      return { hits: hub.filter((h) => h.ref.includes(q)), errors: [] };
    },
    detail: async (t): Promise<ModelDetail> => {
      const ref = t.kind === "local" ? t.model.ref : t.hit.ref;
      calls.push(`detail ${ref}`);
      return t.kind === "local"
        ? {
            ref,
            where: "store",
            summary: [`${t.model.files} files`],
            files: [{ path: "model.safetensors", size: 6 * MiB, format: "safetensors", tensors: 2 }],
            tensors: [
              { name: "model.embed_tokens.weight", dtype: "BF16", shape: [2048, 256], size: 1 * MiB, file: "model.safetensors", sharedWith: ["hf://acme/ft@main"] },
              { name: "lm_head.weight", dtype: "F16", shape: [2048, 256], size: 1 * MiB, file: "model.safetensors", sharedWith: [] },
            ],
          }
        : { ref, where: "hub", summary: ["commit 2222"], files: [{ path: "config.json", size: 455 }], note: "tensors, dtypes and shapes show once pulled (press p)" };
    },
    pull: async (ref, progress) => {
      calls.push(`pull ${ref}`);
      pullProgress = progress;
      progress.addTotal(4 * MiB, 8);
      progress.bytes(1 * MiB);
      progress.item(2);
      progress.done(); // forces a report now
      await pullDone.promise;
      store.push(tiny);
      return { text: "hf://acme/tiny-llama@main: pulled commit 2222", ref: "hf://acme/tiny-llama@main" };
    },
    export: async (ref, dir) => ({ text: `${ref}: written to ${dir}` }),
    remove: async (m) => {
      store.splice(store.indexOf(m), 1);
      return { text: `removed ${m.refs.join(", ")}` };
    },
    diff: async (): Promise<ModelDiff> => {
      const c = (tensors: number, bytes: number, names: string[] = []) => ({ tensors, bytes, names });
      return { shared: c(10, 4 * MiB), changed: c(2, 2 * MiB, ["lm_head.weight", "model.norm.weight"]), added: c(0, 0), removed: c(0, 0), transferBytes: 2 * MiB, totalBytes: 6 * MiB };
    },
  };
  return { backend, calls, finishPull: () => pullDone.resolve(), pullProgress: () => pullProgress };
}

// eslint-disable-next-line no-control-regex
const plain = (s: string | undefined) => (s ?? "").replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "");
const KEY = { up: "\x1b[A", down: "\x1b[B", enter: "\r", esc: "\x1b", tab: "\t" };

let app: ReturnType<typeof render> | undefined;
afterEach(() => {
  app?.unmount();
  app = undefined;
});

/** Renders the app on a fake terminal of columns x rows. */
function start(backend: Backend, columns = 120, rows = 30) {
  app = render(createElement(App, { backend }));
  const out = app.stdout as unknown as NodeJS.EventEmitter & { columns: number; rows: number };
  Object.defineProperty(out, "columns", { value: columns, configurable: true });
  Object.defineProperty(out, "rows", { value: rows, configurable: true });
  out.emit("resize");
  const screen = () => plain(app!.lastFrame());
  const until = (text: string | RegExp) =>
    waitFor(() => (typeof text === "string" ? screen().includes(text) : text.test(screen())), 5000, `the screen to show ${text}\n${screen()}`);
  const press = async (...keys: string[]) => {
    for (const k of keys) {
      app!.stdin.write(k);
      await new Promise((r) => setTimeout(r, 5)); // one key per read, as a person types
    }
  };
  const resize = (c: number, r: number) => {
    Object.defineProperty(out, "columns", { value: c, configurable: true });
    Object.defineProperty(out, "rows", { value: r, configurable: true });
    out.emit("resize");
  };
  return { screen, until, press, resize };
}

describe("cake browse screen", () => {
  it("shows the local store with revisions, sizes and shared bytes", async () => {
    const { until, screen } = start(fakeBackend([base, ft], []).backend, 160, 40);
    await until("Local store (2)");
    const lines = screen().split("\n");
    expect(lines.find((l) => l.includes("hf://acme/base"))).toMatch(/hf:\/\/acme\/base +main,111111111111 +6\.0 MiB +4\.0 MiB/);
    expect(screen()).toContain("hf://acme/ft");
    expect(screen()).toMatch(/\/: search .* p: pull .* q: quit/);
  });

  it("searches the Hub from the search box, opens a result, pulls it with a live progress bar, then lists it", async () => {
    const fake = fakeBackend([base], [{ source: "hub", ref: "hf://acme/tiny-llama", downloads: 1500, likes: 7, updated: "2025-02-03T00:00:00Z", pipelineTag: "text-generation" }]);
    const { until, press, screen } = start(fake.backend, 160, 40);
    await until("Local store (1)");
    await press("/", "t", "i", "n", "y");
    await until("Search: tiny_");
    await press(KEY.enter);
    await until("Results (1)");
    expect(screen()).toMatch(/hf:\/\/acme\/tiny-llama +1\.5K dl {2}7 likes {2}2025-02-03 {2}text-generation/);
    await press(KEY.enter);
    await until("on the Hub");
    expect(screen()).toContain("tensors, dtypes and shapes show once pulled (press p)");
    expect(fake.calls).toContain("detail hf://acme/tiny-llama");
    await press("p");
    await until(/pull hf:\/\/acme\/tiny-llama \[#+-+\] 25% {2}1\.0 MiB \/ 4\.0 MiB {2}2\/8 tensors/);
    // the bar moves with the sink
    fake.pullProgress()!.bytes(3 * MiB);
    fake.pullProgress()!.item(6);
    fake.pullProgress()!.done();
    await until(/\[#+\] 100% {2}4\.0 MiB \/ 4\.0 MiB {2}8\/8 tensors/);
    fake.finishPull();
    await until("hf://acme/tiny-llama@main: pulled commit 2222");
    await until("Local store (2)");
    expect(screen()).toMatch(/│ hf:\/\/acme\/tiny-llama +main +6\.0 MiB +- /);
  });

  it("takes keys read in one chunk (a paste, tmux send-keys) one by one", async () => {
    const fake = fakeBackend([base], [{ source: "hub", ref: "hf://acme/tiny-llama", downloads: 1, likes: 0, updated: "2025-02-03T00:00:00Z" }]);
    const { until, press } = start(fake.backend, 160, 40);
    await until("Local store (1)");
    await press("/tiny\r");
    await until("Results (1)");
    expect(fake.calls).toContain("search tiny");
    await press("/ab\x7fcd\r"); // Backspace inside the chunk takes back the b
    await until("Results (0)");
    expect(fake.calls).toContain("search tinyacd");
  });

  it("opens a local model: files, tensors with dtype and shape, and which local model shares each", async () => {
    const { until, press, screen } = start(fakeBackend([base, ft], []).backend, 160, 40);
    await until("Local store (2)");
    await press(KEY.enter);
    await until("in the local store");
    expect(screen()).toMatch(/model\.embed_tokens\.weight +BF16 +\[2048,256\] +1\.0 MiB {2}= hf:\/\/acme\/ft@main/);
    expect(screen()).toMatch(/lm_head\.weight +F16 +\[2048,256\] +1\.0 MiB/);
    expect(screen()).toMatch(/model\.safetensors +6\.0 MiB {2}safetensors 2t/);
  });

  it("diffs two local models picked with the keyboard", async () => {
    const { until, press, screen } = start(fakeBackend([base, ft], []).backend);
    await until("Local store (2)");
    await press("d");
    await until("Diff hf://acme/base@main with: pick a model and press enter");
    await press(KEY.down, KEY.enter);
    await until("diff hf://acme/base@main -> hf://acme/ft@main");
    expect(screen()).toMatch(/shared +10 +4\.0 MiB/);
    expect(screen()).toMatch(/changed +2 +2\.0 MiB/);
    expect(screen()).toContain("transfers 2.0 MiB of 6.0 MiB");
  });

  it("removes a model after a y, and keeps it after anything else", async () => {
    const { until, press, screen } = start(fakeBackend([base, ft], []).backend);
    await until("Local store (2)");
    await press("x");
    await until("Remove hf://acme/base@main, hf://acme/base@111111111111111111111111111111111111111");
    await press("n");
    await until("nothing removed");
    expect(screen()).toContain("Local store (2)");
    await press("x", "y");
    await until("Local store (1)");
    expect(screen()).toContain("removed hf://acme/base@main");
  });

  it("follows the terminal's size: two columns when wide, one when narrow, a notice when tiny", async () => {
    const { until, press, resize, screen } = start(fakeBackend([base], []).backend, 120, 30);
    await until("Local store (1)");
    await press(KEY.enter);
    await until("in the local store");
    expect(screen().split("\n").some((l) => l.includes("Local store (1)") && l.includes("hf://acme/base@main"))).toBe(true);
    resize(70, 30);
    await waitFor(() => !screen().includes("Local store (1)"), 5000, "the lists to give way to the detail");
    expect(screen()).toContain("in the local store");
    await press(KEY.esc);
    await until("Local store (1)");
    expect(screen()).not.toContain("in the local store");
    resize(30, 10);
    await until("terminal too small");
    expect(screen().replace(/\s+/g, " ")).toContain("terminal too small (30x10): cake browse needs 40x14; q quits");
    resize(120, 30);
    await until("Local store (1)");
  });
});

describe("cake browse without a terminal", () => {
  it("prints the store and, given a query, the search results", async () => {
    const { backend } = fakeBackend([base, ft], [{ source: "hub", ref: "hf://acme/tiny-llama", downloads: 10, likes: 1 }, { source: "registry", ref: "127.0.0.1:5000/acme/tiny-llama:v1" }]);
    let out = "";
    let err = "";
    const sink = (f: (s: string) => void) => ({ write: (s: string) => (f(s), true) }) as unknown as NodeJS.WritableStream;
    await printPlain(backend, "tiny", sink((s) => (out += s)), sink((s) => (err += s)));
    const lines = out.split("\n");
    expect(lines[0]).toMatch(/^MODEL +REF +REVISIONS +FILES +TENSORS +SIZE +SHARED +SHARED WITH$/);
    expect(lines[1]).toMatch(/^hf:\/\/acme\/base +hf:\/\/acme\/base@main +main,111111111111 +4 +12 +6\.0 MiB +4\.0 MiB +hf:\/\/acme\/ft@main$/);
    expect(out).toContain('2 found for "tiny"');
    expect(out).toMatch(/hf:\/\/acme\/tiny-llama +10 +1 +- +-/);
    expect(out).toMatch(/127\.0\.0\.1:5000\/acme\/tiny-llama:v1 +- +- +- +registry/);
    expect(err).toContain("not a terminal");
  });
});
