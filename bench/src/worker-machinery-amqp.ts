import { RedisBackend } from '@machinery-ts/backend-redis';
import { NullBackend, Server } from '@machinery-ts/core';
import { benchAmqpBroker } from './amqp-broker.js';
import { add, benchUrl, ready, runQueue, track, workerConcurrency, workerReadAhead } from './common.js';

const queue = runQueue();
// BENCH_NULL_BACKEND: states kept nowhere, as raw amqplib keeps none (the same durability).
const backend = process.env.BENCH_NULL_BACKEND ? new NullBackend() : new RedisBackend({ url: benchUrl() });
const server = new Server({ broker: benchAmqpBroker(queue), backend, defaultQueue: queue });
server.registerTask('add', ([a, b]) => {
  track(Number(a));
  return add(Number(a), Number(b));
});
await server.newWorker({ concurrency: workerConcurrency(), ...workerReadAhead(), handleSignals: false }).start();
ready();
