/**
 * The references cake takes: `hf://org/name[@revision]` for the Hub (revision: branch, tag or
 * 40-hex commit; default main), or an OCI reference `host[:port]/repo[:tag|@digest]`.
 */
import { createHash } from "node:crypto";
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
  const tagged = /^([^:]+):([^:/]+)$/.exec(repo);
  if (tagged && m[2] === undefined) throw new CakeError("E_REF", `${s}: a Hub revision follows @, not ':': did you mean hf://${tagged[1]}@${tagged[2]}?`);
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
 * A model page's address as a browser shows it: `https://huggingface.co/org/name`, also with
 * `/tree/<rev>`, `/blob/<rev>/<file>`, `/resolve/<rev>/<file>` or `/commit/<rev>` (hf.co too).
 * Datasets and spaces are not models.
 */
const HUB_PAGE = /^https?:\/\/(?:www\.)?(?:huggingface\.co|hf\.co)\/(?!(?:api|datasets|spaces)\/)([^/?#]+(?:\/[^/?#]+)?)(?:\/(?:tree|blob|resolve|commit)\/([^/?#]+)(?:\/[^?#]*)?)?\/?(?:[?#].*)?$/;

/** What a user typed as a reference: a pasted Hub page address becomes `hf://org/name[@rev]`; anything else is itself. */
export function userRef(s: string): string {
  const m = HUB_PAGE.exec(s);
  if (!m) return s;
  return `hf://${m[1]}${m[2] ? `@${decodeURIComponent(m[2])}` : ""}`;
}

/**
 * `org.opencontainers.image.ref.name`'s grammar (image-spec annotations.md) without the ':' and '@'
 * separators: oras splits `--oci-layout path:name` at the last ':' and reads '@' as a digest, and
 * skopeo refuses a name outside the grammar (`x__y`, `_draft`, `v1-`).
 */
const COMPONENT = "[A-Za-z0-9]+(?:(?:[-._+]|--)[A-Za-z0-9]+)*";
const REF_NAME = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);
/** The tail of a hashed name; a readable name never ends like this, so the two kinds never meet. */
const HASHED = /--[0-9a-f]{16}$/;

/** `hf://org/name@rev` -> `hf.co/org/name/rev`; a registry ref with ':' and '@' as '+'. */
const readableName = (ref: string) => (isHfRef(ref) ? `hf.co/${ref.slice(5).replace("@", "/")}` : ref.replace(/[:@]/g, "+"));

/** The ref a readable name stands for (the inverse of readableName where that is one-to-one). */
function refOfName(name: string): string {
  if (name.startsWith("hf.co/")) {
    const parts = name.slice(6).split("/");
    return parts.length < 3 ? `hf://${parts.join("@")}` : `hf://${parts[0]}/${parts[1]}@${parts.slice(2).join("/")}`;
  }
  return name.replace(/\+(sha256)\+([a-f0-9]{64})$/, "@$1:$2").replace(/\+/g, ":");
}

/**
 * The OCI `org.opencontainers.image.ref.name` a store entry gets, so other tools can name it:
 * `skopeo copy oci:$CAKE_HOME:hf.co/acme/tiny-llama/main …` or
 * `oras copy --from-oci-layout $CAKE_HOME:hf.co/acme/tiny-llama/main …`
 * (registry refs: `127.0.0.1:5000/acme/m:v1` -> `127.0.0.1+5000/acme/m+v1`).
 *
 * One name per ref: the readable form is used only when it reads back as exactly this ref and fits
 * the grammar both tools accept; otherwise (`hf://gpt2@feature/x`, `hf://acme/my__model`, a registry
 * at hf.co) the name is that form tidied, plus `--` and 16 hex digits of the ref's sha256.
 */
export function ociRefName(ref: string): string {
  const readable = readableName(ref);
  if (REF_NAME.test(readable) && !HASHED.test(readable) && refOfName(readable) === ref) return readable;
  const tidy = readable
    .split("/")
    .map((c) => c.replace(/[^A-Za-z0-9]+/g, (s) => (/^[-._+]$/.test(s) ? s : "-")).replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, ""))
    .filter(Boolean)
    .join("/")
    .slice(0, 100)
    .replace(/[^A-Za-z0-9]+$/, "");
  return `${tidy || "ref"}--${createHash("sha256").update(ref).digest("hex").slice(0, 16)}`;
}
