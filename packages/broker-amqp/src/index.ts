export { AmqpBroker, type AmqpBrokerOptions } from './amqp-broker.js';
