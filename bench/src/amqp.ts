// The RabbitMQ case: machinery-ts on AmqpBroker against raw amqplib, same queue durability
// (durable queue, persistent messages, publisher confirms, manual acks).
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import amqp from 'amqplib';
import { benchAmqpBroker } from './amqp-broker.js';
import { AMQP_URL } from './common.js';
import { type Producer, type Run, type System, machineryProducer } from './systems.js';

const CHUNK = 1000;

export const amqpQueueName = (): string => `bench-${randomUUID().slice(0, 8)}`;

async function dropQueue(queue: string, exchange: boolean): Promise<void> {
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createChannel();
    await ch.deleteQueue(queue);
    if (exchange) await ch.deleteExchange(queue);
  } finally {
    await conn.close();
  }
}

async function machineryAmqp(run: Run, stored = true): Promise<Producer> {
  const p = machineryProducer(benchAmqpBroker(run.queue), run.queue, { stored });
  return {
    ...p,
    async close() {
      await p.close();
      await dropQueue(run.queue, true);
    },
  };
}

/**
 * The task message of Go Machinery (and of machinery-ts) for `add(i, 1)`, as a hand-written
 * producer would build it: the same bytes, key order included (454 with an empty routing key),
 * for the same work on RabbitMQ.
 */
function goMessage(i: number, queue: string): string {
  return JSON.stringify({
    UUID: `task_${randomUUID()}`,
    Name: 'add',
    RoutingKey: queue,
    ETA: null,
    GroupUUID: '',
    GroupTaskCount: 0,
    Args: [
      { Name: '', Type: 'int64', Value: i },
      { Name: '', Type: 'int64', Value: 1 },
    ],
    Headers: {},
    Priority: 0,
    Immutable: false,
    RetryCount: 0,
    RetryTimeout: 0,
    OnSuccess: null,
    OnError: null,
    ChordCallback: null,
    BrokerMessageGroupId: '',
    SQSReceiptHandle: '',
    StopTaskDeletionOnError: false,
    IgnoreWhenTaskNotRegistered: false,
  });
}

/**
 * Raw amqplib. `go`: Go's message and topology (the signature as body, the properties Go sets,
 * published through a direct exchange bound to the queue) rather than a 14-byte body to the
 * default exchange: what RabbitMQ itself costs for the message machinery-ts must send.
 */
async function rawAmqp(run: Run, go = false): Promise<Producer> {
  const conn = await amqp.connect(AMQP_URL);
  const ch = await conn.createConfirmChannel();
  await ch.assertQueue(run.queue, { durable: true });
  const exchange = go ? run.queue : '';
  if (go) {
    await ch.assertExchange(exchange, 'direct', { durable: true });
    await ch.bindQueue(run.queue, exchange, run.queue);
  }
  const body = (i: number) => Buffer.from(go ? goMessage(i, run.queue) : JSON.stringify({ a: i, b: 1 }));
  const props = go ? { persistent: true, contentType: 'application/json', priority: 0, headers: {} } : { persistent: true, contentType: 'application/json' };
  return {
    async enqueue(n, first = 0) {
      for (let i = 0; i < n; i += CHUNK) {
        for (let j = i; j < Math.min(n, i + CHUNK); j++) ch.publish(exchange, run.queue, body(first + j), props);
        await ch.waitForConfirms();
      }
    },
    async enqueueOne(n) {
      for (let i = 0; i < n; i++) {
        await new Promise<void>((resolve, reject) =>
          ch.publish(exchange, run.queue, body(i), props, (err) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve())),
        );
      }
    },
    // The worker acks right after running the task; its count is the only store there is.
    async counts(worker) {
      return { done: (await worker.stats()).executed, failed: 0 };
    },
    async close() {
      await ch.deleteQueue(run.queue).catch(() => {});
      if (go) await ch.deleteExchange(exchange).catch(() => {});
      await conn.close().catch(() => {});
    },
  };
}

export const AMQP_SYSTEMS: System[] = [
  { id: 'machinery-amqp', label: 'machinery-ts (amqp broker, redis backend)', group: 'amqp', worker: 'worker-machinery-amqp.ts', open: machineryAmqp },
  {
    id: 'machinery-amqp-null',
    label: 'machinery-ts (amqp broker, NullBackend)',
    group: 'amqp',
    worker: 'worker-machinery-amqp-null.ts',
    open: (run) => machineryAmqp(run, false),
  },
  { id: 'amqplib', label: 'raw amqplib (confirms, prefetch, ack each)', group: 'amqp', worker: 'worker-amqplib.ts', open: (run) => rawAmqp(run) },
  {
    id: 'amqplib-go',
    label: "raw amqplib, Go's message and exchange",
    group: 'amqp',
    worker: 'worker-amqplib.ts',
    open: (run) => rawAmqp(run, true),
  },
];

function rabbitPidFile(): string {
  const state =
    process.env.MTS_STATE_DIR ??
    (process.getuid?.() === 0
      ? '/var/lib/machinery-ts'
      : join(process.env.XDG_STATE_HOME ?? join(process.env.HOME ?? '', '.local', 'state'), 'machinery-ts'));
  return join(state, 'rabbitmq', 'machinery-ts@localhost.pid');
}

/**
 * CPU used so far by the RabbitMQ server that scripts/rabbitmq.sh started, µs; null when it is
 * not found (another server, not Linux). Linux clock ticks are 10 ms, coarse but fine over a run.
 */
export function rabbitCpuUs(): number | null {
  try {
    const pid = readFileSync(rabbitPidFile(), 'utf8').trim();
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10_000;
  } catch {
    return null;
  }
}
