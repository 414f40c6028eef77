// The machinery-ts AMQP worker with NullBackend: no task states, like raw amqplib.
process.env.BENCH_NULL_BACKEND = '1';
await import('./worker-machinery-amqp.js');
