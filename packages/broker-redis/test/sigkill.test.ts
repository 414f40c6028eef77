import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { Delivery } from '@machinery-ts/core';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { RedisBroker } from '../src/index.js';

const url = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const fixture = fileURLToPath(new URL('./fixtures/claim-and-hang.ts', import.meta.url));
const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const delayedTasksKey = `mts_test_delayed_${randomUUID()}`;
const queue = `mts_test_q_${randomUUID()}`;

const redis = new Redis(url);
afterAll(async () => {
  await redis.del(queue, delayedTasksKey);
  await redis.quit();
});

describe('a SIGKILLed consumer process', () => {
  it("loses nothing: its claimed messages come back to another consumer after the lease", async () => {
    const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', fixture, url, queue, delayedTasksKey], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    const waitFor = (text: string, n = 1): Promise<void> =>
      new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`child never printed ${text}: ${out}`)), 20_000);
        const check = (): void => {
          if (out.split(text).length - 1 >= n) {
            clearTimeout(t);
            resolve();
          }
        };
        child.stdout.on('data', () => setImmediate(check));
        check();
      });
    const exited = new Promise<void>((r) => child.on('exit', () => r()));
    await waitFor('ready');
    await redis.rpush(queue, 'm1', 'm2', 'm3');
    await waitFor('claimed', 2);
    child.kill('SIGKILL');
    await exited;
    const killedAt = Date.now();
    // Its two claimed messages are neither in the queue nor lost: they sit in its in-flight list.
    expect(await redis.lrange(queue, 0, -1)).toEqual(['m3']);

    const broker = new RedisBroker({ url, leaseMs: 1000, reapIntervalMs: 300, delayedTasksKey });
    const got: string[] = [];
    const at: number[] = [];
    await broker.consume(queue, {
      prefetch: 10,
      onDelivery: (d: Delivery) => {
        got.push(d.body);
        at.push(Date.now() - killedAt);
        void d.settle({ kind: 'ack' });
      },
    });
    const deadline = Date.now() + broker.capabilities.redeliveryTimeoutMs + 5_000;
    while (got.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await broker.close();
    console.log(`redelivery after SIGKILL: ${at.map((t) => `${t} ms`).join(', ')}`);
    expect([...got].sort()).toEqual(['m1', 'm2', 'm3']);
    expect(Math.max(...at)).toBeLessThanOrEqual(broker.capabilities.redeliveryTimeoutMs + 500);
  });
});
