import { randomUUID } from 'node:crypto';
import type { Lock } from '@machinery-ts/core';
import { afterEach, describe, expect, it } from 'vitest';

export interface LockContractOptions {
  readonly create: () => Promise<Lock> | Lock;
  /**
   * Whether the adapter implements the optional `acquireUntil` (Go's lock). When true, its tests
   * run and fail if the method is missing. @default true
   */
  readonly acquireUntil?: boolean;
}

const NS_PER_MS = 1_000_000n;
const nowNs = (): bigint => BigInt(Date.now()) * NS_PER_MS;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

type UntilLock = Lock & Required<Pick<Lock, 'acquireUntil'>>;

export function lockContract(name: string, options: LockContractOptions): void {
  describe(`Lock contract: ${name}`, () => {
    const opened: Lock[] = [];
    const make = async (): Promise<Lock> => {
      const l = await options.create();
      opened.push(l);
      return l;
    };
    afterEach(async () => {
      await Promise.allSettled(opened.splice(0).map((l) => l.close()));
    });

    it('gives a live lease to exactly one of many racers', async () => {
      const locks = await Promise.all(Array.from({ length: 5 }, () => make()));
      const key = `contract-lock-${randomUUID()}`;
      const tokens = await Promise.all(locks.map((l) => l.acquire(key, 5000)));
      expect(tokens.filter((t) => t !== null)).toHaveLength(1);
    });

    it('frees the key at the TTL', async () => {
      const [a, b] = [await make(), await make()];
      const key = `contract-lock-${randomUUID()}`;
      expect(await a.acquire(key, 300)).not.toBeNull();
      expect(await b.acquire(key, 300)).toBeNull();
      await sleep(450);
      expect(await b.acquire(key, 300)).not.toBeNull();
    });

    it('releases only with the right token', async () => {
      const [a, b] = [await make(), await make()];
      const key = `contract-lock-${randomUUID()}`;
      const token = (await a.acquire(key, 5000)) as string;
      expect(await b.release(key, 'not-the-token')).toBe(false);
      expect(await b.acquire(key, 5000)).toBeNull();
      expect(await a.release(key, token)).toBe(true);
      expect(await b.acquire(key, 5000)).not.toBeNull();
    });
  
    describe.runIf(options.acquireUntil ?? true)('acquireUntil (Go-compatible)', () => {
      const makeUntil = async (): Promise<UntilLock> => {
        const l = await make();
        expect(typeof l.acquireUntil, 'the adapter declares acquireUntil but has none').toBe('function');
        return l as UntilLock;
      };
      const key = (): string => `contract-lock-go-${randomUUID()}`;

      it('takes an absent key for exactly one of many racers', async () => {
        const locks = await Promise.all(Array.from({ length: 5 }, () => makeUntil()));
        const k = key();
        const until = nowNs() + 5000n * NS_PER_MS;
        const won = await Promise.all(locks.map((l) => l.acquireUntil(k, until)));
        expect(won.filter(Boolean)).toHaveLength(1);
      });

      it('is held while the stored instant is not before now, to the nanosecond', async () => {
        const [a, b] = [await makeUntil(), await makeUntil()];
        const k = key();
        const until = nowNs() + 5000n * NS_PER_MS;
        expect(await a.acquireUntil(k, until - 10n, until - 20n)).toBe(true);
        // Stored = until − 10: a now equal to it is not past it (Go: now > stored).
        expect(await b.acquireUntil(k, until, until - 10n)).toBe(false);
        expect(await b.acquireUntil(k, until, until - 9n)).toBe(true);
        expect(await a.acquireUntil(k, until + 1n, until)).toBe(false);
        expect(await a.acquireUntil(k, until + 1n, until + 1n)).toBe(true);
      });

      it('expires by itself at untilNs, and meanwhile blocks acquire', async () => {
        const [a, b] = [await makeUntil(), await makeUntil()];
        const k = key();
        expect(await a.acquireUntil(k, nowNs() + 300n * NS_PER_MS)).toBe(true);
        expect(await b.acquire(k, 5000)).toBeNull();
        expect(await b.acquireUntil(k, nowNs() + 5000n * NS_PER_MS)).toBe(false);
        await sleep(450);
        expect(await b.acquire(k, 5000)).not.toBeNull();
      });

      it('never takes over a lease held by acquire, whose value is not a time', async () => {
        const [a, b] = [await makeUntil(), await makeUntil()];
        const k = key();
        expect(await a.acquire(k, 5000)).not.toBeNull();
        expect(await b.acquireUntil(k, 2n ** 62n, 2n ** 62n)).toBe(false);
      });

      it('rejects an untilNs before nowNs, and a nowNs not after the epoch', async () => {
        const a = await makeUntil();
        const now = nowNs();
        await expect(a.acquireUntil(key(), now - 1n, now)).rejects.toBeInstanceOf(RangeError);
        await expect(a.acquireUntil(key(), now, 0n)).rejects.toBeInstanceOf(RangeError);
      });
    });
  });
}
