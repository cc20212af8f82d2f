/**
 * Encodes a file into the compressed form (format.ts), frame by frame: at most FRAMES_IN_FLIGHT
 * frames of raw bytes in memory, coded in parallel, written in order.
 */
import fsp, { type FileHandle } from "node:fs/promises";
import { CakeError } from "../errors.js";
import { encodeHeader, encodeIndex, FRAME_BYTES, frameCountOf, HEADER_BYTES, widthOf } from "./format.js";
import { encodeFrame, FRAMES_IN_FLIGHT } from "./parallel.js";

export interface EncodeResult {
  rawSize: number;
  /** Bytes of the compressed form written. */
  storedSize: number;
}

/**
 * Writes the compressed form of `source` (`rawSize` bytes) to `out` from its current start.
 * `dtype`: the safetensors dtype of the tensor the blob holds, or undefined (a pack, a whole file).
 * `workersOnly`: no frame is coded on this thread (see encodeFrame).
 */
export async function encodeFile(source: string, rawSize: number, dtype: string | undefined, out: FileHandle, frameSize = FRAME_BYTES, workersOnly = false): Promise<EncodeResult> {
  const width = widthOf(dtype);
  const frameCount = frameCountOf(rawSize, frameSize);
  const header = encodeHeader({ width, frameSize, frameCount, rawSize, dtype: width ? dtype! : "" });
  let written = 0;
  const write = async (b: Uint8Array) => {
    for (let off = 0; off < b.length; ) off += (await out.write(b, off, b.length - off, written + off)).bytesWritten;
    written += b.length;
  };
  await write(header);
  const starts = [HEADER_BYTES];
  const src = await fsp.open(source, "r");
  try {
    const inFlight: Promise<Uint8Array>[] = [];
    let next = 0;
    const readFrame = async (i: number) => {
      const start = i * frameSize;
      const raw = new Uint8Array(Math.min(frameSize, rawSize - start));
      const { bytesRead } = await src.read(raw, 0, raw.length, start);
      if (bytesRead !== raw.length) throw new CakeError("E_SIZE", `${source}: ends before byte ${start + raw.length} of ${rawSize}`);
      return encodeFrame({ raw, width }, workersOnly);
    };
    for (let done = 0; done < frameCount; done++) {
      while (next < frameCount && inFlight.length < FRAMES_IN_FLIGHT) inFlight.push(readFrame(next++));
      // Every promise in flight gets a handler, so one that fails while an earlier one is awaited is not unhandled.
      for (const p of inFlight) p.catch(() => {});
      await write(await inFlight.shift()!);
      starts.push(written);
    }
  } finally {
    await src.close();
  }
  await write(encodeIndex(starts));
  return { rawSize, storedSize: written };
}
