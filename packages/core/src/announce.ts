import type { Signature } from './message/signature.js';

/**
 * The task header naming where the sender hears the task's completion (`Backend.announceTo`).
 * Go workers carry it along untouched and announce nothing; ours announce there as well as
 * on the task's own channel, so a sender waiting for many tasks needs no subscription each.
 */
export const ANNOUNCE_HEADER = 'machinery-ts-announce';

/** The announce target a task was sent with, if any. */
export function announcedOn(sig: Signature): string | undefined {
  const value = sig.Headers?.[ANNOUNCE_HEADER];
  return typeof value === 'string' && value !== '' ? value : undefined;
}

/**
 * `sig` with `target` in its header and in its callbacks' (so links a worker sends later are
 * heard too); a header already set is kept. Copies what it changes: the caller's objects are
 * left as they were.
 */
export function withAnnounceTarget(sig: Signature, target: string): Signature {
  return {
    ...sig,
    Headers: announcedOn(sig) ? sig.Headers : { ...sig.Headers, [ANNOUNCE_HEADER]: target },
    OnSuccess: sig.OnSuccess ? sig.OnSuccess.map((s) => withAnnounceTarget(s, target)) : null,
    OnError: sig.OnError ? sig.OnError.map((s) => withAnnounceTarget(s, target)) : null,
    ChordCallback: sig.ChordCallback ? withAnnounceTarget(sig.ChordCallback, target) : null,
  };
}
