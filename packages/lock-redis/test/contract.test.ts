import { lockContract } from '@machinery-ts/contract-tests';
import { RedisLock } from '../src/index.js';

const url = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';

lockContract('redis', { create: () => new RedisLock({ url }) });
