// The machinery-ts worker with `progressStates: 'none'`: PENDING and the outcome are stored,
// RECEIVED and STARTED are not (the lean setting, closest to what bee-queue and BullMQ keep).
process.env.BENCH_PROGRESS_STATES = 'none';
await import('./worker-machinery.js');
