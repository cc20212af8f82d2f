/**
 * The ModelPack view of a model in the store, by its store reference: its cake manifest, config and
 * recipe read back and checked (model/source.ts), then the view built from them (build.ts). Nothing
 * is written: the view is derived, the same every time.
 */
import type { Recipe } from "../format/artifact.js";
import { sourceFromStore } from "../model/source.js";
import type { Store } from "../store/layout.js";
import { buildModelPack, type ModelPackView } from "./build.js";

export interface StoredModelPack {
  view: ModelPackView;
  /** The recipe the layers' bytes are assembled by. */
  recipe: Recipe;
}

export async function storedModelPack(store: Store, ref: string): Promise<StoredModelPack> {
  const src = await sourceFromStore(store, ref);
  const view = buildModelPack({ config: src.config!, recipe: src.recipe, cakeManifestDigest: src.manifestDigest! });
  return { view, recipe: src.recipe };
}
