/**
 * Whether the store's copy of a Hub commit may stand for it. A copy a pull made was checked file by
 * file against the Hub as it landed. A copy `cake load` brought from an archive is only what the
 * archive claims (its tag carries `dev.cake.hf.unverified`) until the Hub confirms the files its
 * recipe rebuilds: the same paths and sizes, each file's sha256 the LFS oid (or its git oid the
 * Hub's) in the commit's tree listing. Export checks the rebuilt bytes against those same hashes,
 * so a confirmed recipe pins the bytes.
 */
import { isCakeError } from "../errors.js";
import { walkGraph } from "../format/graph.js";
import { MANIFEST_LIMIT } from "../format/oci.js";
import type { RecipeFile } from "../format/artifact.js";
import type { Descriptor } from "../format/oci.js";
import { parseManifest, parseRecipe, recipeLayer } from "../format/recipe.js";
import type { HubParams } from "../hub/config.js";
import { listFiles } from "../hub/list-files.js";
import type { Store } from "../store/layout.js";
import { isUnverified } from "./catalog.js";

/**
 * - `absent`: no such tag, or a blob it reaches is missing: pull it whole.
 * - `verified`: pulled from the Hub (or loaded with --trust).
 * - `confirmed`: loaded from an archive, and the Hub lists exactly the files its recipe rebuilds.
 * - `impostor`: loaded from an archive, and its files are not the commit's.
 */
export type StoredCopy = "absent" | "verified" | "confirmed" | "impostor";

/** Judges the store's tag `desc` of `hf://repo@commit` (asking the Hub only for an unverified one). */
export async function checkStoredCopy(store: Store, hub: HubParams, repo: string, commit: string, desc: Descriptor | undefined): Promise<StoredCopy> {
  if (!desc || !(await wholeInStore(store, desc))) return "absent";
  if (!isUnverified(desc)) return "verified";
  return (await recipeMatchesHub(store, hub, repo, commit, desc.digest)) ? "confirmed" : "impostor";
}

/** The manifest and every blob it reaches are in the store (a tag never stands for missing blobs). */
async function wholeInStore(store: Store, desc: Descriptor): Promise<boolean> {
  let whole = true;
  try {
    await walkGraph(desc, (d) => store.readBlob(d.digest, MANIFEST_LIMIT), async (d) => {
      whole &&= await store.hasBlob(d.digest, d.size);
    });
  } catch (err) {
    if (isCakeError(err)) return false; // a manifest missing or unreadable: not whole, pulled again
    throw err;
  }
  return whole;
}

async function recipeMatchesHub(store: Store, hub: HubParams, repo: string, commit: string, digest: string): Promise<boolean> {
  const where = `hf://${repo}@${commit}`;
  let files: RecipeFile[];
  try {
    const manifest = parseManifest(await store.readBlob(digest), where);
    files = parseRecipe(await store.readBlob(recipeLayer(manifest, where).digest), where).files;
  } catch (err) {
    if (isCakeError(err)) return false; // a recipe cake cannot read rebuilds no file of the Hub's
    throw err;
  }
  const claimed = new Map(files.map((f) => [f.path, f]));
  let listed = 0;
  for await (const h of listFiles(hub, repo, commit)) {
    const f = claimed.get(h.path);
    if (!f || f.size !== (h.lfs?.size ?? h.size)) return false;
    if (h.lfs ? f.sha256 !== h.lfs.oid : f.gitOid !== h.oid) return false;
    listed++;
  }
  return listed === claimed.size;
}
