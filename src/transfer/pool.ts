/** A bounded pool: at most `size` tasks run at once, the rest wait in order (FIFO). */
export class Pool {
  private running = 0;
  private readonly queue: (() => void)[] = [];
  private limit: number;
  constructor(size: number) {
    this.limit = checkedSize(size);
  }

  get size(): number {
    return this.limit;
  }

  /** Tasks queued behind the running ones. */
  get waiting(): number {
    return this.queue.length;
  }

  /**
   * Lets up to `size` tasks run at once from now on: more than before, waiting tasks start; fewer,
   * running tasks end as they do and the next waits until fewer than `size` run.
   */
  resize(size: number): void {
    this.limit = checkedSize(size);
    while (this.running < this.limit && this.queue.length > 0) {
      this.running++;
      this.queue.shift()!();
    }
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    // A waiting task is started with its slot already counted (see `release`).
    if (this.running >= this.limit) await new Promise<void>((r) => this.queue.push(r));
    else this.running++;
    try {
      return await task();
    } finally {
      this.release();
    }
  }

  private release(): void {
    const next = this.running <= this.limit ? this.queue.shift() : undefined;
    if (next) next();
    else this.running--;
  }
}

function checkedSize(size: number): number {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`pool size must be a positive integer, not ${size}`);
  return size;
}
