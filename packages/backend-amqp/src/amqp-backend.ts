import { randomUUID } from 'node:crypto';
import amqp from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel, GetMessage, Message, Options } from 'amqplib';
import {
  type Backend,
  type BackendCapabilities,
  type ChordTriggerMode,
  type ChordTriggerResult,
  type GroupMeta,
  type StateUpdate,
  type TaskState,
  type WaitOptions,
  ClosedError,
  MachineryError,
  Reconnector,
  TaskStates,
  decodeGroupMeta,
  decodeTaskState,
  encodeGroupMeta,
  encodeTaskState,
  isCompleted,
  waitForAnnouncedState,
  mergeTaskState,
  newGroupMeta,
  redactUrl,
} from '@machinery-ts/core';

export interface AmqpBackendOptions {
  /** AMQP URL. Never logged with its password. @default amqp://guest:guest@localhost:5672/ */
  readonly url?: string;
  /** Go `AMQP.Exchange`; task queues are bound to it. @default 'machinery_exchange' */
  readonly exchange?: string;
  /** Go `AMQP.ExchangeType`; must match how the exchange was first declared. @default 'direct' */
  readonly exchangeType?: string;
  /** Seconds a state lives; Go's 3600 when 0. @default 3600 */
  readonly resultsExpireIn?: number;
  /** How long an operation waits for a lost connection to come back. @default 30000 */
  readonly operationTimeoutMs?: number;
  /** How long a chord step or group read waits for the group document held by another process. @default 30000 */
  readonly groupLockTimeoutMs?: number;
  /** Fallback re-read while waiting, for states written by Go (which announces nothing). @default 500 */
  readonly waitPollMs?: number;
  /** Reconnect back-off bounds. @default 100 / 5000 */
  readonly reconnectMinMs?: number;
  readonly reconnectMaxMs?: number;
  /**
   * How long one connection attempt may take, the AMQP handshake included, before it counts as
   * failed and is retried: a server still starting (or a port that is not RabbitMQ) can accept
   * the socket and never answer. @default 10000
   */
  readonly connectTimeoutMs?: number;
  /** AMQP heartbeat when the URL has none. @default 10 */
  readonly heartbeatSeconds?: number;
  /** Transport errors while reconnecting (no URL password in them). */
  readonly onError?: (error: Error) => void;
}

/** Go's name for the queue whose existence means "chord fired" (`amqmChordTriggeredQueue`). */
export const chordTriggeredQueue = (groupUUID: string): string => `${groupUUID}_chord_triggered`;
/** Our group document. Not `<groupUUID>`: Go fills that queue with completed member states. */
export const groupMetaQueue = (groupUUID: string): string => `${groupUUID}.machinery-ts.group`;
/** Topic exchange on which every state write is announced (routing key = task UUID). */
export const STATE_EVENTS_EXCHANGE = 'machinery-ts.state-events';

/** Go's declare args of a task-state queue: both int32 milliseconds (`amqp.Table{… int32(ms)}`). */
export function goStateQueueArgs(resultsExpireIn: number): Record<string, { '!': 'int'; value: number }> {
  const ms = (resultsExpireIn || 3600) * 1000;
  return { 'x-message-ttl': { '!': 'int', value: ms }, 'x-expires': { '!': 'int', value: ms } };
}

interface Conn {
  readonly model: ChannelModel;
  /** Publishes only (never a declare, whose refusal would close it under other writes' confirms). */
  pub: Promise<PubChannel> | null;
  /** Announcements, best effort, apart from the confirmed writes. */
  announce: Promise<Channel> | null;
  alive: boolean;
}

interface PubChannel {
  readonly ch: ConfirmChannel;
  /** Routing keys of mandatory publishes the server returned as unroutable, not yet claimed. */
  readonly returned: Map<string, number>;
}

type Published = 'ack' | 'nack' | 'returned';

/** Messages read in one pass over a task queue; Go appends at most a handful per task. */
const MAX_SCAN = 256;
/**
 * Pauses before a state queue that exists but looked empty is read again. Another reader holds
 * its message for one round trip (RabbitMQ hides unacked messages from `basic.get`), and a
 * writer's purge is followed at once by its publish; both are over within milliseconds.
 */
const EMPTY_RETRY_MS = [4, 8, 16, 32, 64, 128, 128] as const;
const MEMO_GROUPS = 1000;
/** Member states read at once by a chord step, which stops at the first batch with an incomplete one. */
const READ_BATCH = 16;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** amqplib rejects a get with the server's close frame, and other RPCs with an Error carrying `code`. */
function isNotFound(err: unknown): boolean {
  const e = err as { code?: unknown; fields?: { replyCode?: unknown } } | null;
  return e?.code === 404 || e?.fields?.replyCode === 404;
}

/**
 * amqplib's `close()` settles only on the server's close-ok; if the connection dies first
 * (a broker shutdown) it never settles. The channel's 'close' event comes either way.
 */
function closeChannel(ch: Channel): Promise<void> {
  return new Promise<void>((resolve) => {
    ch.once('close', () => resolve());
    ch.close().then(
      () => resolve(),
      () => resolve(),
    );
  });
}

function declareEvents(ch: Channel): Promise<unknown> {
  return ch.assertExchange(STATE_EVENTS_EXCHANGE, 'topic', { durable: false, autoDelete: false });
}

function withHeartbeat(url: string, seconds: number): string {
  try {
    const u = new URL(url);
    if (u.searchParams.get('heartbeat') === null) u.searchParams.set('heartbeat', String(seconds));
    return u.toString();
  } catch {
    return url;
  }
}

/**
 * Go Machinery's AMQP result backend layout (`v2/backends/amqp`), kept on one long-lived
 * connection, with reads that leave the state in place. See README.md for the design.
 */
export class AmqpBackend implements Backend {
  readonly capabilities: BackendCapabilities = { waitForState: true, mayEvict: false };
  readonly #url: string;
  readonly #exchange: string;
  readonly #exchangeType: string;
  readonly #expireIn: number;
  readonly #opTimeoutMs: number;
  readonly #lockTimeoutMs: number;
  readonly #pollMs: number;
  readonly #reconnector: Reconnector<Conn>;
  readonly #connectTimeoutMs: number;
  readonly #onError: ((e: Error) => void) | undefined;
  /** Completed member states already seen, per group, so repeated chord steps re-read only the rest. */
  readonly #memo = new Map<string, Map<string, TaskState>>();
  readonly #waiters = new Set<() => void>();
  readonly #reading = new Map<string, Promise<string | null>>();
  #events: Promise<{ ch: Channel; queue: string }> | null = null;
  readonly #listeners = new Map<string, Set<() => void>>();
  #conn: Conn | null = null;
  #closed = false;

  constructor(options: AmqpBackendOptions = {}) {
    this.#url = withHeartbeat(options.url ?? 'amqp://guest:guest@localhost:5672/', options.heartbeatSeconds ?? 10);
    this.#exchange = options.exchange ?? 'machinery_exchange';
    this.#exchangeType = options.exchangeType ?? 'direct';
    this.#expireIn = options.resultsExpireIn || 3600;
    if (!Number.isInteger(this.#expireIn) || this.#expireIn < 0 || this.#expireIn * 1000 > 0x7fffffff) {
      // Go converts the milliseconds with int32(): a larger value wraps and RabbitMQ refuses it.
      throw new MachineryError('CONFIG', `resultsExpireIn must be a whole number of seconds up to 2147483 (Go sends int32 milliseconds), got ${options.resultsExpireIn}`);
    }
    this.#opTimeoutMs = options.operationTimeoutMs ?? 30_000;
    this.#lockTimeoutMs = options.groupLockTimeoutMs ?? 30_000;
    this.#pollMs = options.waitPollMs ?? 500;
    this.#reconnector = new Reconnector({
      what: `AMQP connect to ${redactUrl(this.#url)}`,
      attempt: () => this.#connect(),
      isClosed: () => this.#closed,
      closedError: () => new ClosedError('AmqpBackend'),
      // 406 PRECONDITION_FAILED: the exchange exists with another type or flags.
      configMismatch: (err) => ((err as { code?: unknown }).code === 406 ? `exchange "${this.#exchange}" as ${this.#exchangeType}` : undefined),
      report: (e) => this.#report(e),
      minMs: options.reconnectMinMs ?? 100,
      maxMs: options.reconnectMaxMs ?? 5_000,
    });
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#onError = options.onError;
  }

  // ---- connection ------------------------------------------------------------------------

  #report(err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    e.message = e.message.split(this.#url).join(redactUrl(this.#url));
    this.#onError?.(e);
  }

  #connection(): Promise<Conn> {
    if (!this.#closed && this.#conn?.alive) return Promise.resolve(this.#conn);
    return this.#reconnector.connect();
  }

  /** One connection attempt: the connection with the exchange declared, or closed again. */
  async #connect(): Promise<Conn> {
    const model = await amqp.connect(this.#url, { timeout: this.#connectTimeoutMs });
    try {
      const conn: Conn = { model, pub: null, announce: null, alive: true };
      model.on('error', (e: Error) => this.#report(e));
      model.on('close', () => this.#lost(conn));
      if (this.#closed) throw new ClosedError('AmqpBackend');
      if (this.#exchange) {
        // Go's exchange declare, so our bindings have something to bind to.
        await this.#onFreshChannel(conn, (ch) =>
          ch.assertExchange(this.#exchange, this.#exchangeType, { durable: true, autoDelete: false, internal: false }),
        );
      }
      this.#conn = conn;
      return conn;
    } catch (err) {
      void model.close().catch(() => {});
      throw err;
    }
  }

  #lost(conn: Conn): void {
    conn.alive = false;
    // One that never became the connection is its attempt's to report and retry: reconnecting
    // here too would retry a failure that configMismatch ended as hopeless.
    if (this.#conn !== conn) return;
    this.#conn = null;
    if (this.#events) {
      this.#events = null;
      // Listeners re-bind on the next connection; the waiters' fallback poll covers the gap.
      if (this.#listeners.size > 0 && !this.#closed) void this.#eventQueue().catch(() => {});
    }
    if (!this.#closed) this.#report(new Error(`AMQP connection to ${redactUrl(this.#url)} lost; reconnecting`));
  }

  /**
   * Runs `fn` on a live connection. When the connection drops under it, waits for the next
   * one and runs it again, until `operationTimeoutMs` has passed; every operation here is
   * safe to repeat.
   */
  async #withConnection<T>(what: string, fn: (conn: Conn) => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.#opTimeoutMs;
    for (;;) {
      if (this.#closed) throw new ClosedError('AmqpBackend');
      let timer: NodeJS.Timeout | undefined;
      let conn: Conn;
      try {
        conn = await Promise.race([
          this.#connection(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`AMQP ${what} timed out after ${this.#opTimeoutMs} ms waiting for a connection to ${redactUrl(this.#url)}`)),
              Math.max(0, deadline - Date.now()),
            );
          }),
        ]);
      } finally {
        clearTimeout(timer);
      }
      try {
        return await fn(conn);
      } catch (err) {
        if (!conn.alive && !this.#closed && Date.now() < deadline) continue;
        throw err;
      }
    }
  }

  /**
   * A channel of its own per read: a 404 for a missing queue closes the channel, which must
   * not fail the reads and waits sharing it. Closing it requeues whatever it still holds.
   */
  async #onFreshChannel<T>(conn: Conn, fn: (ch: Channel) => Promise<T>): Promise<T> {
    const ch = await conn.model.createChannel();
    let open = true;
    ch.on('error', () => {});
    ch.on('close', () => {
      open = false;
    });
    try {
      return await fn(ch);
    } finally {
      if (open) await closeChannel(ch);
    }
  }

  #pubChannel(conn: Conn): Promise<PubChannel> {
    if (!conn.pub) {
      const p = (async () => {
        const ch = await conn.model.createConfirmChannel();
        const pub: PubChannel = { ch, returned: new Map() };
        ch.on('error', () => {});
        ch.on('return', (msg: Message) => {
          const rk = msg.fields.routingKey;
          pub.returned.set(rk, (pub.returned.get(rk) ?? 0) + 1);
        });
        ch.on('close', () => {
          if (conn.pub === p) conn.pub = null;
        });
        return pub;
      })();
      conn.pub = p;
      p.catch(() => {
        if (conn.pub === p) conn.pub = null;
      });
    }
    return conn.pub;
  }

  /** A mandatory publish with confirm. RabbitMQ sends `basic.return` before the ack, so an unroutable message is known by then. */
  #publish(pub: PubChannel, exchange: string, routingKey: string, body: Buffer, props: Options.Publish): Promise<Published> {
    return new Promise<Published>((resolve, reject) => {
      try {
        pub.ch.publish(exchange, routingKey, body, { ...props, mandatory: true }, (err: unknown) => {
          const n = pub.returned.get(routingKey) ?? 0;
          if (n > 0) {
            if (n === 1) pub.returned.delete(routingKey);
            else pub.returned.set(routingKey, n - 1);
            resolve('returned');
          } else if (err) {
            // A closed channel also fails outstanding confirms; only a live channel's nack is a refusal.
            if ((err as Error).message === 'message nacked') resolve('nack');
            else reject(err instanceof Error ? err : new Error(String(err)));
          } else resolve('ack');
        });
      } catch (err) {
        reject(err as Error);
      }
    });
  }

  // ---- task states ---------------------------------------------------------------------

  /**
   * Declares the task queue exactly as Go's `updateState` does, empties it, and publishes the
   * merged document, so the queue holds one message: the latest state (Go's destructive
   * `GetState` then reads the latest too). Readers take the last message anyway, which keeps
   * them right when a Go writer appended, or two writers interleaved purge and publish.
   */
  async setState(update: StateUpdate): Promise<void> {
    const old = update.state === TaskStates.PENDING ? null : await this.getState(update.taskUUID);
    const body = Buffer.from(encodeTaskState(mergeTaskState(update, old)), 'utf8');
    const q = update.taskUUID;
    await this.#withConnection('state write', async (conn) => {
      for (let attempt = 0; ; attempt++) {
        await this.#onFreshChannel(conn, async (ch) => {
          await ch.assertQueue(q, { durable: false, autoDelete: true, exclusive: false, arguments: goStateQueueArgs(this.#expireIn) });
          if (this.#exchange) await ch.bindQueue(q, this.#exchange, q);
          await ch.purgeQueue(q);
        });
        const pub = await this.#pubChannel(conn);
        // Straight to the queue through the default exchange: with a fanout or headers
        // exchange Go's route would copy the state into every other task's queue.
        const r = await this.#publish(pub, '', q, body, { contentType: 'application/json', deliveryMode: 2 });
        if (r === 'ack') break;
        // Returned: the queue vanished between declare and publish (purged by someone); again.
        if (attempt >= 2) throw new Error(`AMQP state write of ${q}: ${r === 'nack' ? 'publish refused' : 'queue kept vanishing'}`);
      }
    });
    // A read already in flight may have started before this write: later reads start afresh.
    this.#reading.delete(q);
    this.#announce(q, update.state);
  }

  /** Writes of different tasks run side by side on the channel; writes of one task keep their order. */
  async setStates(updates: readonly StateUpdate[]): Promise<void> {
    const byTask = new Map<string, StateUpdate[]>();
    for (const u of updates) byTask.set(u.taskUUID, [...(byTask.get(u.taskUUID) ?? []), u]);
    await Promise.all(
      [...byTask.values()].map(async (list) => {
        for (const u of list) await this.setState(u);
      }),
    );
  }

  async getState(taskUUID: string): Promise<TaskState | null> {
    const text = await this.#readLatest(taskUUID);
    return text === null ? null : decodeTaskState(text);
  }

  /** Concurrent reads of one queue in this process share one pass, so they do not hide the message from each other. */
  #readLatest(queue: string): Promise<string | null> {
    let p = this.#reading.get(queue);
    if (!p) {
      const flight = this.#scanWithRetry(queue).finally(() => {
        if (this.#reading.get(queue) === flight) this.#reading.delete(queue);
      });
      p = flight;
      this.#reading.set(queue, p);
    }
    return p;
  }

  /**
   * The last message of a task queue, left in place. `null` when the queue does not exist, or
   * stays empty over a few jittered re-reads: RabbitMQ hides a message from `basic.get` while
   * another reader holds it, and a writer's purge is followed at once by its publish.
   */
  async #scanWithRetry(queue: string): Promise<string | null> {
    for (let attempt = 0; ; attempt++) {
      const r = await this.#withConnection('state read', (conn) => this.#onFreshChannel(conn, (ch) => this.#scan(ch, queue)));
      if (r === 'absent') return null;
      if (r !== 'empty') return r;
      const pause = EMPTY_RETRY_MS[attempt];
      if (pause === undefined) return null;
      await sleep(pause / 2 + Math.random() * pause);
    }
  }

  /**
   * `basic.get` every message (get-ok's message count says when to stop, so the usual single
   * message is held for no extra round trip), ack the older ones, so the queue is compacted
   * to the latest state, and requeue the last.
   */
  async #scan(ch: Channel, queue: string): Promise<string | 'absent' | 'empty'> {
    const got: GetMessage[] = [];
    try {
      for (;;) {
        const m = await ch.get(queue, { noAck: false });
        if (!m) break;
        got.push(m);
        if (m.fields.messageCount === 0 || got.length >= MAX_SCAN) break;
      }
    } catch (err) {
      if (isNotFound(err)) return 'absent';
      throw err;
    }
    const last = got.at(-1);
    if (!last) return 'empty';
    const older = got.at(-2);
    if (older) ch.ack(older, true);
    ch.nack(last, false, true);
    return last.content.toString('utf8');
  }

  async purgeState(taskUUID: string): Promise<void> {
    await this.#withConnection('purge', (conn) => this.#onFreshChannel(conn, (ch) => ch.deleteQueue(taskUUID)));
  }

  // ---- groups and chords -----------------------------------------------------------------

  /**
   * Our group document lives alone in `<groupUUID>.machinery-ts.group`. That one message is
   * also the group's mutex: whoever holds it unacked holds the group (see `#withGroup`).
   */
  async initGroup(groupUUID: string, taskUUIDs: readonly string[]): Promise<void> {
    const body = Buffer.from(encodeGroupMeta(newGroupMeta(groupUUID, taskUUIDs)), 'utf8');
    const q = groupMetaQueue(groupUUID);
    this.#memo.delete(groupUUID);
    await this.#withConnection('group write', async (conn) => {
      await this.#onFreshChannel(conn, async (ch) => {
        await ch.assertQueue(q, { durable: true, autoDelete: false, exclusive: false, arguments: { 'x-expires': this.#expireIn * 1000 } });
        await ch.purgeQueue(q);
        // A re-initialised group starts untriggered.
        await ch.deleteQueue(chordTriggeredQueue(groupUUID));
      });
      const pub = await this.#pubChannel(conn);
      const r = await this.#publish(pub, '', q, body, { contentType: 'application/json', deliveryMode: 2 });
      if (r !== 'ack') throw new Error(`AMQP group write of ${groupUUID}: ${r}`);
    });
  }

  async getGroupMeta(groupUUID: string): Promise<GroupMeta | null> {
    return this.#withGroup(groupUUID, async (meta) => (meta ? { ...meta, ChordTriggered: await this.#isTriggered(groupUUID) } : null));
  }

  async groupTaskStates(groupUUID: string, count: number): Promise<(TaskState | null)[]> {
    const meta = await this.getGroupMeta(groupUUID);
    if (!meta) return [];
    return Promise.all(meta.TaskUUIDs.slice(0, count || undefined).map((id) => this.getState(id)));
  }

  /**
   * Runs `fn` while holding the group document. A consumer with prefetch 1 receives the one
   * message only when nobody else holds it; RabbitMQ queues the waiters and hands it on when
   * the holder's channel closes (or its process dies), so nothing polls.
   */
  async #withGroup<T>(groupUUID: string, fn: (meta: GroupMeta | null) => Promise<T>): Promise<T> {
    const q = groupMetaQueue(groupUUID);
    return this.#withConnection('group read', (conn) =>
      this.#onFreshChannel(conn, async (ch) => {
        let msg: Message | false;
        const id = Math.random().toString(36).slice(2, 6);
        const t0 = Date.now();
        const log = (w: string) => process.env.DBG && console.error(`${Date.now() - t0} ${id} ${w}`);
        log('start');
        try {
          msg = await ch.get(q, { noAck: false });
          log(`got ${!!msg}`);
        } catch (err) {
          if (isNotFound(err)) return fn(null);
          throw err;
        }
        if (!msg) msg = await this.#awaitDelivery(ch, q, groupUUID);
        log(`delivered ${!!msg}`);
        try { return await fn(msg ? decodeGroupMeta(msg.content.toString('utf8')) : null); } finally { log('fn done'); }
      }),
    );
  }

  async #awaitDelivery(ch: Channel, q: string, groupUUID: string): Promise<Message | false> {
    await ch.prefetch(1);
    return new Promise<Message | false>((resolve, reject) => {
      let tag: string | undefined;
      let settled = false;
      ch.once('close', () => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        reject(new Error(`AMQP group ${groupUUID}: channel closed while waiting for its document`));
      });
      const timer = setTimeout(() => {
        settled = true;
        if (tag) void ch.cancel(tag).catch(() => {});
        reject(new Error(`AMQP group ${groupUUID}: its document stayed held by another process for ${this.#lockTimeoutMs} ms`));
      }, this.#lockTimeoutMs);
      ch.consume(
        q,
        (msg) => {
          // A delivery after giving up stays unacked and goes back when the channel closes.
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          // null: the queue was deleted under us (the group was purged).
          resolve(msg ?? false);
        },
        { noAck: false },
      ).then(
        (ok) => {
          tag = ok.consumerTag;
        },
        (err: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          if (isNotFound(err)) resolve(false);
          else reject(err as Error);
        },
      );
    });
  }

  /** Fired ⇔ Go's `<groupUUID>_chord_triggered` queue exists and holds our claim. */
  async #isTriggered(groupUUID: string): Promise<boolean> {
    return this.#withConnection('chord check', (conn) =>
      this.#onFreshChannel(conn, async (ch) => {
        try {
          return (await ch.checkQueue(chordTriggeredQueue(groupUUID))).messageCount > 0;
        } catch (err) {
          if (isNotFound(err)) return false;
          throw err;
        }
      }),
    );
  }

  /**
   * The first-writer-wins claim: a queue that holds at most one message and refuses (nacks)
   * every further publish. Only an acked publish fires the chord, so even two holders of the
   * group document (a holder cut off by a network partition keeps believing it holds it)
   * cannot both fire. Its name is Go's, whose `TriggerChord` answers false once it exists.
   */
  async #claim(groupUUID: string, token: string): Promise<boolean> {
    const q = chordTriggeredQueue(groupUUID);
    let first: Conn | undefined;
    return this.#withConnection('chord claim', async (conn) => {
      first ??= conn;
      for (let attempt = 0; ; attempt++) {
        await this.#onFreshChannel(conn, (ch) =>
          ch.assertQueue(q, {
            durable: true,
            autoDelete: false,
            exclusive: false,
            arguments: { 'x-max-length': 1, 'x-overflow': 'reject-publish', 'x-expires': this.#expireIn * 1000 },
          }),
        );
        const pub = await this.#pubChannel(conn);
        const r = await this.#publish(pub, '', q, Buffer.from(token), { deliveryMode: 2 });
        if (r === 'ack') return true;
        // Refused: someone's claim is there. Ours, if a connection lost before its confirm
        // arrived made this a second attempt.
        if (r === 'nack') return conn !== first && (await this.#claimToken(groupUUID)) === token;
        if (attempt >= 2) throw new Error(`AMQP chord claim of ${groupUUID}: the claim queue kept vanishing`);
      }
    });
  }

  /**
   * The claim's body, read while holding the group (so no other chord step publishes
   * meanwhile). The read holds the message for a moment, and RabbitMQ's `x-max-length` counts
   * only ready messages, so this is never done outside the group.
   */
  async #claimToken(groupUUID: string): Promise<string | null> {
    return this.#withConnection('chord check', (conn) =>
      this.#onFreshChannel(conn, async (ch) => {
        try {
          const m = await ch.get(chordTriggeredQueue(groupUUID), { noAck: false });
          return m ? m.content.toString('utf8') : null;
        } catch (err) {
          if (isNotFound(err)) return null;
          throw err;
        }
      }),
    );
  }

  async triggerChord(groupUUID: string, mode: ChordTriggerMode): Promise<ChordTriggerResult> {
    // Names this step's claim, so a step repeated after a lost connection knows its own claim.
    const token = `${groupUUID} ${randomUUID()}`;
    let claimed = false;
    return this.#withGroup(groupUUID, async (meta): Promise<ChordTriggerResult> => {
      if (!meta) return { fired: false, reason: 'no-group' };
      if (await this.#isTriggered(groupUUID)) {
        if (!claimed || (await this.#claimToken(groupUUID)) !== token) return { fired: false, reason: 'already-triggered' };
        const states = await this.#memberStates(groupUUID, meta.TaskUUIDs, false);
        this.#memo.delete(groupUUID);
        return { fired: true, states: states ?? [] };
      }
      if (mode.when === 'complete' && meta.TaskUUIDs.length < mode.count) return { fired: false, reason: 'incomplete' };
      const states = await this.#memberStates(groupUUID, meta.TaskUUIDs, mode.when === 'complete');
      if (mode.when === 'complete' && !states) return { fired: false, reason: 'incomplete' };
      const all = states ?? (await this.#memberStates(groupUUID, meta.TaskUUIDs, false));
      if (!all) return { fired: false, reason: 'incomplete' };
      claimed = true;
      if (!(await this.#claim(groupUUID, token))) return { fired: false, reason: 'already-triggered' };
      this.#memo.delete(groupUUID);
      return { fired: true, states: all };
    });
  }

  /**
   * Member states in group order, reading only those not yet seen completed. With
   * `stopAtIncomplete`, `null` as soon as one member is not completed.
   */
  async #memberStates(groupUUID: string, ids: readonly string[], stopAtIncomplete: boolean): Promise<(TaskState | null)[] | null> {
    let seen = this.#memo.get(groupUUID);
    if (!seen) {
      seen = new Map();
      this.#memo.set(groupUUID, seen);
      if (this.#memo.size > MEMO_GROUPS) {
        const oldest = this.#memo.keys().next().value;
        if (oldest !== undefined) this.#memo.delete(oldest);
      }
    }
    const out: (TaskState | null)[] = [];
    for (let i = 0; i < ids.length; i += READ_BATCH) {
      const batch = await Promise.all(
        ids.slice(i, i + READ_BATCH).map(async (id) => {
          const known = seen.get(id);
          if (known) return known;
          const s = await this.getState(id);
          if (s && isCompleted(s)) seen.set(id, s);
          return s;
        }),
      );
      if (stopAtIncomplete && !batch.every(isCompleted)) return null;
      out.push(...batch);
    }
    return out;
  }

  /** Deletes the claim while holding the group, so no chord step is between its check and its claim. */
  async resetChordTrigger(groupUUID: string): Promise<void> {
    await this.#withGroup(groupUUID, () =>
      this.#withConnection('chord reset', (conn) => this.#onFreshChannel(conn, (ch) => ch.deleteQueue(chordTriggeredQueue(groupUUID)))),
    );
  }

  /** Removes our group document and claim, and Go's `<groupUUID>` queue, as Go's `PurgeGroupMeta` does. */
  async purgeGroupMeta(groupUUID: string): Promise<void> {
    this.#memo.delete(groupUUID);
    await this.#withConnection('purge', (conn) =>
      this.#onFreshChannel(conn, async (ch) => {
        await ch.deleteQueue(groupMetaQueue(groupUUID));
        await ch.deleteQueue(chordTriggeredQueue(groupUUID));
        await ch.deleteQueue(groupUUID);
      }),
    );
  }

  // ---- waiting ---------------------------------------------------------------------------

  /** Announces a write, best effort: waiters also re-read on a slow timer. */
  #announce(taskUUID: string, state: string): void {
    const conn = this.#conn;
    if (!conn?.alive) return;
    conn.announce ??= (async () => {
      const ch = await conn.model.createChannel();
      ch.on('error', () => {});
      ch.on('close', () => {
        conn.announce = null;
      });
      await declareEvents(ch);
      return ch;
    })();
    conn.announce.then((ch) => ch.publish(STATE_EVENTS_EXCHANGE, taskUUID, Buffer.from(state))).catch(() => {
      conn.announce = null;
    });
  }

  /** One exclusive, server-named queue per backend, bound once per awaited task. */
  #eventQueue(): Promise<{ ch: Channel; queue: string }> {
    this.#events ??= (async () => {
      const conn = await this.#connection();
      const ch = await conn.model.createChannel();
      ch.on('error', () => {});
      await declareEvents(ch);
      const { queue } = await ch.assertQueue('', { exclusive: true, autoDelete: true, durable: false });
      await ch.consume(
        queue,
        (msg) => {
          if (!msg) return;
          for (const wake of [...(this.#listeners.get(msg.fields.routingKey) ?? [])]) wake();
        },
        { noAck: true },
      );
      for (const id of this.#listeners.keys()) await ch.bindQueue(queue, STATE_EVENTS_EXCHANGE, id);
      return { ch, queue };
    })();
    const p = this.#events;
    p.catch(() => {
      if (this.#events === p) this.#events = null;
    });
    return p;
  }

  async #listen(taskUUID: string, wake: () => void): Promise<void> {
    let set = this.#listeners.get(taskUUID);
    const first = !set;
    if (!set) {
      set = new Set();
      this.#listeners.set(taskUUID, set);
    }
    set.add(wake);
    const ev = await this.#eventQueue();
    if (first) await ev.ch.bindQueue(ev.queue, STATE_EVENTS_EXCHANGE, taskUUID);
  }

  #unlisten(taskUUID: string, wake: () => void): void {
    const set = this.#listeners.get(taskUUID);
    if (!set) return;
    set.delete(wake);
    if (set.size > 0) return;
    this.#listeners.delete(taskUUID);
    const ev = this.#events;
    if (ev && !this.#closed) void ev.then((e) => e.ch.unbindQueue(e.queue, STATE_EVENTS_EXCHANGE, taskUUID)).catch(() => {});
  }

  /**
   * Resolves once the state is completed. Our writers announce each write on a topic
   * exchange; Go's writers announce nothing, so a slow re-read (`waitPollMs`) covers them.
   */
  async waitForState(taskUUID: string, options: WaitOptions): Promise<TaskState | null> {
    if (this.#closed || options.signal?.aborted) return this.getState(taskUUID);
    return waitForAnnouncedState({
      ...options,
      read: () => this.getState(taskUUID),
      // The announcement only says "written": every wake reads.
      listen: (wake) => {
        const onWrite = (): void => wake();
        return { ready: this.#listen(taskUUID, onWrite), stop: () => this.#unlisten(taskUUID, onWrite) };
      },
      pollMs: this.#pollMs,
      closing: this.#waiters,
      isClosed: () => this.#closed,
    });
  }

  /** Closes the connection; a chord step in progress gives its group document back by that. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const end of [...this.#waiters]) end();
    this.#listeners.clear();
    this.#events = null;
    // An attempt under way when closing began either hands its connection over or closes it.
    await this.#reconnector.settled();
    const conn = this.#conn;
    this.#conn = null;
    if (conn) {
      conn.alive = false;
      // As with channels, close-ok may never come from a dying broker.
      await new Promise<void>((resolve) => {
        conn.model.once('close', () => resolve());
        conn.model.close().then(
          () => resolve(),
          () => resolve(),
        );
      });
    }
  }

}
