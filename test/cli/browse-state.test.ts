/**
 * `cake browse` logic without a screen: the state machine (state.ts) fed key presses and backend
 * answers, the progress sink, and the pane texts (view.ts) a user reads.
 */
import { describe, expect, it } from "vitest";
import { uiProgress } from "../../cli/browse/progress.js";
import { defaultExportDir, initialState, startEffects, update, type Effect, type KeyInfo, type Msg, type State } from "../../cli/browse/state.js";
import type { LocalModel, ModelDetail, RemoteHit, TaskProgress } from "../../cli/browse/types.js";
import { detailLines, fit, layout, localRow, progressLine, windowStart } from "../../cli/browse/view.js";

const model = (name: string, extra: Partial<LocalModel> = {}): LocalModel => ({
  digest: `sha256:${name.length.toString(16).padStart(64, "0")}`,
  name: `hf://acme/${name}`,
  ref: `hf://acme/${name}@main`,
  refs: [`hf://acme/${name}@main`],
  revisions: ["main"],
  files: 3,
  tensors: 10,
  bytes: 5 << 20,
  sharedBytes: 0,
  sharedWith: [],
  ...extra,
});
const hit = (id: string): RemoteHit => ({ source: "hub", ref: `hf://${id}`, downloads: 1200, likes: 3, updated: "2025-03-04T00:00:00.000Z" });

/** Feeds messages in order; returns the last state and every effect asked for. */
function run(s: State, ...msgs: Msg[]): { s: State; fx: Effect[] } {
  const fx: Effect[] = [];
  for (const m of msgs) {
    const [next, effects] = update(s, m);
    s = next;
    fx.push(...effects);
  }
  return { s, fx };
}
const key = (k: KeyInfo): Msg => ({ type: "key", input: "", key: k });
const type = (input: string): Msg => ({ type: "key", input, key: {} });
const loaded = (models: LocalModel[]): State => run(initialState(), { type: "local", models }).s;

describe("browse state", () => {
  it("starts by loading the store, and searching when given a query", () => {
    expect(startEffects(initialState())).toEqual([{ kind: "loadLocal" }]);
    expect(startEffects(initialState("llama"))).toEqual([{ kind: "loadLocal" }, { kind: "search", query: "llama" }]);
  });

  it("/ opens the search box; typing, backspace and enter run a search; its results land in the results pane", () => {
    const first = run(loaded([]), type("/"), type("lla"), type("x"), key({ delete: true }), type("ma"), key({ return: true }));
    let s = first.s;
    expect(first.fx).toEqual([{ kind: "search", query: "llama" }]);
    expect(s.pane).toBe("results");
    expect(s.searching).toBe(true);
    ({ s } = run(s, { type: "results", query: "llama", hits: [hit("acme/tiny-llama"), hit("other/llama")], errors: [] }));
    expect(s.searching).toBe(false);
    expect(s.results.map((h) => h.ref)).toEqual(["hf://acme/tiny-llama", "hf://other/llama"]);
    expect(s.message?.text).toBe('2 found for "llama"');
  });

  it("keys typed into the search box are text, not commands (q does not quit)", () => {
    const { s, fx } = run(loaded([]), type("/"), type("qwen"));
    expect(fx).toEqual([]);
    expect(s.mode).toEqual({ kind: "search", draft: "qwen" });
    expect(run(loaded([]), type("q")).fx).toEqual([{ kind: "quit" }]);
  });

  it("several backspaces read at once delete as many characters", () => {
    const { s } = run(loaded([]), type("/"), type("abcdef"), type("\x7f\x7f\x7f"));
    expect(s.mode).toEqual({ kind: "search", draft: "abc" });
  });

  it("a search answering after a newer one started is dropped", () => {
    let { s } = run(loaded([]), type("/"), type("a"), key({ return: true }), type("/"), type("b"), key({ return: true }));
    ({ s } = run(s, { type: "results", query: "a", hits: [hit("x/a")], errors: [] }));
    expect(s.results).toEqual([]);
    expect(s.searching).toBe(true);
  });

  it("search errors show as an error line, next to whatever was found", () => {
    const { s } = run(loaded([]), type("/"), type("m"), key({ return: true }), { type: "results", query: "m", hits: [hit("x/m")], errors: ["127.0.0.1:5000: no catalog"] });
    expect(s.message).toEqual({ text: "127.0.0.1:5000: no catalog", error: true });
    expect(s.results).toHaveLength(1);
  });

  it("arrows move within the focused list and stop at its ends; tab changes the pane", () => {
    const s0 = loaded([model("a"), model("b"), model("c")]);
    expect(run(s0, key({ downArrow: true }), key({ downArrow: true }), key({ downArrow: true }), key({ downArrow: true })).s.localIndex).toBe(2);
    expect(run(s0, key({ upArrow: true })).s.localIndex).toBe(0);
    expect(run(s0, key({ tab: true })).s.pane).toBe("results");
    expect(run(s0, key({ tab: true }), key({ tab: true })).s.pane).toBe("local");
  });

  it("enter opens the selected local model in the detail pane; its answer fills it; esc goes back", () => {
    const b = model("b");
    const opened = run(loaded([model("a"), b]), key({ downArrow: true }), key({ return: true }));
    let s = opened.s;
    expect(opened.fx).toEqual([{ kind: "detail", target: { kind: "local", model: b } }]);
    expect(s.pane).toBe("detail");
    expect(s.detail).toEqual({ kind: "model", ref: b.ref, loading: true });
    const data: ModelDetail = { ref: b.ref, where: "store", summary: [], files: [] };
    ({ s } = run(s, { type: "detail", ref: b.ref, data }));
    expect(s.detail).toEqual({ kind: "model", ref: b.ref, loading: false, data });
    // an answer for a model no longer shown changes nothing
    expect(run(s, { type: "detail", ref: "hf://acme/a@main", data }).s).toBe(s);
    expect(run(s, key({ escape: true })).s.pane).toBe("local");
  });

  it("the detail pane scrolls no further than its content", () => {
    const s0 = run(loaded([model("a")]), key({ return: true })).s;
    const down = (n: number): Msg => ({ type: "key", input: "", key: { pageDown: true }, detailMax: n });
    expect(run(s0, down(25), down(25), down(25)).s.detailScroll).toBe(25);
    expect(run(s0, down(4)).s.detailScroll).toBe(4);
    expect(run(s0, down(25), key({ pageUp: true }), key({ pageUp: true }), key({ pageUp: true })).s.detailScroll).toBe(0);
  });

  it("p pulls the selected result with a live task; progress updates it; done reloads the store selecting the model", () => {
    let s = run(loaded([]), type("/"), type("tiny"), key({ return: true }), { type: "results", query: "tiny", hits: [hit("acme/tiny-llama")], errors: [] }).s;
    let fx: Effect[];
    ({ s, fx } = run(s, type("p")));
    expect(fx).toEqual([{ kind: "pull", ref: "hf://acme/tiny-llama" }]);
    expect(s.task?.label).toBe("pull hf://acme/tiny-llama");
    expect(s.task?.itemName).toBe("tensors");
    const progress: TaskProgress = { bytesTotal: 1000, bytesDone: 250, itemsTotal: 8, itemsDone: 2 };
    ({ s } = run(s, { type: "progress", progress }));
    expect(s.task?.progress).toEqual(progress);
    // one task at a time
    const busy = run(s, type("p"));
    expect(busy.fx).toEqual([]);
    expect(busy.s.message).toEqual({ text: "busy: pull hf://acme/tiny-llama is still running", error: true });
    ({ s, fx } = run(s, { type: "taskDone", text: "hf://acme/tiny-llama@main: pulled commit abc", select: "hf://acme/tiny-llama@main" }));
    expect(s.task).toBeUndefined();
    expect(fx).toEqual([{ kind: "loadLocal", select: "hf://acme/tiny-llama@main" }]);
    ({ s } = run(s, { type: "local", models: [model("a"), model("tiny-llama")], select: "hf://acme/tiny-llama@main" }));
    expect(s.pane).toBe("local");
    expect(s.localIndex).toBe(1);
  });

  it("the detail of a Hub result, pulled, becomes the local model's (no more \"press p\")", () => {
    let s = run(loaded([]), type("/"), type("tiny"), key({ return: true }), { type: "results", query: "tiny", hits: [hit("acme/tiny-llama")], errors: [] }, key({ return: true })).s;
    expect(s.detail).toMatchObject({ kind: "model", ref: "hf://acme/tiny-llama" });
    s = run(s, type("p"), { type: "taskDone", text: "pulled", select: "hf://acme/tiny-llama@main" }).s;
    const tiny = model("tiny-llama");
    const { s: after, fx } = run(s, { type: "local", models: [model("a"), tiny], select: "hf://acme/tiny-llama@main" });
    expect(after.detail).toEqual({ kind: "model", ref: "hf://acme/tiny-llama@main", loading: true });
    expect(fx).toEqual([{ kind: "detail", target: { kind: "local", model: tiny } }]);
  });

  it("the diff picker starts among the pulled models, on another than the first, even from the Hub results", () => {
    const [a, b] = [model("a"), model("bb")];
    const s0 = run(loaded([a, b]), type("/"), type("x"), key({ return: true }), { type: "results", query: "x", hits: [hit("acme/x")], errors: [] }).s;
    expect(s0.pane).toBe("results");
    const s1 = run(s0, key({ tab: true }), type("d")).s; // tab: to the local list, a selected
    expect(s1.mode).toEqual({ kind: "diffPick", from: a.ref });
    expect(s1.pane).toBe("local");
    expect(s1.localIndex).toBe(1);
    const fromHit = run(s0, key({ return: true }), type("d")).s; // from the detail of a result
    expect(fromHit.mode).toEqual({ kind: "diffPick", from: "hf://acme/x" });
    expect(fromHit.pane).toBe("local");
  });

  it("a failed task shows its error and reloads the store", () => {
    const s0 = run(loaded([model("a")]), type("p")).s;
    const { s, fx } = run(s0, { type: "taskFailed", error: "hf://acme/a@main: repository not found" });
    expect(s.message).toEqual({ text: "hf://acme/a@main: repository not found", error: true });
    expect(fx).toEqual([{ kind: "loadLocal" }]);
  });

  it("x asks first; y removes, anything else keeps", () => {
    const a = model("a");
    const asked = run(loaded([a]), type("x")).s;
    expect(asked.mode).toEqual({ kind: "confirmRemove", model: a });
    expect(run(asked, type("y")).fx).toEqual([{ kind: "remove", model: a }]);
    const kept = run(asked, type("n"));
    expect(kept.fx).toEqual([]);
    expect(kept.s.message?.text).toBe("nothing removed");
  });

  it("remove and export refuse a model that is not in the store", () => {
    const s0 = run(loaded([]), type("/"), type("t"), key({ return: true }), { type: "results", query: "t", hits: [hit("acme/t")], errors: [] }).s;
    expect(run(s0, type("x")).s.message).toEqual({ text: "remove works on a model in the local store", error: true });
    expect(run(s0, type("e")).s.message).toEqual({ text: "export works on a model in the local store", error: true });
  });

  it("e asks for a directory (offering the model's name), enter exports there", () => {
    const a = model("tiny-llama");
    const asked = run(loaded([a]), type("e")).s;
    expect(asked.mode).toEqual({ kind: "export", ref: a.ref, draft: "./tiny-llama" });
    const { s, fx } = run(asked, type("-out"), key({ return: true }));
    expect(fx).toEqual([{ kind: "export", ref: a.ref, dir: "./tiny-llama-out" }]);
    expect(s.task?.label).toBe(`export ${a.ref}`);
    expect(run(loaded([a]), type("e"), key({ escape: true })).fx).toEqual([]);
  });

  it("d picks a second model; enter diffs the two in the detail pane", () => {
    const [a, b] = [model("a"), model("bb")];
    let { s, fx } = run(loaded([a, b]), type("d"));
    expect(s.mode).toEqual({ kind: "diffPick", from: a.ref });
    ({ s, fx } = run(s, key({ downArrow: true }), key({ return: true })));
    expect(fx).toEqual([{ kind: "diff", a: a.ref, b: b.ref }]);
    expect(s.pane).toBe("detail");
    expect(s.detail).toMatchObject({ kind: "diff", a: a.ref, b: b.ref, loading: true });
  });

  it("a reload keeps the selection on the same model when others come and go", () => {
    const s0 = run(loaded([model("b"), model("c")]), key({ downArrow: true })).s;
    expect(s0.localIndex).toBe(1);
    const { s } = run(s0, { type: "local", models: [model("a"), model("b"), model("c")] });
    expect(s.local[s.localIndex]!.name).toBe("hf://acme/c");
  });

  it("the export directory offered is the model's last name component", () => {
    expect(defaultExportDir("hf://acme/tiny-llama@main")).toBe("./tiny-llama");
    expect(defaultExportDir("127.0.0.1:5000/acme/m:v1")).toBe("./m");
  });
});

describe("browse progress sink", () => {
  it("counts bytes and items, reports at most once per interval, and always at done", () => {
    const reports: TaskProgress[] = [];
    let t = 0;
    const sink = uiProgress((p) => reports.push(p), 100, () => t);
    sink.addTotal(1000, 4);
    for (let i = 0; i < 10; i++) sink.bytes(50); // same instant: no new report
    expect(reports).toHaveLength(1);
    t = 150;
    sink.item(2);
    expect(reports.at(-1)).toEqual({ bytesTotal: 1000, bytesDone: 500, itemsTotal: 4, itemsDone: 2 });
    sink.bytes(500);
    sink.item(2);
    sink.done();
    expect(reports.at(-1)).toEqual({ bytesTotal: 1000, bytesDone: 1000, itemsTotal: 4, itemsDone: 4 });
  });
});

describe("browse panes", () => {
  it("fit cuts with an ellipsis and pads to the width", () => {
    expect(fit("abcdef", 4)).toBe("abc…");
    expect(fit("ab", 4)).toBe("ab  ");
  });

  it("the list window keeps the selection visible", () => {
    expect(windowStart(5, 4, 10)).toBe(0);
    expect(windowStart(100, 0, 10)).toBe(0);
    expect(windowStart(100, 50, 10)).toBe(45);
    expect(windowStart(100, 99, 10)).toBe(90);
  });

  it("a local row says name, revisions, size and shared bytes", () => {
    const row = localRow(model("tiny-llama", { revisions: ["main", "v1.0"], bytes: 3 << 20, sharedBytes: 1 << 20 }), 70);
    expect(row).toMatch(/^hf:\/\/acme\/tiny-llama +main,v1\.0 +3\.0 MiB +1\.0 MiB$/);
    expect(localRow(model("x"), 70)).toMatch(/ -$/);
  });

  it("the progress line shows the bar, percent, bytes and items", () => {
    const line = progressLine({ label: "pull hf://acme/m", itemName: "tensors", progress: { bytesTotal: 4 << 20, bytesDone: 1 << 20, itemsTotal: 8, itemsDone: 2 } }, 100);
    expect(line).toMatch(/^pull hf:\/\/acme\/m \[#+-+\] 25% {2}1\.0 MiB \/ 4\.0 MiB {2}2\/8 tensors/);
  });

  it("the detail lists files and tensors with the models sharing each", () => {
    const data: ModelDetail = {
      ref: "hf://acme/ft@main",
      where: "store",
      summary: ["8 files"],
      files: [{ path: "model.safetensors", size: 2048, format: "safetensors", tensors: 2 }],
      tensors: [
        { name: "embed.weight", dtype: "BF16", shape: [16, 32], size: 1024, file: "model.safetensors", sharedWith: ["hf://acme/base@main"] },
        { name: "lm_head.weight", dtype: "F16", shape: [16, 32], size: 1024, file: "model.safetensors", sharedWith: [] },
      ],
    };
    const { title, lines } = detailLines({ kind: "model", ref: data.ref, loading: false, data }, 100);
    const text = lines.map((l) => l.text.trimEnd());
    expect(title).toBe("hf://acme/ft@main");
    expect(text).toContain("in the local store");
    expect(text.some((l) => /^model\.safetensors +2\.0 KiB {2}safetensors 2t$/.test(l))).toBe(true);
    expect(text.find((l) => l.startsWith("embed.weight"))).toMatch(/BF16 +\[16,32\] +1\.0 KiB {2}= hf:\/\/acme\/base@main$/);
    expect(text.find((l) => l.startsWith("lm_head.weight"))).not.toContain("=");
  });

  it("a narrow terminal gets one column; a tiny one gets none", () => {
    expect(layout(160, 40)).toMatchObject({ narrow: false, tooSmall: false });
    expect(layout(70, 30)).toMatchObject({ narrow: true, tooSmall: false, leftWidth: 70 });
    expect(layout(30, 10).tooSmall).toBe(true);
  });
});
