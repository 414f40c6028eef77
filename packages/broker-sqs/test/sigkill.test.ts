import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { RedisBackend } from '@machinery-ts/backend-redis';
import { Server, TaskStates, newSignature, newTaskUUID } from '@machinery-ts/core';
import { afterAll, describe, expect, it } from 'vitest';
import { makeBroker } from './helpers.js';

const redisUrl = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const fixture = fileURLToPath(new URL('./fixtures/sqs-worker.ts', import.meta.url));
const repoRoot = fileURLToPath(new URL('../../..', import.meta.url));
const queue = `sqs_kill_${randomUUID()}`;

type Child = ChildProcessByStdio<null, Readable, null>;
const children: Child[] = [];
afterAll(() => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** Starts a worker process and returns a way to wait for its output lines. */
function startWorker(mode: 'hang' | 'finish'): { child: Child; waitFor: (pattern: RegExp) => Promise<RegExpMatchArray> } {
  const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', fixture, queue, redisUrl, mode], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  const waitFor = (pattern: RegExp): Promise<RegExpMatchArray> =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        child.stdout.off('data', check);
        reject(new Error(`${mode} worker never printed ${pattern}; it printed: ${out}`));
      }, 30_000);
      function check(): void {
        const m = out.match(pattern);
        if (!m) return;
        clearTimeout(t);
        child.stdout.off('data', check);
        resolve(m);
      }
      child.stdout.on('data', check);
      check();
    });
  return { child, waitFor };
}

describe('a SIGKILLed SQS worker process', () => {
  it('its task runs again in another process after the visibility timeout and ends SUCCESS', async () => {
    const broker = makeBroker({ defaultQueue: queue }); // visibility 2 s, as in the workers
    const server = new Server({ broker, backend: new RedisBackend({ url: redisUrl }), defaultQueue: queue });
    try {
      const victim = startWorker('hang');
      await victim.waitFor(/^ready$/m);
      const result = await server.sendTask(newSignature({ UUID: newTaskUUID(), Name: 'crashable' }));
      expect((await victim.waitFor(/^started (\d+) \d+$/m))[1]).toBe('1');

      // The survivor is polling before the kill, so the measured gap is SQS's, not a process start.
      const survivor = startWorker('finish');
      await survivor.waitFor(/^ready$/m);
      const exited = new Promise<void>((r) => victim.child.once('exit', () => r()));
      victim.child.kill('SIGKILL');
      const killedAt = Date.now();
      await exited;
      // The victim's STARTED is in Redis for everyone to see; nothing finished it.
      expect((await result.state())?.State).toBe(TaskStates.STARTED);

      const rerun = await survivor.waitFor(/^started (\d+) (\d+)$/m);
      const recoveryMs = Number(rerun[2]) - killedAt;
      console.log(`SIGKILL → rerun start: ${recoveryMs} ms (visibility timeout ${broker.capabilities.redeliveryTimeoutMs} ms, heartbeat every ${broker.capabilities.redeliveryTimeoutMs / 2} ms)`);
      expect(rerun[1]).toBe('2'); // ApproximateReceiveCount: the second delivery of the same message
      // Its last heartbeat was about half a timeout before the kill, so the message stays
      // invisible for about the other half (a quarter allows for timer slip on a busy machine);
      // it is back within one timeout plus a long poll.
      expect(recoveryMs).toBeGreaterThanOrEqual(broker.capabilities.redeliveryTimeoutMs / 4);
      expect(recoveryMs).toBeLessThan(broker.capabilities.redeliveryTimeoutMs + 10_000);

      expect(await result.get({ timeoutMs: 20_000 })).toEqual(['recovered']);
      const final = await result.state();
      expect(final?.State).toBe(TaskStates.SUCCESS);
      expect(final?.Results).toEqual([{ Type: 'string', Value: 'recovered' }]);
      survivor.child.kill('SIGKILL');
    } finally {
      await server.close();
    }
  });
});
