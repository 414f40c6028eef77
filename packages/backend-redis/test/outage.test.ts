import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { RedisBackend } from '../src/index.js';

// The Redis of scripts/redis-6391.sh exists to be stopped and started by tests.
const url = process.env.MTS_REDIS_RESTART_URL ?? 'redis://127.0.0.1:6391';
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const run = promisify(execFile);
const redis6391 = (cmd: 'start' | 'stop'): Promise<unknown> =>
  run('bash', [join(root, 'scripts', 'redis-6391.sh'), cmd], { cwd: root, timeout: 90_000 });

afterAll(async () => {
  await redis6391('start');
}, 90_000);

describe('RedisBackend through a Redis outage', () => {
  it('a write issued while Redis is down for 12 s waits and lands once it is back (ioredis alone gives up after ~10 s)', async () => {
    await redis6391('start');
    const backend = new RedisBackend({ url });
    const uuid = `task_${randomUUID()}`;
    try {
      await backend.setState({ taskUUID: uuid, taskName: 'add', state: 'PENDING' });
      await redis6391('stop');
      const outcome = backend.setState({ taskUUID: uuid, taskName: '', state: 'SUCCESS', results: [] }).then(
        () => 'written',
        (e: unknown) => `rejected: ${String(e)}`,
      );
      await new Promise((r) => setTimeout(r, 12_000));
      await redis6391('start');
      expect(await outcome).toBe('written');
      expect(await backend.getState(uuid)).toMatchObject({ State: 'SUCCESS', TaskName: 'add' });
    } finally {
      await backend.purgeState(uuid).catch(() => {});
      await backend.close();
    }
  }, 120_000);

  it('commandTimeoutMs bounds the wait with a clear rejection', async () => {
    await redis6391('start');
    const backend = new RedisBackend({ url, commandTimeoutMs: 1500 });
    try {
      await backend.getState('warm-up');
      await redis6391('stop');
      const t0 = Date.now();
      await expect(backend.getState('x')).rejects.toThrow(/timed out/i);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(1400);
    } finally {
      await redis6391('start');
      await backend.close();
    }
  }, 120_000);
});
