#!/usr/bin/env node
// Smoke check of the SQS-compatible server (fauxqs) that scripts/services.sh
// starts: CreateQueue, SendMessage, ReceiveMessage, DeleteMessage, DeleteQueue
// with @aws-sdk/client-sqs (resolved from packages/broker-sqs).
// Usage: node scripts/check-sqs.mjs [endpoint]   (default MTS_SQS_ENDPOINT or http://127.0.0.1:9325)
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

// The SDK warns about Node 20 support on load; that is noise here.
process.removeAllListeners('warning');
process.on('warning', (w) => { if (!String(w.message).includes('NodeVersionSupportWarning') && w.name !== 'NodeVersionSupportWarning') console.warn(w); });

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(join(root, 'packages/broker-sqs/package.json'));
const {
  SQSClient, CreateQueueCommand, SendMessageCommand, ReceiveMessageCommand,
  DeleteMessageCommand, DeleteQueueCommand,
} = require('@aws-sdk/client-sqs');

const endpoint = process.argv[2] ?? process.env.MTS_SQS_ENDPOINT ?? 'http://127.0.0.1:9325';
const sqs = new SQSClient({
  endpoint,
  region: 'us-east-1',
  credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
});

const name = `mts-check-${process.pid}-${Date.now()}`;
const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: name }));
const body = `hello ${name}`;
await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: body }));
const got = await sqs.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 1, WaitTimeSeconds: 2 }));
const msg = got.Messages?.[0];
if (msg?.Body !== body) {
  console.error(`check-sqs: expected ${JSON.stringify(body)}, received ${JSON.stringify(msg?.Body)}`);
  process.exit(1);
}
await sqs.send(new DeleteMessageCommand({ QueueUrl, ReceiptHandle: msg.ReceiptHandle }));
await sqs.send(new DeleteQueueCommand({ QueueUrl }));
console.log(`check-sqs: ok against ${endpoint} (queue URL ${QueueUrl})`);
sqs.destroy();
