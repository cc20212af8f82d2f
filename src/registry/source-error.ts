/**
 * SourceError: the caller's `open()` stream of a blob being pushed failed, as opposed to the
 * network. The transport passes it through untouched, and the upload neither retries it as a
 * network error nor reports it as one (it becomes E_IO).
 */
export class SourceError extends Error {
  constructor(cause: unknown) {
    super(`reading the blob to upload failed: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    this.name = "SourceError";
  }
}

/** The SourceError among `err` and its causes (8 deep), if any. */
export function findSourceError(err: unknown): SourceError | undefined {
  for (let e = err as { cause?: unknown } | undefined, i = 0; e && i < 8; e = e.cause as typeof e, i++) {
    if (e instanceof SourceError) return e;
  }
  return undefined;
}
