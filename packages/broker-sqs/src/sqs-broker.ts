import {
  ChangeMessageVisibilityCommand,
  CreateQueueCommand,
  DeleteMessageBatchCommand,
  DeleteMessageCommand,
  type Message,
  type MessageAttributeValue,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  type SendMessageBatchRequestEntry,
  SendMessageCommand,
  SQSClient,
  type SQSClientConfig,
} from '@aws-sdk/client-sqs';
import {
  type Broker,
  type BrokerCapabilities,
  ClosedError,
  ConfigError,
  type ConsumeOptions,
  type Delivery,
  encodeSignature,
  type Outcome,
  parseRfc3339,
  type Signature,
  type Subscription,
} from '@machinery-ts/core';

/** Message attribute carrying the real ETA (epoch ms) of a message delayed in hops. Go ignores it. */
export const ETA_ATTRIBUTE = 'machinery-eta';
/** Longest visibility SQS allows (12 h), in seconds. */
const MAX_VISIBILITY_SECONDS = 43_200;
/** Longest DelaySeconds SQS allows (15 min). */
const SQS_MAX_DELAY_SECONDS = 900;
/** Standard default visibility timeout of an SQS queue. */
const DEFAULT_VISIBILITY_SECONDS = 30;

export interface SqsBrokerOptions {
  /**
   * Go's `cnf.Broker`: the queue URL prefix, e.g. `https://sqs.us-east-1.amazonaws.com/123456789012`.
   * Queue URL = `brokerUrl + '/' + queueName`, as Go builds it.
   */
  readonly brokerUrl: string;
  /** A client of yours (left open by `close`). */
  readonly client?: SQSClient;
  /** Config for the client this broker creates when `client` is not given. */
  readonly clientConfig?: SQSClientConfig;
  /** Queue for signatures without a routing key. @default 'machinery_tasks' */
  readonly defaultQueue?: string;
  /** Long-polling wait of ReceiveMessage, 0–20 s. @default 20 */
  readonly waitTimeSeconds?: number;
  /**
   * Visibility timeout requested on receive and renewed by `extend()`. Unset: the queue's
   * own (assumed to be SQS's default of 30 s for `capabilities.redeliveryTimeoutMs`).
   */
  readonly visibilityTimeoutSeconds?: number;
  /** Create a missing queue (CreateQueue, idempotent) the first time this broker uses it. @default false */
  readonly createQueues?: boolean;
  /** Longest single DelaySeconds hop (≤ 900). Longer ETAs travel in hops. @default 900 */
  readonly maxDelaySeconds?: number;
  /**
   * How long an ack waits for up to 9 others to share one DeleteMessageBatch. A full batch
   * of 10 goes at once. 0 = one DeleteMessage per message (as Go does). @default 10
   */
  readonly deleteBatchWindowMs?: number;
}

interface OutgoingEntry {
  queue: string;
  body: string;
  delaySeconds?: number;
  attributes?: Record<string, MessageAttributeValue>;
  groupId?: string;
  dedupId?: string;
}

interface ErrorWithName {
  name?: string;
  Code?: string;
}

function isQueueMissing(err: unknown): boolean {
  const e = err as ErrorWithName;
  return e?.name === 'QueueDoesNotExist' || e?.Code === 'AWS.SimpleQueueService.NonExistentQueue';
}

function isAbort(err: unknown): boolean {
  return (err as ErrorWithName)?.name === 'AbortError';
}

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

/** The name of this broker's own dead-letter queue for `queue`. */
export function deadLetterQueueName(queue: string): string {
  return queue.endsWith('.fifo') ? `${queue.slice(0, -5)}-dead-letter.fifo` : `${queue}-dead-letter`;
}

/**
 * Amazon SQS broker, wire compatible with Go Machinery v2's `brokers/sqs`:
 * same queue URLs, same body (encoded before the routing key is adjusted, so
 * `RoutingKey` may be `""`), FIFO group id from `BrokerMessageGroupId`.
 * Deviations from Go (all fixes): ETAs beyond 15 min travel in hops instead of
 * failing, FIFO ETAs are honoured and FIFO retries are not deduplicated away,
 * one visibility heartbeat per message, long polling by default.
 */
export class SqsBroker implements Broker {
  readonly capabilities: BrokerCapabilities;
  readonly client: SQSClient;
  readonly #ownsClient: boolean;
  readonly #brokerUrl: string;
  readonly #defaultQueue: string;
  readonly #createQueues: boolean;
  readonly #created = new Map<string, Promise<void>>();
  readonly #subscriptions = new Set<SqsSubscription>();
  readonly #deleters = new Map<string, DeleteBatcher>();
  readonly waitTimeSeconds: number;
  readonly visibilityTimeoutSeconds: number | undefined;
  readonly maxDelaySeconds: number;
  readonly deleteBatchWindowMs: number;
  #closed = false;

  constructor(options: SqsBrokerOptions) {
    if (!options.brokerUrl) throw new ConfigError('SqsBroker: brokerUrl is required (e.g. https://sqs.us-east-1.amazonaws.com/123456789012)');
    this.#brokerUrl = options.brokerUrl.replace(/\/+$/, '');
    this.#ownsClient = !options.client;
    this.client = options.client ?? new SQSClient(options.clientConfig ?? {});
    this.#defaultQueue = options.defaultQueue ?? 'machinery_tasks';
    this.#createQueues = options.createQueues ?? false;
    this.waitTimeSeconds = Math.min(20, Math.max(0, Math.floor(options.waitTimeSeconds ?? 20)));
    this.visibilityTimeoutSeconds = options.visibilityTimeoutSeconds;
    this.maxDelaySeconds = Math.min(SQS_MAX_DELAY_SECONDS, Math.max(1, Math.floor(options.maxDelaySeconds ?? SQS_MAX_DELAY_SECONDS)));
    const window = options.deleteBatchWindowMs ?? 10;
    this.deleteBatchWindowMs = Number.isFinite(window) && window > 0 ? window : 0;
    this.capabilities = {
      redeliveryTimeoutMs: (options.visibilityTimeoutSeconds ?? DEFAULT_VISIBILITY_SECONDS) * 1000,
      countsDeliveries: true,
      deadLetterQueue: true,
    };
  }

  /** Go's rule: `cnf.Broker + "/" + queue`. */
  queueUrl(queue: string): string {
    return `${this.#brokerUrl}/${queue}`;
  }

  adjustRoutingKey(signature: Signature): void {
    if (!signature.RoutingKey) signature.RoutingKey = this.#defaultQueue;
  }

  /** Creates `queue` once per broker (CreateQueue is idempotent). */
  async ensureQueue(queue: string): Promise<void> {
    let p = this.#created.get(queue);
    if (!p) {
      p = this.client
        .send(new CreateQueueCommand({
          QueueName: queue,
          Attributes: queue.endsWith('.fifo') ? { FifoQueue: 'true' } : undefined,
        }))
        .then(() => undefined);
      this.#created.set(queue, p);
      p.catch(() => this.#created.delete(queue));
    }
    await p;
  }

  async #maybeEnsure(queue: string): Promise<void> {
    if (this.#createQueues) await this.ensureQueue(queue);
  }

  /** The SendMessage fields for one signature (body encoded before the routing key is adjusted). */
  #entry(signature: Signature): OutgoingEntry {
    const body = encodeSignature(signature);
    this.adjustRoutingKey(signature);
    const queue = signature.RoutingKey;
    const fifo = queue.endsWith('.fifo');
    const eta = signature.ETA ? parseRfc3339(signature.ETA) : null;
    const out: OutgoingEntry = { queue, body };
    if (fifo) {
      if (!signature.BrokerMessageGroupId) {
        throw new ConfigError(`SqsBroker: FIFO queue ${queue} needs BrokerMessageGroupId on the signature`);
      }
      out.groupId = signature.BrokerMessageGroupId;
      // Go uses the bare UUID, so SQS's 5-minute deduplication window drops retries
      // (same UUID). RetryCount and ETA make a retry a distinct message while a
      // re-publish of the very same signature is still deduplicated.
      out.dedupId = `${signature.UUID}-${signature.RetryCount}${eta !== null ? `-${Math.round(eta)}` : ''}`.slice(0, 128);
    }
    if (eta !== null && eta > Date.now()) {
      const seconds = Math.ceil((eta - Date.now()) / 1000);
      if (fifo) {
        // FIFO queues take no per-message delay: the consumer holds it invisible until the ETA.
        out.attributes = { [ETA_ATTRIBUTE]: { DataType: 'String', StringValue: String(Math.round(eta)) } };
      } else {
        out.delaySeconds = Math.min(seconds, this.maxDelaySeconds);
        if (seconds > this.maxDelaySeconds) {
          out.attributes = { [ETA_ATTRIBUTE]: { DataType: 'String', StringValue: String(Math.round(eta)) } };
        }
      }
    }
    return out;
  }

  async publish(signature: Signature): Promise<void> {
    if (this.#closed) throw new ClosedError('SqsBroker');
    const e = this.#entry(signature);
    await this.#maybeEnsure(e.queue);
    await this.client.send(new SendMessageCommand({
      QueueUrl: this.queueUrl(e.queue),
      MessageBody: e.body,
      DelaySeconds: e.delaySeconds,
      MessageAttributes: e.attributes,
      MessageGroupId: e.groupId,
      MessageDeduplicationId: e.dedupId,
    }));
  }

  async publishBatch(signatures: readonly Signature[]): Promise<void> {
    if (this.#closed) throw new ClosedError('SqsBroker');
    const byQueue = new Map<string, OutgoingEntry[]>();
    for (const s of signatures) {
      const e = this.#entry(s);
      let list = byQueue.get(e.queue);
      if (!list) byQueue.set(e.queue, (list = []));
      list.push(e);
    }
    for (const [queue, entries] of byQueue) {
      await this.#maybeEnsure(queue);
      // Chunks of at most 10 entries and 256 KiB in total, SQS's batch limits.
      let chunk: SendMessageBatchRequestEntry[] = [];
      let size = 0;
      const flush = async (): Promise<void> => {
        if (chunk.length === 0) return;
        const res = await this.client.send(new SendMessageBatchCommand({ QueueUrl: this.queueUrl(queue), Entries: chunk }));
        chunk = [];
        size = 0;
        if (res.Failed && res.Failed.length > 0) {
          const f = res.Failed[0];
          throw new Error(`SqsBroker: ${res.Failed.length} message(s) not sent to ${queue}: ${f?.Code ?? ''} ${f?.Message ?? ''}`.trim());
        }
      };
      for (const e of entries) {
        const bytes = Buffer.byteLength(e.body) + 64;
        if (chunk.length === 10 || (chunk.length > 0 && size + bytes > 262_144)) await flush();
        chunk.push({
          Id: String(chunk.length),
          MessageBody: e.body,
          DelaySeconds: e.delaySeconds,
          MessageAttributes: e.attributes,
          MessageGroupId: e.groupId,
          MessageDeduplicationId: e.dedupId,
        });
        size += bytes;
      }
      await flush();
    }
  }

  async consume(queue: string, options: ConsumeOptions): Promise<Subscription> {
    if (this.#closed) throw new ClosedError('SqsBroker');
    await this.#maybeEnsure(queue);
    const sub = new SqsSubscription(this, queue, options, () => this.#subscriptions.delete(sub));
    this.#subscriptions.add(sub);
    sub.start();
    return sub;
  }

  /**
   * Deletes a received message, sharing a DeleteMessageBatch with other deletes from the same
   * queue within `deleteBatchWindowMs`. Resolves when SQS reports this entry deleted.
   */
  deleteMessage(queueUrl: string, receiptHandle: string | undefined): Promise<void> {
    let d = this.#deleters.get(queueUrl);
    if (!d) this.#deleters.set(queueUrl, (d = new DeleteBatcher(this.client, queueUrl, this.deleteBatchWindowMs)));
    return d.delete(receiptHandle);
  }

  /** Sends `body` to this broker's dead-letter queue for `queue` (created on demand). */
  async sendToDeadLetter(queue: string, body: string, reason: string, message: Message): Promise<void> {
    const dlq = deadLetterQueueName(queue);
    const fifo = dlq.endsWith('.fifo');
    const cmd = new SendMessageCommand({
      QueueUrl: this.queueUrl(dlq),
      MessageBody: body,
      MessageAttributes: {
        reason: { DataType: 'String', StringValue: reason.slice(0, 4096) || 'dead-letter' },
        'source-queue': { DataType: 'String', StringValue: queue },
      },
      MessageGroupId: fifo ? (message.Attributes?.MessageGroupId ?? 'dead-letter') : undefined,
      MessageDeduplicationId: fifo ? (message.MessageId ?? `${Date.now()}-${Math.random()}`) : undefined,
    });
    try {
      await this.client.send(cmd);
    } catch (err) {
      if (!isQueueMissing(err)) throw err;
      await this.ensureQueue(dlq);
      await this.client.send(cmd);
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Like a dead process: unsettled messages come back after their visibility timeout.
    await Promise.allSettled([...this.#subscriptions].map((s) => s.stop()));
    // Acks already made (also on subscriptions stopped earlier) must reach SQS before the client goes.
    await Promise.allSettled([...this.#deleters.values()].map((d) => d.flushAll()));
    if (this.#ownsClient) this.client.destroy();
  }
}

interface PendingDelete {
  readonly handle: string;
  readonly resolve: () => void;
  readonly reject: (err: Error) => void;
}

/**
 * Coalesces deletes of one queue into DeleteMessageBatch calls (≤ 10 entries, SQS's limit).
 * Each entry's own result settles its caller: a failed entry rejects, so the worker reports
 * it and the message comes back after its visibility timeout instead of passing as done.
 */
class DeleteBatcher {
  #pending: PendingDelete[] = [];
  #timer: NodeJS.Timeout | undefined;
  readonly #inFlight = new Set<Promise<void>>();

  constructor(readonly client: SQSClient, readonly url: string, readonly windowMs: number) {}

  delete(handle: string | undefined): Promise<void> {
    if (this.windowMs === 0 || !handle) {
      return this.#track(this.client.send(new DeleteMessageCommand({ QueueUrl: this.url, ReceiptHandle: handle })).then(() => undefined));
    }
    return new Promise<void>((resolve, reject) => {
      this.#pending.push({ handle, resolve, reject });
      if (this.#pending.length >= 10) this.#flush();
      else this.#timer ??= setTimeout(() => this.#flush(), this.windowMs);
    });
  }

  /** Sends everything pending now and waits for every batch in flight. */
  async flushAll(): Promise<void> {
    while (this.#pending.length > 0) this.#flush();
    await Promise.allSettled([...this.#inFlight]);
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#pending.splice(0, 10);
    if (this.#pending.length > 0) this.#timer = setTimeout(() => this.#flush(), this.windowMs);
    if (batch.length === 0) return;
    void this.#track(this.#send(batch));
  }

  #track(p: Promise<void>): Promise<void> {
    this.#inFlight.add(p);
    void p.then(
      () => this.#inFlight.delete(p),
      () => this.#inFlight.delete(p),
    );
    return p;
  }

  async #send(batch: PendingDelete[]): Promise<void> {
    try {
      const res = await this.client.send(new DeleteMessageBatchCommand({
        QueueUrl: this.url,
        Entries: batch.map((p, i) => ({ Id: String(i), ReceiptHandle: p.handle })),
      }));
      const done = new Set((res.Successful ?? []).map((e) => e.Id));
      const failed = new Map((res.Failed ?? []).map((f) => [f.Id, f]));
      for (const [i, p] of batch.entries()) {
        const id = String(i);
        if (done.has(id)) {
          p.resolve();
          continue;
        }
        const f = failed.get(id);
        p.reject(new Error(f
          ? `SqsBroker: DeleteMessageBatch entry failed on ${this.url}: ${f.Code ?? ''} ${f.Message ?? ''}`.trim()
          : `SqsBroker: DeleteMessageBatch on ${this.url} reported neither success nor failure for an entry`));
      }
    } catch (err) {
      const e = err instanceof Error ? err : new Error(String(err));
      for (const p of batch) p.reject(e);
    }
  }
}

class SqsSubscription implements Subscription {
  readonly #abort = new AbortController();
  readonly #url: string;
  #inFlight = 0;
  #wake: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  #stopped = false;
  #prefetch: number;

  constructor(
    readonly broker: SqsBroker,
    readonly queue: string,
    readonly options: ConsumeOptions,
    readonly onGone: () => void,
  ) {
    this.#url = broker.queueUrl(queue);
    this.#prefetch = options.prefetch;
  }

  /** Takes effect at the next receive; one already waiting keeps the size it asked for. */
  setPrefetch(prefetch: number): void {
    this.#prefetch = prefetch;
    this.#signalFree();
  }

  get url(): string {
    return this.#url;
  }

  start(): void {
    this.#loop = this.#run();
  }

  #signalFree(): void {
    const w = this.#wake;
    this.#wake = undefined;
    w?.();
  }

  released(): void {
    this.#inFlight -= 1;
    this.#signalFree();
  }

  async #run(): Promise<void> {
    const { client } = this.broker;
    const signal = this.#abort.signal;
    let failures = 0;
    while (!this.#stopped) {
      const free = Math.max(1, this.#prefetch) - this.#inFlight;
      if (free <= 0) {
        await new Promise<void>((r) => (this.#wake = r));
        continue;
      }
      let messages: Message[];
      try {
        const res = await client.send(
          new ReceiveMessageCommand({
            QueueUrl: this.#url,
            MaxNumberOfMessages: Math.min(10, free),
            WaitTimeSeconds: this.broker.waitTimeSeconds,
            VisibilityTimeout: this.broker.visibilityTimeoutSeconds,
            MessageSystemAttributeNames: ['ApproximateReceiveCount', 'MessageGroupId'],
            MessageAttributeNames: [ETA_ATTRIBUTE],
          }),
          { abortSignal: signal },
        );
        messages = res.Messages ?? [];
        failures = 0;
      } catch (err) {
        if (this.#stopped || isAbort(err)) break;
        failures += 1;
        this.options.onError?.(err instanceof Error ? err : new Error(String(err)));
        const cap = Math.min(30_000, 200 * 2 ** Math.min(failures, 8));
        await sleep(cap / 2 + Math.random() * (cap / 2), signal);
        continue;
      }
      for (const [i, m] of messages.entries()) {
        if (this.#stopped) {
          await this.#release(messages.slice(i));
          break;
        }
        if (await this.#holdUntilEta(m)) continue;
        this.#inFlight += 1;
        this.options.onDelivery(new SqsDelivery(this, m));
      }
    }
  }

  /** Gives back received messages that were never handed out (best effort; else the visibility timeout does). */
  async #release(messages: Message[]): Promise<void> {
    await Promise.allSettled(messages.map((m) => this.broker.client.send(new ChangeMessageVisibilityCommand({
      QueueUrl: this.#url,
      ReceiptHandle: m.ReceiptHandle,
      VisibilityTimeout: 0,
    }))));
  }

  /** A message whose ETA is still ahead is delayed again, not delivered. True when held. */
  async #holdUntilEta(m: Message): Promise<boolean> {
    const text = m.MessageAttributes?.[ETA_ATTRIBUTE]?.StringValue;
    const eta = text ? Number(text) : NaN;
    // Each hop is rounded up to whole seconds, so only a capped hop arrives early;
    // a few ms of clock slack are let through (the worker re-checks the ETA).
    if (!Number.isFinite(eta) || eta - Date.now() <= 50) return false;
    const { client } = this.broker;
    const remaining = Math.ceil((eta - Date.now()) / 1000);
    try {
      if (this.queue.endsWith('.fifo')) {
        await client.send(new ChangeMessageVisibilityCommand({
          QueueUrl: this.#url,
          ReceiptHandle: m.ReceiptHandle,
          VisibilityTimeout: Math.min(remaining, MAX_VISIBILITY_SECONDS),
        }));
      } else {
        // Next hop: a fresh copy delayed by up to maxDelaySeconds, then the original goes.
        const hop = Math.min(remaining, this.broker.maxDelaySeconds);
        await client.send(new SendMessageCommand({
          QueueUrl: this.#url,
          MessageBody: m.Body ?? '',
          DelaySeconds: hop,
          MessageAttributes: remaining > hop ? { [ETA_ATTRIBUTE]: { DataType: 'String', StringValue: text } } : undefined,
        }));
        await client.send(new DeleteMessageCommand({ QueueUrl: this.#url, ReceiptHandle: m.ReceiptHandle }));
      }
    } catch (err) {
      // Left invisible: it comes back after its visibility timeout and is judged again.
      this.options.onError?.(err instanceof Error ? err : new Error(String(err)));
    }
    return true;
  }

  async stop(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = true;
      this.#abort.abort();
      this.#signalFree();
      this.onGone();
    }
    await this.#loop;
  }
}

class SqsDelivery implements Delivery {
  readonly body: string;
  readonly queue: string;
  readonly deliveryCount: number;
  #settled = false;

  constructor(readonly sub: SqsSubscription, readonly message: Message) {
    this.body = message.Body ?? '';
    this.queue = sub.queue;
    this.deliveryCount = Math.max(1, Number(message.Attributes?.ApproximateReceiveCount ?? '1') || 1);
  }

  async extend(): Promise<void> {
    if (this.#settled) return;
    await this.#visibility(this.sub.broker.visibilityTimeoutSeconds ?? DEFAULT_VISIBILITY_SECONDS);
  }

  #visibility(seconds: number): Promise<unknown> {
    return this.sub.broker.client.send(new ChangeMessageVisibilityCommand({
      QueueUrl: this.sub.url,
      ReceiptHandle: this.message.ReceiptHandle,
      VisibilityTimeout: Math.min(MAX_VISIBILITY_SECONDS, Math.max(0, Math.ceil(seconds))),
    }));
  }

  async settle(outcome: Outcome): Promise<void> {
    if (this.#settled) return;
    this.#settled = true;
    try {
      switch (outcome.kind) {
        case 'ack':
          await this.sub.broker.deleteMessage(this.sub.url, this.message.ReceiptHandle);
          break;
        case 'requeue':
          await this.#visibility(0);
          break;
        case 'retry-later':
          await this.#visibility(Math.ceil(Math.max(0, outcome.delayMs) / 1000));
          break;
        case 'dead-letter':
          await this.sub.broker.sendToDeadLetter(this.queue, this.body, outcome.reason, this.message);
          await this.sub.broker.deleteMessage(this.sub.url, this.message.ReceiptHandle);
          break;
      }
    } finally {
      this.sub.released();
    }
  }
}
