import { RedisBackend } from '@machinery-ts/backend-redis';
import { Server } from '@machinery-ts/core';
import { benchAmqpBroker } from './amqp-broker.js';
import { add, benchUrl, ready, runQueue, track, workerConcurrency } from './common.js';

const queue = runQueue();
const server = new Server({ broker: benchAmqpBroker(queue), backend: new RedisBackend({ url: benchUrl() }), defaultQueue: queue });
server.registerTask('add', ([a, b]) => {
  track(Number(a));
  return add(Number(a), Number(b));
});
await server.newWorker({ concurrency: workerConcurrency(), handleSignals: false }).start();
ready();
