/**
 * Range GETs to plain-HTTP origins go over raw keep-alive sockets (src/http/range-socket.ts) under
 * the one retry loop: the bytes arrive intact whatever the server's write sizes, over reused
 * connections; an answer cut at any byte of its status line, headers or body is asked again and
 * continued; a connection the server closed while it was idle costs no try; an answer without a
 * Content-Length goes through undici; timeouts and an abort end the request as undici's do.
 */
import { createHash, randomBytes } from "node:crypto";
import net, { type AddressInfo } from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { httpReadAll, httpRequest } from "../../src/http/request.js";
import { recycle, SocketBody } from "../../src/http/range-socket.js";

const DATA = randomBytes(3 << 20);
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

interface Plan {
  /** The answer's bytes as sent (head + body) cut after this many. */
  cutAt?: number;
  /** Send the body chunked (no Content-Length). */
  chunked?: boolean;
  /** Close the connection after the answer. */
  close?: boolean;
  /** Wait this long before the headers, or between two body writes. */
  stallHeadMs?: number;
  stallBodyMs?: number;
}

let server: net.Server;
let base: string;
let plans: Plan[] = [];
let requests = 0;
let connections = 0;
const open = new Set<net.Socket>();

/** Answers one request on `socket` as `plan` says; resolves once it is sent (false: the connection is gone). */
async function answer(socket: net.Socket, rangeHeader: string | undefined, plan: Plan): Promise<boolean> {
  const m = /^bytes=(\d+)-(\d+)$/.exec(rangeHeader ?? "");
  const [start, end] = m ? [Number(m[1]), Number(m[2]) + 1] : [0, DATA.length];
  const body = DATA.subarray(start, end);
  const range = `Content-Range: bytes ${start}-${end - 1}/${DATA.length}\r\n`;
  const wire = plan.chunked
    ? Buffer.concat([Buffer.from(`HTTP/1.1 206 Partial Content\r\n${range}Transfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n`), body, Buffer.from("\r\n0\r\n\r\n")])
    : Buffer.concat([Buffer.from(`HTTP/1.1 206 Partial Content\r\n${range}Content-Length: ${body.length}\r\n${plan.close ? "Connection: close\r\n" : ""}\r\n`), body]);
  const bytes = plan.cutAt === undefined ? wire : wire.subarray(0, plan.cutAt);
  if (plan.stallHeadMs) await new Promise((r) => setTimeout(r, plan.stallHeadMs));
  // The head and 64 KiB of the body, before a stall in the body.
  const stallAt = plan.stallBodyMs ? wire.length - body.length + (64 << 10) : -1;
  // Odd write sizes: reads on the other side end anywhere.
  for (let at = 0; at < bytes.length; ) {
    if (socket.destroyed) return false;
    if (at === stallAt) await new Promise((r) => setTimeout(r, plan.stallBodyMs));
    const n = Math.min(bytes.length - at, 1 + ((at * 7919) % 100_003), at < stallAt ? stallAt - at : Infinity);
    if (!socket.write(bytes.subarray(at, at + n))) await new Promise((r) => socket.once("drain", r));
    at += n;
  }
  if (plan.cutAt !== undefined || plan.close) {
    socket.destroy();
    return false;
  }
  return true;
}

beforeAll(async () => {
  // A bare HTTP/1.1 server on net: it writes exactly the bytes a plan says, and cuts where it says.
  server = net.createServer((socket) => {
    connections++;
    open.add(socket);
    socket.once("close", () => open.delete(socket));
    socket.on("error", () => {});
    let pending = Buffer.alloc(0);
    let busy = Promise.resolve(true);
    socket.on("data", (d) => {
      pending = Buffer.concat([pending, d]);
      for (let end = pending.indexOf("\r\n\r\n"); end >= 0; end = pending.indexOf("\r\n\r\n")) {
        const head = pending.subarray(0, end).toString("latin1");
        pending = pending.subarray(end + 4);
        requests++;
        const plan = plans.shift() ?? {};
        const rangeHeader = /\r\nrange: *([^\r]*)/i.exec(head)?.[1];
        busy = busy.then((open) => open && answer(socket, rangeHeader, plan));
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/blob`;
});
afterAll(async () => {
  // Kept-alive connections (ours and undici's) would hold close() for their idle timeouts.
  for (const s of open) s.destroy();
  await new Promise((r) => server.close(r));
});
afterEach(() => {
  plans = [];
  requests = 0;
});

const fast = { retry: { minDelayMs: 1, maxDelayMs: 5 } };
const range = (start: number, end: number) => ({ range: `bytes=${start}-${end - 1}` });

/** Reads a body to the end as the transfer engine does: pieces handed back once used. */
async function drain(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of body) {
    parts.push(Buffer.from(c));
    recycle([c]);
  }
  return Buffer.concat(parts);
}

describe("Range GETs over raw sockets", () => {
  it("deliver the bytes intact, 16 at a time over kept-alive connections whose memory is reused", async () => {
    const step = 96 << 10;
    const count = Math.ceil(DATA.length / step);
    const got: Buffer[] = [];
    connections = 0;
    // Waves of 16 requests: the second and later find the first's connections kept alive.
    for (let w = 0; w < count; w += 16) {
      const wave = Array.from({ length: Math.min(16, count - w) }, async (_, k) => {
        const i = w + k;
        const res = await httpRequest(base, { headers: range(i * step, Math.min(DATA.length, (i + 1) * step)) });
        expect(res.status).toBe(206);
        expect(res.body).toBeInstanceOf(SocketBody);
        return drain(res.body);
      });
      got.push(...(await Promise.all(wave)));
    }
    expect(sha(Buffer.concat(got))).toBe(sha(DATA));
    const again = await httpRequest(base, { headers: range(0, DATA.length) });
    expect(sha(await drain(again.body))).toBe(sha(DATA));
    expect(connections).toBeLessThanOrEqual(16);
  });

  it("an answer cut at any byte of its status line, headers or body is asked again and continued", async () => {
    const want = DATA.subarray(1000, 300_000);
    for (const cutAt of [0, 5, 17, 60, 90, 91, 95, 4096, 150_000]) {
      plans = [{ cutAt }, { cutAt: cutAt + 1 }];
      const doc = await httpReadAll(base, { headers: range(1000, 300_000), limit: 1 << 20, ...fast });
      expect(sha(doc.bytes), `cut at ${cutAt}`).toBe(sha(want));
      expect(doc.tries).toBeGreaterThan(1);
    }
  });

  it("a kept-alive connection the server closed meanwhile costs no try", async () => {
    plans = [{ close: true }];
    const first = await httpRequest(base, { headers: range(0, 10) });
    await drain(first.body);
    await new Promise((r) => setTimeout(r, 50));
    const second = await httpRequest(base, { headers: range(10, 20) });
    expect(second.tries).toBe(1);
    expect(await drain(second.body)).toEqual(DATA.subarray(10, 20));
  });

  it("an answer without a Content-Length (chunked) is read through undici instead", async () => {
    plans = [{ chunked: true }, { chunked: true }];
    const res = await httpRequest(base, { headers: range(5, 70_000) });
    expect(res.body).not.toBeInstanceOf(SocketBody);
    expect(await drain(res.body)).toEqual(DATA.subarray(5, 70_000));
    expect(requests).toBe(2);
  });

  it("a server that stalls before the headers or in the body ends the try as undici's timeouts do", async () => {
    plans = [{ stallHeadMs: 400 }];
    await expect(httpRequest(base, { headers: range(0, 10), timeouts: { idleMs: 100 }, retry: { retries: 0 } })).rejects.toThrow(/no byte for 0\.1 s \(CAKE_HTTP_IDLE_TIMEOUT\)/);
    plans = [{ stallBodyMs: 400 }];
    const res = await httpRequest(base, { headers: range(0, 500_000), timeouts: { idleMs: 100 } });
    await expect(drain(res.body)).rejects.toMatchObject({ code: "UND_ERR_BODY_TIMEOUT" });
  });

  it("a header with a line break in it is not written to the socket: undici refuses it, nothing is sent", async () => {
    const before = requests;
    await expect(httpRequest(base, { headers: { ...range(0, 10), authorization: "Bearer x\r\nX-Injected: 1" } })).rejects.toThrow();
    expect(requests).toBe(before);
  });

  it("an abort ends the request with its reason, before or during the body", async () => {
    const ac = new AbortController();
    ac.abort(new Error("stop now"));
    await expect(httpRequest(base, { headers: range(0, 10), signal: ac.signal })).rejects.toThrow("stop now");
    const ac2 = new AbortController();
    plans = [{ stallBodyMs: 300 }];
    const res = await httpRequest(base, { headers: range(0, 500_000), signal: ac2.signal });
    setTimeout(() => ac2.abort(new Error("stop later")), 50);
    await expect(drain(res.body)).rejects.toThrow("stop later");
  });
});
