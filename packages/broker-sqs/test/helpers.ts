import { SQSClient } from '@aws-sdk/client-sqs';
import { SqsBroker, type SqsBrokerOptions } from '../src/index.js';

// The SDK warns about Node 20 support on load; that is noise in test output.
process.removeAllListeners('warning');

export const endpoint = process.env.MTS_SQS_ENDPOINT ?? 'http://127.0.0.1:9325';
/** fauxqs names queues `http://sqs.<region>.localhost:<port>/000000000000/<name>` and matches URLs exactly. */
export const brokerUrl = process.env.MTS_SQS_BROKER_URL ?? `http://sqs.us-east-1.localhost:${new URL(endpoint).port || '80'}/000000000000`;
export const clientConfig = {
  endpoint,
  region: 'us-east-1',
  credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
};

export function newClient(): SQSClient {
  return new SQSClient(clientConfig);
}

export function makeBroker(extra: Partial<SqsBrokerOptions> = {}): SqsBroker {
  return new SqsBroker({
    brokerUrl,
    clientConfig,
    createQueues: true,
    visibilityTimeoutSeconds: 2,
    waitTimeSeconds: 1,
    ...extra,
  });
}
