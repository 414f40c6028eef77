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
const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const X = `mts_test_${randomUUID()}`;
const Q = `mts_test_q_${randomUUID()}`;
const TOTAL = 2_000;
const PRODUCERS = 32;

afterAll(async () => {
  const conn = await amqp.connect(amqpUrl);
  const ch = await conn.createChannel();
  await ch.deleteQueue(Q).catch(() => {});
  await ch.deleteExchange(X).catch(() => {});
  await conn.close();
});

/** stop_app + start_app of the project's RabbitMQ node: every connection is closed by the server. */
function restartRabbit(): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('bash', ['scripts/rabbitmq.sh', 'restart'], { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('error', reject);
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`rabbitmq.sh restart exited ${code}: ${err}`))));
  });
}

describe('RabbitMQ restarted in the middle of 2,000 tasks', () => {
  it('finishes every task the producer was told was published, with the same worker and producer', async () => {
    const mk = (onError?: (e: Error) => void): Server =>
      new Server({
        broker: new AmqpBroker({ url: amqpUrl, exchange: X, bindingKey: Q, defaultQueue: Q, ...(onError ? { onError } : {}) }),
        backend: new RedisBackend({ url: redisUrl, resultsExpireIn: 600 }),
        defaultQueue: Q,
      });
    // The producer learns of the cut from its own connection, so the phases below follow
    // the real outage rather than a guess at how long rabbitmqctl takes to get there.
    let cutSeen = false;
    let onCut: () => void = () => {};
    const cut = new Promise<void>((resolve, reject) => {
      onCut = resolve;
      setTimeout(() => reject(new Error('the producer never saw its connection drop')), 60_000).unref();
    });
    cut.catch(() => {});
    const producer = mk((e) => {
      if (!cutSeen && /lost; reconnecting/.test(e.message)) {
        cutSeen = true;
        onCut();
      }
    });
    const workerServer = mk();
    const runs = new Map<string, number>();
    workerServer.registerTask('echo', async (args, ctx) => {
      await new Promise((r) => setTimeout(r, 2));
      runs.set(ctx.signature.UUID, (runs.get(ctx.signature.UUID) ?? 0) + 1);
      return args[0];
    });
    const workerErrors: string[] = [];
    const worker = workerServer.newWorker({ concurrency: 20, handleSignals: false, onError: (e) => workerErrors.push(e.message) });
    await worker.start();

    const published: string[] = [];
    const rejected: { uuid: string; message: string }[] = [];
    const slowest = { ms: 0 };
    let waited = 0;
    let startedInOutage = 0;
    let restart: Promise<void> | undefined;
    const restartWindow = { from: 0, to: 0 };
    let next = 0;
    try {
      const loops = Array.from({ length: PRODUCERS }, async () => {
        for (let i = next++; i < TOTAL; i = next++) {
          // Some tasks are kept for the outage itself and some for after it.
          if (i >= 1500 && !cutSeen) await cut;
          if (i >= 1750) await restart;
          if (i === 600) {
            restartWindow.from = Date.now();
            restart = restartRabbit().then(() => {
              restartWindow.to = Date.now();
            });
          }
          const uuid = newTaskUUID();
          const t0 = Date.now();
          if (cutSeen && !restartWindow.to) startedInOutage += 1;
          try {
            await producer.sendTask(newSignature({ UUID: uuid, Name: 'echo', RoutingKey: Q, Args: [{ Name: '', Type: 'int64', Value: i }] }));
            published.push(uuid);
          } catch (err) {
            rejected.push({ uuid, message: (err as Error).message });
          }
          const took = Date.now() - t0;
          slowest.ms = Math.max(slowest.ms, took);
          if (took > 300) waited += 1;
          // Slower between the restart command and the cut, so publishing is still going on when it lands.
          await new Promise((r) => setTimeout(r, restart && !cutSeen ? 100 : 30));
        }
      });
      await Promise.all(loops);
      await restart;

      console.log(
        `restart of ${restartWindow.to - restartWindow.from} ms: ${published.length} published (${startedInOutage} started during the outage, ` +
          `${waited} waited > 300 ms, slowest ${slowest.ms} ms), ` +
          `${rejected.length} rejected${rejected[0] ? ` (first: ${rejected[0].message})` : ''}`,
      );
      // Every publish ended one way or the other; a rejection says what happened.
      expect(published.length + rejected.length).toBe(TOTAL);
      for (const r of rejected) expect(r.message).toMatch(/Publish message error: AMQP .*(timed out|lost|closed)/);
      // The outage really hit both sides.
      expect(waited).toBeGreaterThan(0);
      expect(workerErrors.some((m) => /lost; reconnecting/.test(m))).toBe(true);

      const deadline = Date.now() + 30_000;
      while (published.some((u) => !runs.has(u)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const missing = published.filter((u) => !runs.has(u));
      expect(missing).toEqual([]);
      const states = await Promise.all(published.map((u) => producer.backend.getState(u)));
      const notSuccess = states.filter((s) => s?.State !== TaskStates.SUCCESS).length;
      expect(notSuccess).toBe(0);
      console.log(`${published.length} SUCCESS, ${[...runs.values()].filter((n) => n > 1).length} ran twice (at-least-once)`);
    } finally {
      await restart?.catch(() => {});
      await worker.stop();
      await producer.close();
      await workerServer.close();
    }
  }, 150_000);
});
