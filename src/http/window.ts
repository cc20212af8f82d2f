/**
 * The bytes [from, to) of a response body that starts at `bodyStart`: what a Range reader keeps when
 * the server sent more than asked (a 200 to a Range request starts at 0, and may run past `to`).
 * Destroys the body when done or abandoned.
 */
export async function* byteWindow(
  body: AsyncIterable<Uint8Array> & { destroy(): unknown },
  bodyStart: number,
  from: number,
  to: number,
): AsyncGenerator<{ at: number; data: Buffer }> {
  let at = bodyStart;
  try {
    for await (const chunk of body) {
      let data = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
      if (at < from) {
        const skip = Math.min(data.length, from - at);
        data = data.subarray(skip);
        at += skip;
      }
      if (data.length === 0) continue;
      if (at + data.length > to) data = data.subarray(0, to - at);
      yield { at, data };
      at += data.length;
      if (at >= to) return;
    }
  } finally {
    body.destroy();
  }
}
