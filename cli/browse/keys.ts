/**
 * Key presses out of what the terminal delivered at once. ink hands a chunk of several characters
 * (a paste, a fast typist, tmux send-keys) to `useInput` as one string, so `/`, `tiny` and Enter in
 * one write would read as one unknown key: each character is one key here, as a terminal sends them.
 * Escape sequences (arrows, page keys) come split already by ink, one per call.
 */
import type { KeyInfo } from "./state.js";

export interface KeyPress {
  input: string;
  key: KeyInfo;
}

/** What one character of a chunk means as a key: Enter, Tab, Backspace, Ctrl+letter or itself. */
function keyOf(ch: string): KeyPress {
  if (ch === "\r" || ch === "\n") return { input: "", key: { return: true } };
  if (ch === "\t") return { input: "", key: { tab: true } };
  if (ch === "\x7f" || ch === "\b") return { input: "", key: { backspace: true } };
  const code = ch.codePointAt(0)!;
  if (code >= 1 && code <= 26) return { input: String.fromCharCode(code + 96), key: { ctrl: true } };
  if (code < 0x20) return { input: "", key: {} };
  return { input: ch, key: /^[A-Z]$/.test(ch) ? { shift: true } : {} };
}

/** The keys in one `useInput` call: itself when it is one key, else one per character. */
export function splitKeys(input: string, key: KeyInfo): KeyPress[] {
  const chars = [...input];
  if (chars.length <= 1) return [{ input, key }];
  return chars.map(keyOf);
}
