import { backendContract } from '@machinery-ts/contract-tests';
import { MemcacheBackend } from '../src/index.js';

const url = process.env.MTS_MEMCACHE_URL ?? 'memcache://127.0.0.1:11213';

backendContract('memcache', { create: () => new MemcacheBackend({ url }), chordMembers: 200, chordRacers: 8 });
