import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import type { Lock } from '@machinery-ts/core';

export interface RedisLockOptions {
  /** `redis://[:password@]host:port[/db]`; ignored when `client` is given. @default redis://127.0.0.1:6379 */
  readonly url?: string;
  /** A client owned by the caller: used as is and left open by `close()`. */
  readonly client?: Redis;
}

const RELEASE_LUA = `
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`;

// Go's lock (v2/locks/redis) in one step. Go does SET NX, then GET, then GETSET and EXPIRE as
// separate commands; deciding from the same comparison atomically gives Go peers the same key
// and value, while no two callers can both take one expired value and the key is never left
// without an expiry (GETSET drops it until Go's EXPIRE lands).
// Lua numbers are doubles, which cannot tell nanosecond timestamps 1 ns apart, so the values
// are compared as decimal strings.
// KEYS[1] key; ARGV[1] new value (ns); ARGV[2] caller's now (ns, positive); ARGV[3] PX in ms.
const ACQUIRE_UNTIL_LUA = `
local function cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  for i = 1, #a do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y and -1 or 1 end
  end
  return 0
end
local cur = redis.call('GET', KEYS[1])
if cur then
  local sign, digits = string.match(cur, '^([+-]?)(%d+)$')
  if not digits then return 0 end
  digits = string.gsub(digits, '^0+', '')
  if digits == '' then return 0 end
  local limit = sign == '-' and '9223372036854775808' or '9223372036854775807'
  if cmp(digits, limit) > 0 then return 0 end
  if sign ~= '-' and cmp(digits, ARGV[2]) >= 0 then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
`;

interface ScriptedRedis {
  mtsLockRelease(key: string, token: string): Promise<number>;
  mtsLockAcquireUntil(key: string, value: string, nowNs: string, pxMs: number): Promise<number>;
}

const NS_PER_MS = 1_000_000n;

/**
 * A lease in Redis: `SET key token PX ttl NX` to take it, a compare-and-delete script to
 * give it back. The lease ends by itself after `ttlMs`. Also implements Go's expiry-by-value
 * lock, `acquireUntil`, for the scheduler's `go` lock mode.
 */
export class RedisLock implements Lock {
  readonly #client: Redis;
  readonly #owned: boolean;
  #closed = false;

  constructor(options: RedisLockOptions = {}) {
    if (options.client) {
      this.#client = options.client;
      this.#owned = false;
    } else {
      this.#client = new Redis(options.url ?? 'redis://127.0.0.1:6379');
      // Commands reject on their own; the default handler would print connection errors.
      this.#client.on('error', () => {});
      this.#owned = true;
    }
    if (!(this.#client as unknown as Partial<ScriptedRedis>).mtsLockRelease) {
      this.#client.defineCommand('mtsLockRelease', { numberOfKeys: 1, lua: RELEASE_LUA });
    }
    if (!(this.#client as unknown as Partial<ScriptedRedis>).mtsLockAcquireUntil) {
      this.#client.defineCommand('mtsLockAcquireUntil', { numberOfKeys: 1, lua: ACQUIRE_UNTIL_LUA });
    }
  }

  async acquire(key: string, ttlMs: number): Promise<string | null> {
    const token = randomUUID();
    const ms = Math.max(1, Math.ceil(ttlMs));
    const reply = await this.#client.set(key, token, 'PX', ms, 'NX');
    return reply === 'OK' ? token : null;
  }

  /**
   * Go's expiry-by-value lock (see `Lock.acquireUntil`): the key gets the decimal `untilNs`, and a
   * `PX` reaching `untilNs + 1 ns` on this process's clock, as Go computes it (Go truncates to the
   * millisecond; this rounds up, so the key never vanishes before its value says it may).
   */
  async acquireUntil(key: string, untilNs: bigint, nowNs?: bigint): Promise<boolean> {
    const clockNs = BigInt(Date.now()) * NS_PER_MS;
    const at = nowNs ?? clockNs;
    if (untilNs < at) throw new RangeError(`acquireUntil: untilNs (${untilNs}) is before nowNs (${at})`);
    if (at <= 0n) throw new RangeError(`acquireUntil: nowNs must be positive, found ${at}`);
    const left = untilNs + 1n - clockNs;
    const px = left <= 0n ? 1 : Number((left + NS_PER_MS - 1n) / NS_PER_MS);
    const n = await (this.#client as unknown as ScriptedRedis).mtsLockAcquireUntil(key, untilNs.toString(), at.toString(), px);
    return n === 1;
  }

  async release(key: string, token: string): Promise<boolean> {
    const n = await (this.#client as unknown as ScriptedRedis).mtsLockRelease(key, token);
    return n === 1;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (!this.#owned) return;
    try {
      await this.#client.quit();
    } catch {
      this.#client.disconnect();
    }
  }
}
