/** The one content address cake uses: `sha256:<hex>` of the bytes (a leaf any part may import). */
import { createHash } from "node:crypto";

export const sha256Digest = (b: Uint8Array): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;
