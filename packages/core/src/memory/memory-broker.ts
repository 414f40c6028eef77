import type { Broker, BrokerCapabilities, ConsumeOptions, Delivery, Outcome, Subscription } from '../contracts/broker.js';
import { ClosedError } from '../errors.js';
import { encodeSignature } from '../message/codec.js';
import type { Signature } from '../message/signature.js';
import { parseRfc3339 } from '../message/time.js';

/**
 * The in-memory broker: the embedded default, with the contract's full semantics
 * (delays, leases and redelivery, prefetch, dead letters) rather than an eager
 * shortcut. Brokers built on one `MemoryTransport` behave like processes sharing a
 * server: closing one returns its unsettled deliveries to the queue.
 */
export interface MemoryBrokerOptions {
  /** Shared "server"; a new private one by default. */
  readonly transport?: MemoryTransport;
  /** Queue for signatures without a routing key. @default 'machinery_tasks' */
  readonly defaultQueue?: string;
  /** Lease of an unsettled delivery before it is redelivered. @default 30000 */
  readonly leaseMs?: number;
}

interface StoredMessage {
  readonly body: string;
  deliveryCount: number;
}

export interface DeadLetter {
  readonly body: string;
  readonly reason: string;
  readonly queue: string;
}

/** The shared state of in-memory brokers: queues, delayed messages and dead letters. */
export class MemoryTransport {
  readonly #queues = new Map<string, StoredMessage[]>();
  readonly #listeners = new Map<string, Set<() => void>>();
  readonly #timers = new Set<NodeJS.Timeout>();
  readonly deadLetters: DeadLetter[] = [];

  push(queue: string, message: StoredMessage, atHead = false): void {
    let list = this.#queues.get(queue);
    if (!list) this.#queues.set(queue, (list = []));
    if (atHead) list.unshift(message);
    else list.push(message);
    for (const wake of this.#listeners.get(queue) ?? []) wake();
  }

  pushLater(queue: string, message: StoredMessage, delayMs: number): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      this.push(queue, message);
    }, Math.max(0, delayMs));
    this.#timers.add(timer);
  }

  shift(queue: string): StoredMessage | undefined {
    return this.#queues.get(queue)?.shift();
  }

  /** Messages waiting in `queue` (not delayed, not in flight). */
  depth(queue: string): number {
    return this.#queues.get(queue)?.length ?? 0;
  }

  /** Bodies waiting in `queue`, oldest first (Go's `GetPendingTasks`). */
  pending(queue: string): string[] {
    return (this.#queues.get(queue) ?? []).map((m) => m.body);
  }

  listen(queue: string, wake: () => void): () => void {
    let set = this.#listeners.get(queue);
    if (!set) this.#listeners.set(queue, (set = new Set()));
    set.add(wake);
    return () => set.delete(wake);
  }

  /** Cancels delayed messages; they are lost, as an in-memory server's would be. */
  shutdown(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }
}

export class MemoryBroker implements Broker {
  readonly capabilities: BrokerCapabilities;
  readonly transport: MemoryTransport;
  readonly #defaultQueue: string;
  readonly #leaseMs: number;
  readonly #ownsTransport: boolean;
  readonly #subscriptions = new Set<MemorySubscription>();
  #closed = false;

  constructor(options: MemoryBrokerOptions = {}) {
    this.#ownsTransport = !options.transport;
    this.transport = options.transport ?? new MemoryTransport();
    this.#defaultQueue = options.defaultQueue ?? 'machinery_tasks';
    this.#leaseMs = options.leaseMs ?? 30_000;
    this.capabilities = { redeliveryTimeoutMs: this.#leaseMs, countsDeliveries: true, deadLetterQueue: true };
  }

  adjustRoutingKey(signature: Signature): void {
    if (!signature.RoutingKey) signature.RoutingKey = this.#defaultQueue;
  }

  async publish(signature: Signature): Promise<void> {
    if (this.#closed) throw new ClosedError('MemoryBroker');
    this.adjustRoutingKey(signature);
    const message: StoredMessage = { body: encodeSignature(signature), deliveryCount: 0 };
    const eta = signature.ETA ? parseRfc3339(signature.ETA) : null;
    const delay = eta === null ? 0 : eta - Date.now();
    if (delay > 0) this.transport.pushLater(signature.RoutingKey, message, delay);
    else this.transport.push(signature.RoutingKey, message);
  }

  async publishBatch(signatures: readonly Signature[]): Promise<void> {
    for (const s of signatures) await this.publish(s);
  }

  async consume(queue: string, options: ConsumeOptions): Promise<Subscription> {
    if (this.#closed) throw new ClosedError('MemoryBroker');
    const sub = new MemorySubscription(this.transport, queue, options, this.#leaseMs, () => this.#subscriptions.delete(sub));
    this.#subscriptions.add(sub);
    sub.pump();
    return sub;
  }

  /** Publishes a raw body as a foreign producer would (tests, Go interop). */
  pushRaw(queue: string, body: string): void {
    this.transport.push(queue, { body, deliveryCount: 0 });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Like a dropped connection: what this broker had in flight goes back to the queue.
    for (const sub of [...this.#subscriptions]) sub.abandon();
    if (this.#ownsTransport) this.transport.shutdown();
  }
}

class MemorySubscription implements Subscription {
  readonly #inFlight = new Set<MemoryDelivery>();
  readonly #unlisten: () => void;
  #stopped = false;
  #prefetch: number;

  constructor(
    readonly transport: MemoryTransport,
    readonly queue: string,
    readonly options: ConsumeOptions,
    readonly leaseMs: number,
    readonly onGone: () => void,
  ) {
    this.#prefetch = options.prefetch;
    this.#unlisten = transport.listen(queue, () => this.pump());
  }

  setPrefetch(prefetch: number): void {
    this.#prefetch = prefetch;
    queueMicrotask(() => this.pump());
  }

  pump(): void {
    while (!this.#stopped && this.#inFlight.size < Math.max(1, this.#prefetch)) {
      const message = this.transport.shift(this.queue);
      if (!message) return;
      message.deliveryCount += 1;
      const delivery = new MemoryDelivery(this, message);
      this.#inFlight.add(delivery);
      this.options.onDelivery(delivery);
    }
  }

  done(delivery: MemoryDelivery): void {
    this.#inFlight.delete(delivery);
    queueMicrotask(() => this.pump());
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#unlisten();
    this.onGone();
  }

  abandon(): void {
    void this.stop();
    for (const d of [...this.#inFlight]) d.expire();
  }
}

class MemoryDelivery implements Delivery {
  readonly body: string;
  readonly queue: string;
  readonly deliveryCount: number;
  #settled = false;
  #lease: NodeJS.Timeout;

  constructor(readonly sub: MemorySubscription, readonly message: StoredMessage) {
    this.body = message.body;
    this.queue = sub.queue;
    this.deliveryCount = message.deliveryCount;
    this.#lease = this.#startLease();
  }

  #startLease(): NodeJS.Timeout {
    const t = setTimeout(() => this.expire(), this.sub.leaseMs);
    t.unref();
    return t;
  }

  /** The lease ran out (or the "process" died): back to the head of the queue. */
  expire(): void {
    if (this.#settled) return;
    this.#settled = true;
    clearTimeout(this.#lease);
    this.sub.done(this);
    this.sub.transport.push(this.queue, this.message, true);
  }

  async extend(): Promise<void> {
    if (this.#settled) return;
    clearTimeout(this.#lease);
    this.#lease = this.#startLease();
  }

  async settle(outcome: Outcome): Promise<void> {
    if (this.#settled) return;
    this.#settled = true;
    clearTimeout(this.#lease);
    const { transport } = this.sub;
    switch (outcome.kind) {
      case 'ack':
        break;
      case 'requeue':
        this.message.deliveryCount -= 1;
        transport.push(this.queue, this.message, true);
        break;
      case 'retry-later':
        transport.pushLater(this.queue, this.message, outcome.delayMs);
        break;
      case 'dead-letter':
        transport.deadLetters.push({ body: this.body, reason: outcome.reason, queue: this.queue });
        break;
    }
    this.sub.done(this);
  }
}
