/**
 * A listing served page by page, each page naming the next with `Link: <…>; rel="next"` (RFC 8288;
 * the Hub's tree and model search, a registry's tags and catalog): followed with a cap and a cycle
 * check, so a server whose links loop (back to a page already read, or on and on with a new cursor
 * each time) cannot keep a command asking forever.
 */
import { CakeError, type ErrorCode } from "../errors.js";
import { displayUrl } from "./request.js";

/** More pages than this is a loop, not a listing: 1000 pages of 1000 tree entries or 100 tags. */
export const MAX_PAGES = 1000;

type LinkHeader = string | string[] | undefined;

/** The `rel="next"` target of a Link header (several links, several rels, quoted or not), as written. */
export function nextLink(link: LinkHeader): string | undefined {
  const all = Array.isArray(link) ? link.join(", ") : (link ?? "");
  for (const m of all.matchAll(/<([^>]*)>\s*((?:;\s*[^;,]*)*)/g)) {
    if (/;\s*rel="?([^";]*\s)?next(\s[^";]*)?"?\s*(;|$)/i.test(m[2] ?? "")) return m[1];
  }
  return undefined;
}

export interface PageOptions {
  /** What is listed, for the error ("hf://org/model@commit tree listing"). */
  what: string;
  /** The error code of a listing that loops (the caller's layer's: E_HTTP, E_REGISTRY). */
  code: ErrorCode;
  maxPages?: number;
}

/**
 * Each page of a listing, from `first` on: `read(url)` fetches one and says its Link header; the next
 * URL is resolved against the page that named it.
 */
export async function* followPages<T>(first: string, read: (url: string) => Promise<{ page: T; link: LinkHeader }>, opts: PageOptions): AsyncGenerator<T> {
  const max = opts.maxPages ?? MAX_PAGES;
  const seen = new Set<string>();
  for (let url: string | undefined = first; url !== undefined; ) {
    if (seen.has(url)) throw new CakeError(opts.code, `${opts.what}: the next page links back to a page already read (${displayUrl(url)}); the server's listing loops`);
    if (seen.size === max) throw new CakeError(opts.code, `${opts.what}: more than ${max} pages; refused (the server's listing may loop)`);
    seen.add(url);
    const { page, link }: { page: T; link: LinkHeader } = await read(url);
    yield page;
    const next = nextLink(link);
    url = next === undefined ? undefined : new URL(next, url).toString();
  }
}
