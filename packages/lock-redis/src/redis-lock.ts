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

interface ScriptedRedis {
  mtsLockRelease(key: string, token: string): Promise<number>;
}

/**
 * A lease in Redis: `SET key token PX ttl NX` to take it, a compare-and-delete script to
 * give it back. The lease ends by itself after `ttlMs`.
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
  }

  async acquire(key: string, ttlMs: number): Promise<string | null> {
    const token = randomUUID();
    const ms = Math.max(1, Math.ceil(ttlMs));
    const reply = await this.#client.set(key, token, 'PX', ms, 'NX');
    return reply === 'OK' ? token : null;
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
