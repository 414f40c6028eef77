import { randomUUID } from 'node:crypto';
import amqp from 'amqplib';
import { afterAll } from 'vitest';
import { brokerContract } from '@machinery-ts/contract-tests';
import type { Broker } from '@machinery-ts/core';
import { AmqpBroker } from '../src/index.js';

const url = process.env.MTS_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5673/';
const X = `mts_test_${randomUUID()}`;
const Q = `mts_test_q_${randomUUID()}`;

brokerContract('amqp', {
  create: () =>
    new AmqpBroker({
      url,
      exchange: X,
      defaultQueue: Q,
      bindingKey: Q,
      publishTimeoutMs: 5_000,
      // The contract's random queues disappear 10 minutes after their last use.
      queueDeclareArgs: { 'x-expires': 600_000 },
    }),
  crash: (broker: Broker) => (broker as AmqpBroker).crash(),
  redeliveryWaitMs: 2_000,
});

afterAll(async () => {
  const conn = await amqp.connect(url);
  const ch = await conn.createChannel();
  await ch.deleteExchange(X).catch(() => {});
  await conn.close();
});
