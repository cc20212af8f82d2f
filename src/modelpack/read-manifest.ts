/**
 * Reads another tool's model manifest (ModelPack, Docker Model Runner, KitOps: media-types.ts) as
 * the layers cake turns into files: a raw layer is one file at the path its `org.cncf.model.filepath`
 * names (else its title, else Docker's default name for its type), a tar layer holds its files under
 * their own paths (tar-layers.ts). Every path is checked before a byte moves: relative, inside the
 * model, not cake's reserved `.cake/`, none twice.
 */
import { CakeError } from "../errors.js";
import type { Descriptor, ImageManifest } from "../format/oci.js";
import { CAKE_DIR, checkRelativePath, PathSet } from "../format/paths.js";
import { dockerDefaultName, isWeightLayer, layerForm, modelArtifactKind, MP_ANN, type LayerForm, type ModelArtifactKind } from "./media-types.js";

export interface RawLayer {
  desc: Descriptor;
  path: string;
}

export interface TarLayer {
  desc: Descriptor;
  form: Exclude<LayerForm, "raw">;
}

export interface ModelLayers {
  kind: ModelArtifactKind;
  raw: RawLayer[];
  tars: TarLayer[];
}

const KIND_NAME: Record<ModelArtifactKind, string> = { modelpack: "ModelPack", docker: "Docker Model Runner", kitops: "KitOps ModelKit" };
export const kindName = (k: ModelArtifactKind) => KIND_NAME[k];

/** A file path of the model that comes from `what`, refused in one line naming the artifact when unsafe. */
export function checkModelPath(p: string, where: string, what: string): string {
  checkRelativePath(p, `${where}: ${what} path`);
  if (p === CAKE_DIR || p.startsWith(`${CAKE_DIR}/`)) throw new CakeError("E_PATH", `${where}: ${what} path ${p} uses cake's reserved ${CAKE_DIR}/ prefix`);
  return p;
}

/** Adds `p` to `paths`, or refuses the artifact in one line (a path twice, a file that is also a folder). */
export function addModelPath(paths: PathSet, p: string, where: string): void {
  const clash = paths.add(p);
  if (clash) throw new CakeError("E_PATH", `${where}: ${clash}; an artifact's files must each have one path`);
}

/** The layers of `m` as files, or undefined when it is no artifact of another model tool. */
export function readModelManifest(m: ImageManifest, where: string): ModelLayers | undefined {
  const kind = modelArtifactKind(m);
  if (!kind) return undefined;
  const raw: RawLayer[] = [];
  const tars: TarLayer[] = [];
  const paths = new PathSet();
  for (const desc of m.layers) {
    const form = layerForm(desc.mediaType);
    if (form !== "raw") {
      tars.push({ desc, form });
      continue;
    }
    const named = desc.annotations?.[MP_ANN.filepath] ?? desc.annotations?.[MP_ANN.title] ?? dockerDefaultName(desc.mediaType);
    if (named === undefined) throw new CakeError("E_RECIPE", `${where}: layer ${desc.digest} (${desc.mediaType}) names no file (no ${MP_ANN.filepath} or ${MP_ANN.title} annotation)`);
    const path = checkModelPath(named, where, `layer ${desc.digest}`);
    addModelPath(paths, path, where);
    raw.push({ desc, path });
  }
  if (!m.layers.some((l) => isWeightLayer(l.mediaType))) {
    throw new CakeError("E_RECIPE", `${where}: a ${KIND_NAME[kind]} artifact with no weight layer: there is no model in it to pull`);
  }
  return { kind, raw, tars };
}
