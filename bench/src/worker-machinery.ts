import { RedisBackend } from '@machinery-ts/backend-redis';
import { RedisBroker } from '@machinery-ts/broker-redis';
import { Server } from '@machinery-ts/core';
import { QUEUE, add, benchUrl, ready, workerConcurrency } from './common.js';

const url = benchUrl();
const server = new Server({
  broker: new RedisBroker({ url, defaultQueue: QUEUE }),
  backend: new RedisBackend({ url }),
  defaultQueue: QUEUE,
});
server.registerTask('add', ([a, b]) => add(Number(a), Number(b)));
const worker = server.newWorker({ concurrency: workerConcurrency(), handleSignals: false });
await worker.start();
ready();
