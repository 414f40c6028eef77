#!/usr/bin/env node
// fauxqs (an SQS-compatible server) on loopback only. Its own CLI listens on
// 0.0.0.0, so this builds the app and listens on 127.0.0.1 itself.
// Usage: node scripts/fauxqs-server.mjs [port]   (default 9325, or FAUXQS_PORT)
// fauxqs is a devDependency of packages/broker-sqs; with pnpm's isolated
// node_modules it is resolved from there.
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const port = Number(process.argv[2] ?? process.env.FAUXQS_PORT ?? 9325);
const host = '127.0.0.1';

function fauxqsEntry() {
  const candidates = [
    join(root, 'packages/broker-sqs/node_modules/fauxqs'),
    join(root, 'node_modules/fauxqs'),
  ];
  for (const dir of candidates) {
    const pkgFile = join(dir, 'package.json');
    if (!existsSync(pkgFile)) continue;
    const pkg = JSON.parse(readFileSync(pkgFile, 'utf8'));
    const exp = pkg.exports?.['.'];
    const rel = exp?.import?.default ?? exp?.import ?? exp?.default ?? pkg.main;
    if (typeof rel === 'string') return pathToFileURL(realpathSync(join(dir, rel))).href;
  }
  throw new Error('fauxqs is not installed: run scripts/setup.sh (it is a devDependency of packages/broker-sqs)');
}

const { buildApp } = await import(fauxqsEntry());
const app = buildApp({ logger: false });
await app.listen({ port, host });
console.log(`fauxqs listening on http://${host}:${port} (pid ${process.pid})`);

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    app.close().finally(() => process.exit(0));
  });
}
