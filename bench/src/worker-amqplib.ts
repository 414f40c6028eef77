// The RabbitMQ floor: one channel, prefetch = concurrency, one ack per message.
import amqp from 'amqplib';
import { AMQP_URL, add, ready, runQueue, track, workerConcurrency } from './common.js';

const queue = runQueue();
const conn = await amqp.connect(AMQP_URL);
const ch = await conn.createChannel();
await ch.assertQueue(queue, { durable: true });
await ch.prefetch(workerConcurrency());
await ch.consume(queue, (msg) => {
  if (msg === null) return;
  const { a, b } = JSON.parse(msg.content.toString()) as { a: number; b: number };
  track(a);
  add(a, b);
  ch.ack(msg);
});
ready();
