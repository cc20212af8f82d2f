/**
 * Draws `cake browse` full-screen until the user quits. Loaded only when stdin and stdout are a
 * terminal (cli/commands/browse.ts imports it lazily), so other commands never load ink or React.
 */
import { render } from "ink";
import { App } from "./App.js";
import type { Backend } from "./types.js";

/** DEC private mode 1049: the terminal's alternate screen, as full-screen programs (less, htop) use; ink has no option for it. */
const ALT_SCREEN_ON = "\x1b[?1049h\x1b[H";
const ALT_SCREEN_OFF = "\x1b[?1049l";

/** Resolves once the user quits; says whether a task (pull, export) was still running then. */
export async function runBrowse(backend: Backend, query: string): Promise<{ interrupted: boolean }> {
  let busy = false;
  process.stdout.write(ALT_SCREEN_ON);
  const app = render(<App backend={backend} initialQuery={query} onBusy={(b) => (busy = b)} />, { exitOnCtrlC: true });
  try {
    await app.waitUntilExit();
  } finally {
    app.cleanup();
    process.stdout.write(ALT_SCREEN_OFF);
  }
  return { interrupted: busy };
}
