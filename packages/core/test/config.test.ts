import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { configFromEnv, configFromYaml, defaultConfig, loadConfig, mergeConfig, redactUrl } from '../src/config.js';
import { ConfigError } from '../src/errors.js';

const fixture = fileURLToPath(new URL('./fixtures/config.yml', import.meta.url));

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

describe('loadConfig', () => {
  it('defaults: memory transports, Go defaults elsewhere', () => {
    const c = loadConfig({ env: {} });
    expect(c.broker).toBe('memory');
    expect(c.resultBackend).toBe('memory');
    expect(c.defaultQueue).toBe('machinery_tasks');
    expect(c.resultsExpireIn).toBe(3600);
    expect(c.amqp.prefetchCount).toBe(3);
    expect(c.redis.delayedTasksPollPeriod).toBe(500);
    expect(c.sqs.receiveVisibilityTimeout).toBeUndefined();
  });

  it('reads the whole YAML file, past byte 1000', () => {
    const c = loadConfig({ file: fixture, env: {} });
    expect(c).toEqual({
      ...defaultConfig(),
      broker: 'redis://localhost:6379',
      resultBackend: 'redis://localhost:6379',
      amqp: { ...defaultConfig().amqp, queueBindingArgs: { 'x-match': 'any' } },
      redis: { ...defaultConfig().redis, maxActive: 3, wait: true },
    });
  });

  it('environment beats the file; overrides beat the environment', () => {
    const env = {
      BROKER: 'redis://:envsecret@redis-env:6379/1',
      RESULTS_EXPIRE_IN: '60',
      REDIS_MAX_IDLE: '7',
      REDIS_REDIS_MAX_IDLE: '9',
      REDIS_IDLE_TIMEOUT: '30',
      AMQP_PREFETCH_COUNT: '10',
      AMQP_QUEUE_BINDING_ARGS: 'a:1,b:two',
      SQS_VISIBILITY_TIMEOUT: '45',
      SQS_VISIBILITY_HEARTBEAT: 'T',
      NO_UNIX_SIGNALS: 'true',
    };
    const c = loadConfig({ file: fixture, env });
    expect(c.broker).toBe('redis://:envsecret@redis-env:6379/1');
    expect(c.resultBackend).toBe('redis://localhost:6379');
    expect(c.resultsExpireIn).toBe(60);
    expect(c.redis.maxIdle).toBe(9); // the envconfig-prefixed name wins
    expect(c.redis.maxIdleTimeout).toBe(30);
    expect(c.redis.wait).toBe(true);
    expect(c.amqp.prefetchCount).toBe(10);
    expect(c.amqp.queueBindingArgs).toEqual({ a: '1', b: 'two' });
    expect(c.sqs).toEqual({ receiveWaitTimeSeconds: 0, receiveVisibilityTimeout: 45, visibilityHeartBeat: true });
    expect(c.noUnixSignals).toBe(true);

    const o = loadConfig({ file: fixture, env, overrides: { broker: 'memory', resultsExpireIn: 5, redis: { maxIdle: 1 } } });
    expect(o.broker).toBe('memory');
    expect(o.resultsExpireIn).toBe(5);
    expect(o.redis.maxIdle).toBe(1);
    expect(o.redis.maxIdleTimeout).toBe(30);
    expect(o.amqp.prefetchCount).toBe(10);
  });

  it('mergeConfig is pure and field by field', () => {
    const d = defaultConfig();
    const file = { redis: { maxIdle: 4 } };
    const merged = mergeConfig(d, file, { redis: { wait: true } }, { defaultQueue: 'q' });
    expect(merged.redis.maxIdle).toBe(4);
    expect(merged.redis.wait).toBe(true);
    expect(merged.redis.readTimeout).toBe(15);
    expect(merged.defaultQueue).toBe('q');
    expect(d).toEqual(defaultConfig());
    expect(file).toEqual({ redis: { maxIdle: 4 } });
    merged.amqp.queueBindingArgs.x = 1;
    expect(d.amqp.queueBindingArgs).toEqual({});
  });

  it('bad values name the key, the expected form and what was found', () => {
    expect(errorOf(() => loadConfig({ env: { RESULTS_EXPIRE_IN: 'soon' } })).message).toBe(
      'results_expire_in: expected a non-negative integer (seconds), found "soon" (in environment variable RESULTS_EXPIRE_IN)',
    );
    const e = errorOf(() => configFromYaml('redis:\n  wait: maybe\n', 'x.yml'));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toBe('redis.wait: expected a boolean (true or false), found "maybe" (in x.yml)');
    expect(errorOf(() => configFromYaml('amqp:\n  prefetch_count: -1\n')).message).toMatch(/^amqp.prefetch_count: expected a non-negative integer, found -1/);
    expect(errorOf(() => loadConfig({ env: {}, overrides: { resultsExpireIn: 1.5 } })).message).toMatch(/results_expire_in: .* found 1.5 \(in overrides\)/);
    expect(errorOf(() => configFromYaml('- a\n- b\n', 'list.yml')).message).toMatch(/list.yml: expected a map/);
    expect(errorOf(() => configFromYaml('broker: [1\n', 'broken.yml')).message).toMatch(/^broken.yml: not valid YAML/);
    expect(errorOf(() => loadConfig({ file: '/nonexistent/machinery.yml', env: {} })).message).toMatch(/cannot read config file \/nonexistent\/machinery.yml/);
  });

  it('never shows a password from a URL in an error', () => {
    const e1 = errorOf(() => configFromYaml('broker: 42\nresult_backend: ""\n'));
    expect(e1.message).toMatch(/^broker: expected a URL/);
    const dir = mkdtempSync(join(tmpdir(), 'mcfg-'));
    const file = join(dir, 'c.yml');
    writeFileSync(file, "broker: 'redis://user:hunter2@h:6379'\nresults_expire_in: 'later'\n");
    const e2 = errorOf(() => loadConfig({ file, env: {} }));
    expect(e2.message).not.toContain('hunter2');
    const e3 = errorOf(() => configFromYaml("broker: 'redis://:hunter2@h:6379\n  bad: [\n"));
    expect(e3.message).not.toContain('hunter2');
    const e4 = errorOf(() => configFromEnv({ LOCK: ' ' }));
    expect(e4.message).toMatch(/^lock: expected a URL/);
  });
});

describe('redactUrl', () => {
  it('masks user and password, keeps scheme, host, port and path', () => {
    expect(redactUrl('redis://:secret@localhost:6379/0')).toBe('redis://***@localhost:6379/0');
    expect(redactUrl('amqp://guest:guest@localhost:5672/')).toBe('amqp://***@localhost:5672/');
    expect(redactUrl('redis://pw@h1:6379,h2:6379/3')).toBe('redis://***@h1:6379,h2:6379/3');
    expect(redactUrl('mongodb+srv://u:p%40ss@cluster0.example.net/db?authSource=admin&password=x')).toBe('mongodb+srv://***@cluster0.example.net/db?…');
    expect(redactUrl('redis://localhost:6379')).toBe('redis://localhost:6379');
    expect(redactUrl('memory')).toBe('memory');
    expect(redactUrl('user:pw@host:1')).toBe('***@host:1');
  });
});
