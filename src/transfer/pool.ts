/** A bounded pool: at most `size` tasks run at once, the rest wait in order (FIFO). */
export class Pool {
  private running = 0;
  /** Tasks woken from the queue that have not resumed yet: they count against the size already. */
  private woken = 0;
  private readonly queue: (() => void)[] = [];
  constructor(private limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`pool size must be a positive integer, not ${limit}`);
  }

  get size(): number {
    return this.limit;
  }

  /** Tasks queued behind the running ones. */
  get waiting(): number {
    return this.queue.length;
  }

  /** A new size: a bigger one starts waiting tasks at once; a smaller one lets running tasks finish. */
  resize(size: number): void {
    this.limit = Math.max(1, Math.floor(size));
    this.wake();
  }

  private wake(): void {
    while (this.running + this.woken < this.limit && this.queue.length) {
      this.woken++;
      this.queue.shift()!();
    }
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.running + this.woken >= this.limit) {
      await new Promise<void>((r) => this.queue.push(r));
      this.woken--;
    }
    this.running++;
    try {
      return await task();
    } finally {
      this.running--;
      this.wake();
    }
  }
}
