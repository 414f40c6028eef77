import { randomUUID } from 'node:crypto';
import amqp from 'amqplib';
import type { ChannelModel } from 'amqplib';
import { afterAll, beforeAll } from 'vitest';

/**
 * A test file's place on the shared RabbitMQ: its own exchange name, the queues it names
 * (deleted after the file, with the exchange), and an admin connection for looking at
 * them directly. Registers the file's beforeAll/afterAll.
 */
export function rabbitTestBed(): { url: string; exchange: string; queues: string[]; readonly admin: ChannelModel } {
  const url = process.env.MTS_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5673/';
  const exchange = `mts_test_${randomUUID()}`;
  const queues: string[] = [];
  let admin: ChannelModel | undefined;
  beforeAll(async () => {
    admin = await amqp.connect(url);
  });
  afterAll(async () => {
    if (!admin) return;
    const ch = await admin.createChannel();
    for (const name of queues) await ch.deleteQueue(name).catch(() => {});
    await ch.deleteExchange(exchange).catch(() => {});
    await admin.close();
  });
  return {
    url,
    exchange,
    queues,
    get admin(): ChannelModel {
      if (!admin) throw new Error('the admin connection opens in beforeAll');
      return admin;
    },
  };
}
