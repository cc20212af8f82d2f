/**
 * The `cake browse` screen (ink + React): the local store, a search box and its results on the left,
 * the detail pane on the right, a progress or message line and the keys at the bottom. State lives
 * in state.ts (`update`); this file draws it, turns key presses into messages and runs the effects
 * `update` asks for against the Backend.
 */
import { useEffect, useMemo, useRef, useState, type ReactNode } from "react";
import { Box, Text, useApp, useInput, useStdout } from "ink";
import { oneLine } from "../../src/index.js";
import { splitKeys } from "./keys.js";
import { uiProgress } from "./progress.js";
import { initialState, startEffects, update, type Effect, type Msg, type State } from "./state.js";
import type { Backend } from "./types.js";
import {
  MIN_COLUMNS,
  MIN_ROWS,
  SEARCH_HEIGHT,
  detailLines,
  fit,
  innerRows,
  innerWidth,
  keysLine,
  layout,
  localHeader,
  localRow,
  progressLine,
  promptLine,
  resultRow,
  windowStart,
  type Layout,
  type Line,
} from "./view.js";

export interface AppProps {
  backend: Backend;
  initialQuery?: string;
  /** Told whether a task (pull, export, …) is running, so the caller knows what quitting cuts short. */
  onBusy?: (busy: boolean) => void;
}

/** The terminal's size, following its resize events. */
export function useTerminalSize(): { columns: number; rows: number } {
  const { stdout } = useStdout();
  const read = () => ({ columns: stdout.columns || 80, rows: stdout.rows || 24 });
  const [size, setSize] = useState(read);
  useEffect(() => {
    const onResize = () => setSize(read());
    stdout.on("resize", onResize);
    return () => {
      stdout.off("resize", onResize);
    };
  }, [stdout]);
  return size;
}

export function App({ backend, initialQuery = "", onBusy }: AppProps) {
  const { exit } = useApp();
  const size = useTerminalSize();
  const [state, setState] = useState<State>(() => initialState(initialQuery));
  const current = useRef(state);

  const runner = useMemo(() => {
    const dispatch = (msg: Msg) => {
      const [next, effects] = update(current.current, msg);
      if (next !== current.current) {
        current.current = next;
        setState(next);
        onBusy?.(next.task !== undefined);
      }
      for (const e of effects) run(e);
    };
    const fail = (err: unknown) => oneLine(err);
    const task = (p: Promise<{ text: string; ref?: string }>) =>
      p.then(
        (r) => dispatch({ type: "taskDone", text: r.text, ...(r.ref ? { select: r.ref } : {}) }),
        (err: unknown) => dispatch({ type: "taskFailed", error: fail(err) }),
      );
    const progress = () => uiProgress((p) => dispatch({ type: "progress", progress: p }));
    const run = (e: Effect): void => {
      switch (e.kind) {
        case "loadLocal":
          void backend.local().then(
            (models) => dispatch({ type: "local", models, ...(e.select ? { select: e.select } : {}) }),
            (err: unknown) => dispatch({ type: "localFailed", error: fail(err) }),
          );
          return;
        case "search":
          void backend.search(e.query).then(
            (r) => dispatch({ type: "results", query: e.query, hits: r.hits, errors: r.errors }),
            (err: unknown) => dispatch({ type: "results", query: e.query, hits: [], errors: [fail(err)] }),
          );
          return;
        case "detail": {
          const ref = e.target.kind === "local" ? e.target.model.ref : e.target.hit.ref;
          void backend.detail(e.target).then(
            (data) => dispatch({ type: "detail", ref, data }),
            (err: unknown) => dispatch({ type: "detailFailed", ref, error: fail(err) }),
          );
          return;
        }
        case "diff":
          void backend.diff(e.a, e.b).then(
            (data) => dispatch({ type: "diff", a: e.a, b: e.b, data }),
            (err: unknown) => dispatch({ type: "diffFailed", a: e.a, b: e.b, error: fail(err) }),
          );
          return;
        case "pull":
          void task(backend.pull(e.ref, progress()));
          return;
        case "export":
          void task(backend.export(e.ref, e.dir, progress()));
          return;
        case "remove":
          void task(backend.remove(e.model));
          return;
        case "quit":
          exit();
          return;
      }
    };
    return { dispatch, run };
  }, [backend, exit, onBusy]);

  useEffect(() => {
    for (const e of startEffects(current.current)) runner.run(e);
  }, [runner]);

  const l = layout(size.columns, size.rows);
  const detailMax = Math.max(0, detailLines(state.detail, innerWidth(l.narrow ? l.columns : l.rightWidth)).lines.length - innerRows(l.bodyHeight));
  useInput((input, key) => {
    for (const k of splitKeys(input, key)) runner.dispatch({ type: "key", input: k.input, key: k.key, detailMax });
  });

  if (l.tooSmall) {
    return (
      <Box width={size.columns}>
        <Text color="yellow">{`terminal too small (${size.columns}x${size.rows}): cake browse needs ${MIN_COLUMNS}x${MIN_ROWS}; q quits`}</Text>
      </Box>
    );
  }
  const where = backend.describe();
  const header = `cake browse  store ${where.store}  hub ${where.hub}${where.registry ? `  registry ${where.registry}` : ""}`;
  const showLists = !l.narrow || state.pane !== "detail";
  const showDetail = !l.narrow || state.pane === "detail";
  return (
    <Box flexDirection="column" width={l.columns} height={l.rows - 1}>
      <Text bold>{fit(header, l.columns)}</Text>
      <Box flexDirection="row" height={l.bodyHeight}>
        {showLists && (
          <Box flexDirection="column" width={l.leftWidth}>
            <LocalPane state={state} l={l} />
            <SearchBox state={state} l={l} />
            <ResultsPane state={state} l={l} />
          </Box>
        )}
        {showDetail && <DetailPane state={state} l={l} width={l.narrow ? l.columns : l.rightWidth} />}
      </Box>
      <StatusLine state={state} width={l.columns} />
      <Text dimColor>{fit(keysLine(state), l.columns)}</Text>
    </Box>
  );
}

function Pane({ title, focused, width, height, children }: { title: string; focused: boolean; width: number; height: number; children?: ReactNode }) {
  return (
    <Box flexDirection="column" borderStyle="round" borderColor={focused ? "cyan" : "gray"} paddingX={1} width={width} height={height} overflow="hidden">
      <Text bold color={focused ? "cyan" : undefined}>
        {fit(title, innerWidth(width))}
      </Text>
      {children}
    </Box>
  );
}

function Rows({ rows, selected, focused, height }: { rows: string[]; selected: number; focused: boolean; height: number }) {
  const start = windowStart(rows.length, selected, height);
  return (
    <>
      {rows.slice(start, start + height).map((r, i) => {
        const isSel = start + i === selected;
        return (
          <Text key={start + i} inverse={isSel && focused} bold={isSel && !focused}>
            {r}
          </Text>
        );
      })}
    </>
  );
}

function LocalPane({ state, l }: { state: State; l: Layout }) {
  const w = innerWidth(l.leftWidth);
  const focused = state.pane === "local";
  const title = `Local store (${state.local.length})${state.localLoading ? "  loading…" : ""}`;
  const rows = state.local.map((m) => localRow(m, w));
  const height = innerRows(l.localHeight) - 1;
  return (
    <Pane title={title} focused={focused} width={l.leftWidth} height={l.localHeight}>
      <Text dimColor>{localHeader(w)}</Text>
      {rows.length === 0 && !state.localLoading ? <Text dimColor>{fit("empty: search (/) and pull (p) a model", w)}</Text> : null}
      <Rows rows={rows} selected={state.localIndex} focused={focused} height={height} />
    </Pane>
  );
}

function SearchBox({ state, l }: { state: State; l: Layout }) {
  const w = innerWidth(l.leftWidth);
  const typing = state.mode.kind === "search";
  const text = typing ? `Search: ${state.mode.kind === "search" ? state.mode.draft : ""}_` : state.query ? `Search: ${state.query}   (/ to change)` : "Search: press / and type (Hub, and registry if given)";
  return (
    <Box borderStyle="round" borderColor={typing ? "cyan" : "gray"} paddingX={1} width={l.leftWidth} height={SEARCH_HEIGHT}>
      <Text color={typing ? "cyan" : undefined} dimColor={!typing && !state.query}>
        {fit(text, w)}
      </Text>
    </Box>
  );
}

function ResultsPane({ state, l }: { state: State; l: Layout }) {
  const w = innerWidth(l.leftWidth);
  const focused = state.pane === "results";
  const title = state.searching ? `Results  searching ${JSON.stringify(state.query)}…` : `Results (${state.results.length})`;
  const rows = state.results.map((h) => resultRow(h, w));
  return (
    <Pane title={title} focused={focused} width={l.leftWidth} height={l.resultsHeight}>
      <Rows rows={rows} selected={state.resultIndex} focused={focused} height={innerRows(l.resultsHeight)} />
    </Pane>
  );
}

function DetailPane({ state, l, width }: { state: State; l: Layout; width: number }) {
  const w = innerWidth(width);
  const { title, lines } = detailLines(state.detail, w);
  const height = innerRows(l.bodyHeight);
  const scroll = Math.max(0, Math.min(state.detailScroll, lines.length - height));
  const more = lines.length > height ? `  ${scroll + 1}-${Math.min(lines.length, scroll + height)}/${lines.length}` : "";
  return (
    <Pane title={`${title}${more}`} focused={state.pane === "detail"} width={width} height={l.bodyHeight}>
      {lines.slice(scroll, scroll + height).map((line, i) => (
        <LineText key={scroll + i} line={line} />
      ))}
    </Pane>
  );
}

function LineText({ line }: { line: Line }) {
  return (
    <Text bold={line.bold} dimColor={line.dim} color={line.color}>
      {line.text === "" ? " " : line.text}
    </Text>
  );
}

function StatusLine({ state, width }: { state: State; width: number }) {
  if (state.task) return <Text color="cyan">{progressLine(state.task, width)}</Text>;
  const prompt = promptLine(state.mode);
  if (prompt) return <Text color="yellow">{fit(prompt, width)}</Text>;
  if (state.message) return <Text color={state.message.error ? "red" : "green"}>{fit(state.message.text, width)}</Text>;
  return <Text> </Text>;
}
