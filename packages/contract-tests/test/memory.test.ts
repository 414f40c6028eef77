import { MemoryBackend, MemoryBroker, MemoryLock, MemoryStore, MemoryTransport } from '@machinery-ts/core';
import { backendContract, brokerContract, lockContract } from '../src/index.js';

// Adapters built on one transport/store behave like processes sharing a server.
const transport = new MemoryTransport();
const store = new MemoryStore();
const leases = new Map<string, { token: string; expiresAt: number }>();

brokerContract('memory', { create: () => new MemoryBroker({ transport, leaseMs: 1000 }) });
backendContract('memory', { create: () => new MemoryBackend({ store }) });
lockContract('memory', { create: () => new MemoryLock({ leases }) });
