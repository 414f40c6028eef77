import type { Signature } from '../message/signature.js';
import type { PlainWrite, ScriptedWrite } from './backend.js';

/**
 * # The Broker contract
 *
 * A broker moves task messages from producers to workers. It owns the transport and
 * nothing else: it never decodes a message to decide what to do with it (the worker
 * does), never writes task states of its own (the backend does; a broker may carry a
 * write the backend prepared, see `publishAfterWrite`), and never runs a task.
 *
 * ## What every adapter guarantees
 *
 * 1. **Wire compatibility.** `publish` adjusts the routing key and encodes the signature
 *    with `encodeSignature` exactly where Go Machinery does for this transport (Redis and
 *    AMQP adjust before encoding, SQS after), so a Go worker accepts what it publishes and
 *    a Go producer's messages reach `consume` byte for byte as `Delivery.body`.
 * 2. **Durable hand-off.** When `publish` resolves, the message is stored by the
 *    transport (confirmed by the server where the transport can confirm). A rejected
 *    promise means "maybe not sent"; the caller decides whether to retry.
 * 3. **Delayed delivery.** A signature whose `ETA` is in the future is not delivered before
 *    it, by the transport's own mechanism (the Redis ZSET, AMQP TTL queues, SQS
 *    `DelaySeconds` in hops). Delivery after the ETA is as prompt as the transport allows.
 * 4. **At-least-once.** A delivery stays owned by the consumer until it is settled. If the
 *    consuming process dies, or its connection is lost, before `settle`, the message is
 *    delivered again, to this or another consumer, after at most `redeliveryTimeoutMs`
 *    (declared in the capabilities). A message may therefore run twice; never zero times.
 * 5. **Bounded prefetch.** `consume` never has more than `prefetch` unsettled deliveries
 *    outstanding for one subscription. Claiming may happen in batches under that bound.
 * 6. **Settling is final and idempotent.** Each delivery is settled once with an `Outcome`;
 *    a second settle of the same delivery is ignored. `settle` resolves when the transport
 *    has recorded the outcome (the message deleted, requeued, delayed or dead-lettered).
 *    A rejected settle strands nothing for the life of the process: either the transport
 *    gives the message back by itself (AMQP on a closed channel, SQS at the end of the
 *    visibility timeout), or the adapter records the outcome later on its own (Redis, whose
 *    consumer heartbeat would otherwise keep the message leased and its prefetch slot taken).
 * 7. **Reconnection.** A lost connection is re-established by the adapter itself with a
 *    capped, jittered back-off; a publish during the outage waits (up to the adapter's
 *    `publishTimeoutMs`) and then succeeds or rejects with a clear error — never a silent drop.
 *    Errors the adapter cannot recover from are reported through `ConsumeOptions.onError`.
 * 8. **Stopping.** `Subscription.stop()` stops fetching and resolves once no further
 *    `onDelivery` calls will be made. Deliveries already handed out stay owned by the
 *    caller, who settles them (a graceful worker requeues what it has not started).
 *
 * ## What is left out on purpose
 *
 * - Ordering is best effort (FIFO per queue where the transport is FIFO); redelivered and
 *   delayed messages may overtake others.
 * - Exactly-once delivery. Deduplication belongs to the task (idempotency) or to the
 *   backend's atomic chord step, not to the broker.
 * - Priorities beyond passing `Priority` to transports that have them (AMQP).
 * - Decoding. `Delivery.body` may be anything, including invalid JSON; the worker judges it.
 */
export interface Broker {
  readonly capabilities: BrokerCapabilities;

  /** Publishes one task message (delayed when `ETA` is in the future). Mutates `RoutingKey` as Go does. */
  publish(signature: Signature): Promise<void>;

  /**
   * Publishes many messages with as few round trips as the transport allows. Resolves once
   * all are stored; on rejection some may have been stored (each message is independent).
   */
  publishBatch(signatures: readonly Signature[]): Promise<void>;

  /**
   * Applies `write`, then publishes, as one step where the transport allows (one Redis
   * script): no consumer can receive the message before the write is applied, and a
   * rejection means either may not have happened. Offered by brokers whose transport is
   * also a key/value store; only for writes whose store `carriesWritesFor` accepts.
   */
  publishAfterWrite?(signature: Signature, write: PlainWrite): Promise<void>;

  /**
   * `publishAfterWrite` for many tasks, `writes[i]` for `signatures[i]`, with one promise
   * for all of them rather than one each (a bulk sender's cost per task). Resolves once every
   * write and message is stored; on rejection some may have been.
   */
  publishBatchAfterWrite?(signatures: readonly Signature[], writes: readonly PlainWrite[]): Promise<void>;

  /** Whether `publishAfterWrite` can apply writes meant for `store` (the same server and database). */
  carriesWritesFor?(store: string): boolean;

  /** Starts delivering messages from `queue` to `options.onDelivery`. */
  consume(queue: string, options: ConsumeOptions): Promise<Subscription>;

  /** The queue a signature without a routing key goes to (Go's `AdjustRoutingKey`). */
  adjustRoutingKey(signature: Signature): void;

  /** Releases connections this adapter opened. Idempotent. Clients handed in by the user stay open. */
  close(): Promise<void>;
}

export interface BrokerCapabilities {
  /** Longest time before an unsettled delivery of a dead consumer comes back, in ms. */
  readonly redeliveryTimeoutMs: number;
  /** Whether `Delivery.deliveryCount` counts earlier deliveries (otherwise it is always 1). */
  readonly countsDeliveries: boolean;
  /** Whether `dead-letter` keeps the message somewhere inspectable (otherwise it is dropped and logged). */
  readonly deadLetterQueue: boolean;
}

export interface ConsumeOptions {
  /** Most unsettled deliveries at once; the worker passes its concurrency plus a small read-ahead. */
  readonly prefetch: number;
  /** Called once per delivery. Must not throw; the callee settles every delivery it gets. */
  readonly onDelivery: (delivery: Delivery) => void;
  /** Transport errors the adapter is recovering from, for logs and metrics. */
  readonly onError?: (error: Error) => void;
  /** A name for the consumer in transport-side listings (AMQP consumer tag, Redis in-flight key). */
  readonly consumerTag?: string;
}

export interface Subscription {
  /** Stops fetching. Resolves when no more deliveries will arrive. Idempotent. */
  stop(): Promise<void>;
  /**
   * Changes the bound of guarantee 5 from now on (values under 1 count as 1). Raising it lets
   * more deliveries come at once; lowering it takes nothing back: what is handed out stays
   * the caller's, and no more comes until fewer than the new bound are unsettled. Optional:
   * an adapter that cannot change the bound of a running consumer leaves it out (AMQP, whose
   * server applies a new per-consumer prefetch only to consumers started after it), and a
   * caller then keeps the prefetch it started with.
   */
  setPrefetch?(prefetch: number): void;
}

export interface Delivery {
  /** The raw message text, exactly as the transport carried it. */
  readonly body: string;
  /** The queue it was consumed from. */
  readonly queue: string;
  /** 1 on first delivery; higher when the transport knows of earlier ones (see capabilities). */
  readonly deliveryCount: number;
  /** Records the fate of the message. Idempotent; resolves when the transport has it. */
  settle(outcome: Outcome): Promise<void>;
  /**
   * Keeps the delivery from being redelivered while a long task runs (SQS visibility,
   * Redis lease). Optional: transports that hold a delivery for as long as the
   * connection lives (AMQP) need none. The worker calls it at half the lease.
   */
  extend?(): Promise<void>;
  /**
   * Applies `write` (a backend's `scriptedWrite`), then acks, in one step on the server (one
   * Redis script, batched with the other acks of the turn): the ack is made only if the write
   * was. Rejects when either may not have happened; the delivery is then still unsettled
   * and the caller settles it otherwise (the worker writes the state the usual way, then
   * acks). Unlike a second `settle`, a call for a delivery already settled (or given back by
   * a closing consumer) rejects rather than being ignored, as the write would be lost with it.
   * Offered by brokers whose `carriesWritesFor` accepts the write's store; the caller checks
   * that first.
   */
  ackAfterWrite?(write: ScriptedWrite): Promise<void>;
}

/**
 * What to do with a delivery.
 * - `ack`: done (success, final failure, or retry already re-published).
 * - `requeue`: give it back untouched, at the head where the transport allows, for another
 *   consumer (graceful shutdown of prefetched messages).
 * - `retry-later`: give it back after `delayMs` (a transient problem such as an unknown
 *   task or a backend outage); `deliveryCount` grows where the transport counts.
 * - `dead-letter`: park it with `reason` for a person to look at; never redelivered.
 */
export type Outcome =
  | { readonly kind: 'ack' }
  | { readonly kind: 'requeue' }
  | { readonly kind: 'retry-later'; readonly delayMs: number }
  | { readonly kind: 'dead-letter'; readonly reason: string };
