import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import amqp from 'amqplib';
import { RedisBackend } from '@machinery-ts/backend-redis';
import { Server, TaskStates, newSignature, newTaskUUID } from '@machinery-ts/core';
import { afterAll, describe, expect, it } from 'vitest';
import { AmqpBroker } from '../src/index.js';

const amqpUrl = process.env.MTS_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5673/';
const redisUrl = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const fixture = fileURLToPath(new URL('./fixtures/worker-that-hangs.ts', import.meta.url));
const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const X = `mts_test_${randomUUID()}`;
const Q = `mts_test_q_${randomUUID()}`;

afterAll(async () => {
  const conn = await amqp.connect(amqpUrl);
  const ch = await conn.createChannel();
  await ch.deleteQueue(Q).catch(() => {});
  await ch.deleteExchange(X).catch(() => {});
  await conn.close();
});

describe('a worker process SIGKILLed mid-task', () => {
  it('has its task redelivered by RabbitMQ and finished by another worker (SUCCESS)', async () => {
    const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', fixture, amqpUrl, redisUrl, X, Q], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const exited = new Promise<void>((r) => child.on('exit', () => r()));
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    const waitFor = async (text: string): Promise<void> => {
      const deadline = Date.now() + 30_000;
      while (!out.includes(text)) {
        if (Date.now() > deadline) throw new Error(`the child never printed "${text}"; it printed: ${out}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const mk = (): Server =>
      new Server({
        broker: new AmqpBroker({ url: amqpUrl, exchange: X, bindingKey: Q, defaultQueue: Q }),
        backend: new RedisBackend({ url: redisUrl }),
        defaultQueue: Q,
      });
    const producer = mk();
    const rescuer = mk();
    let attempt = 0;
    let rescuedAt = 0;
    rescuer.registerTask('double', (args, ctx) => {
      rescuedAt = Date.now();
      attempt = ctx.attempt;
      return (args[0] as bigint) * 2n;
    });
    try {
      await waitFor('ready');
      const uuid = newTaskUUID();
      const result = await producer.sendTask(newSignature({ UUID: uuid, Name: 'double', RoutingKey: Q, Args: [{ Name: '', Type: 'int64', Value: 21 }] }));
      await waitFor(`started ${uuid}`);
      expect((await producer.backend.getState(uuid))?.State).toBe(TaskStates.STARTED);

      // The second worker is already consuming, so the only thing between the kill and
      // the rerun is RabbitMQ noticing the dead connection.
      await rescuer.newWorker({ concurrency: 1, handleSignals: false }).start();
      await new Promise((r) => setTimeout(r, 300));
      expect(rescuedAt).toBe(0);
      child.kill('SIGKILL');
      const killedAt = Date.now();
      await exited;

      expect(await result.get({ timeoutMs: 30_000 })).toEqual([42n]);
      const state = await producer.backend.getState(uuid);
      expect(state?.State).toBe(TaskStates.SUCCESS);
      expect(state?.Results).toEqual([{ Type: 'int64', Value: 42 }]);
      expect(attempt).toBe(2); // RabbitMQ's redelivered flag: it is the same message
      console.log(`SIGKILL recovery: rerun started ${rescuedAt - killedAt} ms after the kill, SUCCESS seen after ${Date.now() - killedAt} ms`);
    } finally {
      child.kill('SIGKILL');
      await producer.close();
      await rescuer.close();
    }
  });
});
