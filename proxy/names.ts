/**
 * OCI names and tags <-> Hub repos and revisions.
 *
 * - `hf/<org>/<name>` is the Hub repo `<org>/<name>`; OCI names are lower case and Hub ids are not,
 *   so the case is resolved through the Hub (model info, then search by author).
 * - `hf/<alias>` is a configured alias (`--alias mistral-7b=mistralai/Mistral-7B-v0.1`).
 * - `mp/…` names the same repos, for their CNCF ModelPack view (modelpack-view.ts).
 * - A tag is a Hub revision. A revision that is no valid OCI tag (`[\w][\w.-]{0,127}`) is written
 *   with each `/` as `__` (`refs/pr/1` -> `refs__pr__1`); a tag that is a 40-hex commit is that commit.
 */
import { canonicalRepoId, type HubParams } from "../src/index.js";
import { OciError } from "./oci-errors.js";

const TAG = /^[\w][\w.-]{0,127}$/;

/** A Hub repo's default branch: what a tag-less pull (`:latest`) means. */
export const DEFAULT_BRANCH = "main";

export const revisionToTag = (rev: string): string => rev.replace(/\//g, "__");
export const tagToRevision = (tag: string): string => tag.replace(/__/g, "/");

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

/** Hex lengths of the algorithms the image spec registers: their encoding is lower-case hex only. */
const REGISTERED: Record<string, number> = { sha256: 64, sha512: 128 };
/** The image spec's digest grammar (algorithm ":" encoded). */
const DIGEST_GRAMMAR = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

/**
 * Whether `digest` is one the image spec allows ("descriptor.md#digests"): a registered algorithm
 * with its exact lower-case hex (`sha256:ABC…` is not: 400 DIGEST_INVALID, as distribution answers),
 * or any other algorithm in the grammar (well-formed, simply not here: 404).
 */
export function isWellFormedDigest(digest: string): boolean {
  const m = DIGEST_GRAMMAR.exec(digest);
  if (!m) return false;
  const hex = REGISTERED[m[1]!];
  return hex === undefined || new RegExp(`^[a-f0-9]{${hex}}$`).test(m[2]!);
}

const SHA256 = /^sha256:[a-f0-9]{64}$/;

/**
 * A blob digest of a request, checked: a sha256 passes; a well-formed digest of another algorithm is
 * simply not here (404 BLOB_UNKNOWN); a malformed one is a bad request (400 DIGEST_INVALID).
 */
export function assertBlobDigest(name: string, digest: string): void {
  if (SHA256.test(digest)) return;
  if (isWellFormedDigest(digest)) throw new OciError("BLOB_UNKNOWN", `${name}: no blob ${digest} (only sha256 here)`);
  throw new OciError("DIGEST_INVALID", `${digest}: not a valid digest (sha256: 64 lower-case hex digits)`);
}

export class Names {
  private readonly resolved = new Map<string, string>();
  constructor(
    private readonly aliases: Record<string, string> = {},
    /** The views: the first is cake's per-tensor artifact, the others name the same repos. */
    private readonly prefixes: readonly string[] = ["hf", "mp"],
  ) {}

  /** The Hub repo id for an OCI name (in any view), or an OciError NAME_UNKNOWN. */
  async repoFor(name: string, hub: HubParams): Promise<string> {
    const parts = name.split("/");
    if (!this.prefixes.includes(parts[0]!) || parts.length < 2 || parts.length > 3) {
      const [main, ...others] = this.prefixes;
      throw new OciError("NAME_UNKNOWN", `${name}: names are ${main}/<org>/<model> or ${main}/<alias>${others.map((p) => ` (${p}/… for the same repos as CNCF ModelPack)`).join("")}`);
    }
    const rest = parts.slice(1).join("/");
    if (parts.length === 2) {
      const alias = this.aliases[rest];
      if (!alias) throw new OciError("NAME_UNKNOWN", `${name}: no alias ${rest} (configure --alias ${rest}=org/model)`);
      return alias;
    }
    const cached = this.resolved.get(rest);
    if (cached) return cached;
    const id = await canonicalRepoId(hub, rest);
    if (!id) throw new OciError("NAME_UNKNOWN", `${name}: no such model on the Hub`);
    this.resolved.set(rest, id);
    return id;
  }
}

