import { type ChildProcessByStdio, spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { RedisBackend } from '@machinery-ts/backend-redis';
import { Server, arg, newSignature, newTaskUUID } from '@machinery-ts/core';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { RedisBroker } from '../src/index.js';
import { deleteKeys, readStates, repoRoot, sleep, uniqueNames, waitAllSuccess } from './support.js';

const url = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const fixture = fileURLToPath(new URL('./fixtures/task-worker.ts', import.meta.url));
const { queue, delayedTasksKey, keyPrefix } = uniqueNames('kills');

const TASKS = 1000;
const KILLS = 20;
const SLOTS = 3;
const TASK_MS = 100;
const CONCURRENCY = 4;
// The fixture's lease settings: a dead consumer's messages are back within leaseMs + reapIntervalMs.
const REDELIVERY_MS = 1000 + 300;

interface Child {
  readonly proc: ChildProcessByStdio<null, Readable, Readable>;
  readonly running: Set<string>;
  readonly started: Set<string>;
  readonly spawnedAt: number;
  readyAfter: number;
  readonly closed: Promise<void>;
}

const redis = new Redis(url);
const uuids: string[] = [];
const children = new Set<Child>();

afterAll(async () => {
  for (const c of children) c.proc.kill('SIGKILL');
  await Promise.all([...children].map((c) => c.closed));
  await deleteKeys(redis, [queue, `${queue}:dead_letter`, delayedTasksKey, ...uuids], keyPrefix);
  await redis.quit();
});

describe('1,000 tasks while worker processes are SIGKILLed 20 times', () => {
  it('every task reaches SUCCESS; only tasks a killed worker held run twice', async () => {
    // uuid → arrival times of its "S" lines (each one is an execution), and who ran it.
    const starts = new Map<string, { t: number; by: Child }[]>();
    const startedByKilled = new Set<string>();
    const readyTimes: number[] = [];
    let stderr = '';

    const spawnChild = (): Child => {
      const proc = spawn(
        process.execPath,
        ['--conditions=source', '--import', 'tsx', fixture, url, queue, delayedTasksKey, keyPrefix, String(TASK_MS), String(CONCURRENCY)],
        { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let buf = '';
      const closed = new Promise<void>((r) => proc.on('close', () => r()));
      const child: Child = { proc, running: new Set(), started: new Set(), spawnedAt: Date.now(), readyAfter: -1, closed };
      proc.stderr.on('data', (d: Buffer) => {
        stderr = (stderr + d.toString()).slice(-4000);
      });
      proc.stdout.on('data', (d: Buffer) => {
        const now = Date.now();
        buf += d.toString();
        const lines = buf.split('\n');
        buf = lines.pop() ?? '';
        for (const line of lines) {
          if (line === 'ready') child.readyAfter = now - child.spawnedAt;
          else if (line.startsWith('S ')) {
            const u = line.slice(2);
            child.running.add(u);
            child.started.add(u);
            starts.set(u, [...(starts.get(u) ?? []), { t: now, by: child }]);
          } else if (line.startsWith('D ')) child.running.delete(line.slice(2));
        }
      });
      children.add(child);
      return child;
    };

    const producer = new Server({
      defaultQueue: queue,
      broker: new RedisBroker({ url, defaultQueue: queue, delayedTasksKey, keyPrefix }),
      backend: new RedisBackend({ url, resultsExpireIn: 900 }),
    });
    for (let i = 0; i < TASKS; i++) uuids.push(newTaskUUID());
    let sent = 0;
    const send = async (n: number): Promise<void> => {
      const from = sent;
      sent = Math.min(TASKS, sent + n);
      const batch = uuids.slice(from, sent);
      await Promise.all(batch.map((UUID, j) => producer.sendTask(newSignature({ UUID, Name: 'work', Args: [arg('int64', BigInt(from + j))] }))));
    };
    const succeeded = async (): Promise<number> =>
      [...(await readStates(redis, uuids.slice(0, sent))).values()].filter((s) => s?.State === 'SUCCESS').length;

    // Tasks are handed out as the kills go, so however slowly processes start on a busy
    // machine, every kill falls inside the run: at most 100 + 20 × 40 are sent before the last.
    await send(100);
    for (let i = 0; i < SLOTS; i++) spawnChild();
    const t0 = Date.now();
    const kills: { at: number; held: string[]; victim: Child }[] = [];
    while (kills.length < KILLS) {
      await sleep(150 + Math.random() * 450);
      const died = [...children].find((c) => c.proc.exitCode !== null || c.proc.signalCode !== null);
      if (died) throw new Error(`a worker process exited on its own (${died.proc.exitCode ?? died.proc.signalCode}): ${stderr}`);
      const ready = [...children].filter((c) => c.readyAfter >= 0);
      // Another worker stays up, so recovery measures the broker, not our respawn time.
      if (ready.length < 2) continue;
      const victim = ready[Math.floor(Math.random() * ready.length)] as Child;
      const pending = sent - (await succeeded());
      if (pending < 40) await send(40 - pending);
      for (let waited = 0; victim.running.size === 0 && waited < 5000; waited += 10) await sleep(10);
      await sleep(Math.random() * 150);
      const at = Date.now();
      victim.proc.kill('SIGKILL');
      await victim.closed;
      children.delete(victim);
      // Everything it printed before dying has been read now: these tasks were mid-run.
      const held = [...victim.running];
      for (const u of victim.started) startedByKilled.add(u);
      readyTimes.push(victim.readyAfter);
      kills.push({ at, held, victim });
      spawnChild();
    }
    const killPhaseMs = Date.now() - t0;
    const sentDuringKills = sent;
    await send(TASKS);
    await producer.close();

    const ok = await waitAllSuccess(redis, uuids, 120_000);
    const totalMs = Date.now() - t0;
    expect(ok, `tasks in SUCCESS (child stderr tail: ${stderr})`).toBe(TASKS);

    // The kills hit processes in the middle of tasks.
    const interrupting = kills.filter((k) => k.held.length > 0).length;
    expect(interrupting).toBeGreaterThanOrEqual((KILLS * 3) / 4);

    const states = await readStates(redis, uuids);
    uuids.forEach((u, i) => expect(states.get(u)?.Results).toEqual([{ Type: 'int64', Value: i }]));

    const executions = [...starts.values()].reduce((n, s) => n + s.length, 0);
    const twice = [...starts.entries()].filter(([, s]) => s.length > 1).map(([u]) => u);
    expect(uuids.every((u) => (starts.get(u)?.length ?? 0) >= 1)).toBe(true);

    // Recovery: from the kill to the moment a task it held started again in another process.
    const recovery: number[] = [];
    let lapsed = 0;
    for (const k of kills) {
      for (const u of k.held) {
        const runs = starts.get(u) ?? [];
        const mine = runs.findLast((s) => s.by === k.victim);
        // The victim's own last lines may be read after the kill, so only another process counts.
        const again = runs.find((s) => s.by !== k.victim && s.t > (mine?.t ?? 0));
        if (again === undefined) continue;
        // A victim starved of CPU past its lease has had the task taken away before the kill.
        if (again.t < k.at) lapsed += 1;
        else recovery.push(again.t - k.at);
      }
    }
    recovery.sort((a, b) => a - b);
    const pct = (p: number): number => recovery[Math.min(recovery.length - 1, Math.floor(p * recovery.length))] ?? NaN;
    const heldTotal = kills.reduce((n, k) => n + k.held.length, 0);
    const notByKilled = twice.filter((u) => !startedByKilled.has(u)).length;
    console.log(
      `kills: ${KILLS} (${interrupting} interrupted running tasks, ${heldTotal} tasks mid-run in all) over ${killPhaseMs} ms, ${sentDuringKills} tasks sent by then; ` +
        `all ${TASKS} SUCCESS after ${totalMs} ms; executions ${executions}, ${twice.length} tasks ran more than once ` +
        `(${notByKilled} of them never started by a killed process, ${lapsed} taken from a live process whose lease lapsed); a worker process was ready ${Math.min(...readyTimes)}–${Math.max(...readyTimes)} ms after spawn`,
    );
    console.log(
      `SIGKILL recovery (kill → task started again elsewhere; leaseMs 1000, reapIntervalMs 300; n=${recovery.length}): ` +
        `min ${recovery[0]} p50 ${pct(0.5)} p90 ${pct(0.9)} max ${recovery.at(-1)} ms`,
    );

    // Every task a killed process was running ran again, within the lease window plus scheduling slack.
    expect(recovery.length + lapsed).toBe(heldTotal);
    expect(recovery.at(-1) ?? 0).toBeLessThanOrEqual(REDELIVERY_MS + 3000);
    expect(await redis.llen(queue)).toBe(0);
    expect(await redis.llen(`${queue}:dead_letter`)).toBe(0);
  }, 240_000);
});
