import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const fixture = fileURLToPath(new URL('./fixtures/signal-worker.ts', import.meta.url));

function startWorker(taskMs: number) {
  const child = spawn(process.execPath, ['--conditions=source', '--import', 'tsx', fixture, String(taskMs)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  const waiters: [string, () => void][] = [];
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
    for (const [text, wake] of waiters) if (out.includes(text)) wake();
  });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    exited,
    output: () => out,
    waitFor: (text: string) => new Promise<void>((resolve) => (out.includes(text) ? resolve() : waiters.push([text, resolve]))),
  };
}

describe('worker signals', () => {
  it('first SIGTERM: finishes the running task and requeues the prefetched ones in order', async () => {
    const w = startWorker(400);
    await w.waitFor('started 0');
    w.child.kill('SIGTERM');
    expect(await w.exited).toBe(0);
    expect(w.output()).toContain('exit done=[0] pending=[1,2]');
  });

  it('second signal: stops at once without waiting for the running task, losing nothing prefetched', async () => {
    const w = startWorker(10_000);
    await w.waitFor('started 0');
    const t0 = Date.now();
    w.child.kill('SIGINT');
    await new Promise((r) => setTimeout(r, 100));
    w.child.kill('SIGINT');
    expect(await w.exited).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(w.output()).toContain('exit done=[] pending=[1,2]');
  });
});
