import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const PKG = join(dirname(fileURLToPath(import.meta.url)), '..');

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

async function gone(pid: number, withinMs: number): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  while (Date.now() < deadline) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return !alive(pid);
}

/** Starts the stand-in harness and resolves with it and its worker's pid once the worker is ready. */
function harness(worker: string, early = false): Promise<{ parent: ChildProcess; workerPid: number }> {
  const parent = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', join('test', 'fixtures', 'harness.ts'), worker, ...(early ? ['early'] : [])], {
    cwd: PKG,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    parent.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /worker (\d+)/.exec(out);
      if (m) resolve({ parent, workerPid: Number(m[1]) });
    });
    // 'close' rather than 'exit': it comes after the last of the output, which may name the worker.
    parent.once('close', (code) => reject(new Error(`the stand-in harness exited (${code}) before it named its worker`)));
  });
}

const started: number[] = [];
afterEach(() => {
  for (const pid of started.splice(0)) if (alive(pid)) process.kill(pid, 'SIGKILL');
});

// A worker left behind by a killed harness would take tasks from the next run's queue.
describe('bench worker processes', () => {
  for (const worker of ['worker-raw.ts', 'worker-machinery.ts']) {
    it(`${worker} exits when the harness that started it is killed`, async () => {
      const { parent, workerPid } = await harness(worker);
      started.push(workerPid, parent.pid as number);
      expect(alive(workerPid)).toBe(true);
      parent.kill('SIGKILL');
      expect(await gone(workerPid, 10_000)).toBe(true);
    });
  }

  it('a worker whose harness is gone before the worker is ready exits once it is', async () => {
    const { workerPid } = await harness('worker-raw.ts', true);
    started.push(workerPid);
    expect(await gone(workerPid, 15_000)).toBe(true);
  });
});
