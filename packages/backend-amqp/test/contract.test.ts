import { randomUUID } from 'node:crypto';
import amqp from 'amqplib';
import { afterAll } from 'vitest';
import { backendContract } from '@machinery-ts/contract-tests';
import { AmqpBackend } from '../src/index.js';

const url = process.env.MTS_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5673/';
const exchange = `mts_backend_test_${randomUUID()}`;

backendContract('amqp', { create: () => new AmqpBackend({ url, exchange, operationTimeoutMs: 10_000 }), chordMembers: 100, chordRacers: 8 });

afterAll(async () => {
  const conn = await amqp.connect(url);
  const ch = await conn.createChannel();
  await ch.deleteExchange(exchange).catch(() => {});
  await conn.close();
});
