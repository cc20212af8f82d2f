/**
 * The references cake takes: `hf://org/name[@revision]` for the Hub (revision: branch, tag or
 * 40-hex commit; default main), or an OCI reference `host[:port]/repo[:tag|@digest]`.
 */
import { CakeError } from "../errors.js";

export interface HfRef {
  kind: "hf";
  repo: string;
  revision: string;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;

export function parseHfRef(s: string): HfRef {
  const m = /^hf:\/\/([^@]+)(?:@(.+))?$/.exec(s);
  if (!m) throw new CakeError("E_REF", `${s}: not a Hub reference (want hf://org/name[@revision])`);
  const repo = m[1]!.replace(/\/+$/, "");
  const parts = repo.split("/");
  if (parts.length > 2 || !parts.every((p) => NAME.test(p) && !p.includes(".."))) {
    throw new CakeError("E_REF", `${s}: bad repository name ${JSON.stringify(repo)} (want org/name)`);
  }
  const revision = m[2] ?? "main";
  // eslint-disable-next-line no-control-regex
  if (!revision || /[\u0000-\u0020\u007f~^:?*[\\]|\.\.|@\{|\/\/|^\/|\/$|\.lock$/.test(revision)) {
    throw new CakeError("E_REF", `${s}: bad revision ${JSON.stringify(revision)}`);
  }
  return { kind: "hf", repo, revision };
}

export const formatHfRef = (r: { repo: string; revision: string }) => `hf://${r.repo}@${r.revision}`;

export const isHfRef = (s: string) => s.startsWith("hf://");

/**
 * The OCI `org.opencontainers.image.ref.name` a store entry gets, so other tools can name it:
 * `skopeo copy oci:$CAKE_HOME:hf.co/acme/tiny-llama/main …`. Letters, digits and . _ - / only.
 */
export function ociRefName(ref: string): string {
  const s = ref.replace(/^hf:\/\//, "hf.co/").replace(/[@:]/g, "/");
  return s.replace(/[^A-Za-z0-9._/-]/g, "_");
}
