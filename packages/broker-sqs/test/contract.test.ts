import { brokerContract } from '@machinery-ts/contract-tests';
import { makeBroker } from './helpers.js';

// A crash is a close without settling: SQS returns the unsettled message once its
// visibility timeout (2 s here) runs out.
brokerContract('sqs', {
  create: () => makeBroker(),
  crash: (broker) => broker.close(),
});
