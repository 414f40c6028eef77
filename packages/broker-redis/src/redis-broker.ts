import { randomBytes } from 'node:crypto';
import {
  type Broker,
  type BrokerCapabilities,
  ClosedError,
  type ConsumeOptions,
  type Delivery,
  type Outcome,
  type PlainWrite,
  type ScriptedWrite,
  type Signature,
  type Subscription,
  corkForTick,
  encodeSignature,
  parseRfc3339,
} from '@machinery-ts/core';
import { Redis, type RedisOptions } from 'ioredis';
import { LuaScript } from './lua-script.js';

/**
 * Redis broker, wire-compatible with Go Machinery v2 (task lists and the `delayed_tasks`
 * ZSET), with at-least-once delivery added on top: every claimed message sits in a
 * per-consumer in-flight store guarded by a lease until it is settled; a reaper returns
 * the in-flight messages of consumers whose lease ran out to the head of their queue.
 *
 * Two in-flight stores per consumer: batches claimed from a non-empty queue go into a HASH
 * under a numbered field (acked by number: a short HDEL instead of sending the body back
 * for an LREM), and the one message a `BLMOVE` waits for on an empty queue into a LIST.
 */
export interface RedisBrokerOptions {
  /** `redis://[user:pass@]host:port/db`; ignored when `client` is given. @default 'redis://127.0.0.1:6379' */
  readonly url?: string;
  /** A client to use (stays open on `close`). Blocking connections are duplicated from it. */
  readonly client?: Redis;
  /** Queue for signatures without a routing key. @default 'machinery_tasks' */
  readonly defaultQueue?: string;
  /** Go's `DelayedTasksKey`. @default 'delayed_tasks' */
  readonly delayedTasksKey?: string;
  /** Consumer lease; renewed every leaseMs/3. @default 30000 */
  readonly leaseMs?: number;
  /** How often dead consumers are looked for (cluster-wide throttled). @default leaseMs / 2 */
  readonly reapIntervalMs?: number;
  /** Longest sleep of the delayed-task promoter between polls. @default 100 */
  readonly delayedPollMs?: number;
  /**
   * A publish still waiting for the connection after this long rejects. Also the most each Redis
   * call of a stopping consumer and of `close()` waits: a shutdown must end while Redis is unreachable.
   * @default 10000
   */
  readonly publishTimeoutMs?: number;
  /** Key prefix of the at-least-once bookkeeping. @default 'machinery-ts:' */
  readonly keyPrefix?: string;
}

/**
 * Lua shared by the claims: moves up to n messages from the head of queue q into the
 * claimed hash under consecutive numbers (field '#' holds the last number given) and
 * returns number, body, number, body, …
 */
const CLAIM_INTO = `
local function claim_into(q, claimed, n)
  local bodies = redis.call('LPOP', q, n)
  if not bodies then return {} end
  local last = redis.call('HINCRBY', claimed, '#', #bodies)
  local out = {}
  for i, body in ipairs(bodies) do
    out[2 * i - 1] = tostring(last - #bodies + i)
    out[2 * i] = body
  end
  redis.call('HSET', claimed, unpack(out))
  return out
end
`;

/** KEYS: queue, claimed hash. ARGV: most messages to take. */
const CLAIM = new LuaScript(`${CLAIM_INTO}
return claim_into(KEYS[1], KEYS[2], ARGV[1])`);

/**
 * KEYS: claimed hash, queue. ARGV: most messages to take, then the numbers acked. The acks
 * of a turn and the claim of the slots they free, in one round trip.
 */
const ACK_CLAIM = new LuaScript(`${CLAIM_INTO}
for i = 2, #ARGV, 1000 do redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
return claim_into(KEYS[2], KEYS[1], ARGV[1])`);

/**
 * Lua shared by the reaper and release: puts a consumer's in-flight messages (claimed hash
 * in number order, then the blocking list) back at the head of queue q, oldest first.
 */
const RETURN_INFLIGHT = `
local function return_inflight(claimed, inflight, q)
  local moved = 0
  local all = redis.call('HGETALL', claimed)
  local held = {}
  for i = 1, #all, 2 do
    if all[i] ~= '#' then held[#held + 1] = { tonumber(all[i]), all[i + 1] } end
  end
  table.sort(held, function(a, b) return a[1] < b[1] end)
  for i = #held, 1, -1 do
    redis.call('LPUSH', q, held[i][2])
    moved = moved + 1
  end
  while true do
    local v = redis.call('LMOVE', inflight, q, 'RIGHT', 'LEFT')
    if not v then break end
    moved = moved + 1
  end
  redis.call('DEL', claimed, inflight)
  return moved
end
`;

/**
 * KEYS: claimed hash, queue. ARGV: numbers, oldest first. Puts those still in the hash back at
 * the queue head, oldest first (claims whose reply never reached this process).
 */
const RETURN_CLAIMED = new LuaScript(`
local moved = 0
for i = #ARGV, 1, -1 do
  local body = redis.call('HGET', KEYS[1], ARGV[i])
  if body then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('LPUSH', KEYS[2], body)
    moved = moved + 1
  end
end
return moved`);

/** KEYS: claimed hash, target. ARGV: number, body, mode, extra. Acts only if the message was still in flight. */
const SETTLE_CLAIMED = new LuaScript(`
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
if ARGV[3] == 'requeue' then redis.call('LPUSH', KEYS[2], ARGV[2])
elseif ARGV[3] == 'later' then redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
elseif ARGV[3] == 'dead' then redis.call('RPUSH', KEYS[2], ARGV[4]) end
return 1`);

/** KEYS: inflight list, target. ARGV: body, mode, extra. Acts only if the message was still in flight. */
const SETTLE = new LuaScript(`
local removed = redis.call('LREM', KEYS[1], 1, ARGV[1])
if removed == 0 then return 0 end
if ARGV[2] == 'requeue' then redis.call('LPUSH', KEYS[2], ARGV[1])
elseif ARGV[2] == 'later' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
elseif ARGV[2] == 'dead' then redis.call('RPUSH', KEYS[2], ARGV[3]) end
return 1`);

/** KEYS: inflight. ARGV: the bodies to drop (acks gathered in one turn). */
const ACK = new LuaScript(`
for i = 1, #ARGV do redis.call('LREM', KEYS[1], 1, ARGV[i]) end
return #ARGV`);

/**
 * KEYS: inflight list, queue, claimed hash. ARGV: most messages to take, then the bodies
 * acked. The acks of blocking claims with the claim of the slots they free: while messages
 * come one BLMOVE at a time, this is where a consumer picks up a burst in one batch.
 */
const ACK_LIST_CLAIM = new LuaScript(`${CLAIM_INTO}
for i = 2, #ARGV do redis.call('LREM', KEYS[1], 1, ARGV[i]) end
return claim_into(KEYS[2], KEYS[3], ARGV[1])`);

/** KEYS: leases, consumers. ARGV: leaseMs, then (id, queue) pairs. Uses the server clock. */
const HEARTBEAT = new LuaScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local exp = now + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], exp, ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
return now`);

/** KEYS: leases, consumers, lock. ARGV: lockOwner, intervalMs, inflightPrefix, claimedPrefix. */
const REAP = new LuaScript(`${RETURN_INFLIGHT}
if not redis.call('SET', KEYS[3], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)
local moved = 0
for _, id in ipairs(dead) do
  local q = redis.call('HGET', KEYS[2], id)
  if q then moved = moved + return_inflight(ARGV[4] .. id, ARGV[3] .. id, q)
  else redis.call('DEL', ARGV[4] .. id, ARGV[3] .. id) end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return moved`);

/** KEYS: reaper lock. ARGV: owner. Deletes the lock only if this broker holds it. */
const DROP_REAPER_LOCK = new LuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`);

/** KEYS: claimed, inflight, queue, leases, consumers. ARGV: id. Returns everything in flight to the queue head. */
const RELEASE = new LuaScript(`${RETURN_INFLIGHT}
local moved = return_inflight(KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
return moved`);

/** KEYS: delayed. ARGV: now_ns, limit, fallback queue. Moves due members to their RoutingKey list. */
const PROMOTE = new LuaScript(`
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local q = ARGV[3]
  local ok, dec = pcall(cjson.decode, m)
  if ok and type(dec) == 'table' and type(dec.RoutingKey) == 'string' and dec.RoutingKey ~= '' then q = dec.RoutingKey end
  redis.call('ZREM', KEYS[1], m)
  redis.call('RPUSH', q, m)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or false}`);

const PROMOTE_BATCH = 200;

/**
 * A backend's scripted writes (`ScriptedWrite.lua`, wrapped as a function of its own KEYS and
 * ARGV), then acks, then the claim of the slots they free: a finished task's state, its ack
 * and the next messages in one round trip. A write that raises aborts the script before any
 * ack, so no message is acked without its state.
 *
 * KEYS: the acks' store (claimed hash or in-flight list), queue, claimed hash, then the
 * writes' keys. ARGV: 'hash' | 'list', most messages to take, the number of shared
 * arguments, the number of arguments per write, then the shared arguments, each write's
 * arguments, and the members acked (claim numbers, or bodies for the list).
 */
function writeAckClaimScript(lua: string): LuaScript {
  return new LuaScript(`${CLAIM_INTO}
local function scripted_writes(KEYS, ARGV)
${lua}
end
local nshared, per = tonumber(ARGV[3]), tonumber(ARGV[4])
local nw = #KEYS - 3
local wkeys, wargs = {}, {}
for i = 1, nw do wkeys[i] = KEYS[i + 3] end
for i = 1, nshared + nw * per do wargs[i] = ARGV[i + 4] end
scripted_writes(wkeys, wargs)
local first = 5 + nshared + nw * per
if ARGV[1] == 'hash' then
  for i = first, #ARGV, 1000 do redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
else
  for i = first, #ARGV do redis.call('LREM', KEYS[1], 1, ARGV[i]) end
end
if tonumber(ARGV[2]) > 0 then return claim_into(KEYS[2], KEYS[3], ARGV[2]) end
return {}`);
}

/**
 * The smallest half of a prefetch that ack batches are split into (see `#inHalves`). Smaller
 * calls cost more per task than the overlap gives back. End to end, 6 to 8 interleaved pairs
 * each (prefetch = concurrency + readAhead, both the same): halves of 10 ran 8% fewer tasks a
 * second than whole batches, of 32 6% fewer, of 50 9% more, of 100 6 to 11% more.
 */
const MIN_HALF = 50;

/** Acks carrying writes per script call: as the backend's own batches, a bound on how long one call holds Redis. */
const WRITE_ACKS_PER_CALL = 256;

/**
 * KEYS: queue, then one key per write. ARGV: 1 the writes' expiries in seconds, separated by
 * spaces; then their values; then the bodies. The writes land before any worker can see the
 * bodies.
 *
 * One argument per value: Lua hashes every byte of every string it makes, so values joined
 * into one argument and split again cost Redis each byte twice (a chunk of 100 PENDING
 * writes and bodies: 5.0 against 3.2 µs per task). The sender pays part of it back: framing
 * two hundred arguments instead of three cost it 0.3 to 1 µs more per task in A/B runs.
 */
const WRITE_THEN_PUSH = new LuaScript(`
local i = 0
for ttl in string.gmatch(ARGV[1], '%S+') do
  i = i + 1
  redis.call('SET', KEYS[i + 1], ARGV[i + 1], 'EX', ttl)
end
if #ARGV == i + 1 then return 0 end
return redis.call('RPUSH', KEYS[1], unpack(ARGV, i + 2))`);

/**
 * Most messages per RPUSH when a tick's publishes are sent together; a tick with more sends
 * each chunk as soon as it is full. Small enough that Redis stores one chunk while the next
 * is encoded and that the sender of a batch waits little for the last one (100 enqueued a
 * thousand-task batch about 10% faster than 250 or 50, in interleaved runs against bee-queue).
 */
const PUSH_CHUNK = 100;

interface Settle {
  resolve(): void;
  reject(error: Error): void;
}

/** Publishes to one queue gathered for one command; `done` are those waiting for it (one per task, or one per bulk call). */
interface PushBatch {
  bodies: string[];
  writes: (PlainWrite | undefined)[];
  done: Settle[];
}

/** The acks of one turn to one store; with `writes` (one per member), acks that carry writes of one script. */
interface AckBatch {
  readonly sub: RedisSubscription;
  readonly members: string[];
  readonly byNumber: boolean;
  readonly done: Settle[];
  readonly writes?: ScriptedWrite[];
}

/** Commands sent and not yet answered, with when to give up on them and what to say then. */
interface Unanswered {
  readonly deadline: number;
  readonly done: readonly Settle[];
  readonly what: string;
  readonly consequence: string;
}

const PUBLISH_UNANSWERED = 'it may or may not have been stored';
const HELD_UNANSWERED = "the consumer's messages come back to the queue once its lease lapses";

/** Settles every caller whose message went out in `sent`, with its outcome. */
function settleAll(done: readonly Settle[], sent: Promise<unknown>): void {
  sent.then(
    () => done.forEach((d) => d.resolve()),
    (e: unknown) => done.forEach((d) => d.reject(asError(e))),
  );
}

const retryStrategy = (n: number): number => Math.min(n * 200, 5000) + Math.floor(Math.random() * 200);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const asError = (e: unknown): Error => (e instanceof Error ? e : new Error(String(e)));

export class RedisBroker implements Broker {
  readonly capabilities: BrokerCapabilities;
  readonly client: Redis;
  readonly defaultQueue: string;
  readonly delayedTasksKey: string;
  readonly leaseMs: number;
  readonly reapIntervalMs: number;
  readonly #ownsClient: boolean;
  readonly #delayedPollMs: number;
  readonly #publishTimeoutMs: number;
  readonly #prefix: string;
  readonly #id = randomBytes(8).toString('hex');
  readonly #subs = new Set<RedisSubscription>();
  readonly #timers = new Set<NodeJS.Timeout>();
  /**
   * The turn's acks (and the tick's publishes, `#pushes`) by batch key. Each flush starts a new
   * Map rather than clearing this one: V8's Map.clear leaves the old table pointing at the new
   * one, so once a table is in the old generation every later table, and the batches in it,
   * outlive young-generation collections until a full one. Cleared, a worker at concurrency 10
   * moved 58 MB of 40,000 tasks' garbage into the old generation; replaced, 48 MB.
   */
  #acks = new Map<string, AckBatch>();
  /** Later calls of split ack batches, sent one turn after their first (see `#inHalves`). */
  readonly #laterAcks: (() => void)[] = [];
  /** The write-ack-claim script of each backend script seen, and a short name for it in batch keys. */
  readonly #writeScripts = new Map<string, { script: LuaScript; name: string }>();
  #pushes = new Map<string, PushBatch>();
  /**
   * Commands sent and not yet answered (publishes, and the Redis calls of a stopping consumer or
   * of `close()`), with their deadlines. One interval rejects the overdue ones: a timer and a
   * `Promise.race` per publish were about 8 of the 60–70 µs of user CPU a sender of one task at
   * a time spent per send (median of 5 interleaved runs).
   */
  readonly #unanswered = new Set<Unanswered>();
  #watchdog: NodeJS.Timeout | undefined;
  #promoterRunning = false;
  #pushScheduled = false;
  #store: string | undefined;
  #closed = false;

  constructor(options: RedisBrokerOptions = {}) {
    this.#ownsClient = !options.client;
    this.client =
      options.client ?? new Redis(options.url ?? 'redis://127.0.0.1:6379', { retryStrategy, enableAutoPipelining: false });
    this.defaultQueue = options.defaultQueue ?? 'machinery_tasks';
    this.delayedTasksKey = options.delayedTasksKey ?? 'delayed_tasks';
    this.leaseMs = options.leaseMs ?? 30_000;
    this.reapIntervalMs = options.reapIntervalMs ?? Math.max(100, Math.floor(this.leaseMs / 2));
    this.#delayedPollMs = options.delayedPollMs ?? 100;
    this.#publishTimeoutMs = options.publishTimeoutMs ?? 10_000;
    this.#prefix = options.keyPrefix ?? 'machinery-ts:';
    this.capabilities = {
      redeliveryTimeoutMs: this.leaseMs + this.reapIntervalMs,
      countsDeliveries: false,
      deadLetterQueue: true,
    };
    if (this.#ownsClient) this.client.on('error', () => {}); // reconnects itself; errors surface on commands
    // A claim executed just before a connection broke may never have had its reply (ioredis
    // then sends it again, claiming a second batch): its messages would sit in the claimed
    // hash under a live lease until the consumer stops. After each reconnect they go back.
    let connectedBefore = this.client.status === 'ready';
    this.client.on('ready', () => {
      if (connectedBefore) {
        for (const s of this.#subs) {
          void s.returnStranded().catch((e) => this.#report(asError(e)));
          void s.resettle().catch((e) => this.#report(asError(e)));
        }
      }
      connectedBefore = true;
    });
  }

  /** `machinery-ts:leases`: ZSET consumerId → lease expiry (ms, Redis clock). */
  get leasesKey(): string {
    return `${this.#prefix}leases`;
  }
  /** `machinery-ts:consumers`: HASH consumerId → queue. */
  get consumersKey(): string {
    return `${this.#prefix}consumers`;
  }
  /** `machinery-ts:reaper-lock`: who reaps this turn (cluster-wide throttle). */
  get reaperLockKey(): string {
    return `${this.#prefix}reaper-lock`;
  }
  /** `machinery-ts:inflight:<consumer>`: LIST of the messages a blocking claim took. */
  inflightKey(consumerId: string): string {
    return `${this.#prefix}inflight:${consumerId}`;
  }
  /** `machinery-ts:claimed:<consumer>`: HASH number → message of batch claims ('#': last number). */
  claimedKey(consumerId: string): string {
    return `${this.#prefix}claimed:${consumerId}`;
  }
  /** Where dead-lettered messages go: a LIST of `{"reason","queue","body"}` JSON documents. */
  static deadLetterKey(queue: string): string {
    return `${queue}:dead_letter`;
  }

  adjustRoutingKey(signature: Signature): void {
    if (!signature.RoutingKey) signature.RoutingKey = this.defaultQueue;
  }

  #prepare(signature: Signature): { queue: string; body: string; etaNs: number | null } {
    this.adjustRoutingKey(signature);
    const body = encodeSignature(signature);
    const eta = signature.ETA ? parseRfc3339(signature.ETA) : null;
    return { queue: signature.RoutingKey, body, etaNs: eta !== null && eta > Date.now() ? eta * 1e6 : null };
  }

  /**
   * Publishes of one tick to one queue go out as one variadic RPUSH (the list receives the
   * same bodies in the same order as from one RPUSH each); each resolves once Redis has
   * stored its message.
   */
  publish(signature: Signature): Promise<void> {
    return this.#push(signature, undefined);
  }

  /**
   * Sets `write` (a PENDING state) and pushes the task in one script: one round trip, and no
   * worker can claim the task before its state exists. Batched per tick like `publish`.
   */
  publishAfterWrite(signature: Signature, write: PlainWrite): Promise<void> {
    const refused = this.#refusal(write);
    return refused ? Promise.reject(refused) : this.#push(signature, write);
  }

  /** Why this broker cannot carry `write`, if it cannot. */
  #refusal(write: PlainWrite): Error | undefined {
    if (!this.carriesWritesFor(write.store)) return new Error(`RedisBroker writes to ${this.store}, not ${write.store}`);
    if (!Number.isSafeInteger(write.expireSeconds) || write.expireSeconds < 1) {
      return new RangeError(`RedisBroker: a carried write's expiry must be whole seconds, at least 1; found ${write.expireSeconds} for ${write.key}`);
    }
    return undefined;
  }

  /** `redis://host:port/db` (or the socket path) of the server this broker publishes to. */
  get store(): string {
    if (this.#store === undefined) {
      const o = this.client.options;
      this.#store = o.path ? `redis+unix://${o.path}/${o.db ?? 0}` : `redis://${o.host ?? '127.0.0.1'}:${o.port ?? 6379}/${o.db ?? 0}`;
    }
    return this.#store;
  }

  carriesWritesFor(store: string): boolean {
    return store === this.store;
  }

  // Not async: sendTasks calls this once per task, and two promises fewer each is measurable.
  #push(signature: Signature, write: PlainWrite | undefined): Promise<void> {
    if (this.#closed) return Promise.reject(new ClosedError('RedisBroker'));
    let prepared: { queue: string; body: string; etaNs: number | null };
    try {
      prepared = this.#prepare(signature);
    } catch (e) {
      return Promise.reject(asError(e));
    }
    const { queue, body, etaNs } = prepared;
    if (etaNs !== null) return this.#pushDelayed(body, etaNs, write);
    const batch = this.#pushBatch(queue);
    const stored = new Promise<void>((resolve, reject) => batch.done.push({ resolve, reject }));
    this.#add(queue, batch, body, write);
    return stored;
  }

  /**
   * `publishAfterWrite` of each, with one promise per chunk sent rather than one per task. A
   * write this broker cannot carry rejects the call before anything is sent.
   */
  publishBatchAfterWrite(signatures: readonly Signature[], writes: readonly PlainWrite[]): Promise<void> {
    if (this.#closed) return Promise.reject(new ClosedError('RedisBroker'));
    if (signatures.length !== writes.length) {
      return Promise.reject(new RangeError(`RedisBroker: ${signatures.length} tasks and ${writes.length} writes; publishBatchAfterWrite takes one write per task`));
    }
    for (const w of writes) {
      const refused = this.#refusal(w);
      if (refused) return Promise.reject(refused);
    }
    const waits: Promise<void>[] = [];
    const joined = new Set<PushBatch>();
    for (let i = 0; i < signatures.length; i++) {
      const write = writes[i] as PlainWrite;
      let prepared: { queue: string; body: string; etaNs: number | null };
      try {
        prepared = this.#prepare(signatures[i] as Signature);
      } catch (e) {
        // Those before it are on their way: the caller hears "some may have been stored".
        waits.push(Promise.reject(asError(e)));
        break;
      }
      const { queue, body, etaNs } = prepared;
      if (etaNs !== null) {
        waits.push(this.#pushDelayed(body, etaNs, write));
        continue;
      }
      const batch = this.#pushBatch(queue);
      if (!joined.has(batch)) {
        joined.add(batch);
        waits.push(new Promise<void>((resolve, reject) => batch.done.push({ resolve, reject })));
      }
      this.#add(queue, batch, body, write);
    }
    return Promise.all(waits).then(() => undefined);
  }

  /** The tick's batch of publishes to `queue`, begun (and its flush scheduled) if there is none. */
  #pushBatch(queue: string): PushBatch {
    let batch = this.#pushes.get(queue);
    if (!batch) {
      batch = { bodies: [], writes: [], done: [] };
      this.#pushes.set(queue, batch);
      if (!this.#pushScheduled) {
        this.#pushScheduled = true;
        process.nextTick(() => this.#flushPushes());
      }
    }
    return batch;
  }

  #add(queue: string, batch: PushBatch, body: string, write: PlainWrite | undefined): void {
    batch.bodies.push(body);
    batch.writes.push(write);
    // A long run of publishes in one tick (sendTasks) goes out in chunks as it is encoded, so
    // Redis stores one chunk while the next is being prepared.
    if (batch.bodies.length >= PUSH_CHUNK) {
      this.#pushes.delete(queue);
      this.#sendPushes(queue, batch);
    }
  }

  async #pushDelayed(body: string, etaNs: number, write: PlainWrite | undefined): Promise<void> {
    corkForTick(this.client.stream);
    // One connection applies its commands in order: the state lands before the task.
    const set = write && this.client.set(write.key, write.value, 'EX', write.expireSeconds);
    await this.within(Promise.all([set, this.client.zadd(this.delayedTasksKey, String(etaNs), body)]), 'publish', PUBLISH_UNANSWERED);
  }

  #flushPushes(): void {
    this.#pushScheduled = false;
    const batches = [...this.#pushes];
    this.#pushes = new Map();
    corkForTick(this.client.stream);
    for (const [queue, batch] of batches) this.#sendPushes(queue, batch);
  }

  /** One RPUSH (or, with carried writes, one script) for at most PUSH_CHUNK messages. */
  #sendPushes(queue: string, { bodies, writes, done }: PushBatch): void {
    const carried = writes.filter((w): w is PlainWrite => w !== undefined);
    let sent: Promise<unknown>;
    if (carried.length === 0) {
      sent = this.client.rpush(queue, ...bodies);
    } else {
      const keys = [queue];
      const expiries: number[] = [];
      const args = [''];
      for (const w of carried) {
        keys.push(w.key);
        expiries.push(w.expireSeconds);
        args.push(w.value);
      }
      args[0] = expiries.join(' ');
      for (const body of bodies) args.push(body);
      sent = WRITE_THEN_PUSH.run(this.client, keys, args);
    }
    this.#settleWithin(done, sent, 'publish', PUBLISH_UNANSWERED);
  }

  /**
   * Settles the callers whose commands went out in `sent` with its outcome, or rejects them
   * once `publishTimeoutMs` has passed without one (ioredis holds commands while it
   * reconnects, for about 45 s with this broker's back-off before it gives up on them).
   */
  #settleWithin(done: readonly Settle[], sent: Promise<unknown>, what: string, consequence: string): void {
    const entry: Unanswered = { deadline: Date.now() + this.#publishTimeoutMs, done, what, consequence };
    this.#unanswered.add(entry);
    if (!this.#watchdog) {
      // Checks at a tenth of the timeout (at most every second): a publish is rejected at most
      // that much after its deadline.
      this.#watchdog = setInterval(() => this.#rejectOverdue(), Math.min(1000, Math.max(5, this.#publishTimeoutMs / 10)));
      this.#watchdog.unref();
    }
    sent.then(
      () => {
        this.#forget(entry);
        for (const d of done) d.resolve();
      },
      (e: unknown) => {
        this.#forget(entry);
        for (const d of done) d.reject(asError(e));
      },
    );
  }

  #forget(entry: Unanswered): void {
    this.#unanswered.delete(entry);
    // A closed broker keeps the interval only for what was still unanswered when it closed.
    if (this.#closed && this.#unanswered.size === 0) {
      clearInterval(this.#watchdog);
      this.#watchdog = undefined;
    }
  }

  /**
   * @internal `sent`, or a rejection once `publishTimeoutMs` has passed without Redis answering:
   * for the commands of a shutdown, which must end while Redis is unreachable.
   */
  within(sent: Promise<unknown>, what: string, consequence: string): Promise<void> {
    return new Promise<void>((resolve, reject) => this.#settleWithin([{ resolve, reject }], sent, what, consequence));
  }

  #rejectOverdue(): void {
    const now = Date.now();
    for (const entry of this.#unanswered) {
      if (entry.deadline > now) continue;
      this.#forget(entry);
      const error = new Error(`RedisBroker: ${entry.what} not confirmed within ${this.#publishTimeoutMs} ms (Redis unreachable?); ${entry.consequence}`);
      // A reply that comes later settles nothing more: each caller's promise is already rejected.
      for (const d of entry.done) d.reject(error);
    }
  }

  async publishBatch(signatures: readonly Signature[]): Promise<void> {
    await Promise.all(signatures.map((s) => this.publish(s)));
  }

  async consume(queue: string, options: ConsumeOptions): Promise<Subscription> {
    if (this.#closed) throw new ClosedError('RedisBroker');
    const consumerId = `${options.consumerTag ?? 'consumer'}:${this.#id}:${randomBytes(6).toString('hex')}`;
    const blocking = this.client.duplicate({ maxRetriesPerRequest: null, retryStrategy, lazyConnect: false });
    blocking.on('error', () => {});
    const sub = new RedisSubscription(this, queue, options, consumerId, blocking, () => this.#subs.delete(sub));
    // The lease exists before anything is claimed.
    await HEARTBEAT.run(this.client, [this.leasesKey, this.consumersKey], [this.leaseMs, consumerId, queue]);
    this.#subs.add(sub);
    this.#startTimers();
    sub.start();
    return sub;
  }

  #startTimers(): void {
    if (!this.#promoterRunning) {
      this.#promoterRunning = true;
      void this.#promoterLoop();
    }
    if (this.#timers.size > 0) return;
    const every = (ms: number, fn: () => Promise<unknown>): void => {
      let busy = false;
      const t = setInterval(() => {
        if (busy || this.#closed) return;
        busy = true;
        fn()
          .catch((e) => this.#report(asError(e)))
          .finally(() => (busy = false));
      }, ms);
      this.#timers.add(t);
    };
    every(Math.max(50, Math.floor(this.leaseMs / 3)), () => this.#heartbeat());
    every(this.reapIntervalMs, () => this.reap());
    void this.reap().catch((e) => this.#report(asError(e)));
  }

  async #heartbeat(): Promise<void> {
    const args: (string | number)[] = [this.leaseMs];
    for (const s of this.#subs) if (s.holdsLease) args.push(s.consumerId, s.queue);
    if (args.length > 1) await HEARTBEAT.run(this.client, [this.leasesKey, this.consumersKey], args);
    // A settle that failed without a reconnect (a refused command) is tried again here too;
    // not awaited, so a slow one never holds back the next heartbeat.
    for (const s of this.#subs) void s.resettle().catch((e) => this.#report(asError(e)));
  }

  /** Returns the in-flight messages of consumers whose lease expired. Runs on a timer; public for tests. */
  async reap(): Promise<number> {
    const moved = await REAP.run(
      this.client,
      [this.leasesKey, this.consumersKey, this.reaperLockKey],
      // The lock lapses a little before the next tick, so timer jitter never skips a round.
      [this.#id, Math.max(1, Math.floor(this.reapIntervalMs * 0.8)), `${this.#prefix}inflight:`, `${this.#prefix}claimed:`],
    );
    return Number(moved);
  }

  /** Moves due delayed messages to their lists; returns how many and the next due time (ms) or null. */
  async promoteDue(): Promise<{ moved: number; nextMs: number | null }> {
    const nowNs = String(Date.now() * 1e6);
    const res = (await PROMOTE.run(this.client, [this.delayedTasksKey], [nowNs, PROMOTE_BATCH, this.defaultQueue])) as [
      number,
      string | null,
    ];
    return { moved: Number(res[0]), nextMs: res[1] ? Number(res[1]) / 1e6 : null };
  }

  async #promoterLoop(): Promise<void> {
    while (!this.#closed && this.#subs.size > 0) {
      let wait = this.#delayedPollMs;
      try {
        const { moved, nextMs } = await this.promoteDue();
        if (moved >= PROMOTE_BATCH) wait = 0;
        else if (nextMs !== null) wait = Math.min(this.#delayedPollMs, Math.max(1, nextMs - Date.now()));
      } catch (e) {
        if (this.#closed) break;
        this.#report(asError(e));
        wait = 500;
      }
      if (wait > 0) await sleep(wait);
    }
    this.#promoterRunning = false;
  }

  #report(error: Error): void {
    const first = this.#subs.values().next();
    if (!first.done) first.value.options.onError?.(error);
  }

  /** @internal subscription bookkeeping */
  subscriptionGone(sub: RedisSubscription): void {
    this.#subs.delete(sub);
  }

  /** `claimNo`: the delivery's number in the consumer's claimed hash; absent for the blocking list. */
  async settle(sub: RedisSubscription, body: string, claimNo: string | undefined, outcome: Outcome): Promise<void> {
    const store = claimNo === undefined ? sub.inflight : sub.claimed;
    if (outcome.kind === 'ack') return this.#ack(sub, store, claimNo ?? body, claimNo !== undefined);
    const [target, mode, extra] =
      outcome.kind === 'requeue'
        ? [sub.queue, 'requeue', '']
        : outcome.kind === 'retry-later'
          ? [this.delayedTasksKey, 'later', String((Date.now() + Math.max(0, outcome.delayMs)) * 1e6)]
          : [RedisBroker.deadLetterKey(sub.queue), 'dead', JSON.stringify({ reason: outcome.reason, queue: sub.queue, body })];
    const sent =
      claimNo === undefined
        ? SETTLE.run(this.client, [store, target], [body, mode, extra])
        : SETTLE_CLAIMED.run(this.client, [store, target], [claimNo, body, mode, extra]);
    // A stopping consumer must be able to end while Redis is unreachable; the lease stands in
    // for a settle Redis never saw. A running one waits: a lost ack would mean a rerun.
    await (sub.stopping ? this.within(sent, `${outcome.kind} of a delivery`, HELD_UNANSWERED) : sent);
  }

  #settleAcks(sub: RedisSubscription, done: readonly Settle[], sent: Promise<unknown>): void {
    if (sub.stopping) this.#settleWithin(done, sent, 'ack', HELD_UNANSWERED);
    else settleAll(done, sent);
  }

  /**
   * Acks that arrive in the same turn of the event loop go out as one command per store
   * (claim numbers, with the claim of the slots they free; or LREMs for the blocking list):
   * a busy worker finishes many tasks per turn. Each ack still resolves only once Redis has
   * removed its message.
   */
  #ack(sub: RedisSubscription, store: string, member: string, byNumber: boolean, write?: ScriptedWrite): Promise<void> {
    // Acks that carry writes gather apart, per backend script and shared arguments: a
    // failing write must not hold back the plain acks of the turn.
    const key = write ? this.#writeAckKey(store, write) : store;
    let batch = this.#acks.get(key);
    if (!batch) {
      batch = write ? { sub, members: [], byNumber, done: [], writes: [] } : { sub, members: [], byNumber, done: [] };
      this.#acks.set(key, batch);
      if (this.#acks.size === 1) setImmediate(() => this.#flushAcks());
    }
    batch.members.push(member);
    if (write) batch.writes?.push(write);
    return new Promise<void>((resolve, reject) => batch.done.push({ resolve, reject }));
  }

  /** The last batch key made for acks carrying writes: a worker's writes all share one, made once. */
  #lastWriteAck: { store: string; lua: string; shared: readonly string[]; perWrite: number; key: string } | undefined;

  #writeAckKey(store: string, write: ScriptedWrite): string {
    const last = this.#lastWriteAck;
    if (last && last.store === store && last.lua === write.lua && last.shared === write.shared && last.perWrite === write.args.length) return last.key;
    const key = `${store}\0${this.#writeScript(write.lua).name}\0${write.args.length}\0${write.shared.join('\0')}`;
    this.#lastWriteAck = { store, lua: write.lua, shared: write.shared, perWrite: write.args.length, key };
    return key;
  }

  #writeScript(lua: string): { script: LuaScript; name: string } {
    let found = this.#writeScripts.get(lua);
    if (!found) {
      found = { script: writeAckClaimScript(lua), name: String(this.#writeScripts.size) };
      this.#writeScripts.set(lua, found);
    }
    return found;
  }

  /**
   * Applies `write` (a backend's SUCCESS state), then acks the delivery and claims the slot it
   * frees, in one script batched with the turn's other such acks (see `Delivery.ackAfterWrite`).
   */
  ackAfterWrite(sub: RedisSubscription, body: string, claimNo: string | undefined, write: ScriptedWrite): Promise<void> {
    if (!this.carriesWritesFor(write.store)) return Promise.reject(new Error(`RedisBroker writes to ${this.store}, not ${write.store}`));
    return this.#ack(sub, claimNo === undefined ? sub.inflight : sub.claimed, claimNo ?? body, claimNo !== undefined, write);
  }

  #flushAcks(): void {
    const batches = [...this.#acks];
    this.#acks = new Map();
    corkForTick(this.client.stream);
    for (const [key, batch] of batches) {
      if (batch.writes) {
        this.#sendWriteAcks(batch, batch.writes);
        continue;
      }
      const store = key;
      const { sub, members, byNumber, done } = batch;
      // The slots these acks free are claimed again in the same script, rather than by a
      // claim that would wait for the acks' reply first.
      const refill = sub.freeSlots(members.length);
      if (!byNumber) {
        if (refill > 0) {
          this.#settleAcks(sub, done, sub.claiming(refill, ACK_LIST_CLAIM.run(this.client, [store, sub.queue, sub.claimed], [refill, ...members]) as Promise<string[]>));
        } else {
          this.#settleAcks(sub, done, members.length === 1 ? this.client.lrem(store, 1, members[0] as string) : ACK.run(this.client, [store], members));
        }
        continue;
      }
      if (refill <= 0) {
        this.#settleAcks(sub, done, this.client.hdel(store, ...members));
        continue;
      }
      this.#inHalves(sub, done, members.length, Number.POSITIVE_INFINITY, (from, to, n) =>
        n > 0 ? (ACK_CLAIM.run(this.client, [store, sub.queue], [n, ...members.slice(from, to)]) as Promise<string[]>) : this.client.hdel(store, ...members.slice(from, to)),
      );
    }
  }

  /**
   * Sends a turn's `n` acks of `sub` as `send(from, to, refill)` calls of at most `most` acks,
   * each claiming `refill` of the slots the batch frees; the calls after the first go out a
   * turn later. Once half the consumer's prefetch is MIN_HALF or more, a batch larger than
   * that half goes out in calls of that half, so that Redis runs the second while the worker
   * already runs the tasks the first claimed. Sent as one, the worker and Redis took turns
   * being idle: a worker at concurrency 100 (prefetch 200) draining a full queue ran 50.5k
   * tasks/s that way, 65.7k in calls of 50 (4 rounds of each, 3 times interleaved; halves of
   * 100 did as well). Sent in the same turn, the calls reach Redis in one read and come back
   * in one reply (50.7k).
   */
  #inHalves(sub: RedisSubscription, done: readonly Settle[], n: number, most: number, send: (from: number, to: number, refill: number) => Promise<unknown>): void {
    const half = Math.ceil(sub.prefetch / 2);
    const per = Math.min(most, half >= MIN_HALF ? half : n);
    // Counted once for the whole batch: while a call is unanswered, its claim holds the slots it asked for.
    let refills = Math.max(0, sub.freeSlots(n));
    for (let i = 0; i < n; i += per) {
      const from = i;
      const to = Math.min(n, i + per);
      const refill = to === n ? refills : Math.min(refills, to - from);
      refills -= refill;
      const sent = from === 0 ? send(from, to, refill) : this.#later(() => send(from, to, refill));
      this.#settleAcks(sub, done.slice(from, to), refill > 0 ? sub.claiming(refill, sent as Promise<string[]>) : sent);
    }
  }

  /** Acks that carry writes, each call with the claim of the slots it frees (see `#inHalves`). */
  #sendWriteAcks({ sub, members, byNumber, done }: AckBatch, writes: readonly ScriptedWrite[]): void {
    const first = writes[0];
    if (!first) return;
    const { script } = this.#writeScript(first.lua);
    const store = byNumber ? sub.claimed : sub.inflight;
    this.#inHalves(sub, done, members.length, WRITE_ACKS_PER_CALL, (from, to, refill) => {
      const keys = [store, sub.queue, sub.claimed];
      const args: string[] = [byNumber ? 'hash' : 'list', String(refill), String(first.shared.length), String(first.args.length), ...first.shared];
      for (let k = from; k < to; k++) {
        const w = writes[k] as ScriptedWrite;
        keys.push(w.key);
        for (const a of w.args) args.push(a);
      }
      for (let k = from; k < to; k++) args.push(members[k] as string);
      return script.run(this.client, keys, args);
    });
  }

  /** `send`, run on the next turn of the event loop, or at once by `#sendLater` (`close()` must not leave one behind its release). */
  #later<T>(send: () => Promise<T>): Promise<T> {
    return new Promise<T>((resolve) => {
      this.#laterAcks.push(() => resolve(send()));
      if (this.#laterAcks.length === 1) setImmediate(() => this.#sendLater());
    });
  }

  #sendLater(): void {
    const sends = this.#laterAcks.splice(0);
    for (const send of sends) send();
  }

  /** Gives a consumer's in-flight messages back to the head of its queue and drops its lease. */
  async release(sub: RedisSubscription): Promise<void> {
    const sent = RELEASE.run(
      this.client,
      [this.claimedKey(sub.consumerId), this.inflightKey(sub.consumerId), sub.queue, this.leasesKey, this.consumersKey],
      [sub.consumerId],
    );
    await this.within(sent, 'returning the in-flight messages of a stopped consumer', HELD_UNANSWERED);
  }

  get closed(): boolean {
    return this.#closed;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    const subs = [...this.#subs];
    await Promise.allSettled(subs.map((s) => s.stop()));
    this.#closed = true;
    for (const t of this.#timers) clearInterval(t);
    this.#timers.clear();
    if (this.#pushes.size > 0) this.#flushPushes();
    // Acks still gathering go out first: on this one connection Redis then removes their
    // messages before the release below could hand them back to the queue (a rerun).
    if (this.#acks.size > 0) this.#flushAcks();
    this.#sendLater();
    // Unsettled deliveries go back to the queue head at once rather than after the lease.
    const returned = await Promise.allSettled(subs.map((s) => s.abandon()));
    this.#subs.clear();
    // Every step below waits at most publishTimeoutMs, and none once Redis has not answered one:
    // a close must end while Redis is unreachable.
    let answering = returned.every((r) => r.status === 'fulfilled');
    // A reaper turn this broker holds would keep every other broker from reaping until it
    // lapsed (up to 0.8 × this broker's reap interval, which may be far longer than theirs).
    if (answering) {
      await this.within(DROP_REAPER_LOCK.run(this.client, [this.reaperLockKey], [this.#id]), 'dropping the reaper turn', 'it lapses by itself').catch(
        () => (answering = false),
      );
    }
    if (this.#ownsClient) {
      if (answering) await this.within(this.client.quit(), 'quit', 'the connection is dropped').catch(() => this.client.disconnect());
      else this.client.disconnect();
    }
    // Last: a publish still waiting on a client handed in by the user keeps its deadline until now.
    if (this.#unanswered.size === 0) {
      clearInterval(this.#watchdog);
      this.#watchdog = undefined;
    }
  }

  /**
   * FOR TESTS: dies as a SIGKILLed process would — timers stop and connections drop
   * without settling or returning anything; the reaper of another broker brings the
   * in-flight messages back after the lease.
   */
  async disconnectAbruptly(): Promise<void> {
    this.#closed = true;
    for (const t of this.#timers) clearInterval(t);
    this.#timers.clear();
    for (const s of this.#subs) s.kill();
    this.#subs.clear();
    this.client.disconnect();
    clearInterval(this.#watchdog);
    this.#watchdog = undefined;
  }
}

class RedisSubscription implements Subscription {
  /** This consumer's claimed hash and blocking list (see `RedisBroker.claimedKey`, `inflightKey`). */
  readonly claimed: string;
  readonly inflight: string;
  #stopped = false;
  #loop: Promise<void> = Promise.resolve();
  #outstanding = new Set<RedisDelivery>();
  /** Deliveries whose settle Redis did not record, with the outcome to send again. */
  readonly #unrecorded = new Map<RedisDelivery, Outcome>();
  #resettling = false;
  /** Slots asked for by claims still waiting for their reply. */
  #claiming = 0;
  /** Those claims themselves (settling once their reply is in), for `returnStranded`. */
  readonly #claimsPending = new Set<Promise<void>>();
  #wake: (() => void) | null = null;
  #released = false;
  #stopping: Promise<void> | null = null;
  #prefetch: number;

  constructor(
    readonly broker: RedisBroker,
    readonly queue: string,
    readonly options: ConsumeOptions,
    readonly consumerId: string,
    readonly blocking: Redis,
    readonly onGone: () => void,
  ) {
    this.claimed = broker.claimedKey(consumerId);
    this.inflight = broker.inflightKey(consumerId);
    this.#prefetch = options.prefetch;
  }

  /** The bound on unsettled deliveries now (`ConsumeOptions.prefetch` until `setPrefetch`). */
  get prefetch(): number {
    return this.#prefetch;
  }

  /** Takes effect at the next claim: a raise wakes a consumer waiting for a free slot. */
  setPrefetch(prefetch: number): void {
    this.#prefetch = prefetch;
    this.#signal();
  }

  get holdsLease(): boolean {
    return !this.#released;
  }

  /** Whether `stop()` (or a kill) has begun: no more deliveries, and settles are bounded in time. */
  get stopping(): boolean {
    return this.#stopped;
  }

  /**
   * Returns to the queue head what the claimed hash holds that this consumer was never handed.
   * The snapshot is read on the connection the claims use, so every claim issued before it has
   * delivered by the time it arrives; numbers claimed after it are not in it. Public for tests.
   */
  async returnStranded(): Promise<number> {
    const claimed = this.claimed;
    // Claims issued before the snapshot ran before it; their deliveries must be counted as held.
    const earlier = [...this.#claimsPending];
    const fields = await this.broker.client.hkeys(claimed);
    await Promise.all(earlier);
    await new Promise<void>((r) => setImmediate(r)); // their deliveries run in the continuations
    const held = new Set<string>();
    for (const d of this.#outstanding) if (d.claimNo !== undefined) held.add(d.claimNo);
    const stranded = fields.filter((f) => f !== '#' && !held.has(f)).sort((a, b) => Number(a) - Number(b));
    if (stranded.length === 0) return 0;
    return Number(await RETURN_CLAIMED.run(this.broker.client, [claimed, this.queue], stranded));
  }

  start(): void {
    this.#loop = this.#run();
  }

  #signal(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  /**
   * How many more messages may be claimed now: prefetch minus those held and those being
   * claimed; `released` counts acks that the same claim applies first. Bounded so one
   * claim's reply stays within what Lua can unpack.
   */
  freeSlots(released = 0): number {
    if (this.#stopped) return 0;
    return Math.min(Math.max(1, this.#prefetch) - this.#outstanding.size - this.#claiming + released, 1000);
  }

  /** Counts `n` slots as being claimed until `reply` (number, body pairs) arrives, then delivers it; returns how many came. */
  async claiming(n: number, reply: Promise<string[]>): Promise<number> {
    this.#claiming += n;
    const pending = reply.then(() => undefined, () => undefined);
    this.#claimsPending.add(pending);
    let pairs: string[];
    try {
      pairs = await reply;
    } finally {
      this.#claiming -= n;
      this.#claimsPending.delete(pending);
    }
    // Claimed after stop() began (an ack's refill): not handed out, so stop() keeps its word;
    // they stay in the claimed hash, and the release that follows the last settle returns them.
    if (this.#stopped) return 0;
    for (let i = 0; i + 1 < pairs.length; i += 2) this.#deliver(pairs[i + 1] as string, pairs[i]);
    return pairs.length / 2;
  }

  async #run(): Promise<void> {
    const { inflight, claimed } = this;
    // After a blocking claim delivers, the queue was just empty: the next wait is blocking
    // too rather than a claim that would come back empty (one command per message less at a
    // trickle). A burst is picked up in batches by the refill that rides on each ack.
    let blockNext = false;
    while (!this.#stopped) {
      const free = this.freeSlots();
      if (free <= 0) {
        await new Promise<void>((r) => (this.#wake = r));
        continue;
      }
      try {
        let got = 0;
        if (!blockNext) {
          corkForTick(this.broker.client.stream);
          got = await this.claiming(free, CLAIM.run(this.broker.client, [this.queue, claimed], [free]) as Promise<string[]>);
        }
        if (got === 0 && !this.#stopped) {
          // An empty queue: wait for one message (the slot counts as being claimed meanwhile).
          this.#claiming += 1;
          let one: string | null;
          try {
            one = await this.blocking.blmove(this.queue, inflight, 'LEFT', 'RIGHT', 1);
          } finally {
            this.#claiming -= 1;
          }
          blockNext = one !== null;
          if (one !== null) {
            this.#deliver(one, undefined);
            // The delivered task's own commands (its state write) leave first: the next
            // BLMOVE is not on the path from this message to its result.
            await new Promise<void>((r) => setImmediate(r));
          }
        }
      } catch (e) {
        if (this.#stopped || this.broker.closed) break;
        this.options.onError?.(asError(e));
        await sleep(500);
      }
    }
  }

  #deliver(body: string, claimNo: string | undefined): void {
    const d = new RedisDelivery(this, body, claimNo);
    this.#outstanding.add(d);
    this.options.onDelivery(d);
  }

  /**
   * @internal Records the outcome. On failure the delivery stays outstanding, its message in
   * flight under a lease this consumer's heartbeat keeps renewing: no reaper would ever return
   * it, and it would hold a prefetch slot for good. So a failed settle of a running consumer is
   * sent again after each reconnect and on each heartbeat until Redis records it (the settles
   * only act on a message still in flight, so a repeat is harmless); the caller still hears of
   * the failure.
   */
  async settled(d: RedisDelivery, outcome: Outcome): Promise<void> {
    try {
      await this.broker.settle(this, d.body, d.claimNo, outcome);
    } catch (error) {
      if (!this.#stopped && !this.broker.closed) this.#unrecorded.set(d, outcome);
      throw error;
    }
    await this.#recorded(d);
  }

  /**
   * @internal The ack of `d` after `write`. Unlike `settled`, a failure is not sent again:
   * the caller settles the delivery otherwise (the worker retries the task later).
   */
  ackedAfterWrite(d: RedisDelivery, write: ScriptedWrite): Promise<void> {
    // Chained rather than awaited: one per task, at tens of thousands a second.
    return this.broker.ackAfterWrite(this, d.body, d.claimNo, write).then(() => this.#recorded(d));
  }

  /** Whether a failed settle of `d` will be sent again by this subscription. */
  retries(d: RedisDelivery): boolean {
    return this.#unrecorded.has(d);
  }

  /**
   * Sends again the settles Redis did not record, keeping those it still does not for next
   * time; rejects with the first failure. `stopping`: the last attempt, made by `stop()`
   * (bounded in time there).
   */
  async resettle(stopping = false): Promise<void> {
    if (this.#resettling || this.#unrecorded.size === 0) return;
    this.#resettling = true;
    let failure: { error: unknown } | undefined;
    try {
      for (const [d, outcome] of [...this.#unrecorded]) {
        if ((this.#stopped && !stopping) || this.broker.closed) break;
        try {
          await this.broker.settle(this, d.body, d.claimNo, outcome);
        } catch (error) {
          failure ??= { error };
          continue;
        }
        this.#unrecorded.delete(d);
        await this.#recorded(d);
      }
    } finally {
      this.#resettling = false;
    }
    if (failure) throw failure.error;
  }

  /** Forgets a settled delivery; once a stopping consumer holds none, the release that follows is waited for too. */
  #recorded(d: RedisDelivery): Promise<void> | undefined {
    this.#outstanding.delete(d);
    this.#signal();
    if (this.#stopped && this.#outstanding.size === 0 && !this.broker.closed) {
      return this.#release().catch((e: unknown) => this.options.onError?.(asError(e)));
    }
    return undefined;
  }

  async #release(): Promise<void> {
    if (this.#released) return;
    this.#released = true;
    await this.broker.release(this);
  }

  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#stopped = true;
      this.#signal();
      // Interrupts a pending BLMOVE; anything it moved server-side is returned by the release.
      this.blocking.disconnect();
      // The loop may be waiting for a claim's reply; what such a claim takes stays under the lease.
      await this.broker.within(this.#loop, 'a claim', HELD_UNANSWERED).catch((e) => this.options.onError?.(asError(e)));
      this.onGone();
      // A settle that was never recorded gets one more try, or its finished task would run again
      // once the release below (or the lease) hands its message back.
      await this.resettle(true).catch((e) => this.options.onError?.(asError(e)));
      if (this.#outstanding.size === 0 && !this.broker.closed) await this.#release().catch((e) => this.options.onError?.(asError(e)));
    })();
    return this.#stopping;
  }

  /** On close: unsettled deliveries go back to the queue head now. */
  async abandon(): Promise<void> {
    for (const d of this.#outstanding) d.markSettled();
    this.#outstanding.clear();
    this.#released = true;
    await this.broker.release(this).catch((e: unknown) => {
      this.options.onError?.(asError(e));
      throw e;
    });
  }

  kill(): void {
    this.#stopped = true;
    this.#released = true;
    for (const d of this.#outstanding) d.markSettled();
    this.#outstanding.clear();
    this.#signal();
    this.blocking.disconnect();
  }
}

class RedisDelivery implements Delivery {
  readonly queue: string;
  readonly deliveryCount = 1;
  #settled = false;

  constructor(
    readonly sub: RedisSubscription,
    readonly body: string,
    /** Its number in the consumer's claimed hash; absent when a blocking claim put it in the list. */
    readonly claimNo: string | undefined,
  ) {
    this.queue = sub.queue;
  }

  markSettled(): void {
    this.#settled = true;
  }

  async settle(outcome: Outcome): Promise<void> {
    if (this.#settled) return;
    this.#settled = true;
    try {
      await this.sub.settled(this, outcome);
    } catch (error) {
      // Not recorded by Redis: the message is still in flight. The subscription sends this
      // outcome again itself while it runs; otherwise a later settle may try again.
      if (!this.sub.broker.closed && !this.sub.retries(this)) this.#settled = false;
      throw error;
    }
  }

  ackAfterWrite(write: ScriptedWrite): Promise<void> {
    // Unlike a second settle, not ignored: the write would be lost with it.
    if (this.#settled) return Promise.reject(new Error('RedisBroker: ackAfterWrite of a delivery already settled (or given back when its consumer closed); nothing written'));
    this.#settled = true;
    return this.sub.ackedAfterWrite(this, write).catch((error: unknown) => {
      // Neither the write nor the ack may have happened: the caller settles it otherwise.
      if (!this.sub.broker.closed) this.#settled = false;
      throw error;
    });
  }

  // No `extend`: the consumer's heartbeat keeps every in-flight message leased, so the
  // worker need not run a timer per task.
}
