export {
  AmqpBackend,
  type AmqpBackendOptions,
  STATE_EVENTS_EXCHANGE,
  chordTriggeredQueue,
  goStateQueueArgs,
  groupMetaQueue,
  redactUrl,
} from './amqp-backend.js';
