import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type MachineryConfig, type PartialConfig, defaultConfig, mergeConfig, redactUrl } from './config.js';
import type { Backend } from './contracts/backend.js';
import type { Broker } from './contracts/broker.js';
import type { Lock } from './contracts/lock.js';
import { ConfigError } from './errors.js';
import { Server } from './server.js';
import { NullBackend } from './memory/null-backend.js';

type Role = 'broker' | 'result_backend' | 'lock';

interface AdapterRef {
  readonly pkg: string;
  readonly exportName: string;
  readonly options: (url: string, c: MachineryConfig) => Record<string, unknown>;
}

const IN_MEMORY = new Set(['', 'memory', 'eager']);

function scheme(url: string): string {
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(url);
  return m ? (m[1] as string).toLowerCase() : '';
}

function pick(role: Role, url: string): AdapterRef | null {
  const s = scheme(url);
  const redis = s === 'redis' || s === 'rediss' || s === 'redis+socket';
  const amqp = s === 'amqp' || s === 'amqps';
  if (role === 'broker') {
    if (redis) {
      return {
        pkg: '@machinery-ts/broker-redis',
        exportName: 'RedisBroker',
        options: (u, c) => ({ url: u, defaultQueue: c.defaultQueue, ...c.redis }),
      };
    }
    if (amqp) {
      return {
        pkg: '@machinery-ts/broker-amqp',
        exportName: 'AmqpBroker',
        options: (u, c) => ({
          url: u,
          defaultQueue: c.defaultQueue,
          exchange: c.amqp.exchange,
          exchangeType: c.amqp.exchangeType,
          bindingKey: c.amqp.bindingKey,
          queueDeclareArgs: c.amqp.queueDeclareArgs,
          queueBindingArgs: c.amqp.queueBindingArgs,
          delayedQueue: c.amqp.delayedQueue || undefined,
          autoDelete: c.amqp.autoDelete,
        }),
      };
    }
    if (s === 'https' || s === 'http') {
      return {
        pkg: '@machinery-ts/broker-sqs',
        exportName: 'SqsBroker',
        options: (u, c) => ({
          brokerUrl: u,
          defaultQueue: c.defaultQueue,
          waitTimeSeconds: c.sqs.receiveWaitTimeSeconds,
          visibilityTimeoutSeconds: c.sqs.receiveVisibilityTimeout,
        }),
      };
    }
    return null;
  }
  if (role === 'result_backend') {
    const expire = (u: string, c: MachineryConfig) => ({ url: u, resultsExpireIn: c.resultsExpireIn });
    if (redis) return { pkg: '@machinery-ts/backend-redis', exportName: 'RedisBackend', options: expire };
    if (amqp)
      return {
        pkg: '@machinery-ts/backend-amqp',
        exportName: 'AmqpBackend',
        // The exchange is declared with the broker's type: RabbitMQ refuses (406) a second type.
        options: (u, c) => ({ ...expire(u, c), exchange: c.amqp.exchange, exchangeType: c.amqp.exchangeType }),
      };
    if (s === 'mongodb' || s === 'mongodb+srv') return { pkg: '@machinery-ts/backend-mongo', exportName: 'MongoBackend', options: expire };
    if (s === 'memcache') return { pkg: '@machinery-ts/backend-memcache', exportName: 'MemcacheBackend', options: expire };
    return null;
  }
  if (redis) return { pkg: '@machinery-ts/lock-redis', exportName: 'RedisLock', options: (u) => ({ url: u }) };
  return null;
}

export interface CreateServerOptions {
  /**
   * Where adapter packages are looked for first (pnpm keeps packages apart, so the application's
   * directory is tried before `@machinery-ts/core`'s own). @default process.cwd()
   */
  readonly resolveFrom?: string;
  /** Loads an adapter package instead of the default resolution (for bundlers and tests). */
  readonly importModule?: (pkg: string) => Promise<Record<string, unknown>>;
}

function resolvePackage(pkg: string, resolveFrom: string): string | undefined {
  for (const base of [join(resolveFrom, 'package.json'), import.meta.url]) {
    try {
      return createRequire(base).resolve(pkg);
    } catch {
      // try the next place
    }
  }
  return undefined;
}

async function importAdapter(ref: AdapterRef, role: Role, url: string, options: CreateServerOptions): Promise<new (o: Record<string, unknown>) => unknown> {
  let mod: Record<string, unknown>;
  try {
    if (options.importModule) {
      mod = await options.importModule(ref.pkg);
    } else {
      const resolved = resolvePackage(ref.pkg, options.resolveFrom ?? process.cwd());
      if (resolved === undefined) throw Object.assign(new Error(`Cannot find package ${ref.pkg}`), { code: 'ERR_MODULE_NOT_FOUND' });
      mod = (await import(pathToFileURL(resolved).href)) as Record<string, unknown>;
    }
  } catch (err) {
    const code = (err as { code?: string } | undefined)?.code;
    const why = code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND' ? 'which is not installed' : `which failed to load (${(err as Error).message})`;
    throw new ConfigError(`${role} "${redactUrl(url)}" needs ${ref.pkg}, ${why}: run \`pnpm add ${ref.pkg}\``);
  }
  const ctor = mod[ref.exportName];
  if (typeof ctor !== 'function') throw new ConfigError(`${role} "${redactUrl(url)}": ${ref.pkg} does not export ${ref.exportName}`);
  return ctor as new (o: Record<string, unknown>) => unknown;
}

async function build(role: Role, url: string, config: MachineryConfig, options: CreateServerOptions): Promise<(() => unknown) | undefined> {
  if (IN_MEMORY.has(url.trim().toLowerCase())) return undefined;
  if (role === 'result_backend' && url.trim().toLowerCase() === 'null') return () => new NullBackend();
  const ref = pick(role, url);
  if (!ref) {
    const expected =
      role === 'broker' ? 'memory, eager, redis://, amqp:// or https://sqs…' : role === 'lock' ? 'memory, eager or redis://' : 'memory, eager, null, redis://, amqp://, mongodb:// or memcache://';
    throw new ConfigError(`${role}: expected ${expected}, found "${redactUrl(url)}"`);
  }
  const Ctor = await importAdapter(ref, role, url, options);
  return () => new Ctor(Object.fromEntries(Object.entries(ref.options(url, config)).filter(([, v]) => v !== undefined)));
}

/**
 * A Server whose adapters are picked by URL scheme: `memory`/`eager` → in-memory; `redis://` →
 * `@machinery-ts/broker-redis`, `backend-redis`, `lock-redis`; `amqp://` → `broker-amqp`,
 * `backend-amqp`; `https://sqs…` → `broker-sqs`; `mongodb://` → `backend-mongo`; `memcache://` →
 * `backend-memcache`; a `null` result backend stores nothing (`NullBackend`). Adapter packages are optional; a missing one is a `ConfigError` with the
 * `pnpm add` command. Accepts `loadConfig()`'s result or a partial config over the defaults.
 */
export async function createServer(config: MachineryConfig | PartialConfig = {}, options: CreateServerOptions = {}): Promise<Server> {
  const c = mergeConfig(defaultConfig(), {}, {}, config);
  // Load every module before building anything, so a missing package leaves nothing open.
  const [broker, backend, lock] = await Promise.all([
    build('broker', c.broker, c, options),
    build('result_backend', c.resultBackend, c, options),
    build('lock', c.lock, c, options),
  ]);
  const made: { broker?: Broker; backend?: Backend; lock?: Lock } = {};
  try {
    if (broker) made.broker = broker() as Broker;
    if (backend) made.backend = backend() as Backend;
    if (lock) made.lock = lock() as Lock;
  } catch (err) {
    await Promise.allSettled([made.broker?.close(), made.backend?.close(), made.lock?.close()]);
    throw err;
  }
  return new Server({ ...made, defaultQueue: c.defaultQueue });
}
