import type { Channel, Message } from 'amqplib';

/** Where a delivery of one channel stands, as far as the server is concerned. */
const OPEN = 0;
const ACKED = 1;
const GONE = 2;

/** One delivery's place in its channel's batcher. */
export interface AckHandle {
  readonly msg: Message;
  state: typeof OPEN | typeof ACKED | typeof GONE;
}

/**
 * Gathers the acks of one consumer channel and sends them once per event-loop turn.
 *
 * A `basic.ack` with `multiple` acks every unacked delivery up to its tag, so it may only
 * cover a prefix of the channel's deliveries that is settled in full; acks above an
 * unsettled delivery go out one by one, never held back (a long task at the head would
 * otherwise pin the prefetch window and starve the consumer). RabbitMQ closes the channel
 * on an ack of an unknown or already-acked tag, so every tag leaves exactly once: acked by a
 * single ack, covered by one multiple ack, or handed back by a nack.
 */
export class AckBatcher {
  readonly #channel: Channel;
  /** Deliveries in tag order from `#head` on; earlier slots are already settled on the wire. */
  #entries: AckHandle[] = [];
  #head = 0;
  #acked = 0;
  #flushing: Promise<void> | null = null;
  #resolveFlush: (() => void) | null = null;
  #dead = false;

  constructor(channel: Channel) {
    this.#channel = channel;
  }

  /** Registers a delivery as it arrives; the returned entry is its handle. */
  track(msg: Message): AckHandle {
    const entry: AckHandle = { msg, state: OPEN };
    this.#entries.push(entry);
    return entry;
  }

  /** Queues the ack; resolves once it has been written (or the channel is gone, which redelivers). */
  ack(entry: AckHandle): Promise<void> {
    if (entry.state !== OPEN) return Promise.resolve();
    entry.state = ACKED;
    this.#acked += 1;
    if (!this.#flushing) {
      this.#flushing = new Promise<void>((r) => (this.#resolveFlush = r));
      setImmediate(() => this.flush());
    }
    return this.#flushing;
  }

  /** Hands the delivery back at once; it is no longer the channel's to ack. */
  nack(entry: AckHandle, requeue: boolean): void {
    if (entry.state !== OPEN) return;
    entry.state = GONE;
    this.#send(() => this.#channel.nack(entry.msg, false, requeue));
  }

  /** Writes the queued acks now (the connection is about to close, or the turn is over). */
  flush(): void {
    const resolve = this.#resolveFlush;
    this.#flushing = null;
    this.#resolveFlush = null;
    if (this.#acked > 0 && !this.#dead) this.#write();
    this.#acked = 0;
    resolve?.();
  }

  /** The channel closed: its unacked deliveries go back to the queue, nothing more is sent. */
  channelClosed(): void {
    this.#dead = true;
    this.#entries = [];
    this.#head = 0;
  }

  #write(): void {
    const entries = this.#entries;
    let i = this.#head;
    let last: AckHandle | null = null;
    for (; i < entries.length; i++) {
      const e = entries[i]!;
      if (e.state === OPEN) break;
      if (e.state === ACKED) last = e;
      e.state = GONE;
    }
    if (last) this.#send(() => this.#channel.ack(last.msg, true));
    this.#head = i;
    for (; i < entries.length; i++) {
      const e = entries[i]!;
      if (e.state !== ACKED) continue;
      e.state = GONE;
      this.#send(() => this.#channel.ack(e.msg, false));
    }
    // Settled slots are dropped in bulk, not one shift per delivery.
    if (this.#head > 1024 && this.#head * 2 > entries.length) {
      this.#entries = entries.slice(this.#head);
      this.#head = 0;
    }
  }

  #send(fn: () => void): void {
    if (this.#dead) return;
    try {
      fn();
    } catch {
      // The channel closed under us: the server redelivers what it had not been told.
      this.#dead = true;
    }
  }
}
