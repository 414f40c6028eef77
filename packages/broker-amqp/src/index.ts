export { AmqpBroker, redactUrl, type AmqpBrokerOptions } from './amqp-broker.js';
