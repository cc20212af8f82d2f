/**
 * A zstd stream decoder for `tar+zstd` layers (ModelPack, KitOps): Node 20's zlib has none, so the
 * small pure-JS `fzstd` decodes it (no native build). A stream that is not zstd is one CakeError.
 */
import { Transform } from "node:stream";
import { Decompress } from "fzstd";
import { CakeError } from "../errors.js";

/** A Transform from zstd bytes to what they decode to; `where` names the layer in errors. */
export function zstdDecoder(where: string): Transform {
  const fail = (err: unknown) => new CakeError("E_RECIPE", `${where}: not zstd data (${(err as Error).message})`);
  const decoder = new Decompress();
  const out = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      try {
        decoder.push(chunk);
      } catch (err) {
        return done(fail(err));
      }
      done();
    },
    flush(done) {
      try {
        decoder.push(new Uint8Array(0), true);
      } catch (err) {
        return done(fail(err));
      }
      done();
    },
  });
  decoder.ondata = (data) => void out.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  return out;
}
