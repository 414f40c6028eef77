// The machinery-ts demo on the in-memory default: no servers needed.
import { RetryTaskLater, Scheduler, Server, arg, call, chain, chord, defineTask, group, newSignature, partial } from '@machinery-ts/core';

const sum = defineTask({
  name: 'sum',
  args: ['[]int64'],
  results: ['int64'],
  run: ([xs]) => xs.reduce((a, b) => a + b, 0n),
});
const add = defineTask({
  name: 'add',
  args: ['int64', 'int64'],
  results: ['int64'],
  run: ([a, b]) => a + b,
});
const multiply = defineTask({
  name: 'multiply',
  args: ['int64', 'int64'],
  results: ['int64'],
  run: ([a, b]) => a * b,
});
const add4 = defineTask({
  name: 'add4',
  args: ['int64', 'int64', 'int64', 'int64'],
  results: ['int64'],
  run: ([a, b, c, d]) => a + b + c + d,
});

let flakyCalls = 0;
const server = new Server();
server.registerTask(sum);
server.registerTask(add);
server.registerTask(multiply);
server.registerTask(add4);
// Fails twice, then succeeds: RetryTaskLater asks for another run after 200 ms.
server.registerTask('flaky', () => {
  flakyCalls += 1;
  if (flakyCalls < 3) throw new RetryTaskLater(200, `attempt ${flakyCalls} failed`);
  return `succeeded on attempt ${flakyCalls}`;
});

const worker = server.newWorker({ concurrency: 4, handleSignals: false, onPreTask: () => undefined });
await worker.start();

const int64s = Array.from({ length: 10 }, (_, i) => BigInt(i + 1));
const r1 = await server.sendTask({ Name: 'sum', Args: [arg('[]int64', int64s)] });
console.log('sum(1..10)       =', String((await r1.get({ timeoutMs: 5000 }))[0]));

const r2 = await server.sendTask({ Name: 'add', Args: [arg('int64', 2n), arg('int64', 3n)] });
console.log('add(2, 3)        =', String((await r2.get({ timeoutMs: 5000 }))[0]));

const r3 = await server.sendTask({ Name: 'flaky' });
console.log('flaky (retried)  =', (await r3.get({ timeoutMs: 5000 }))[0]);

const eta = new Date(Date.now() + 500).toISOString();
const started = Date.now();
const r4 = await server.sendTask({ Name: 'add', ETA: eta, Args: [arg('int64', 40n), arg('int64', 2n)] });
const etaResult = (await r4.get({ timeoutMs: 5000 }))[0];
console.log(`add(40, 2) at ETA = ${String(etaResult)} (ran after ${Date.now() - started} ms, ETA was 500 ms)`);

// Typed signatures: `call` checks the arguments against the task's Go types at compile time.
const g = group(call(add, 1n, 1n), call(add, 2n, 2n), call(add, 3n, 3n));
const members = await server.sendGroup(g);
const groupValues = await Promise.all(members.map(async (m) => String((await m.get({ timeoutMs: 5000 }))[0])));
console.log('group add(n, n)  =', groupValues.join(', '));

// The callback receives every member's result appended to its own args: 100 + [1+1, 2+2, 3+3].
// `partial(add4, 100n)` is missing three int64s, exactly what the three members return, so it
// compiles; with two members, or a member returning a string, it would not.
const c = chord(group(call(add, 1n, 1n), call(add, 2n, 2n), call(add, 3n, 3n)), partial(add4, 100n));
const chordResult = await server.sendChord(c);
console.log('chord 100+2+4+6  =', String((await chordResult.get({ timeoutMs: 5000 }))[0]));

// Go's README example: multiply(4, add(5, 5, add(1, 1)))... here add(1,1) → add(5, 2) → multiply(4, 7).
// Each later link is missing the one int64 the previous link returns.
const ch = chain(call(add, 1n, 1n), partial(add, 5n), partial(multiply, 4n));
const chainResult = await server.sendChain(ch);
console.log('chain 4*(5+(1+1)) =', String((await chainResult.get({ timeoutMs: 5000 }))[0]));

// A periodic task: every second, exactly once per tick however many schedulers run.
let ticks = 0;
server.registerTask('tick', () => void (ticks += 1));
const scheduler = new Scheduler(server);
scheduler.registerPeriodicTask('@every 1s', 'heartbeat', newSignature({ Name: 'tick' }));
while (ticks < 2) await new Promise((r) => setTimeout(r, 100));
await scheduler.stop();
console.log('periodic @every 1s ran', ticks, 'times');

await worker.stop();
await server.close();
