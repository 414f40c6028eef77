import { backendContract } from '@machinery-ts/contract-tests';
import { RedisBackend } from '../src/index.js';

const url = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';

backendContract('redis', { create: () => new RedisBackend({ url }), chordMembers: 200, chordRacers: 8, workerChordMembers: 100 });
