export { SqsBroker, type SqsBrokerOptions, ETA_ATTRIBUTE, deadLetterQueueName } from './sqs-broker.js';
