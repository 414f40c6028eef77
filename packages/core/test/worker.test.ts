import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  MemoryBroker,
  ResultTimeoutError,
  RetryTaskLater,
  Server,
  TaskFailedError,
  type Worker,
  type Delivery,
  type Outcome,
  arg,
  chain,
  chord,
  defineTask,
  fibonacciNext,
  group,
  newSignature,
  call,
  partial,
  NullBackend,
  createServer,
} from '../src/index.js';

let servers: Server[] = [];
let workers: Worker[] = [];
afterEach(async () => {
  await Promise.allSettled(workers.map((w) => w.stop()));
  await Promise.allSettled(servers.map((s) => s.close()));
  servers = [];
  workers = [];
});

async function setup(workerOptions: Parameters<Server['newWorker']>[0] = {}) {
  const server = new Server();
  const errors: string[] = [];
  const worker = server.newWorker({ concurrency: 4, handleSignals: false, onError: (e) => errors.push(e.message), ...workerOptions });
  servers.push(server);
  workers.push(worker);
  return { server, worker, errors, broker: server.broker as MemoryBroker };
}

/** Makes the worker see `settle` in place of each delivery's own (which `settle` may still call). */
function replaceSettle(broker: MemoryBroker, settle: (delivery: Delivery, outcome: Outcome) => void | Promise<void>): void {
  const consume = broker.consume.bind(broker);
  broker.consume = (queue, options) =>
    consume(queue, {
      ...options,
      onDelivery: (d) =>
        options.onDelivery({ body: d.body, queue: d.queue, deliveryCount: d.deliveryCount, settle: (o) => settle(d, o) as Promise<void> }),
    });
}

const add = defineTask({ name: 'add', args: ['int64', 'int64'], results: ['int64'], run: ([a, b]) => a + b });
const int = (n: number) => arg('int64', BigInt(n));

describe('Worker', () => {
  it('runs a task through RECEIVED → STARTED → SUCCESS, with hooks in order', async () => {
    const seen: string[] = [];
    const { server, worker } = await setup({
      onPreTask: (s) => void seen.push(`pre ${s.Name}`),
      onPostTask: (s) => void seen.push(`post ${s.Name}`),
    });
    const states: string[] = [];
    const setState = server.backend.setState.bind(server.backend);
    server.backend.setState = async (u) => {
      states.push(u.state);
      return setState(u);
    };
    server.registerTask(add);
    await worker.start();
    const r = await server.sendTask({ Name: 'add', Args: [int(1), int(1)] });
    expect(await r.get({ timeoutMs: 2000 })).toEqual([2n]);
    expect(states).toEqual(['PENDING', 'RECEIVED', 'STARTED', 'SUCCESS']);
    // The post-task hook runs after SUCCESS is written, so after get() may resolve.
    await new Promise((res) => setTimeout(res, 20));
    expect(seen).toEqual(['pre add', 'post add']);
    expect((await r.state())?.TaskName).toBe('add');
  });

  it('an onError handler that throws costs no task, slot or settle: the throw is printed and work goes on', async () => {
    const printed: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((m: unknown) => void printed.push(String(m)));
    try {
      const { server, worker } = await setup({
        concurrency: 1,
        onError: () => {
          throw new Error('handler bug');
        },
      });
      const setState = server.backend.setState.bind(server.backend);
      server.backend.setState = async (u) => {
        if (u.state === 'RECEIVED') throw new Error('RECEIVED write refused');
        return setState(u);
      };
      server.registerTask(add);
      await worker.start();
      const results = await Promise.all([1, 2, 3].map((n) => server.sendTask({ Name: 'add', Args: [int(n), int(n)] })));
      expect(await Promise.all(results.map((r) => r.get({ timeoutMs: 2000 })))).toEqual([[2n], [4n], [6n]]);
      await worker.stop();
      expect(worker.runningCount).toBe(0);
      expect(printed.filter((m) => m.includes('onError threw (handler bug)') && m.includes('RECEIVED write refused'))).toHaveLength(3);
    } finally {
      spy.mockRestore();
    }
  });

  it('a hook that throws something that is not an Error is still reported, and the task runs on its retry', async () => {
    const printed: string[] = [];
    const spy = vi.spyOn(console, 'error').mockImplementation((m: unknown) => void printed.push(String(m)));
    try {
      let calls = 0;
      const { server, worker } = await setup({
        onError: undefined,
        onPreTask: () => {
          calls += 1;
          if (calls === 1) throw undefined;
        },
      });
      server.registerTask(add);
      await worker.start();
      const r = await server.sendTask({ Name: 'add', Args: [int(2), int(3)] });
      expect(await r.get({ timeoutMs: 5000 })).toEqual([5n]);
      expect(printed).toEqual(['[machinery-ts] Invoking task caused a panic']);
    } finally {
      spy.mockRestore();
    }
  });

  it('takes a handler\'s plain value, promise or foreign thenable alike, and a rejecting thenable fails the task', async () => {
    const { server, worker } = await setup();
    server.registerTask('plain', () => 'p');
    server.registerTask('promised', async () => 'q');
    server.registerTask('thenable', () => ({ then: (ok: (v: string) => void) => setTimeout(() => ok('t'), 5) }));
    server.registerTask('broken', () => ({ then: (_: unknown, fail: (e: Error) => void) => fail(new Error('thenable failed')) }));
    await worker.start();
    const [p, q, t, b] = await Promise.all(['plain', 'promised', 'thenable', 'broken'].map((Name) => server.sendTask({ Name })));
    expect(await p?.get({ timeoutMs: 2000 })).toEqual(['p']);
    expect(await q?.get({ timeoutMs: 2000 })).toEqual(['q']);
    expect(await t?.get({ timeoutMs: 2000 })).toEqual(['t']);
    await expect(b?.get({ timeoutMs: 2000 })).rejects.toThrow('thenable failed');
  });

  it('retries with Go\'s Fibonacci back-off, then fails and runs OnError with the error prepended', async () => {
    expect([0, 1, 2, 3, 5, 10].map(fibonacciNext)).toEqual([1, 2, 3, 5, 8, 13]);
    const { server, worker, errors } = await setup();
    let calls = 0;
    const got: unknown[][] = [];
    server.registerTask('boom', () => {
      calls += 1;
      throw new Error(`boom: ${calls}`);
    });
    server.registerTask('errcb', (args) => void got.push(args));
    await worker.start();
    const r = await server.sendTask({ Name: 'boom', RetryCount: 1, OnError: [newSignature({ Name: 'errcb', Args: [arg('string', 'extra')] })] });
    await expect(r.get({ timeoutMs: 5000 })).rejects.toThrow(TaskFailedError);
    await expect(r.get({ timeoutMs: 100 })).rejects.toThrow('boom: 2');
    expect(calls).toBe(2);
    await new Promise((res) => setTimeout(res, 100));
    expect(got).toEqual([['boom: 2', 'extra']]);
    expect(errors).toContain('boom: 2');
  });

  it('RetryTaskLater re-runs the task after the delay without spending RetryCount', async () => {
    const { server, worker } = await setup();
    const times: number[] = [];
    server.registerTask('later', () => {
      times.push(Date.now());
      if (times.length < 3) throw new RetryTaskLater(150);
      return 'ok';
    });
    await worker.start();
    const r = await server.sendTask({ Name: 'later' });
    expect(await r.get({ timeoutMs: 5000 })).toEqual(['ok']);
    expect((times[2] as number) - (times[1] as number)).toBeGreaterThanOrEqual(140);
  });

  it('honours an ETA', async () => {
    const { server, worker } = await setup();
    server.registerTask(add);
    await worker.start();
    const t0 = Date.now();
    const r = await server.sendTask({ Name: 'add', ETA: new Date(t0 + 400).toISOString(), Args: [int(1), int(2)] });
    expect(await r.get({ timeoutMs: 3000 })).toEqual([3n]);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(390);
  });

  it('appends results to OnSuccess unless the parent is Immutable', async () => {
    const { server, worker } = await setup();
    server.registerTask(add);
    await worker.start();
    const c = chain(newSignature({ Name: 'add', Args: [int(1), int(1)] }), newSignature({ Name: 'add', Args: [int(5)] }));
    expect(await (await server.sendChain(c)).get({ timeoutMs: 3000 })).toEqual([7n]);
    const imm = chain(
      newSignature({ Name: 'add', Args: [int(1), int(1)], Immutable: true }),
      newSignature({ Name: 'add', Args: [int(5), int(6)] }),
    );
    expect(await (await server.sendChain(imm)).get({ timeoutMs: 3000 })).toEqual([11n]);
  });

  it('fires a chord exactly once with results in group order; a failed member rejects the chord', async () => {
    const { server, worker } = await setup({ concurrency: 16 });
    let callbacks = 0;
    server.registerTask(add);
    server.registerTask('collect', (args) => {
      callbacks += 1;
      return args.map(String).join(',');
    });
    server.registerTask('fail', () => {
      throw new Error('member failed');
    });
    await worker.start();
    const members = Array.from({ length: 40 }, (_, i) => newSignature({ Name: 'add', Args: [int(i), int(0)] }));
    const r = await server.sendChord(chord(group(...members), newSignature({ Name: 'collect' })), { concurrency: 8 });
    expect(await r.get({ timeoutMs: 5000 })).toEqual([Array.from({ length: 40 }, (_, i) => i).join(',')]);
    expect(callbacks).toBe(1);

    const bad = await server.sendChord(chord(group(newSignature({ Name: 'add', Args: [int(1), int(1)] }), newSignature({ Name: 'fail' })), newSignature({ Name: 'collect' })));
    await expect(bad.get({ timeoutMs: 5000 })).rejects.toThrow('member failed');
    expect(callbacks).toBe(1);
  });

  it('records bad args as FAILURE with Go\'s text and does not retry', async () => {
    const { server, worker } = await setup();
    let calls = 0;
    server.registerTask('one', () => void calls++);
    await worker.start();
    const r = await server.sendTask({ Name: 'one', RetryCount: 3, Args: [{ Name: '', Type: 'map', Value: {} }] });
    await expect(r.get({ timeoutMs: 2000 })).rejects.toThrow('Reflect task args error: map is not one of supported types');
    expect(calls).toBe(0);
  });

  it('dead-letters malformed, forbidden-key and oversized messages and keeps running', async () => {
    const { server, worker, broker } = await setup({ maxPayloadBytes: 2000 });
    server.registerTask(add);
    await worker.start();
    broker.pushRaw('machinery_tasks', '{not json');
    broker.pushRaw('machinery_tasks', '{"UUID":"task_evil","Name":"add","Headers":{"__proto__":{"polluted":1}}}');
    broker.pushRaw('machinery_tasks', `{"UUID":"task_big","Name":"add","Headers":{"x":"${'a'.repeat(3000)}"}}`);
    const r = await server.sendTask({ Name: 'add', Args: [int(2), int(2)] });
    expect(await r.get({ timeoutMs: 2000 })).toEqual([4n]);
    await new Promise((res) => setTimeout(res, 50));
    const reasons = broker.transport.deadLetters.map((d) => d.reason);
    expect(reasons).toHaveLength(3);
    expect(reasons[0]).toMatch(/invalid JSON/);
    expect(reasons[1]).toMatch(/forbidden key "__proto__"/);
    expect(reasons[2]).toMatch(/exceeds the limit of 2000 bytes/);
    expect((await server.backend.getState('task_evil'))?.State).toBe('FAILURE');
    expect((await server.backend.getState('task_big'))?.Error).toMatch(/exceeds/);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('hands an unknown task back with growing delays, then dead-letters it (no hot loop)', async () => {
    const { server, worker, broker } = await setup({ unknownTaskRequeues: 3 });
    await worker.start();
    const r = await server.sendTask({ Name: 'nobody' });
    await expect(r.get({ timeoutMs: 5000 })).rejects.toThrow('task nobody is not registered');
    expect(broker.transport.deadLetters.map((d) => d.reason)).toEqual(['task nobody is not registered']);
  });

  it('drops an unknown task marked IgnoreWhenTaskNotRegistered', async () => {
    const { server, worker, broker } = await setup();
    await worker.start();
    await server.sendTask({ Name: 'nobody', IgnoreWhenTaskNotRegistered: true });
    await new Promise((res) => setTimeout(res, 100));
    expect(broker.transport.depth('machinery_tasks')).toBe(0);
    expect(broker.transport.deadLetters).toHaveLength(0);
  });

  it('get() ends in a timeout error when no state ever appears', async () => {
    const { server } = await setup();
    const r = await server.sendTask({ Name: 'add' });
    await expect(r.get({ timeoutMs: 200 })).rejects.toThrow(ResultTimeoutError);
  });

  it('runs no more than `concurrency` tasks at once', async () => {
    const { server, worker } = await setup({ concurrency: 3 });
    let now = 0;
    let peak = 0;
    server.registerTask('slow', async () => {
      peak = Math.max(peak, ++now);
      await new Promise((res) => setTimeout(res, 30));
      now--;
    });
    await worker.start();
    const rs = await Promise.all(Array.from({ length: 12 }, () => server.sendTask({ Name: 'slow' })));
    await Promise.all(rs.map((r) => r.get({ timeoutMs: 5000 })));
    expect(peak).toBe(3);
  });

  /** Holds the backend's first SUCCESS write until `release()`; `held` resolves once it is being held. */
  /** Holds the first write of `state` until `release()`; `held` resolves when it is being held. */
  function holdFirstWrite(server: Server, state: 'SUCCESS' | 'FAILURE' = 'SUCCESS') {
    let release = (): void => {};
    const gate = new Promise<void>((r) => (release = r));
    let holding = (): void => {};
    const held = new Promise<void>((r) => (holding = r));
    let first = true;
    const setState = server.backend.setState.bind(server.backend);
    server.backend.setState = async (u) => {
      if (u.state === state && first) {
        first = false;
        holding();
        await gate;
      }
      return setState(u);
    };
    return { release, held };
  }

  it('frees a slot when the task function returns: the next task runs while the outcome is recorded, and the delivery is settled after', async () => {
    const { server, worker, broker } = await setup({ concurrency: 1, readAhead: 1 });
    const settled: number[] = [];
    replaceSettle(broker, (d, o) => {
      settled.push((JSON.parse(d.body) as { Args: { Value: number }[] }).Args[0]!.Value);
      return d.settle(o);
    });
    const write = holdFirstWrite(server);
    const ran: number[] = [];
    server.registerTask('step', ([n]) => void ran.push(Number(n)));
    await worker.start();
    try {
      const first = await server.sendTask({ Name: 'step', Args: [int(0)] });
      await write.held;
      const second = await server.sendTask({ Name: 'step', Args: [int(1)] });
      // Before, task 1 waited for task 0's SUCCESS write to be confirmed.
      await vi.waitFor(() => expect(ran).toEqual([0, 1]), { timeout: 2000 });
      await second.get({ timeoutMs: 2000 });
      await vi.waitFor(() => expect(settled).toEqual([1]), { timeout: 2000 });
      expect((await server.backend.getState(first.taskUUID))?.State).toBe('STARTED');
      expect(worker.runningCount).toBe(0);
      write.release();
      await first.get({ timeoutMs: 2000 });
      await vi.waitFor(() => expect(settled).toEqual([1, 0]), { timeout: 2000 });
    } finally {
      // A held write would hold the afterEach's stop() too.
      write.release();
    }
  });

  it.each([
    ['whose arguments do not decode', (server: Server) => server.sendTask({ Name: 'step', Args: [{ Name: '', Type: 'map', Value: {} }] }).then((r) => r.taskUUID)],
    ['that is too large', async (_server: Server, broker: MemoryBroker) => {
      broker.pushRaw('machinery_tasks', `{"UUID":"task_big","Name":"step","Headers":{"x":"${'a'.repeat(3000)}"}}`);
      return 'task_big';
    }],
    ['of a task no one registered', (server: Server) => server.sendTask({ Name: 'nobody' }).then((r) => r.taskUUID)],
  ] as const)('frees the slot of a delivery %s before its FAILURE is recorded', async (_what, sendBad) => {
    const { server, worker, broker } = await setup({ concurrency: 1, readAhead: 1, maxPayloadBytes: 2000, unknownTaskRequeues: 0 });
    const write = holdFirstWrite(server, 'FAILURE');
    const ran: number[] = [];
    server.registerTask('step', ([n]) => void ran.push(Number(n)));
    await worker.start();
    try {
      const badUUID = await sendBad(server, broker);
      await write.held;
      const good = await server.sendTask({ Name: 'step', Args: [int(1)] });
      // Before, the good task waited for the bad one's FAILURE write.
      await vi.waitFor(() => expect(ran).toEqual([1]), { timeout: 2000 });
      await good.get({ timeoutMs: 2000 });
      expect(worker.runningCount).toBe(0);
      write.release();
      await vi.waitFor(async () => expect((await server.backend.getState(badUUID))?.State).toBe('FAILURE'), { timeout: 2000 });
    } finally {
      write.release();
    }
  });

  it('runs a backlog of tasks that return at once one after another, not each inside the one before', async () => {
    const n = 2_000;
    const { server, worker, errors } = await setup({ concurrency: 1, readAhead: n, progressStates: 'none' });
    let open = (): void => {};
    const gate = new Promise<void>((r) => (open = r));
    server.registerTask('slow', () => gate);
    let ran = 0;
    let deepest = 0;
    server.registerTask('quick', () => {
      ran += 1;
      const limit = Error.stackTraceLimit;
      Error.stackTraceLimit = Infinity;
      deepest = Math.max(deepest, new Error().stack?.split('\n').length ?? 0);
      Error.stackTraceLimit = limit;
    });
    await worker.start();
    await server.sendTask({ Name: 'slow' });
    // The backlog piles up behind the slow task, then is let go at once.
    await server.sendTasks(Array.from({ length: n }, () => ({ Name: 'quick' })));
    await vi.waitFor(() => expect(worker.runningCount).toBe(1));
    open();
    await vi.waitFor(() => expect(ran).toBe(n), { timeout: 20_000 });
    expect(errors).toEqual([]);
    expect(deepest).toBeLessThan(50);
  });

  it('a graceful stop waits for outcomes still being recorded', async () => {
    const { server, worker, broker } = await setup({ concurrency: 1 });
    const settled: string[] = [];
    replaceSettle(broker, (d, o) => {
      settled.push(o.kind);
      return d.settle(o);
    });
    const write = holdFirstWrite(server);
    server.registerTask('step', () => undefined);
    await worker.start();
    const r = await server.sendTask({ Name: 'step' });
    await write.held;
    let stopped = false;
    const stopping = worker.stop().then(() => (stopped = true));
    await new Promise((res) => setTimeout(res, 50));
    write.release();
    expect(stopped).toBe(false);
    await stopping;
    expect(settled).toEqual(['ack']);
    expect((await server.backend.getState(r.taskUUID))?.State).toBe('SUCCESS');
  });

  it('a graceful stop finishes running tasks and requeues prefetched ones in order', async () => {
    const { server, worker, broker } = await setup({ concurrency: 1, readAhead: 3 });
    const ran: number[] = [];
    server.registerTask('step', async ([n]) => {
      ran.push(Number(n));
      await new Promise((res) => setTimeout(res, 100));
    });
    await worker.start();
    for (let i = 0; i < 5; i++) await server.sendTask({ Name: 'step', Args: [int(i)] });
    await new Promise((res) => setTimeout(res, 20));
    await worker.stop();
    expect(ran).toEqual([0]);
    expect(broker.transport.pending('machinery_tasks').map((b) => JSON.parse(b).Args[0].Value)).toEqual([1, 2, 3, 4]);
    const again = server.newWorker({ concurrency: 2, handleSignals: false });
    workers.push(again);
    await again.start();
    await new Promise((res) => setTimeout(res, 400));
    expect(ran.sort()).toEqual([0, 1, 2, 3, 4]);
  });

  it('a stop whose first requeue the broker refuses reports it, leaves the other prefetched ones to the broker and ends', async () => {
    const { server, worker, errors, broker } = await setup({ concurrency: 1, readAhead: 3 });
    const asked: string[] = [];
    replaceSettle(broker, (d, o) => {
      asked.push(o.kind);
      return o.kind === 'requeue' ? Promise.reject(new Error('server unreachable')) : d.settle(o);
    });
    let started = 0;
    let release = (): void => {};
    const gate = new Promise<void>((r) => (release = r));
    server.registerTask('hold', () => {
      started += 1;
      return gate;
    });
    await worker.start();
    for (let i = 0; i < 4; i++) await server.sendTask({ Name: 'hold' });
    await vi.waitFor(() => expect(started).toBe(1));
    await expect(worker.stop({ abandonRunning: true })).resolves.toBeUndefined();
    // Before, the refusal rejected stop() and the two after it were never considered.
    expect(asked).toEqual(['requeue']);
    expect(errors).toEqual(['server unreachable']);
    release();
  });

  it('a settle that throws at once is reported, and stop() still ends', async () => {
    const { server, worker, errors, broker } = await setup();
    replaceSettle(broker, () => {
      throw new Error('settle threw synchronously');
    });
    server.registerTask(add);
    await worker.start();
    const r = await server.sendTask(call(add, 1n, 2n));
    expect(await r.get({ timeoutMs: 2000 })).toEqual([3n]);
    await vi.waitFor(() => expect(errors).toContain('settle threw synchronously'));
    await expect(Promise.race([worker.stop({ abandonRunning: true }).then(() => 'stopped'), new Promise((r2) => setTimeout(() => r2('hung'), 2000))])).resolves.toBe('stopped');
  });

  it('the context destructures: signal (made on first read), attempt and signature', async () => {
    const { server, worker } = await setup({ taskTimeoutMs: 100 });
    let seen: { aborted: boolean; attempt: number; name: string } | undefined;
    server.registerTask('hang', (_args, { signal, attempt, signature }) =>
      new Promise((res) =>
        signal.addEventListener('abort', () => {
          seen = { aborted: signal.aborted, attempt, name: signature.Name };
          res(undefined);
        }),
      ),
    );
    await worker.start();
    const r = await server.sendTask({ Name: 'hang' });
    await expect(r.get({ timeoutMs: 2000 })).rejects.toThrow('Task timed out after 100 ms');
    expect(seen).toEqual({ aborted: true, attempt: 1, name: 'hang' });
  });

  it('a task timeout aborts the signal and fails (or retries) with a timeout error', async () => {
    const { server, worker } = await setup({ taskTimeoutMs: 100 });
    let aborted = false;
    server.registerTask('hang', (_args, ctx) => new Promise((res) => ctx.signal.addEventListener('abort', () => { aborted = true; res(undefined); })));
    await worker.start();
    const r = await server.sendTask({ Name: 'hang' });
    await expect(r.get({ timeoutMs: 2000 })).rejects.toThrow('Task timed out after 100 ms');
    expect(aborted).toBe(true);
  });
});

describe('Worker progress writes', () => {
  /** Wraps the memory backend: RECEIVED/STARTED writes are slow (or fail) and every landed write is logged. */
  function slowProgress(server: Server, opts: { ordered: boolean; delayMs?: number; failStarted?: boolean }) {
    const backend = server.backend;
    const landed: string[] = [];
    const setState = backend.setState.bind(backend);
    Object.defineProperty(backend, 'capabilities', { value: { ...backend.capabilities, orderedWrites: opts.ordered } });
    backend.setState = async (u) => {
      if (u.state === 'RECEIVED' || u.state === 'STARTED') {
        if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
        if (opts.failStarted && u.state === 'STARTED') throw new Error('backend down for STARTED');
      }
      await setState(u);
      landed.push(u.state);
    };
    return landed;
  }

  it('on a backend without ordered writes, the outcome waits for STARTED, so a late STARTED never overwrites SUCCESS', async () => {
    const { server, worker } = await setup();
    const landed = slowProgress(server, { ordered: false, delayMs: 80 });
    let landedWhenRun: string[] = [];
    server.registerTask('quick', () => {
      landedWhenRun = [...landed];
      return 1;
    });
    await worker.start();
    const r = await server.sendTask({ Name: 'quick' });
    expect(await r.get({ timeoutMs: 2000 })).toEqual([1n]);
    expect(landed).toEqual(['PENDING', 'RECEIVED', 'STARTED', 'SUCCESS']);
    expect((await r.state())?.State).toBe('SUCCESS');
    // The task itself did not wait for the two slow progress writes (an order, not a timing).
    expect(landedWhenRun).toEqual(['PENDING']);
  });

  it('a failed STARTED write is reported but the task still runs and records SUCCESS', async () => {
    const { server, worker, errors } = await setup();
    slowProgress(server, { ordered: true, failStarted: true });
    server.registerTask('quick', () => 7);
    await worker.start();
    const r = await server.sendTask({ Name: 'quick' });
    expect(await r.get({ timeoutMs: 2000 })).toEqual([7n]);
    expect(errors).toContain('backend down for STARTED');
  });

  it.each([
    ['all', ['PENDING', 'RECEIVED', 'STARTED', 'SUCCESS']],
    ['started', ['PENDING', 'STARTED', 'SUCCESS']],
    ['none', ['PENDING', 'SUCCESS']],
  ] as const)('progressStates %s writes %j', async (progressStates, expected) => {
    const { server, worker } = await setup({ progressStates });
    const landed = slowProgress(server, { ordered: true });
    server.registerTask('quick', () => 1);
    await worker.start();
    const r = await server.sendTask({ Name: 'quick' });
    await r.get({ timeoutMs: 2000 });
    await worker.stop();
    expect(landed).toEqual(expected);
  });
});

describe('Server.sendTasks', () => {
  it('writes every PENDING state in one setStates call, then publishes one batch, and the tasks run', async () => {
    const { server, worker, broker } = await setup();
    server.registerTask(add);
    const calls: string[] = [];
    const setStates = server.backend.setStates?.bind(server.backend);
    server.backend.setStates = async (updates) => {
      calls.push(`setStates ${updates.length} ${updates.every((u) => u.state === 'PENDING')}`);
      await setStates?.(updates);
    };
    const publishBatch = broker.publishBatch.bind(broker);
    broker.publishBatch = async (sigs) => {
      calls.push(`publishBatch ${sigs.length}`);
      await publishBatch(sigs);
    };
    const results = await server.sendTasks(Array.from({ length: 30 }, (_, i) => call(add, BigInt(i), 1n)));
    expect(calls).toEqual(['setStates 30 true', 'publishBatch 30']);
    await worker.start();
    const values = await Promise.all(results.map((r) => r.get({ timeoutMs: 5000 })));
    expect(values).toEqual(Array.from({ length: 30 }, (_, i) => [BigInt(i) + 1n]));
    // @ts-expect-error a partial link is not a task on its own
    await expect(server.sendTasks([partial(add, 1n)])).resolves.toHaveLength(1);
  });

  it('publishes nothing when the PENDING writes fail', async () => {
    const { server, broker } = await setup();
    server.backend.setStates = async () => {
      throw new Error('backend down');
    };
    await expect(server.sendTasks([{ Name: 'add' }, { Name: 'add' }])).rejects.toThrow('Set state pending error: backend down');
    expect(broker.transport.pending('machinery_tasks')).toEqual([]);
  });
});

/**
 * A server whose consumers record the prefetch they start with and each `setPrefetch`; with
 * `fixed` they offer none, with `refuses` theirs throws.
 */
function recordingServer(broker: 'changes' | 'fixed' | 'refuses' = 'changes') {
  const server = new Server();
  servers.push(server);
  const prefetches: number[] = [];
  const consume = server.broker.consume.bind(server.broker);
  server.broker.consume = async (queue, options) => {
    prefetches.push(options.prefetch);
    const sub = await consume(queue, options);
    if (broker === 'fixed') return { stop: () => sub.stop() };
    return {
      stop: () => sub.stop(),
      setPrefetch: (n: number) => {
        prefetches.push(n);
        if (broker === 'refuses') throw new Error('channel closed');
        sub.setPrefetch?.(n);
      },
    };
  };
  server.registerTask('quick', () => 'q');
  server.registerTask('slow', async () => {
    await new Promise((r) => setTimeout(r, 5));
    return 's';
  });
  const run = async (name: string, n: number) => {
    const results = await server.sendTasks(Array.from({ length: n }, () => ({ Name: name })));
    await Promise.all(results.map((r) => r.get({ timeoutMs: 5000 })));
  };
  const errors: string[] = [];
  const start = async (options: Parameters<Server['newWorker']>[0]) => {
    const worker = server.newWorker({ handleSignals: false, onError: (e) => errors.push(e.message), ...options });
    workers.push(worker);
    await worker.start();
    return worker;
  };
  return { server, prefetches, errors, run, start };
}

describe('Worker slots and prefetch', () => {
  it('asks the broker for concurrency + readAhead (default: concurrency) and refuses a negative readAhead', async () => {
    const { server, prefetches, start } = recordingServer();
    // Options given as undefined (from a config object) count as unset.
    for (const options of [{ concurrency: 7 }, { concurrency: 7, readAhead: 0 }, {}, { concurrency: 7, readAhead: undefined }, { concurrency: undefined }]) {
      await (await start(options)).stop();
    }
    expect(prefetches).toEqual([14, 7, 20, 14, 20]);
    expect(() => server.newWorker({ readAhead: -1 })).toThrow('readAhead must be 0 or more, found -1');
    // @ts-expect-error a misspelt setting from JavaScript or a config file
    expect(() => server.newWorker({ progressStates: 'All' })).toThrow(`progressStates must be 'all', 'started' or 'none', found "All"`);
  });

  it('frees a slot once the outcome is recorded, before the broker confirms the ack; stop() still waits for the ack', async () => {
    const { server, worker, broker } = await setup({ concurrency: 1, readAhead: 1 });
    const started: number[] = [];
    server.registerTask('step', ([n]) => void started.push(Number(n)));
    const releases: (() => void)[] = [];
    // Acks that take until the test lets them through.
    replaceSettle(broker, (d, o) => new Promise<void>((r) => releases.push(r)).then(() => d.settle(o)));
    await server.sendTask({ Name: 'step', Args: [int(1)] });
    await server.sendTask({ Name: 'step', Args: [int(2)] });
    await worker.start();
    // Task 2 ran while task 1's ack was still held; then its own ack is asked for too.
    await vi.waitFor(() => {
      expect(started).toEqual([1, 2]);
      expect(releases).toHaveLength(2);
    });
    let stopped = false;
    const stopping = worker.stop().then(() => (stopped = true));
    await new Promise((r) => setTimeout(r, 50));
    expect(stopped).toBe(false);
    for (const release of releases) release();
    await stopping;
    expect(broker.transport.pending('machinery_tasks')).toEqual([]);
  });
});

describe('NullBackend', () => {
  it('runs tasks, groups and chains without storing anything, and says so instead of hanging', async () => {
    const server = await createServer({ resultBackend: 'null' });
    servers.push(server);
    expect(server.backend).toBeInstanceOf(NullBackend);
    const ran: bigint[] = [];
    server.registerTask('record', ([n]) => void ran.push(n as bigint));
    // The worker does not ask a backend that keeps nothing to keep its progress and outcomes.
    const asked: string[] = [];
    const setState = server.backend.setState.bind(server.backend);
    server.backend.setState = async (u) => {
      asked.push(u.state);
      return setState(u);
    };
    const worker = server.newWorker({ handleSignals: false });
    workers.push(worker);
    await worker.start();
    const r = await server.sendTask({ Name: 'record', Args: [int(1)] });
    await expect(r.get({ timeoutMs: 60_000 })).rejects.toThrow('cannot wait for task');
    await server.sendGroup(group(newSignature({ Name: 'record', Args: [int(2)] }), newSignature({ Name: 'record', Args: [int(3)] })));
    await server.sendChain(chain(newSignature({ Name: 'record', Args: [int(4)], Immutable: true }), newSignature({ Name: 'record', Args: [int(5)] })));
    await vi.waitFor(() => expect([...ran].sort()).toEqual([1n, 2n, 3n, 4n, 5n]));
    expect(asked.filter((s) => s !== 'PENDING')).toEqual([]);
    expect(await server.backend.getState(r.taskUUID)).toBeNull();
    await expect(server.sendChord(chord(group(newSignature({ Name: 'record', Args: [int(6)] })), newSignature({ Name: 'record' })))).rejects.toThrow(
      'a chord needs a result backend that stores states',
    );
  });
});

describe('Worker read-ahead for short tasks', () => {
  it('an unset readAhead holds 3 × concurrency while tasks are short, and concurrency again once they average 2 ms or more', async () => {
    const { prefetches, run, start } = recordingServer();
    const worker = await start({ concurrency: 2 });
    expect(worker.readAhead).toBe(2);
    await run('quick', 20);
    expect(worker.readAhead).toBe(6);
    expect(prefetches).toEqual([4, 8]);
    // Twelve 5 ms tasks move the mean from near 0 past 2 ms (the eighth does).
    await run('slow', 12);
    expect(worker.readAhead).toBe(2);
    expect(prefetches).toEqual([4, 8, 4]);
  });

  it('keeps a readAhead that is set, and concurrency on a broker that cannot change its prefetch', async () => {
    const set = recordingServer();
    const fixedByUser = await set.start({ concurrency: 2, readAhead: 1 });
    await set.run('quick', 20);
    expect(fixedByUser.readAhead).toBe(1);
    expect(set.prefetches).toEqual([3]);

    const fixedBroker = recordingServer('fixed');
    const unset = await fixedBroker.start({ concurrency: 2 });
    await fixedBroker.run('quick', 20);
    expect(unset.readAhead).toBe(2);
    expect(fixedBroker.prefetches).toEqual([4]);
  });

  it('a broker that refuses the change keeps its bound: reported once, readAhead unchanged, tasks still run', async () => {
    const { prefetches, errors, run, start } = recordingServer('refuses');
    const worker = await start({ concurrency: 2 });
    await run('quick', 20);
    await run('quick', 20);
    expect(worker.readAhead).toBe(2);
    expect(prefetches).toEqual([4, 8]);
    expect(errors).toEqual(['readAhead stays at 2: the broker refused a prefetch of 8: channel closed']);
  });
});
