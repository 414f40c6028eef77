import { createHash } from 'node:crypto';
import { Command, type Redis } from 'ioredis';

/** One argument in the protocol's framing: its length in bytes, then itself. */
const frame = (s: string): string => `$${Buffer.byteLength(s)}\r\n${s}\r\n`;

/**
 * An EVALSHA whose protocol text is made in one join. ioredis builds a command's text by
 * appending five pieces per argument to one string; the broker's batch scripts carry a few
 * hundred arguments (eight per finished task, three per published one), and made that way
 * they cost about 0.2 µs more per argument (encode and convert to bytes, 100 tasks a call).
 */
class FramedEvalsha extends Command {
  readonly #text: string;

  constructor(sha: string, keys: readonly string[], args: readonly (string | number)[]) {
    super('evalsha', [], { replyEncoding: 'utf8' });
    // Not framed from here (toWritable is overridden); kept for what reads them: errors, monitors, tests.
    this.args = [sha, keys.length, ...keys, ...args];
    const parts = new Array<string>(keys.length + args.length + 1);
    parts[0] = `*${keys.length + args.length + 3}\r\n$7\r\nevalsha\r\n${frame(sha)}${frame(String(keys.length))}`;
    let i = 1;
    for (const k of keys) parts[i++] = frame(k);
    for (const a of args) parts[i++] = frame(typeof a === 'string' ? a : String(a));
    this.#text = parts.join('');
  }

  override toWritable(): string {
    return this.#text;
  }
}

/**
 * A Lua script run by EVALSHA, falling back to EVAL when the server does not know it yet
 * (after a restart or SCRIPT FLUSH).
 */
export class LuaScript {
  readonly sha: string;

  constructor(readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex');
  }

  async run(client: Redis, keys: readonly string[], args: readonly (string | number)[]): Promise<unknown> {
    try {
      // A client made with a keyPrefix prefixes the keys of the commands it frames; then it frames this one too.
      if (client.options.keyPrefix) return await client.evalsha(this.sha, keys.length, ...keys, ...args);
      return await client.sendCommand(new FramedEvalsha(this.sha, keys, args));
    } catch (error) {
      if (error instanceof Error && error.message.includes('NOSCRIPT')) return client.eval(this.source, keys.length, ...keys, ...args);
      throw error;
    }
  }
}
