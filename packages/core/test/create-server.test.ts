import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createServer } from '../src/create-server.js';
import { ConfigError } from '../src/errors.js';
import { MemoryBackend } from '../src/memory/memory-backend.js';
import { MemoryBroker } from '../src/memory/memory-broker.js';
import { MemoryLock } from '../src/memory/memory-lock.js';
import { loadConfig } from '../src/config.js';

const empty = mkdtempSync(join(tmpdir(), 'mcs-'));

describe('createServer', () => {
  it('memory and eager give in-memory adapters and the configured queue', async () => {
    const server = await createServer(loadConfig({ env: { DEFAULT_QUEUE: 'q1' } }));
    expect(server.broker).toBeInstanceOf(MemoryBroker);
    expect(server.backend).toBeInstanceOf(MemoryBackend);
    expect(server.lock).toBeInstanceOf(MemoryLock);
    expect(server.defaultQueue).toBe('q1');
    const result = await server.sendTask({ Name: 'add' });
    expect((await server.backend.getState(result.taskUUID))?.State).toBe('PENDING');
    await server.close();
    const eager = await createServer({ broker: 'eager', resultBackend: 'eager', lock: 'eager' });
    expect(eager.broker).toBeInstanceOf(MemoryBroker);
    await eager.close();
  });

  it('a scheme whose package is not installed names the pnpm add command and hides the password', async () => {
    // Under vitest every workspace package resolves from source, so Node's own failure is
    // reproduced here: the error Node throws for a package that is not installed.
    const notInstalled = async (pkg: string): Promise<Record<string, unknown>> => {
      throw Object.assign(new Error(`Cannot find package '${pkg}' imported from ${empty}`), { code: 'ERR_MODULE_NOT_FOUND' });
    };
    const err = await createServer({ resultBackend: 'mongodb://admin:s3cret@db:27017/tasks' }, { importModule: notInstalled }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConfigError);
    const msg = (err as Error).message;
    expect(msg).toContain('pnpm add @machinery-ts/backend-mongo');
    expect(msg).toContain('mongodb://***@db:27017/tasks');
    expect(msg).not.toContain('s3cret');
    const broken = await createServer({ broker: 'amqp://u:p@mq:5672/' }, { importModule: async () => { throw new Error('syntax error in dist/index.js'); } }).catch((e: unknown) => e);
    expect((broken as Error).message).toBe('broker "amqp://***@mq:5672/" needs @machinery-ts/broker-amqp, which failed to load (syntax error in dist/index.js): run `pnpm add @machinery-ts/broker-amqp`');
  });

  it('an unknown scheme is a ConfigError', async () => {
    await expect(createServer({ broker: 'kafka://k:9092' })).rejects.toThrow(/broker: expected memory, eager, redis:\/\/.*found "kafka:\/\/k:9092"/);
    await expect(createServer({ lock: 'zookeeper://z' })).rejects.toBeInstanceOf(ConfigError);
  });
});

describe('createServer with a custom loader', () => {
  it('builds the adapter the package exports, with options from the config', async () => {
    const seen: Record<string, unknown>[] = [];
    class FakeBackend extends MemoryBackend {
      constructor(o: Record<string, unknown>) {
        super();
        seen.push(o);
      }
    }
    const server = await createServer(
      { resultBackend: 'redis://:pw@r:6379/2', resultsExpireIn: 10 },
      { importModule: async (pkg) => (pkg === '@machinery-ts/backend-redis' ? { RedisBackend: FakeBackend } : {}) },
    );
    expect(server.backend).toBeInstanceOf(FakeBackend);
    expect(seen).toEqual([{ url: 'redis://:pw@r:6379/2', resultsExpireIn: 10 }]);
    await server.close();
    const amqp = await createServer(
      { resultBackend: 'amqp://guest:guest@mq:5672/', amqp: { exchange: 'jobs', exchangeType: 'topic' } },
      { importModule: async (pkg) => (pkg === '@machinery-ts/backend-amqp' ? { AmqpBackend: FakeBackend } : {}) },
    );
    expect(seen[1]).toMatchObject({ url: 'amqp://guest:guest@mq:5672/', exchange: 'jobs', exchangeType: 'topic' });
    await amqp.close();
    await expect(
      createServer({ lock: 'redis://r:6379' }, { importModule: async () => ({}) }),
    ).rejects.toThrow('lock "redis://r:6379": @machinery-ts/lock-redis does not export RedisLock');
  });
});
