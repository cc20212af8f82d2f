/**
 * The state of `cake browse` and every way it changes, as one pure function:
 * `update(state, msg) -> [state, effects]`. Keys and backend answers are messages; what to do
 * outside (search, pull, export, …) comes back as effects, which the app runs and answers with more
 * messages. Nothing here draws or does I/O, so it is tested by feeding it messages.
 */
import type { ModelDiff } from "../../src/index.js";
import type { DetailTarget, LocalModel, ModelDetail, RemoteHit, TaskProgress } from "./types.js";

export type Pane = "local" | "results" | "detail";

/** What the keyboard is doing: moving around, typing into a box, answering a question, picking. */
export type Mode =
  | { kind: "browse" }
  | { kind: "search"; draft: string }
  | { kind: "export"; ref: string; draft: string }
  | { kind: "confirmRemove"; model: LocalModel }
  | { kind: "diffPick"; from: string };

export type DetailView =
  | { kind: "model"; ref: string; loading: boolean; data?: ModelDetail; error?: string }
  | { kind: "diff"; a: string; b: string; loading: boolean; data?: ModelDiff; error?: string };

export interface Task {
  /** "pull hf://acme/tiny-llama" */
  label: string;
  /** What items count: "tensors", "blobs", "files". */
  itemName: string;
  progress: TaskProgress;
}

export interface State {
  pane: Pane;
  /** The list pane the detail was opened from (esc goes back there). */
  lastList: "local" | "results";
  mode: Mode;
  local: LocalModel[];
  localIndex: number;
  localLoading: boolean;
  /** The query the results answer. */
  query: string;
  results: RemoteHit[];
  resultIndex: number;
  searching: boolean;
  detail?: DetailView;
  detailScroll: number;
  task?: Task;
  message?: { text: string; error: boolean };
}

export interface KeyInfo {
  upArrow?: boolean;
  downArrow?: boolean;
  leftArrow?: boolean;
  rightArrow?: boolean;
  pageUp?: boolean;
  pageDown?: boolean;
  return?: boolean;
  escape?: boolean;
  tab?: boolean;
  shift?: boolean;
  backspace?: boolean;
  delete?: boolean;
  ctrl?: boolean;
  meta?: boolean;
}

export type Msg =
  /** `detailMax`: how far the detail pane can scroll at the current size. */
  | { type: "key"; input: string; key: KeyInfo; detailMax?: number }
  | { type: "local"; models: LocalModel[]; select?: string }
  | { type: "localFailed"; error: string }
  | { type: "results"; query: string; hits: RemoteHit[]; errors: string[] }
  | { type: "detail"; ref: string; data: ModelDetail }
  | { type: "detailFailed"; ref: string; error: string }
  | { type: "diff"; a: string; b: string; data: ModelDiff }
  | { type: "diffFailed"; a: string; b: string; error: string }
  | { type: "progress"; progress: TaskProgress }
  | { type: "taskDone"; text: string; select?: string }
  | { type: "taskFailed"; error: string };

export type Effect =
  | { kind: "loadLocal"; select?: string }
  | { kind: "search"; query: string }
  | { kind: "detail"; target: DetailTarget }
  | { kind: "pull"; ref: string }
  | { kind: "export"; ref: string; dir: string }
  | { kind: "remove"; model: LocalModel }
  | { kind: "diff"; a: string; b: string }
  | { kind: "quit" };

/** Lines a page key moves in the detail pane. */
export const PAGE = 10;

export function initialState(query = ""): State {
  return {
    pane: "local",
    lastList: "local",
    mode: { kind: "browse" },
    local: [],
    localIndex: 0,
    localLoading: true,
    query,
    results: [],
    resultIndex: 0,
    searching: false,
    detailScroll: 0,
  };
}

/** The effects the app runs when it starts. */
export function startEffects(state: State): Effect[] {
  return [{ kind: "loadLocal" }, ...(state.query ? [{ kind: "search" as const, query: state.query }] : [])];
}

const clamp = (i: number, n: number) => Math.max(0, Math.min(i, n - 1));
const ok = (text: string) => ({ text, error: false });
const bad = (text: string) => ({ text, error: true });

export const selectedLocal = (s: State): LocalModel | undefined => s.local[s.localIndex];
export const selectedResult = (s: State): RemoteHit | undefined => s.results[s.resultIndex];

/** The model the keys act on: the selection of the focused list, or the one the detail shows. */
function current(s: State): { ref: string; local?: LocalModel; hit?: RemoteHit } | undefined {
  if (s.pane === "detail") {
    const d = s.detail;
    if (d?.kind !== "model") return undefined;
    const local = s.local.find((m) => m.ref === d.ref);
    if (local) return { ref: local.ref, local };
    const hit = s.results.find((h) => h.ref === d.ref);
    return hit ? { ref: hit.ref, hit } : undefined;
  }
  if (s.pane === "local") {
    const m = selectedLocal(s);
    return m ? { ref: m.ref, local: m } : undefined;
  }
  const h = selectedResult(s);
  return h ? { ref: h.ref, hit: h } : undefined;
}

/** The name export offers as its directory: the model's last path component. */
export function defaultExportDir(ref: string): string {
  const last = ref.replace(/^hf:\/\//, "").replace(/@.*$/, "").split("/").pop() ?? "";
  const name = last.replace(/:.*$/, "") || "model";
  return `./${name}`;
}

/** Printable text of a key press (pasted text arrives as several characters at once). */
// eslint-disable-next-line no-control-regex
const printable = (input: string) => input.replace(/[\u0000-\u001f\u007f]/g, "");

export function update(s: State, msg: Msg): [State, Effect[]] {
  switch (msg.type) {
    case "key":
      return onKey(s, msg.input, msg.key, msg.detailMax ?? Infinity);
    case "local": {
      const keep = msg.select ?? selectedLocal(s)?.ref;
      const at = keep === undefined ? -1 : msg.models.findIndex((m) => m.ref === keep || m.refs.includes(keep));
      const next: State = { ...s, local: msg.models, localLoading: false, localIndex: at >= 0 ? at : clamp(s.localIndex, msg.models.length) };
      if (msg.select !== undefined && at >= 0 && s.mode.kind === "browse") next.pane = "local";
      // The detail of the Hub result just pulled ("press p") becomes the local model's: its tensors, what it shares.
      const pulled = msg.select !== undefined && at >= 0 ? msg.models[at]! : undefined;
      const d = s.detail;
      if (pulled && d?.kind === "model" && d.ref !== pulled.ref && (pulled.name === d.ref || pulled.refs.includes(d.ref))) {
        next.detail = { kind: "model", ref: pulled.ref, loading: true };
        next.detailScroll = 0;
        return [next, [{ kind: "detail", target: { kind: "local", model: pulled } }]];
      }
      return [next, []];
    }
    case "localFailed":
      return [{ ...s, localLoading: false, message: bad(`store: ${msg.error}`) }, []];
    case "results": {
      if (msg.query !== s.query) return [s, []]; // an older search answering late
      const message = msg.errors.length > 0 ? bad(msg.errors.join("; ")) : ok(`${msg.hits.length} found for ${JSON.stringify(msg.query)}`);
      return [{ ...s, searching: false, results: msg.hits, resultIndex: 0, message }, []];
    }
    case "detail":
      if (s.detail?.kind !== "model" || s.detail.ref !== msg.ref) return [s, []];
      return [{ ...s, detail: { kind: "model", ref: msg.ref, loading: false, data: msg.data } }, []];
    case "detailFailed":
      if (s.detail?.kind !== "model" || s.detail.ref !== msg.ref) return [s, []];
      return [{ ...s, detail: { kind: "model", ref: msg.ref, loading: false, error: msg.error } }, []];
    case "diff":
    case "diffFailed": {
      if (s.detail?.kind !== "diff" || s.detail.a !== msg.a || s.detail.b !== msg.b) return [s, []];
      const view: DetailView = msg.type === "diff" ? { kind: "diff", a: msg.a, b: msg.b, loading: false, data: msg.data } : { kind: "diff", a: msg.a, b: msg.b, loading: false, error: msg.error };
      return [{ ...s, detail: view }, []];
    }
    case "progress":
      return s.task ? [{ ...s, task: { ...s.task, progress: msg.progress } }, []] : [s, []];
    case "taskDone":
      return [{ ...s, task: undefined, message: ok(msg.text) }, [{ kind: "loadLocal", ...(msg.select ? { select: msg.select } : {}) }]];
    case "taskFailed":
      return [{ ...s, task: undefined, message: bad(msg.error) }, [{ kind: "loadLocal" }]];
  }
}

function startTask(s: State, label: string, itemName: string, effect: Effect): [State, Effect[]] {
  if (s.task) return [{ ...s, message: bad(`busy: ${s.task.label} is still running`) }, []];
  return [{ ...s, mode: { kind: "browse" }, task: { label, itemName, progress: { bytesTotal: 0, bytesDone: 0, itemsTotal: 0, itemsDone: 0 } }, message: undefined }, [effect]];
}

function move(s: State, delta: number, detailMax = Infinity): State {
  if (s.pane === "local") return { ...s, localIndex: clamp(s.localIndex + delta, s.local.length) };
  if (s.pane === "results") return { ...s, resultIndex: clamp(s.resultIndex + delta, s.results.length) };
  return { ...s, detailScroll: Math.max(0, Math.min(s.detailScroll + delta, detailMax)) };
}

function openDetail(s: State): [State, Effect[]] {
  if (s.pane === "local") {
    const m = selectedLocal(s);
    if (!m) return [s, []];
    return [
      { ...s, pane: "detail", lastList: "local", detail: { kind: "model", ref: m.ref, loading: true }, detailScroll: 0 },
      [{ kind: "detail", target: { kind: "local", model: m } }],
    ];
  }
  if (s.pane === "results") {
    const h = selectedResult(s);
    if (!h) return [s, []];
    return [
      { ...s, pane: "detail", lastList: "results", detail: { kind: "model", ref: h.ref, loading: true }, detailScroll: 0 },
      [{ kind: "detail", target: { kind: "remote", hit: h } }],
    ];
  }
  return [s, []];
}

function typing(draft: string, input: string, key: KeyInfo): string | undefined {
  // ink reports the Backspace key (DEL, 0x7f) as `delete`; several presses read at once arrive as one string
  if (key.backspace || key.delete) return draft.slice(0, -1);
  if (/^[\x7f\b]+$/.test(input)) return [...draft].slice(0, -input.length).join("");
  if (key.ctrl || key.meta || key.upArrow || key.downArrow || key.leftArrow || key.rightArrow || key.tab) return undefined;
  const text = printable(input);
  return text ? draft + text : undefined;
}

function onKey(s: State, input: string, key: KeyInfo, detailMax: number): [State, Effect[]] {
  const mode = s.mode;
  switch (mode.kind) {
    case "search": {
      if (key.escape) return [{ ...s, mode: { kind: "browse" } }, []];
      if (key.return) {
        const query = mode.draft.trim();
        return [
          { ...s, mode: { kind: "browse" }, query, searching: true, pane: "results", lastList: "results", message: ok(`searching ${JSON.stringify(query)}…`) },
          [{ kind: "search", query }],
        ];
      }
      const draft = typing(mode.draft, input, key);
      return draft === undefined ? [s, []] : [{ ...s, mode: { kind: "search", draft } }, []];
    }
    case "export": {
      if (key.escape) return [{ ...s, mode: { kind: "browse" }, message: ok("export cancelled") }, []];
      if (key.return) {
        const dir = mode.draft.trim();
        if (!dir) return [{ ...s, message: bad("export needs a directory") }, []];
        return startTask(s, `export ${mode.ref}`, "files", { kind: "export", ref: mode.ref, dir });
      }
      const draft = typing(mode.draft, input, key);
      return draft === undefined ? [s, []] : [{ ...s, mode: { ...mode, draft } }, []];
    }
    case "confirmRemove": {
      if (input === "y" || input === "Y") return startTask(s, `remove ${mode.model.ref}`, "refs", { kind: "remove", model: mode.model });
      return [{ ...s, mode: { kind: "browse" }, message: ok("nothing removed") }, []];
    }
    case "diffPick": {
      if (key.escape) return [{ ...s, mode: { kind: "browse" }, message: ok("diff cancelled") }, []];
      if (key.return) {
        const other = s.pane === "results" ? selectedResult(s)?.ref : selectedLocal(s)?.ref;
        if (!other) return [s, []];
        return [
          { ...s, mode: { kind: "browse" }, pane: "detail", detail: { kind: "diff", a: mode.from, b: other, loading: true }, detailScroll: 0, message: undefined },
          [{ kind: "diff", a: mode.from, b: other }],
        ];
      }
      if (key.tab) return [{ ...s, pane: s.pane === "local" ? "results" : "local" }, []];
      if (key.upArrow || input === "k") return [move(s, -1), []];
      if (key.downArrow || input === "j") return [move(s, 1), []];
      return [s, []];
    }
    case "browse":
      break;
  }

  if (input === "q" || (key.ctrl && input === "c")) return [s, [{ kind: "quit" }]];
  if (input === "/") return [{ ...s, mode: { kind: "search", draft: s.query }, message: undefined }, []];
  if (key.upArrow || input === "k") return [move(s, -1, detailMax), []];
  if (key.downArrow || input === "j") return [move(s, 1, detailMax), []];
  if (key.pageUp) return [move(s, -PAGE, detailMax), []];
  if (key.pageDown) return [move(s, PAGE, detailMax), []];
  if (key.tab) {
    const order: Pane[] = s.detail ? ["local", "results", "detail"] : ["local", "results"];
    const i = order.indexOf(s.pane);
    const pane = order[(i + (key.shift ? order.length - 1 : 1)) % order.length]!;
    return [{ ...s, pane, ...(pane !== "detail" ? { lastList: pane } : {}) }, []];
  }
  if (key.return) return openDetail(s);
  if (key.escape || key.leftArrow) return s.pane === "detail" ? [{ ...s, pane: s.lastList }, []] : [s, []];
  if (key.rightArrow) return s.detail && s.pane !== "detail" ? [{ ...s, pane: "detail" }, []] : [s, []];
  if (input === "r") return [{ ...s, localLoading: true }, [{ kind: "loadLocal" }]];

  const target = current(s);
  if (input === "p") {
    if (!target) return [{ ...s, message: bad("nothing selected to pull") }, []];
    return startTask(s, `pull ${target.ref}`, target.ref.startsWith("hf://") ? "tensors" : "blobs", { kind: "pull", ref: target.ref });
  }
  if (input === "e") {
    if (!target?.local) return [{ ...s, message: bad("export works on a model in the local store") }, []];
    return [{ ...s, mode: { kind: "export", ref: target.local.ref, draft: defaultExportDir(target.local.ref) }, message: undefined }, []];
  }
  if (input === "x") {
    if (!target?.local) return [{ ...s, message: bad("remove works on a model in the local store") }, []];
    return [{ ...s, mode: { kind: "confirmRemove", model: target.local }, message: undefined }, []];
  }
  if (input === "d") {
    if (!target) return [{ ...s, message: bad("select a model to diff from") }, []];
    // The second model is picked among the pulled ones (a Hub result has no tensors to compare yet), another than the first.
    const other = s.local.findIndex((m) => m.ref !== target.ref);
    const localIndex = selectedLocal(s)?.ref === target.ref && other >= 0 ? other : s.localIndex;
    return [{ ...s, pane: "local", localIndex, mode: { kind: "diffPick", from: target.ref }, message: undefined }, []];
  }
  return [s, []];
}
