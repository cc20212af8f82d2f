/**
 * A real terminal for a test: tmux on a server of its own (its own socket, no user config), so
 * nothing else's sessions or settings matter. Keys go in as a user types them; the screen is read
 * back as a user sees it.
 */
import { execFileSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import path from "node:path";

/** tmux from $PATH; missing, the test fails (install it with .ci/setup), it does not skip. */
function tmuxBin(): string {
  for (const dir of (process.env.PATH ?? "").split(path.delimiter).filter(Boolean)) {
    const p = path.join(dir, "tmux");
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  throw new Error("tmux is required by the terminal tests; install it with .ci/setup");
}

/** Single-quoted for sh. */
export const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export interface Terminal {
  /** Starts `shell` (a sh command line) in session `name`, columns x rows. */
  start(name: string, columns: number, rows: number, shell: string): void;
  screen(): string;
  /** Keys as tmux names them (`Enter`, `Escape`, `BSpace`, or text), all in one send-keys: one write to the terminal. */
  keys(...k: string[]): void;
  /** Text typed literally, in one write (a paste). */
  text(s: string): void;
  /** Waits until the screen shows `what`; on timeout the error carries the screen as it was then. */
  until(what: string | RegExp, timeoutMs?: number): Promise<string>;
  kill(name: string): void;
  /** Ends the server and every session in it. */
  close(): void;
}

export function terminal(socket: string): Terminal {
  const bin = tmuxBin();
  const tmux = (...args: string[]) => execFileSync(bin, ["-L", socket, "-f", "/dev/null", ...args], { encoding: "utf8" });
  let session = "";
  const t: Terminal = {
    start(name, columns, rows, shell) {
      session = name;
      tmux("new-session", "-d", "-s", name, "-x", String(columns), "-y", String(rows), shell);
    },
    screen: () => tmux("capture-pane", "-p", "-t", session),
    keys: (...k) => void tmux("send-keys", "-t", session, ...k),
    text: (s) => void tmux("send-keys", "-t", session, "-l", s),
    async until(what, timeoutMs = 30_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const s = t.screen();
        if (typeof what === "string" ? s.includes(what) : what.test(s)) return s;
        if (Date.now() > end) throw new Error(`the screen never showed ${what}; it shows:\n${s}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    kill: (name) => void tmux("kill-session", "-t", name),
    close() {
      try {
        tmux("kill-server");
      } catch {
        // the server is gone already, or never started
      }
    },
  };
  return t;
}
