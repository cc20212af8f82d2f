/**
 * `cake push --format modelpack`: the plan that pushes a stored model's ModelPack view (build.ts).
 * Each file's layer is streamed from the store as the recipe assembles it (model/file-range.ts) and
 * uploaded under the sha256 the recipe records: no file is hashed again and no tensor byte is read
 * twice (a resumed chunked upload reopens from the registry's offset). Two files with the same bytes
 * are one blob, uploaded once.
 */
import { Readable } from "node:stream";
import { CakeError } from "../errors.js";
import { fileSegments, openFileRange } from "../model/file-range.js";
import type { BlobToPush, PushPlan } from "../model/registry-push.js";
import type { Store } from "../store/layout.js";
import { storedModelPack } from "./stored.js";

export async function modelPackPlan(store: Store, storeRef: string): Promise<PushPlan> {
  const { view, recipe } = await storedModelPack(store, storeRef);
  const config = view.configBytes;
  const blobs: BlobToPush[] = [{ desc: view.configDesc, open: (start) => Readable.from([config.subarray(start)]), check: () => Promise.resolve() }];
  const seen = new Set([view.configDesc.digest]);
  for (const { desc, file } of view.layers) {
    if (seen.has(desc.digest)) continue;
    seen.add(desc.digest);
    blobs.push({
      desc,
      open: (start) => openFileRange(store, recipe, file, start, file.size, `${storeRef}: ${file.path}`),
      check: async () => {
        for (const s of fileSegments(recipe, file)) {
          if ("digest" in s && !(await store.hasBlob(s.digest, s.size))) {
            throw new CakeError("E_NOT_FOUND", `${storeRef}: blob ${s.digest} of ${file.path} is missing from the store (pull it again)`);
          }
        }
      },
    });
  }
  return { blobs, documents: [], root: { digest: view.manifestDigest, bytes: view.manifestBytes, mediaType: view.manifest.mediaType } };
}
