/**
 * How long cake waits on a peer that stalls, so a registry or Hub that trickles (a byte every 25 s)
 * or never finishes its headers cannot keep a command waiting forever.
 *
 * - idle (`CAKE_HTTP_IDLE_TIMEOUT`, seconds, default 30): no byte of the status line, headers or
 *   body for this long ends the try. 30 s: a slow link still delivers something every few seconds,
 *   while a dead peer is noticed in half of undici's default (60 s).
 * - document (`CAKE_HTTP_TIMEOUT`, seconds, default 60): a try of a small document (a manifest, a
 *   JSON answer, a token, a safetensors header: everything read whole by `httpReadAll`) must end in
 *   this long, trickle or not. 60 s reads a 4 MiB manifest at 70 KB/s; tensor bodies have no
 *   deadline (they resume from their last byte).
 *
 * A try ended by either counts as a failed try and is asked again, but at most `STALLED_TRIES`
 * tries of one request may end this way: a stalled peer rarely mends, and the first retry (on a
 * fresh connection) is what helps a stuck one. So a stalled small document fails within
 * 3 × 60 s (plus the backoff, under 2 s), headers that never come within 3 × 30 s. 0 turns a limit off.
 */
import { envInt } from "./retry.js";

export interface HttpTimeouts {
  /** No byte for this long (ms) ends a try; 0: no limit. */
  idleMs: number;
  /** A small document's try must end within this (ms); 0: no limit. */
  documentMs: number;
}

export const HTTP_TIMEOUTS: HttpTimeouts = {
  idleMs: envInt("CAKE_HTTP_IDLE_TIMEOUT", 30) * 1000,
  documentMs: envInt("CAKE_HTTP_TIMEOUT", 60) * 1000,
};

/** Tries of one request that may end by a timeout before it fails. */
export const STALLED_TRIES = 3;

/**
 * An upload's answer comes after the registry has stored the body (some copy it into their storage
 * backend first): the wait for its headers is not a stall, so it gets this long at least.
 */
export const UPLOAD_ANSWER_MS = 300_000;

/** The code of a small document's try abandoned at its deadline (a network-level failure: retried). */
export const DEADLINE_CODE = "CAKE_HTTP_DEADLINE";

const TIMEOUT_CODES = new Set(["UND_ERR_HEADERS_TIMEOUT", "UND_ERR_BODY_TIMEOUT", DEADLINE_CODE]);

/** What a try that timed out ran into, in words naming the knob; undefined for any other failure. */
export function describeTimeout(err: unknown, waits: HttpTimeouts & { headersMs: number }): string | undefined {
  for (let e = err as { code?: string; cause?: unknown } | undefined; e; e = e.cause as typeof e) {
    if (typeof e.code === "string" && TIMEOUT_CODES.has(e.code)) {
      if (e.code === DEADLINE_CODE) return `not done within ${waits.documentMs / 1000} s (CAKE_HTTP_TIMEOUT)`;
      const ms = e.code === "UND_ERR_HEADERS_TIMEOUT" ? waits.headersMs : waits.idleMs;
      return `no byte for ${ms / 1000} s (CAKE_HTTP_IDLE_TIMEOUT)`;
    }
    if (e === e.cause) break;
  }
  return undefined;
}

/** The error a try's deadline aborts it with. */
export function deadlineError(): Error {
  return Object.assign(new Error("deadline passed"), { code: DEADLINE_CODE });
}
