import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { LuaScript } from '../src/lua-script.js';

const url = process.env.MTS_REDIS_URL ?? 'redis://127.0.0.1:6390';
const client = new Redis(url);
const prefixed = new Redis(url, { keyPrefix: 'mts_test_prefix:' });

afterAll(async () => {
  await client.quit();
  await prefixed.quit();
});

// A fresh source each time, so the first run meets NOSCRIPT and the second EVALSHA finds it.
const echo = (): LuaScript => new LuaScript(`-- ${randomUUID()}\nreturn {KEYS, ARGV}`);

describe('LuaScript', () => {
  it('sends keys and arguments byte for byte: empty, multi-byte, CR LF, protocol-like text, numbers', async () => {
    const script = echo();
    const keys = ['k', 'clé', '😀key'];
    const args = ['', 'é', '😀 \u2028 日本', 'a\r\nb', '$3\r\nfoo\r\n', '*2\r\n', 42, 0, -7, 'x'.repeat(70_000)];
    const expected = [keys, args.map(String)];
    // NOSCRIPT then EVAL, then EVALSHA with the text made by LuaScript.
    expect(await script.run(client, keys, args)).toEqual(expected);
    expect(await script.run(client, keys, args)).toEqual(expected);
    expect(await script.run(client, [], [])).toEqual([[], []]);
  });

  it("leaves a keyPrefix client's commands to ioredis, which prefixes their keys", async () => {
    const script = echo();
    await script.run(client, [], []); // loaded
    expect(await script.run(prefixed, ['a', 'b'], ['c'])).toEqual([['mts_test_prefix:a', 'mts_test_prefix:b'], ['c']]);
  });

  it('rejects with the error Redis replies', async () => {
    const failing = new LuaScript(`-- ${randomUUID()}\nreturn redis.error_reply('refused: ' .. ARGV[1])`);
    await expect(failing.run(client, [], ['é'])).rejects.toThrow('refused: é');
    await expect(failing.run(client, [], ['é'])).rejects.toThrow('refused: é');
  });
});
