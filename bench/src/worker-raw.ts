// The floor: a reliable-queue pattern with plain commands (BLMOVE to a processing list, LREM on done).
import { Redis } from 'ioredis';
import { RAW_DONE, RAW_PROCESSING, RAW_QUEUE, add, benchUrl, rawResultKey, ready, track, workerConcurrency } from './common.js';

const url = benchUrl();
const shared = new Redis(url);
const loops = Array.from({ length: workerConcurrency() }, async () => {
  const conn = new Redis(url);
  for (;;) {
    const msg = await conn.blmove(RAW_QUEUE, RAW_PROCESSING, 'RIGHT', 'LEFT', 1);
    if (msg === null) continue;
    const { id, a, b } = JSON.parse(msg) as { id: string; a: number; b: number };
    track(a);
    const result = add(a, b);
    await shared.multi().lrem(RAW_PROCESSING, 1, msg).lpush(rawResultKey(id), String(result)).incr(RAW_DONE).exec();
  }
});
ready();
await Promise.all(loops);
