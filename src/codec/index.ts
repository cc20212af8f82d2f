/** The compressed local form of a blob (docs/format.md): split by byte position, entropy-coded, framed. */
export { CompressedFile } from "./decode.js";
export { encodeFile, type EncodeResult } from "./encode.js";
export { FRAME_BYTES, widthOf, type BlobHeader } from "./format.js";
