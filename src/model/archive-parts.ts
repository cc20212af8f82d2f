/** What save and load share: the tar entries of an OCI archive and their limits (archive.ts). */
/** tar-stream, loaded only by save and load. */
export const tarStream = async () => (await import("tar-stream")).default;

/** index.json is read whole: an archive claiming more is refused. */
export const MAX_ARCHIVE_INDEX = 4 << 20;
export const MAX_OCI_LAYOUT = 4 << 10;

export const BLOB_ENTRY = /^blobs\/sha256\/([a-f0-9]{64})$/;
/** Fixed header fields: the same models saved twice make the same bytes. */
export const ENTRY = { mtime: new Date(0), uid: 0, gid: 0, uname: "", gname: "" };
