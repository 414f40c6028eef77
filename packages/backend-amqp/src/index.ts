export {
  AmqpBackend,
  type AmqpBackendOptions,
  STATE_EVENTS_EXCHANGE,
  chordTriggeredQueue,
  goStateQueueArgs,
  groupMetaQueue,
} from './amqp-backend.js';
