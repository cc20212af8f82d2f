/**
 * A ProgressSink (src/transfer/progress.ts) for the browse UI: it counts what the engine reports
 * and hands a copy of the totals to `report` at most once per `everyMs` (a pull reports thousands
 * of chunks a second; the screen needs ten), and always at `done()`.
 */
import type { ProgressSink } from "../../src/index.js";
import type { TaskProgress } from "./types.js";

export function uiProgress(report: (p: TaskProgress) => void, everyMs = 100, now: () => number = Date.now): ProgressSink {
  const p: TaskProgress = { bytesTotal: 0, bytesDone: 0, itemsTotal: 0, itemsDone: 0 };
  let last = -Infinity;
  const send = (force: boolean) => {
    const t = now();
    if (!force && t - last < everyMs) return;
    last = t;
    report({ ...p });
  };
  return {
    addTotal(bytes, items = 0) {
      p.bytesTotal += bytes;
      p.itemsTotal += items;
      send(false);
    },
    bytes(n) {
      p.bytesDone += n;
      send(false);
    },
    item(n = 1) {
      p.itemsDone += n;
      send(false);
    },
    done() {
      send(true);
    },
  };
}
