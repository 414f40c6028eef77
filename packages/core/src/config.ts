import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from './errors.js';

/**
 * Configuration with Go Machinery's YAML keys and environment names (`v2/config`).
 *
 * Differences from Go:
 * - `broker`, `result_backend` and `lock` default to `memory` (Go: `amqp://guest:guest@localhost:5672/`
 *   for the first two), so a program with no configuration runs in one process.
 * - The whole YAML file is read (Go reads only its first 1000 bytes); it is not re-read every 10 s.
 * - `AMQP_QUEUE_DECLARE_ARGS` is parsed like `AMQP_QUEUE_BINDING_ARGS` (`k:v,k:v`, string values);
 *   Go leaves its values nil.
 * - Bad values are errors naming the key, the expected form and what was found; Go often ignores them.
 *   Passwords in URLs are masked in every message (see `redactUrl`).
 */
export interface MachineryConfig {
  broker: string;
  defaultQueue: string;
  resultBackend: string;
  /** Seconds. */
  resultsExpireIn: number;
  lock: string;
  multipleBrokerSeparator: string;
  noUnixSignals: boolean;
  amqp: AmqpConfig;
  sqs: SqsConfig;
  redis: RedisConfig;
}

export interface AmqpConfig {
  exchange: string;
  exchangeType: string;
  queueDeclareArgs: Record<string, unknown>;
  queueBindingArgs: Record<string, unknown>;
  bindingKey: string;
  prefetchCount: number;
  autoDelete: boolean;
  delayedQueue: string;
}

export interface SqsConfig {
  receiveWaitTimeSeconds: number;
  /** Unset: the queue's own setting. */
  receiveVisibilityTimeout?: number;
  visibilityHeartBeat: boolean;
}

export interface RedisConfig {
  maxIdle: number;
  maxActive: number;
  /** Seconds. YAML `max_idle_timeout`, env `REDIS_IDLE_TIMEOUT`. */
  maxIdleTimeout: number;
  wait: boolean;
  readTimeout: number;
  writeTimeout: number;
  connectTimeout: number;
  /** Milliseconds. */
  normalTasksPollPeriod: number;
  /** Milliseconds. */
  delayedTasksPollPeriod: number;
  /** Empty means `delayed_tasks`. */
  delayedTasksKey: string;
  clientName: string;
  masterName: string;
  clusterEnabled: boolean;
}

/** Every field optional, at every level: what one source contributes. */
export interface PartialConfig extends Partial<Omit<MachineryConfig, 'amqp' | 'sqs' | 'redis'>> {
  amqp?: Partial<AmqpConfig>;
  sqs?: Partial<SqsConfig>;
  redis?: Partial<RedisConfig>;
}

export function defaultConfig(): MachineryConfig {
  return {
    broker: 'memory',
    defaultQueue: 'machinery_tasks',
    resultBackend: 'memory',
    resultsExpireIn: 3600,
    lock: 'memory',
    multipleBrokerSeparator: '',
    noUnixSignals: false,
    amqp: {
      exchange: 'machinery_exchange',
      exchangeType: 'direct',
      queueDeclareArgs: {},
      queueBindingArgs: {},
      bindingKey: 'machinery_task',
      prefetchCount: 3,
      autoDelete: false,
      delayedQueue: '',
    },
    sqs: { receiveWaitTimeSeconds: 0, visibilityHeartBeat: false },
    redis: {
      maxIdle: 3,
      maxActive: 0,
      maxIdleTimeout: 240,
      wait: false,
      readTimeout: 15,
      writeTimeout: 15,
      connectTimeout: 15,
      normalTasksPollPeriod: 1000,
      delayedTasksPollPeriod: 500,
      delayedTasksKey: '',
      clientName: '',
      masterName: '',
      clusterEnabled: false,
    },
  };
}

/**
 * Masks the user and password of a URL: `redis://:secret@host:6379/0` → `redis://***@host:6379/0`.
 * The query string is dropped (it may carry credentials). Non-URLs are returned unchanged
 * unless they contain `@`, whose left side is masked too.
 */
export function redactUrl(url: string): string {
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*:\/\/)([^/?#]*)([^?#]*)([?#].*)?$/.exec(url);
  if (!m) {
    const at = url.lastIndexOf('@');
    return at >= 0 ? `***@${url.slice(at + 1)}` : url;
  }
  const [, scheme, authority = '', path = '', query] = m;
  const at = authority.lastIndexOf('@');
  const host = at >= 0 ? `***@${authority.slice(at + 1)}` : authority;
  return `${scheme}${host}${path}${query ? query[0] + '…' : ''}`;
}

type Kind = 'string' | 'url' | 'uint' | 'optUint' | 'bool' | 'map';

export interface ConfigField {
  /** camelCase path into MachineryConfig. */
  readonly path: readonly [string] | readonly [string, string];
  /** YAML key, dotted for nested ones. */
  readonly yaml: string;
  /** Environment names, the winning one first (envconfig's prefixed form wins). */
  readonly env: readonly string[];
  readonly kind: Kind;
  readonly unit?: string;
}

const f = (path: ConfigField['path'], yaml: string, env: string[], kind: Kind, unit?: string): ConfigField =>
  unit === undefined ? { path, yaml, env, kind } : { path, yaml, env, kind, unit };
const amqpEnv = (n: string) => [`AMQP_AMQP_${n}`, `AMQP_${n}`];
const sqsEnv = (n: string) => [`SQS_SQS_${n}`, `SQS_${n}`];
const redisEnv = (n: string) => [`REDIS_REDIS_${n}`, `REDIS_${n}`];

/** Go's §10.1 table. */
export const CONFIG_FIELDS: readonly ConfigField[] = [
  f(['broker'], 'broker', ['BROKER'], 'url'),
  f(['defaultQueue'], 'default_queue', ['DEFAULT_QUEUE'], 'string'),
  f(['resultBackend'], 'result_backend', ['RESULT_BACKEND'], 'url'),
  f(['resultsExpireIn'], 'results_expire_in', ['RESULTS_EXPIRE_IN'], 'uint', 'seconds'),
  f(['lock'], 'lock', ['LOCK'], 'url'),
  f(['multipleBrokerSeparator'], 'multiple_broker_separator', ['MULTIPLE_BROKEN_SEPARATOR'], 'string'),
  f(['noUnixSignals'], 'no_unix_signals', ['NO_UNIX_SIGNALS'], 'bool'),
  f(['amqp', 'exchange'], 'amqp.exchange', amqpEnv('EXCHANGE'), 'string'),
  f(['amqp', 'exchangeType'], 'amqp.exchange_type', amqpEnv('EXCHANGE_TYPE'), 'string'),
  f(['amqp', 'queueDeclareArgs'], 'amqp.queue_declare_args', amqpEnv('QUEUE_DECLARE_ARGS'), 'map'),
  f(['amqp', 'queueBindingArgs'], 'amqp.queue_binding_args', amqpEnv('QUEUE_BINDING_ARGS'), 'map'),
  f(['amqp', 'bindingKey'], 'amqp.binding_key', amqpEnv('BINDING_KEY'), 'string'),
  f(['amqp', 'prefetchCount'], 'amqp.prefetch_count', amqpEnv('PREFETCH_COUNT'), 'uint'),
  f(['amqp', 'autoDelete'], 'amqp.auto_delete', amqpEnv('AUTO_DELETE'), 'bool'),
  f(['amqp', 'delayedQueue'], 'amqp.delayed_queue', amqpEnv('DELAYED_QUEUE'), 'string'),
  f(['sqs', 'receiveWaitTimeSeconds'], 'sqs.receive_wait_time_seconds', sqsEnv('WAIT_TIME_SECONDS'), 'uint', 'seconds'),
  f(['sqs', 'receiveVisibilityTimeout'], 'sqs.receive_visibility_timeout', sqsEnv('VISIBILITY_TIMEOUT'), 'optUint', 'seconds'),
  f(['sqs', 'visibilityHeartBeat'], 'sqs.visibility_hearth_beat', sqsEnv('VISIBILITY_HEARTBEAT'), 'bool'),
  f(['redis', 'maxIdle'], 'redis.max_idle', redisEnv('MAX_IDLE'), 'uint'),
  f(['redis', 'maxActive'], 'redis.max_active', redisEnv('MAX_ACTIVE'), 'uint'),
  f(['redis', 'maxIdleTimeout'], 'redis.max_idle_timeout', redisEnv('IDLE_TIMEOUT'), 'uint', 'seconds'),
  f(['redis', 'wait'], 'redis.wait', redisEnv('WAIT'), 'bool'),
  f(['redis', 'readTimeout'], 'redis.read_timeout', redisEnv('READ_TIMEOUT'), 'uint', 'seconds'),
  f(['redis', 'writeTimeout'], 'redis.write_timeout', redisEnv('WRITE_TIMEOUT'), 'uint', 'seconds'),
  f(['redis', 'connectTimeout'], 'redis.connect_timeout', redisEnv('CONNECT_TIMEOUT'), 'uint', 'seconds'),
  f(['redis', 'normalTasksPollPeriod'], 'redis.normal_tasks_poll_period', redisEnv('NORMAL_TASKS_POLL_PERIOD'), 'uint', 'milliseconds'),
  f(['redis', 'delayedTasksPollPeriod'], 'redis.delayed_tasks_poll_period', redisEnv('DELAYED_TASKS_POLL_PERIOD'), 'uint', 'milliseconds'),
  f(['redis', 'delayedTasksKey'], 'redis.delayed_tasks_key', redisEnv('DELAYED_TASKS_KEY'), 'string'),
  f(['redis', 'clientName'], 'redis.client_name', redisEnv('CLIENT_NAME'), 'string'),
  f(['redis', 'masterName'], 'redis.master_name', redisEnv('MASTER_NAME'), 'string'),
  f(['redis', 'clusterEnabled'], 'redis.cluster_enabled', redisEnv('CLUSTER_ENABLED'), 'bool'),
];

function shown(field: ConfigField, value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(field.kind === 'url' ? redactUrl(value) : value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a map';
  return String(value);
}

const GO_TRUE = new Set(['1', 't', 'T', 'TRUE', 'true', 'True']);
const GO_FALSE = new Set(['0', 'f', 'F', 'FALSE', 'false', 'False']);

/** Converts one raw value (YAML value, env string or override) to the field's type, or throws ConfigError. */
function convert(field: ConfigField, value: unknown, where: string): unknown {
  const bad = (expected: string): never => {
    throw new ConfigError(`${field.yaml}: expected ${expected}, found ${shown(field, value)}${where}`);
  };
  switch (field.kind) {
    case 'string':
      if (typeof value !== 'string') bad('a string');
      return value;
    case 'url':
      if (typeof value !== 'string' || value.trim() === '') bad('a URL such as redis://host:6379 or memory');
      return (value as string).trim();
    case 'uint':
    case 'optUint': {
      const expected = `a non-negative integer${field.unit ? ` (${field.unit})` : ''}`;
      if (typeof value === 'number') return Number.isSafeInteger(value) && value >= 0 ? value : bad(expected);
      if (typeof value === 'string' && /^\s*\d+\s*$/.test(value)) {
        const n = Number(value);
        return Number.isSafeInteger(n) ? n : bad(expected);
      }
      return bad(expected);
    }
    case 'bool':
      if (typeof value === 'boolean') return value;
      if (typeof value === 'string' && GO_TRUE.has(value.trim())) return true;
      if (typeof value === 'string' && GO_FALSE.has(value.trim())) return false;
      return bad('a boolean (true or false)');
    case 'map':
      if (typeof value === 'string') {
        const out: Record<string, unknown> = {};
        for (const pair of value.split(',')) {
          if (pair.trim() === '') continue;
          const i = pair.indexOf(':');
          if (i <= 0) bad('key:value pairs separated by commas');
          out[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
        }
        return out;
      }
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) return { ...(value as Record<string, unknown>) };
      return bad('a map');
  }
}

function set(target: PartialConfig, field: ConfigField, value: unknown): void {
  const [a, b] = field.path;
  const t = target as Record<string, unknown>;
  if (b === undefined) {
    t[a] = value;
  } else {
    const sub = (t[a] ??= {}) as Record<string, unknown>;
    sub[b] = value;
  }
}

function get(source: Record<string, unknown>, keys: readonly string[]): unknown {
  let cur: unknown = source;
  for (const k of keys) {
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur)) return undefined;
    cur = (cur as Record<string, unknown>)[k];
  }
  return cur;
}

/** Parses YAML text with Go's keys. `name` appears in error messages. */
export function configFromYaml(text: string, name = 'config file'): PartialConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    // Only the first line: the rest quotes the file, which may hold a password.
    throw new ConfigError(`${name}: not valid YAML: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(`${name}: expected a map of settings at the top level`);
  const out: PartialConfig = {};
  for (const field of CONFIG_FIELDS) {
    const value = get(doc as Record<string, unknown>, field.yaml.split('.'));
    // A YAML key with no value (`exchange:`) is null: treated as absent, like Go's zero value.
    if (value === undefined || value === null) continue;
    set(out, field, convert(field, value, ` (in ${name})`));
  }
  return out;
}

/** Reads Go's environment names; the envconfig-prefixed form (`REDIS_REDIS_MAX_IDLE`) wins. */
export function configFromEnv(env: Record<string, string | undefined>): PartialConfig {
  const out: PartialConfig = {};
  for (const field of CONFIG_FIELDS) {
    const name = field.env.find((n) => env[n] !== undefined && env[n] !== '');
    if (name === undefined) continue;
    set(out, field, convert(field, env[name], ` (in environment variable ${name})`));
  }
  return out;
}

/** Checks typed overrides with the same rules as the file and the environment. */
export function checkOverrides(overrides: PartialConfig): PartialConfig {
  const out: PartialConfig = {};
  for (const field of CONFIG_FIELDS) {
    const value = get(overrides as Record<string, unknown>, field.path);
    if (value === undefined) continue;
    set(out, field, convert(field, value, ' (in overrides)'));
  }
  return out;
}

/** Pure: later sources win field by field (maps are replaced whole). Inputs are not modified. */
export function mergeConfig(
  defaults: MachineryConfig,
  file: PartialConfig = {},
  env: PartialConfig = {},
  overrides: PartialConfig = {},
): MachineryConfig {
  const out: MachineryConfig = {
    ...defaults,
    amqp: { ...defaults.amqp },
    sqs: { ...defaults.sqs },
    redis: { ...defaults.redis },
  };
  for (const src of [file, env, overrides]) {
    const { amqp, sqs, redis, ...top } = src;
    for (const [k, v] of Object.entries(top)) if (v !== undefined) (out as unknown as Record<string, unknown>)[k] = v;
    for (const [k, v] of Object.entries(amqp ?? {})) if (v !== undefined) (out.amqp as unknown as Record<string, unknown>)[k] = v;
    for (const [k, v] of Object.entries(sqs ?? {})) if (v !== undefined) (out.sqs as unknown as Record<string, unknown>)[k] = v;
    for (const [k, v] of Object.entries(redis ?? {})) if (v !== undefined) (out.redis as unknown as Record<string, unknown>)[k] = v;
  }
  out.amqp.queueDeclareArgs = { ...out.amqp.queueDeclareArgs };
  out.amqp.queueBindingArgs = { ...out.amqp.queueBindingArgs };
  return out;
}

export interface LoadConfigOptions {
  /** Path of a YAML file with Go's keys. */
  readonly file?: string;
  /** @default process.env */
  readonly env?: Record<string, string | undefined>;
  readonly overrides?: PartialConfig;
}

/** Precedence: overrides > environment > file > defaults. */
export function loadConfig(options: LoadConfigOptions = {}): MachineryConfig {
  let file: PartialConfig = {};
  if (options.file !== undefined) {
    let text: string;
    try {
      text = readFileSync(options.file, 'utf8');
    } catch (err) {
      throw new ConfigError(`cannot read config file ${options.file}: ${(err as Error).message}`);
    }
    file = configFromYaml(text, options.file);
  }
  const env = configFromEnv(options.env ?? process.env);
  const overrides = checkOverrides(options.overrides ?? {});
  return mergeConfig(defaultConfig(), file, env, overrides);
}
