// Worker processes as the harness sees them: spawned per run, asked for their stats over IPC.
import { type ChildProcess, spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { WorkerStats } from './common.js';

const PKG = join(dirname(fileURLToPath(import.meta.url)), '..');

export interface WorkerProcess {
  readonly child: ChildProcess;
  stats(): Promise<WorkerStats>;
  stop(): Promise<void>;
}

export async function startWorker(file: string, env: Record<string, string>): Promise<WorkerProcess> {
  // The harness's own module conditions: built packages (dist/) by default, the TypeScript
  // sources when it runs with --conditions=source.
  const conditions = process.execArgv.filter((a) => a.startsWith('--conditions'));
  const child = spawn(process.execPath, [...conditions, '--import', 'tsx', join('src', file)], {
    cwd: PKG,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
  });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${file} not ready after 30 s`)), 30_000);
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${file} exited (${code}) before ready`));
    });
  });
  return {
    child,
    stats: () =>
      new Promise<WorkerStats>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${file}: no stats after 10 s`)), 10_000);
        const onMessage = (m: { type?: string } & WorkerStats) => {
          if (m?.type !== 'stats') return;
          clearTimeout(timer);
          child.off('message', onMessage);
          resolve(m);
        };
        child.on('message', onMessage);
        child.send('stats');
      }),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    },
  };
}
