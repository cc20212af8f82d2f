/**
 * A recipe for another tool's model artifact read from a folder (an OCI image layout): each raw layer
 * is a whole file at its path, so `cake export` rebuilds the files as it does a cake artifact's,
 * each hashed against its layer digest. Tar layers need extracting, which a pull does
 * (`cake pull` then `cake export` from the store); here they are refused in one line.
 */
import { CakeError } from "../errors.js";
import type { Recipe } from "../format/artifact.js";
import { hexOf, MT } from "../format/oci.js";
import { parseRecipe } from "../format/recipe.js";
import type { ModelLayers } from "./read-manifest.js";

export function recipeOfLayers(layers: ModelLayers, where: string): Recipe {
  const tar = layers.tars[0];
  if (tar) throw new CakeError("E_USAGE", `${where}: layer ${tar.desc.digest} is a ${tar.form} layer, which export cannot rebuild from a folder; push the layout to a registry and cake pull it, then export from the store`);
  const recipe: Recipe = {
    schemaVersion: 1,
    mediaType: MT.recipe,
    files: layers.raw.map((l) => ({ path: l.path, size: l.desc.size, sha256: hexOf(l.desc.digest), digest: l.desc.digest })).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0)),
    blobs: Object.fromEntries(layers.raw.map((l) => [l.desc.digest, { size: l.desc.size, title: l.path }])),
  };
  // Checked as any recipe read back: paths, sizes, digests.
  return parseRecipe(Buffer.from(JSON.stringify(recipe)), `${where} files`);
}
