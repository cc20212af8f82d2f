/**
 * Cuts an HTTP answer at any byte, the way a CDN, a proxy or a load balancer sometimes does: the
 * status line, the headers or the body, then the connection is destroyed. Used by the Hub emulation,
 * the registry tests' counting proxy and token server, so that every kind of request (JSON, redirects,
 * errors, tokens, file bytes) can be cut, not only long bodies.
 */
import type { ServerResponse } from "node:http";

/** How much of the whole answer (as sent on the wire) goes out: a byte count, or a fraction of headers + Content-Length. */
export type CutPlan = { bytes: number } | { fraction: number };

/** "Every `every`th answer is cut at `fraction` of its bytes", for a counter `n` starting at 1. */
export const cutEvery =
  (every: number, fraction = 0.5) =>
  (r: { n: number }): CutPlan | undefined =>
    r.n % every === 0 ? { fraction } : undefined;

/**
 * Lets `plan`'s share of `res` reach the wire, then destroys the connection; `onCut` is told when it
 * happens. node's ServerResponse writes the status line and headers (a latin1 string) and the body
 * through its socket's `write`, one answer at a time per connection, so wrapping that method for
 * this answer sees every byte of it, headers included.
 */
export function cutAnswer(res: ServerResponse, plan: CutPlan, onCut?: () => void): void {
  const socket = res.socket;
  if (!socket) return;
  const write = socket.write;
  let sent = 0;
  let at: number | undefined = "bytes" in plan ? plan.bytes : undefined;
  const restore = () => {
    if (socket.write !== write && !socket.destroyed) socket.write = write;
  };
  res.once("finish", restore);
  res.once("close", restore);
  socket.write = function (this: typeof socket, chunk: string | Uint8Array, ...rest: unknown[]): boolean {
    if (at === undefined) {
      // The whole answer's size, known once its headers are: header bytes + Content-Length.
      // (writeHead(status, headers) does not keep them for getHeader: read the header block itself.)
      const block = (res as unknown as { _header?: string })._header ?? "";
      const head = Buffer.byteLength(block, "latin1");
      const body = res.req.method === "HEAD" ? 0 : Number(/\r\ncontent-length:\s*(\d+)/i.exec(block)?.[1] ?? 0);
      at = Math.floor((head + body) * (plan as { fraction: number }).fraction);
    }
    const enc = typeof rest[0] === "string" ? (rest[0] as BufferEncoding) : "latin1";
    const buf = typeof chunk === "string" ? Buffer.from(chunk, enc) : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const cb = rest.find((x) => typeof x === "function");
    if (sent + buf.length <= at) {
      sent += buf.length;
      return write.apply(socket, [buf, cb] as never);
    }
    const part = buf.subarray(0, Math.max(0, at - sent));
    sent = at;
    socket.write = (() => false) as typeof socket.write; // nothing more of this answer
    onCut?.();
    write.apply(socket, [part, () => socket.destroy()] as never);
    return false;
  } as typeof socket.write;
}
