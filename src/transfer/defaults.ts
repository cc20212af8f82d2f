/**
 * Defaults that decide transfer speed, in one place (bench/ measures them).
 *
 * - CONCURRENCY 16: requests in flight for a whole model. Hub CDNs and registries serve one stream
 *   at a fraction of a link; 16 saturates a 1-10 Gb/s link without tripping rate limits.
 * - CHUNK 8 MiB: a bigger blob is fetched as parallel Range requests of this size. A request's
 *   round trip is hidden (the next piece is asked for while the last bytes of this one arrive, see
 *   engine.ts), so pieces need not be big to amortize it. What does grow with the piece size is the
 *   hashing left after the last byte: a Hub file is checked in file order, so the bytes of pieces
 *   that land behind a piece still running wait for it, up to CONCURRENCY pieces' worth. Measured
 *   (bench, 518 MB at 10 MB/s × 16, 30 ms): 16 MiB left 380 ms of hashing after the last byte and
 *   took 4.65 s; 8 MiB 130 ms and 4.23 s; 4 MiB about the same as 8 with 35 % more requests.
 */
import { DEFAULT_RETRY } from "../http/retry.js";

export const DEFAULT_CONCURRENCY = 16;
export const DEFAULT_CHUNK = 8 << 20;
/**
 * The smallest Range request worth its round trip (2 MiB: 50 ms at 40 MB/s against a 30 ms round
 * trip). Near the end of a transfer, pieces shrink from CHUNK toward this so all streams finish together.
 */
export const MIN_RANGE = 2 << 20;
/** Attempts for one range without progress before the transfer fails: the HTTP retries (CAKE_HTTP_RETRIES) + 2. */
export const RANGE_ATTEMPTS = DEFAULT_RETRY.retries + 2;

/**
 * Bytes gathered from the network before one write to disk (one vectored write, no copy). Small on
 * purpose: every stream holds about this much received and not yet written, and what all streams
 * hold together should stay in the CPU's last-level cache (16 streams x 128 KiB = 2 MiB, against 32
 * MiB of L3 on the 2-core bench VM): the socket read puts the bytes in cache and the write copies
 * them out of it. With 1 MiB batches the same pull held ~50-90 MiB in flight and the kernel's copy
 * into the page cache went to memory for every byte: 512 MB from distribution, 16 streams, 2 cores,
 * took 1.94 s (median of 8) with 1 MiB batches and slabs, 1.20 s with 128 KiB, 1.46 s with 256 KiB;
 * through undici 2.29 s against 1.50 s. The extra write calls (4096 instead of 512) cost less than
 * that (see http/range-socket.ts for the read side).
 */
export const WRITE_BATCH = 128 << 10;
