import { AmqpBroker } from '@machinery-ts/broker-amqp';
import { AMQP_URL } from './common.js';

/** The broker of both machinery-ts processes in the RabbitMQ case: the run's own exchange, queue and binding. */
export function benchAmqpBroker(queue: string): AmqpBroker {
  return new AmqpBroker({ url: AMQP_URL, exchange: queue, bindingKey: queue, defaultQueue: queue });
}
