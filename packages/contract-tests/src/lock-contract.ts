import { randomUUID } from 'node:crypto';
import type { Lock } from '@machinery-ts/core';
import { afterEach, describe, expect, it } from 'vitest';

export interface LockContractOptions {
  readonly create: () => Promise<Lock> | Lock;
}

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
      await new Promise((r) => setTimeout(r, 450));
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
  });
}
