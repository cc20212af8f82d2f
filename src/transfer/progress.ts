/**
 * Progress of a long transfer on stderr: bytes, rate, ETA and items done, redrawn at most 5 times a
 * second on a TTY; nothing when stderr is not a TTY or with --quiet.
 */
import { formatBytes } from "../units.js";

export { formatBytes };
export interface ProgressSink {
  addTotal(bytes: number, items?: number): void;
  bytes(n: number): void;
  /** `n` items finished (default 1). */
  item(n?: number): void;
  done(): void;
}

export const silentProgress: ProgressSink = { addTotal() {}, bytes() {}, item() {}, done() {} };

const formatEta = (s: number) => (!Number.isFinite(s) ? "--:--" : `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`);

export function ttyProgress(label: string, itemName: string, stream: NodeJS.WriteStream = process.stderr): ProgressSink {
  if (!stream.isTTY) return silentProgress;
  let total = 0;
  let items = 0;
  let got = 0;
  let itemsDone = 0;
  const start = Date.now();
  let last = 0;
  const draw = (force = false) => {
    const now = Date.now();
    if (!force && now - last < 200) return;
    last = now;
    const secs = (now - start) / 1000;
    const rate = got / Math.max(secs, 0.001);
    const eta = rate > 0 ? (total - got) / rate : Infinity;
    // An archive being loaded has no totals before its end: what is done so far, not "/ 0 B" and "0/0".
    const size = total > 0 ? `${formatBytes(got)} / ${formatBytes(total)}  ${formatBytes(rate)}/s  ETA ${formatEta(eta)}` : `${formatBytes(got)}  ${formatBytes(rate)}/s`;
    stream.write(`\r\x1b[K${label}: ${size}  ${items > 0 ? `${itemsDone}/${items}` : itemsDone} ${itemName}`);
  };
  return {
    addTotal(b, n = 0) {
      total += b;
      items += n;
    },
    bytes(n) {
      got += n;
      draw();
    },
    item(n = 1) {
      itemsDone += n;
      draw();
    },
    done() {
      draw(true);
      stream.write("\n");
    },
  };
}
