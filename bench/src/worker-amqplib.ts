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
  // Either body the producer sends: {a, b}, or Go's task message (amqp.ts, `go`).
  const m = JSON.parse(msg.content.toString()) as { a: number; b: number } | { Args: [{ Value: number }, { Value: number }] };
  const [a, b] = 'Args' in m ? [m.Args[0].Value, m.Args[1].Value] : [m.a, m.b];
  track(a);
  add(a, b);
  ch.ack(msg);
});
ready();
