import { RedisBackend } from '@machinery-ts/backend-redis';
import { RedisBroker } from '@machinery-ts/broker-redis';
import { Server } from '@machinery-ts/core';
import { QUEUE, add, benchUrl, ready, track, workerConcurrency, workerReadAhead } from './common.js';

const url = benchUrl();
const server = new Server({
  broker: new RedisBroker({ url, defaultQueue: QUEUE }),
  // The soak shortens the states' life so that a million of them do not pile up in Redis.
  backend: new RedisBackend({ url, resultsExpireIn: Number(process.env.BENCH_RESULTS_EXPIRE_S ?? 0) }),
  defaultQueue: QUEUE,
});
server.registerTask('add', ([a, b]) => {
  track(Number(a));
  return add(Number(a), Number(b));
});
const progressStates = (process.env.BENCH_PROGRESS_STATES ?? 'all') as 'all' | 'started' | 'none';
const worker = server.newWorker({ concurrency: workerConcurrency(), ...workerReadAhead(), handleSignals: false, progressStates });
await worker.start();
ready();
