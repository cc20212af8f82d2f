/**
 * What each pane of `cake browse` says, as plain lines cut to a width: the ink components
 * (App.tsx) only place these lines in boxes and colour them. Kept apart so the wording, the
 * column layout and the scrolling window are the same in the UI, in tests and in plain output.
 */
import { formatBytes } from "../../src/index.js";
import { formatCount, formatDay } from "../commands/search.js";
import type { DetailView, Mode, State, Task } from "./state.js";
import type { LocalModel, ModelDetail, RemoteHit } from "./types.js";

/** A line with an optional look. */
export interface Line {
  text: string;
  bold?: boolean;
  dim?: boolean;
  color?: "green" | "red" | "yellow" | "cyan";
}

/** `s` cut or padded to exactly `w` columns (an ellipsis marks a cut). */
export function fit(s: string, w: number): string {
  if (w <= 0) return "";
  const chars = [...s];
  if (chars.length <= w) return s + " ".repeat(w - chars.length);
  return chars.slice(0, Math.max(0, w - 1)).join("") + "…";
}

/** The first index to show so that `selected` is inside a window of `height` rows. */
export function windowStart(count: number, selected: number, height: number): number {
  if (height <= 0 || count <= height) return 0;
  return Math.max(0, Math.min(selected - Math.floor(height / 2), count - height));
}

export interface Layout {
  columns: number;
  rows: number;
  /** Too small to draw anything useful. */
  tooSmall: boolean;
  /** One column: the lists, or the detail when it has the focus. */
  narrow: boolean;
  leftWidth: number;
  rightWidth: number;
  bodyHeight: number;
  localHeight: number;
  resultsHeight: number;
}

export const MIN_COLUMNS = 40;
export const MIN_ROWS = 14;
/** Header line + two footer lines; plus one spare line so ink never takes the "taller than the screen" path. */
const CHROME = 4;
export const SEARCH_HEIGHT = 3;

export function layout(columns: number, rows: number): Layout {
  const tooSmall = columns < MIN_COLUMNS || rows < MIN_ROWS;
  const narrow = columns < 90;
  const leftWidth = narrow ? columns : Math.max(40, Math.floor(columns * 0.45));
  const bodyHeight = Math.max(0, rows - CHROME);
  const lists = Math.max(0, bodyHeight - SEARCH_HEIGHT);
  const localHeight = Math.ceil(lists / 2);
  return { columns, rows, tooSmall, narrow, leftWidth, rightWidth: narrow ? columns : columns - leftWidth, bodyHeight, localHeight, resultsHeight: lists - localHeight };
}

/** Rows inside a bordered box with a title line and one column of padding each side. */
export const innerRows = (height: number) => Math.max(0, height - 3);
export const innerWidth = (width: number) => Math.max(0, width - 4);

export function localHeader(w: number): string {
  return localColumns(w, "MODEL", "REVISIONS", "SIZE", "SHARED");
}

function localColumns(w: number, name: string, revs: string, size: string, shared: string): string {
  const sizeW = 9;
  const sharedW = 9;
  const revW = Math.min(18, Math.max(8, Math.floor(w * 0.25)));
  const nameW = Math.max(8, w - revW - sizeW - sharedW - 3);
  return fit(`${fit(name, nameW)} ${fit(revs, revW)} ${size.padStart(sizeW)} ${shared.padStart(sharedW)}`, w);
}

export function localRow(m: LocalModel, w: number): string {
  return localColumns(w, m.name, m.revisions.join(","), formatBytes(m.bytes), m.sharedBytes > 0 ? formatBytes(m.sharedBytes) : "-");
}

export function resultRow(h: RemoteHit, w: number): string {
  if (h.source === "registry") return fit(`${h.ref}  (registry)`, w);
  const facts = [
    `${formatCount(h.downloads ?? 0)} dl`,
    `${formatCount(h.likes ?? 0)} likes`,
    formatDay(h.updated),
    h.pipelineTag ?? "",
    h.flags ?? "",
  ].filter(Boolean);
  const tail = facts.join("  ");
  // the ref first: the facts are cut when both do not fit
  const room = w - [...tail].length - 2;
  return [...h.ref].length <= room ? fit(`${fit(h.ref, room)}  ${tail}`, w) : fit(`${h.ref}  ${tail}`, w);
}

const shape = (s: number[]) => `[${s.join(",")}]`;

/** The detail pane: a title and its lines, before scrolling. */
export function detailLines(view: DetailView | undefined, w: number): { title: string; lines: Line[] } {
  if (!view) {
    return {
      title: "Detail",
      lines: [
        { text: "enter: open the selected model here", dim: true },
        { text: "/: search the Hub; p: pull; e: export; x: remove; d: diff", dim: true },
      ],
    };
  }
  if (view.kind === "diff") return diffLines(view, w);
  const title = view.ref;
  if (view.loading) return { title, lines: [{ text: "loading…", dim: true }] };
  if (view.error || !view.data) return { title, lines: [{ text: view.error ?? "nothing to show", color: "red" }] };
  return { title, lines: modelLines(view.data, w) };
}

function modelLines(d: ModelDetail, w: number): Line[] {
  const where = d.where === "store" ? "in the local store" : d.where === "hub" ? "on the Hub" : "in the registry";
  const out: Line[] = [{ text: fit(where, w), color: d.where === "store" ? "green" : "cyan" }];
  for (const s of d.summary) out.push({ text: fit(s, w) });
  if (d.note) out.push({ text: fit(d.note, w), color: "yellow" });
  out.push({ text: "" }, { text: fit(`FILES (${d.files.length})`, w), bold: true });
  const pathW = Math.max(10, w - 32);
  for (const f of d.files) {
    const kind = f.format === "safetensors" ? `safetensors${f.tensors !== undefined ? ` ${f.tensors}t` : ""}` : (f.format ?? "");
    out.push({ text: fit(`${fit(f.path, pathW)} ${formatBytes(f.size).padStart(10)}  ${kind}`, w) });
  }
  if (d.tensors) {
    out.push({ text: "" }, { text: fit(`TENSORS (${d.tensors.length})  name, dtype, shape, size, shared with`, w), bold: true });
    // dtype, shape, size and the gaps take 34 columns; the name gets what it needs of the rest (two
    // thirds of it when some tensor names the models sharing it)
    const longest = Math.max(...d.tensors.map((t) => [...t.name].length), 4);
    const anyShared = d.tensors.some((t) => t.sharedWith.length > 0);
    const nameW = Math.max(12, Math.min(longest, anyShared ? Math.floor(((w - 34) * 2) / 3) : w - 34));
    for (const t of d.tensors) {
      const shared = t.sharedWith.length > 0 ? `= ${t.sharedWith.join(", ")}` : "";
      out.push({
        text: fit(`${fit(t.name, nameW)} ${fit(t.dtype, 5)} ${fit(shape(t.shape), 14)} ${formatBytes(t.size).padStart(10)}  ${shared}`, w),
        ...(shared ? { color: "green" as const } : {}),
      });
    }
  }
  return out;
}

function diffLines(view: Extract<DetailView, { kind: "diff" }>, w: number): { title: string; lines: Line[] } {
  const title = `diff ${view.a} -> ${view.b}`;
  if (view.loading) return { title, lines: [{ text: "comparing…", dim: true }] };
  if (view.error || !view.data) return { title, lines: [{ text: view.error ?? "nothing to show", color: "red" }] };
  const d = view.data;
  const row = (label: string, c: { tensors: number; bytes: number }) => fit(`${fit(label, 10)} ${String(c.tensors).padStart(8)} ${formatBytes(c.bytes).padStart(12)}`, w);
  const lines: Line[] = [
    { text: fit(`${fit("", 10)} ${"TENSORS".padStart(8)} ${"BYTES".padStart(12)}`, w), bold: true },
    { text: row("shared", d.shared), color: "green" },
    { text: row("changed", d.changed), color: "yellow" },
    { text: row("new", d.added) },
    { text: row("removed", d.removed) },
    { text: "" },
    { text: fit(`pulling ${view.b} next to ${view.a}`, w) },
    { text: fit(`transfers ${formatBytes(d.transferBytes)} of ${formatBytes(d.totalBytes)}`, w) },
  ];
  for (const [label, c] of [["changed", d.changed], ["new", d.added], ["removed", d.removed]] as const) {
    if (c.names.length === 0) continue;
    lines.push({ text: "" }, { text: fit(label.toUpperCase(), w), bold: true });
    for (const n of c.names) lines.push({ text: fit(n, w) });
  }
  return { title, lines };
}

/** `[#####-----] 45%  1.2 MiB / 2.6 MiB  3/27 tensors` */
export function progressLine(t: Task, w: number): string {
  const p = t.progress;
  const frac = p.bytesTotal > 0 ? Math.min(1, p.bytesDone / p.bytesTotal) : 0;
  const facts = `${Math.floor(frac * 100)}%  ${formatBytes(p.bytesDone)} / ${formatBytes(p.bytesTotal)}  ${p.itemsDone}/${p.itemsTotal} ${t.itemName}`;
  const label = fit(t.label, Math.min([...t.label].length, Math.max(10, Math.floor(w * 0.35))));
  const barW = Math.max(10, Math.min(40, w - [...label].length - facts.length - 6));
  const filled = Math.round(frac * barW);
  return fit(`${label} [${"#".repeat(filled)}${"-".repeat(barW - filled)}] ${facts}`, w);
}

export function promptLine(mode: Mode): string | undefined {
  switch (mode.kind) {
    case "export":
      return `Export ${mode.ref} to: ${mode.draft}_`;
    case "confirmRemove":
      return `Remove ${mode.model.refs.join(", ")} from the store? (y/n)`;
    case "diffPick":
      return `Diff ${mode.from} with: pick a model and press enter`;
    default:
      return undefined;
  }
}

export function keysLine(s: State): string {
  switch (s.mode.kind) {
    case "search":
      return "type a query  enter: search  esc: cancel";
    case "export":
      return "type a directory  enter: export  esc: cancel";
    case "confirmRemove":
      return "y: remove  any other key: keep";
    case "diffPick":
      return "up/down: choose  tab: other list  enter: diff  esc: cancel";
    default:
      return "up/down: move  tab: pane  /: search  enter: open  p: pull  e: export  x: remove  d: diff  r: refresh  q: quit";
  }
}
