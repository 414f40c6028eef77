import amqp from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
import {
  type Broker,
  type BrokerCapabilities,
  type ConsumeOptions,
  type Delivery,
  type Outcome,
  type Signature,
  type Subscription,
  type WireValue,
  ClosedError,
  Reconnector,
  encodeSignature,
  parseRfc3339,
  redactUrl,
} from '@machinery-ts/core';
import { type AckHandle, AckBatcher } from './ack-batcher.js';
import { coalesceWrites } from './coalesce-writes.js';

export interface AmqpBrokerOptions {
  /** AMQP URL, e.g. `amqp://guest:guest@localhost:5672/`. Never logged with its password. */
  readonly url: string;
  /** @default 'machinery_exchange' */
  readonly exchange?: string;
  /** @default 'direct' */
  readonly exchangeType?: string;
  /** @default 'machinery_task' */
  readonly bindingKey?: string;
  /** @default 'machinery_tasks' */
  readonly defaultQueue?: string;
  /** Args of every work-queue declare (Go `AMQP.QueueDeclareArgs`). @default {} */
  readonly queueDeclareArgs?: Record<string, unknown>;
  /** Args of every work-queue binding (Go `AMQP.QueueBindingArgs`). @default {} */
  readonly queueBindingArgs?: Record<string, unknown>;
  /** Go `AMQP.DelayedQueue`: one shared delay queue with per-message TTLs. @default '' (a queue per delay) */
  readonly delayedQueue?: string;
  /** Go `AMQP.AutoDelete`, used for delay queues. @default false */
  readonly autoDelete?: boolean;
  /** Where `dead-letter` parks messages. @default `<queue>.machinery-ts.dead_letter` */
  readonly deadLetterQueue?: string;
  /** How long a publish waits for a lost connection to come back. @default 30000 */
  readonly publishTimeoutMs?: number;
  /** Reconnect back-off bounds. @default 100 / 5000 */
  readonly reconnectMinMs?: number;
  readonly reconnectMaxMs?: number;
  /**
   * How long one connection attempt may take, the AMQP handshake included, before it counts as
   * failed and is retried: a server still starting (or a port that is not RabbitMQ) can accept
   * the socket and never answer. @default 10000
   */
  readonly connectTimeoutMs?: number;
  /** AMQP heartbeat used when the URL has no `heartbeat` parameter; a silent peer is dropped after ~2 beats. @default 10 */
  readonly heartbeatSeconds?: number;
  /** Transport errors while reconnecting (no URL password in them). */
  readonly onError?: (error: Error) => void;
}

interface Conn {
  readonly model: ChannelModel;
  readonly generation: number;
  /** Queues declared (and bound) on this connection. */
  readonly declared: Set<string>;
  /** Declarations under way: concurrent first publishes to a queue share one. */
  readonly declaring: Map<string, Promise<void>>;
  /** Resolves on the connection's 'close' event, however it ends. */
  readonly gone: Promise<void>;
  pub: ConfirmChannel | null;
  /** The confirm channel being opened, shared by everyone who asked meanwhile. */
  pubOpening: Promise<ConfirmChannel> | null;
  alive: boolean;
}

/**
 * amqplib's `close()` promises wait for the peer's CloseOk and never settle when the socket
 * dies first, so every close we await is also ended by the connection going away.
 */
function closeWithin(closing: () => Promise<unknown>, gone: Promise<void>): Promise<void> {
  let attempt: Promise<unknown>;
  try {
    attempt = closing();
  } catch (err) {
    attempt = Promise.reject(err);
  }
  return Promise.race([attempt.then(() => {}, () => {}), gone]);
}

function toAmqpValue(v: WireValue): unknown {
  if (typeof v === 'bigint') {
    return Number.isSafeInteger(Number(v)) ? { '!': 'int64', value: Number(v) } : v.toString();
  }
  if (Array.isArray(v)) return v.map(toAmqpValue);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, x] of Object.entries(v)) out[k] = toAmqpValue(x);
    return out;
  }
  return v;
}

/** A signature ready for `basic.publish`. */
interface Outgoing {
  readonly routingKey: string;
  readonly body: Buffer;
  readonly props: Options.Publish;
}

const closedChannels = new WeakSet<Channel>();
const int64 = (n: number): { '!': 'int64'; value: number } => ({ '!': 'int64', value: n });

function withHeartbeat(url: string, seconds: number): { url: string; heartbeat: number } {
  try {
    const u = new URL(url);
    const given = u.searchParams.get('heartbeat');
    if (given !== null) return { url, heartbeat: Number(given) || 60 };
    u.searchParams.set('heartbeat', String(seconds));
    return { url: u.toString(), heartbeat: seconds };
  } catch {
    return { url, heartbeat: 60 };
  }
}

export class AmqpBroker implements Broker {
  readonly capabilities: BrokerCapabilities;
  readonly #url: string;
  readonly #exchange: string;
  readonly #exchangeType: string;
  readonly #bindingKey: string;
  readonly #defaultQueue: string;
  readonly #declareArgs: Record<string, unknown>;
  readonly #bindingArgs: Record<string, unknown>;
  readonly #delayedQueue: string;
  readonly #autoDelete: boolean;
  readonly #deadLetterQueue: string | undefined;
  readonly #publishTimeoutMs: number;
  readonly #reconnector: Reconnector<Conn>;
  readonly #connectTimeoutMs: number;
  readonly #onError: ((e: Error) => void) | undefined;
  readonly #subs = new Set<AmqpSubscription>();
  #conn: Conn | null = null;
  #generation = 0;
  #closed = false;

  constructor(options: AmqpBrokerOptions) {
    const hb = withHeartbeat(options.url, options.heartbeatSeconds ?? 10);
    this.#url = hb.url;
    // A closed connection returns unacked messages at once; a silent peer is detected by heartbeats.
    this.capabilities = { redeliveryTimeoutMs: hb.heartbeat * 3 * 1000, countsDeliveries: false, deadLetterQueue: true };
    this.#exchange = options.exchange ?? 'machinery_exchange';
    this.#exchangeType = options.exchangeType ?? 'direct';
    this.#bindingKey = options.bindingKey ?? 'machinery_task';
    this.#defaultQueue = options.defaultQueue ?? 'machinery_tasks';
    this.#declareArgs = options.queueDeclareArgs ?? {};
    this.#bindingArgs = options.queueBindingArgs ?? {};
    this.#delayedQueue = options.delayedQueue ?? '';
    this.#autoDelete = options.autoDelete ?? false;
    this.#deadLetterQueue = options.deadLetterQueue;
    this.#publishTimeoutMs = options.publishTimeoutMs ?? 30_000;
    this.#reconnector = new Reconnector({
      what: `AMQP connect to ${redactUrl(this.#url)}`,
      attempt: () => this.#connect(),
      isClosed: () => this.#closed,
      closedError: () => new ClosedError('AmqpBroker'),
      // 406 PRECONDITION_FAILED: the exchange exists with another type or flags.
      configMismatch: (err) => ((err as { code?: unknown }).code === 406 ? `exchange "${this.#exchange}" as ${this.#exchangeType}` : undefined),
      report: (e) => this.#report(e),
      minMs: options.reconnectMinMs ?? 100,
      maxMs: options.reconnectMaxMs ?? 5_000,
    });
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#onError = options.onError;
  }

  adjustRoutingKey(signature: Signature): void {
    if (signature.RoutingKey) return;
    signature.RoutingKey = this.#exchangeType === 'direct' ? this.#bindingKey : this.#defaultQueue;
  }

  // ---- connection management -------------------------------------------------------

  #report(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    const msg = e.message.split(this.#url).join(redactUrl(this.#url));
    if (msg !== e.message) e.message = msg;
    this.#onError?.(e);
    for (const s of this.#subs) s.options.onError?.(e);
  }

  /** The live connection, (re)connecting with capped jittered back-off. */
  #connection(): Promise<Conn> {
    if (!this.#closed && this.#conn?.alive) return Promise.resolve(this.#conn);
    return this.#reconnector.connect();
  }

  /** One connection attempt: the connection with the exchange declared, or closed again. */
  async #connect(): Promise<Conn> {
    let markGone: () => void = () => {};
    const gone = new Promise<void>((r) => (markGone = r));
    const model = await amqp.connect(this.#url, { timeout: this.#connectTimeoutMs });
    try {
      coalesceWrites(model);
      const conn: Conn = { model, generation: ++this.#generation, declared: new Set(), declaring: new Map(), gone, pub: null, pubOpening: null, alive: true };
      model.on('error', (e: Error) => this.#report(e));
      model.on('close', () => {
        markGone();
        this.#lost(conn);
      });
      if (this.#closed) throw new ClosedError('AmqpBroker');
      if (this.#exchange) {
        const ch = await model.createChannel();
        ch.on('error', () => {});
        await ch.assertExchange(this.#exchange, this.#exchangeType, { durable: true, autoDelete: false, internal: false });
        await closeWithin(() => ch.close(), gone);
      }
      if (!conn.alive) throw new Error('connection closed while declaring the topology');
      this.#conn = conn;
      // Resume consumers on the new connection.
      for (const s of this.#subs) void s.attach(conn);
      return conn;
    } catch (err) {
      await closeWithin(() => model.close(), gone);
      throw err;
    }
  }

  #lost(conn: Conn): void {
    conn.alive = false;
    // One that never became the connection is its attempt's to report and retry: reconnecting
    // here too would retry a failure that configMismatch ended as hopeless.
    if (this.#conn !== conn) return;
    this.#conn = null;
    if (this.#closed) return;
    this.#report(new Error(`AMQP connection to ${redactUrl(this.#url)} lost; reconnecting`));
    void this.#connection().catch(() => {});
  }

  async #pubChannel(conn: Conn): Promise<ConfirmChannel> {
    if (conn.pub) return conn.pub;
    // A burst of first publishes would otherwise open a channel each and keep only the last.
    conn.pubOpening ??= this.#openPubChannel(conn).finally(() => (conn.pubOpening = null));
    return conn.pubOpening;
  }

  async #openPubChannel(conn: Conn): Promise<ConfirmChannel> {
    const ch = await conn.model.createConfirmChannel();
    ch.on('error', () => {});
    ch.on('close', () => {
      if (conn.pub === ch) conn.pub = null;
      // A channel error (e.g. 406) may have interrupted a declare: forget what we declared.
      conn.declared.clear();
    });
    conn.pub = ch;
    return ch;
  }

  /** Declares a work queue as Go does and binds it (skipped once done on this connection). */
  async #declareWorkQueue(conn: Conn, ch: Channel, queue: string, bindingKey: string): Promise<void> {
    const key = `w\0${queue}\0${bindingKey}`;
    if (conn.declared.has(key)) return;
    let declaring = conn.declaring.get(key);
    if (!declaring) {
      declaring = (async () => {
        await ch.assertQueue(queue, { durable: true, autoDelete: false, exclusive: false, arguments: this.#declareArgs });
        if (this.#exchange) await ch.bindQueue(queue, this.#exchange, bindingKey, this.#bindingArgs);
        conn.declared.add(key);
      })().finally(() => conn.declaring.delete(key));
      conn.declaring.set(key, declaring);
    }
    await declaring;
  }

  async #connectionWithin(what: string, ms: number): Promise<Conn> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        this.#connection(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`AMQP ${what} timed out after ${this.#publishTimeoutMs} ms waiting for a connection to ${redactUrl(this.#url)}`)),
            Math.max(0, ms),
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Runs `fn` on a live connection; when the connection drops underneath it, waits for the
   * next one and runs it again, until `publishTimeoutMs` has passed.
   */
  async #withConnection<T>(what: string, fn: (conn: Conn) => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.#publishTimeoutMs;
    for (;;) {
      if (this.#closed) throw new ClosedError('AmqpBroker');
      // The common case, a live connection, needs no timer per publish.
      const conn = this.#conn?.alive ? this.#conn : await this.#connectionWithin(what, deadline - Date.now());
      try {
        return await fn(conn);
      } catch (err) {
        // Connection lost mid-way: "maybe not sent"; send again on the next connection.
        if (!conn.alive && !this.#closed && Date.now() < deadline) continue;
        throw err;
      }
    }
  }

  // ---- publishing ----------------------------------------------------------------------

  async publish(signature: Signature): Promise<void> {
    if (this.#closed) throw new ClosedError('AmqpBroker');
    this.adjustRoutingKey(signature);
    const eta = signature.ETA ? parseRfc3339(signature.ETA) : null;
    if (eta !== null && eta - Date.now() >= 1) await this.#publishLater(signature, eta);
    else await this.#publishNow([this.#outgoing(signature)]);
  }

  async publishBatch(signatures: readonly Signature[]): Promise<void> {
    if (this.#closed) throw new ClosedError('AmqpBroker');
    const now: Outgoing[] = [];
    const later: Promise<void>[] = [];
    const start = Date.now();
    for (const s of signatures) {
      this.adjustRoutingKey(s);
      const eta = s.ETA ? parseRfc3339(s.ETA) : null;
      if (eta !== null && eta - start >= 1) later.push(this.#publishLater(s, eta));
      else now.push(this.#outgoing(s));
    }
    const results = await Promise.allSettled([this.#publishNow(now), ...later]);
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  #outgoing(signature: Signature): Outgoing {
    return {
      routingKey: signature.RoutingKey,
      body: Buffer.from(encodeSignature(signature), 'utf8'),
      props: {
        contentType: 'application/json',
        deliveryMode: 2,
        priority: signature.Priority,
        headers: signature.Headers ? (toAmqpValue(signature.Headers) as Record<string, unknown>) : {},
      },
    };
  }

  /**
   * Publishes straight to the exchange and resolves when every message is confirmed. After a
   * lost connection only the unconfirmed ones go again, so a batch is not duplicated wholesale.
   */
  async #publishNow(messages: readonly Outgoing[]): Promise<void> {
    if (messages.length === 0) return;
    let left = messages;
    await this.#withConnection('publish', async (conn) => {
      const ch = conn.pub ?? (await this.#pubChannel(conn));
      // The target work queues, declared as Go's producer does (direct: RoutingKey bound by RoutingKey).
      if (this.#exchangeType === 'direct') {
        let last = '';
        for (const m of left) {
          if (m.routingKey === last) continue;
          last = m.routingKey;
          await this.#declareWorkQueue(conn, ch, last, last);
        }
      } else {
        await this.#declareWorkQueue(conn, ch, this.#defaultQueue, this.#bindingKey);
      }
      const { failed, error } = await this.#confirmAll(ch, left);
      left = failed;
      if (error) throw error;
    });
  }

  /**
   * Publishes every message with one confirm callback each, counted rather than turned into a
   * promise apiece. Resolves once every callback has come back, with the ones not confirmed.
   */
  #confirmAll(ch: ConfirmChannel, messages: readonly Outgoing[]): Promise<{ failed: Outgoing[]; error: Error | null }> {
    return new Promise((resolve) => {
      let waiting = messages.length;
      let error: Error | null = null;
      const failed: Outgoing[] = [];
      for (const m of messages) {
        const done = (err: unknown): void => {
          if (err) {
            error ??= err instanceof Error ? err : new Error(String(err));
            failed.push(m);
          }
          if (--waiting === 0) resolve({ failed, error });
        };
        try {
          ch.publish(this.#exchange, m.routingKey, m.body, m.props, done);
        } catch (err) {
          done(err ?? new Error('publish failed'));
        }
      }
    });
  }

  async #publishLater(signature: Signature, eta: number): Promise<void> {
    const body = Buffer.from(encodeSignature(signature), 'utf8');
    const headers = signature.Headers ? (toAmqpValue(signature.Headers) as Record<string, unknown>) : {};
    const routingKey = signature.RoutingKey;
    await this.#withConnection('publish', async (conn) => {
      const ch = await this.#pubChannel(conn);
      const delayMs = Math.floor(eta - Date.now());
      // The target work queue, declared as Go's producer does (direct: RoutingKey bound by RoutingKey).
      if (this.#exchangeType === 'direct') await this.#declareWorkQueue(conn, ch, routingKey, routingKey);
      else await this.#declareWorkQueue(conn, ch, this.#defaultQueue, this.#bindingKey);
      if (delayMs >= 1) {
        await this.#publishDelayed(conn, ch, body, headers, routingKey, delayMs);
        return;
      }
      await this.#confirm(ch, this.#exchange, routingKey, body, {
        contentType: 'application/json',
        deliveryMode: 2,
        priority: signature.Priority,
        headers,
      });
    });
  }

  async #publishDelayed(conn: Conn, ch: ConfirmChannel, body: Buffer, headers: Record<string, unknown>, routingKey: string, delayMs: number): Promise<void> {
    const props: Options.Publish = { contentType: 'application/json', deliveryMode: 2, headers };
    if (this.#delayedQueue) {
      // Go Case B: one queue, per-message TTL.
      const q = this.#delayedQueue;
      const key = `d\0${q}`;
      if (!conn.declared.has(key)) {
        await ch.assertQueue(q, {
          durable: true,
          autoDelete: this.#autoDelete,
          exclusive: false,
          arguments: { 'x-dead-letter-exchange': this.#exchange, 'x-dead-letter-routing-key': routingKey },
        });
        if (this.#exchange) await ch.bindQueue(q, this.#exchange, q, {});
        conn.declared.add(key);
      }
      await this.#confirm(ch, this.#exchange, q, body, { ...props, expiration: String(delayMs) });
      return;
    }
    // Go Case A: a queue per delay, dead-lettering to the exchange with the routing key.
    const q = `delay.${delayMs}.${this.#exchange}.${routingKey}`;
    await ch.assertQueue(q, {
      durable: true,
      autoDelete: this.#autoDelete,
      exclusive: false,
      arguments: {
        'x-dead-letter-exchange': this.#exchange,
        'x-dead-letter-routing-key': routingKey,
        'x-message-ttl': int64(delayMs),
        'x-expires': int64(delayMs * 2),
      },
    });
    if (this.#exchange) {
      await ch.bindQueue(q, this.#exchange, q, {});
      await this.#confirm(ch, this.#exchange, q, body, props);
    } else {
      await this.#confirm(ch, '', q, body, props);
    }
  }

  #confirm(ch: ConfirmChannel, exchange: string, routingKey: string, body: Buffer, props: Options.Publish): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      try {
        ch.publish(exchange, routingKey, body, props, (err) => {
          if (err) reject(err instanceof Error ? err : new Error(String(err)));
          else resolve();
        });
      } catch (err) {
        reject(err as Error);
      }
    });
  }

  /** Re-publishes a consumed body after `delayMs` straight to `queue` (retry-later). */
  async publishRetry(body: Buffer, headers: Record<string, unknown>, queue: string, delayMs: number): Promise<void> {
    const ms = Math.max(1, Math.floor(delayMs));
    await this.#withConnection('retry publish', async (conn) => {
      const ch = await this.#pubChannel(conn);
      // Our own name, dead-lettering through the default exchange straight into `queue`,
      // whatever its bindings; x-expires leaves room for the message to leave first.
      const q = `machinery-ts.retry.${ms}.${queue}`;
      await ch.assertQueue(q, {
        durable: true,
        autoDelete: false,
        exclusive: false,
        arguments: {
          'x-dead-letter-exchange': '',
          'x-dead-letter-routing-key': queue,
          'x-message-ttl': int64(ms),
          'x-expires': int64(ms * 2 + 60_000),
        },
      });
      await this.#confirm(ch, '', q, body, { contentType: 'application/json', deliveryMode: 2, headers });
    });
  }

  /** Parks a body in the dead-letter queue of `queue`. */
  async publishDeadLetter(body: Buffer, headers: Record<string, unknown>, queue: string, reason: string): Promise<void> {
    const q = this.deadLetterQueueOf(queue);
    await this.#withConnection('dead-letter publish', async (conn) => {
      const ch = await this.#pubChannel(conn);
      if (!conn.declared.has(`x\0${q}`)) {
        await ch.assertQueue(q, { durable: true, autoDelete: false, exclusive: false });
        conn.declared.add(`x\0${q}`);
      }
      await this.#confirm(ch, '', q, body, {
        contentType: 'application/json',
        deliveryMode: 2,
        headers: { ...headers, 'x-machinery-ts-reason': reason, 'x-machinery-ts-queue': queue },
      });
    });
  }

  deadLetterQueueOf(queue: string): string {
    return this.#deadLetterQueue ?? `${queue}.machinery-ts.dead_letter`;
  }

  // ---- consuming -----------------------------------------------------------------------

  async consume(queue: string, options: ConsumeOptions): Promise<Subscription> {
    if (this.#closed) throw new ClosedError('AmqpBroker');
    const sub = new AmqpSubscription(this, queue, options, (conn, ch) => this.#declareWorkQueue(conn, ch, queue, this.#bindingKey), () =>
      this.#subs.delete(sub),
    );
    this.#subs.add(sub);
    try {
      await this.#withConnection('consume', (conn) => sub.attach(conn, true));
    } catch (err) {
      // Not left to attach itself to a later connection: the caller was told it failed.
      this.#subs.delete(sub);
      throw err;
    }
    return sub;
  }

  /** Drops the connection abruptly, as a killed process would, and stops reconnecting (tests). */
  async crash(): Promise<void> {
    this.#closed = true;
    const conn = this.#conn;
    this.#conn = null;
    if (conn) conn.alive = false;
    const stream = (conn?.model as unknown as { connection?: { stream?: { destroy(): void } } } | undefined)?.connection?.stream;
    stream?.destroy();
  }

  async close(): Promise<void> {
    if (this.#closed && !this.#conn) return;
    this.#closed = true;
    const subs = [...this.#subs];
    for (const s of subs) await s.stop().catch(() => {});
    // Acks gathered for this turn go out before the connection does, or their tasks would rerun.
    for (const s of subs) s.flushAcks();
    const conn = this.#conn;
    this.#conn = null;
    if (conn?.alive) {
      conn.alive = false;
      await closeWithin(() => conn.model.close(), conn.gone);
    }
    await this.#reconnector.settled();
  }
}

class AmqpSubscription implements Subscription {
  #ch: Channel | null = null;
  #acks: AckBatcher | null = null;
  #tag: string | null = null;
  #stopped = false;
  #attaching: Promise<void> | null = null;
  #attachedTo: Conn | null = null;
  #attachPromise: Promise<void> | null = null;

  constructor(
    readonly broker: AmqpBroker,
    readonly queue: string,
    readonly options: ConsumeOptions,
    readonly declare: (conn: Conn, ch: Channel) => Promise<void>,
    readonly onGone: () => void,
  ) {}

  /**
   * Opens a channel on `conn` and starts consuming. Called again after each reconnect;
   * a second call for the same connection while its channel lives is a no-op.
   */
  attach(conn: Conn, throwErrors = false): Promise<void> {
    if (this.#attachedTo === conn && this.#attachPromise) {
      const p = this.#attachPromise;
      return throwErrors ? p : p.catch((e: Error) => this.options.onError?.(e));
    }
    const run = async (): Promise<void> => {
      if (this.#stopped || !conn.alive) return;
      const ch = await conn.model.createChannel();
      const acks = new AckBatcher(ch);
      ch.on('error', (e: Error) => this.options.onError?.(e));
      ch.on('close', () => {
        closedChannels.add(ch);
        acks.channelClosed();
        if (this.#acks === acks) this.#acks = null;
        if (this.#ch === ch) this.#ch = null;
        if (this.#attachedTo === conn && this.#attachPromise === p) {
          this.#attachedTo = null;
          this.#attachPromise = null;
        }
        // The channel died but the connection lives (e.g. a channel error): consume again shortly.
        if (!this.#stopped && conn.alive && this.#tag !== null) {
          const t = setTimeout(() => void this.attach(conn), 1000);
          t.unref();
        }
      });
      try {
        await this.declare(conn, ch);
        await ch.prefetch(Math.max(1, this.options.prefetch), false);
        this.#ch = ch;
        this.#acks = acks;
        const ok = await ch.consume(this.queue, (msg) => this.#onMessage(ch, acks, msg), {
          noAck: false,
          exclusive: false,
          ...(this.options.consumerTag ? { consumerTag: this.options.consumerTag } : {}),
        });
        this.#tag = ok.consumerTag;
        if (this.#stopped) await closeWithin(() => ch.close(), conn.gone);
      } catch (err) {
        await closeWithin(() => ch.close(), conn.gone);
        throw err;
      }
    };
    const p: Promise<void> = run();
    this.#attachedTo = conn;
    this.#attachPromise = p;
    this.#attaching = p.catch(() => {});
    p.catch(() => {
      if (this.#attachPromise === p) {
        this.#attachedTo = null;
        this.#attachPromise = null;
      }
    });
    if (throwErrors) return p;
    return p.catch((e: Error) => this.options.onError?.(e));
  }

  #onMessage(ch: Channel, acks: AckBatcher, msg: ConsumeMessage | null): void {
    if (msg === null) {
      // The server cancelled the consumer (queue deleted).
      this.options.onError?.(new Error(`AMQP consumer of ${this.queue} was cancelled by the server`));
      return;
    }
    this.options.onDelivery(new AmqpDelivery(this.broker, ch, acks, this.queue, msg, this.options.onError));
  }

  flushAcks(): void {
    this.#acks?.flush();
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.onGone();
    await this.#attaching;
    const ch = this.#ch;
    if (ch && this.#tag) await ch.cancel(this.#tag).catch(() => {});
    // The channel stays open so deliveries already handed out can still be settled;
    // it goes when the connection is closed.
  }
}

class AmqpDelivery implements Delivery {
  readonly body: string;
  readonly deliveryCount: number;
  readonly #acks: AckBatcher;
  readonly #handle: AckHandle;
  #settled = false;

  constructor(
    readonly broker: AmqpBroker,
    readonly channel: Channel,
    acks: AckBatcher,
    readonly queue: string,
    readonly msg: ConsumeMessage,
    readonly onError: ((e: Error) => void) | undefined,
  ) {
    this.body = msg.content.toString('utf8');
    this.deliveryCount = msg.fields.redelivered ? 2 : 1;
    this.#acks = acks;
    this.#handle = acks.track(msg);
  }

  #alive(): boolean {
    return !closedChannels.has(this.channel);
  }

  settle(outcome: Outcome): Promise<void> {
    if (this.#settled) return Promise.resolve();
    this.#settled = true;
    switch (outcome.kind) {
      case 'ack':
        return this.#acks.ack(this.#handle);
      case 'requeue':
        this.#acks.nack(this.#handle, true);
        return Promise.resolve();
      case 'retry-later':
      case 'dead-letter':
        return this.#republish(outcome);
    }
  }

  async #republish(outcome: Extract<Outcome, { kind: 'retry-later' | 'dead-letter' }>): Promise<void> {
    if (!this.#alive()) return;
    const headers = (this.msg.properties.headers ?? {}) as Record<string, unknown>;
    try {
      if (outcome.kind === 'retry-later') await this.broker.publishRetry(this.msg.content, headers, this.queue, outcome.delayMs);
      else await this.broker.publishDeadLetter(this.msg.content, headers, this.queue, outcome.reason);
    } catch (err) {
      // Could not re-publish: give the message back rather than lose it.
      this.onError?.(err instanceof Error ? err : new Error(String(err)));
      this.#acks.nack(this.#handle, true);
      return;
    }
    await this.#acks.ack(this.#handle);
  }
}
