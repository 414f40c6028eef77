import type { Writable } from 'node:stream';

/**
 * Corks `stream` until the current tick's work is done (the next `process.nextTick`), so
 * every write issued meanwhile leaves in one `writev`. Adapters call it before sending a
 * command: a busy worker issues several per tick, and one syscall per command was the
 * largest single cost in its profile. Calling it again in the same tick does nothing.
 */
export function corkForTick(stream: Writable | undefined | null): void {
  if (!stream || stream.writableCorked > 0 || stream.destroyed) return;
  stream.cork();
  process.nextTick(() => stream.uncork());
}
