/**
 * OCI names and tags <-> Hub repos and revisions.
 *
 * - `hf/<org>/<name>` is the Hub repo `<org>/<name>`; OCI names are lower case and Hub ids are not,
 *   so the case is resolved through the Hub (model info, then search by author).
 * - `hf/<alias>` is a configured alias (`--alias mistral-7b=mistralai/Mistral-7B-v0.1`).
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

export class Names {
  private readonly resolved = new Map<string, string>();
  constructor(
    private readonly aliases: Record<string, string> = {},
    private readonly prefix = "hf",
  ) {}

  /** The Hub repo id for an OCI name, or an OciError NAME_UNKNOWN. */
  async repoFor(name: string, hub: HubParams): Promise<string> {
    const parts = name.split("/");
    if (parts[0] !== this.prefix || parts.length < 2 || parts.length > 3) {
      throw new OciError("NAME_UNKNOWN", `${name}: names are ${this.prefix}/<org>/<model> or ${this.prefix}/<alias>`);
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

