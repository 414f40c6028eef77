/**
 * RFC 3339 times as Go writes them (`time.RFC3339Nano`, UTC, trailing zeros of the
 * fraction trimmed) and as Go reads them (any RFC 3339 form, numeric offsets too).
 */

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/** Epoch milliseconds (fractional, so sub-millisecond digits survive) to Go's RFC3339Nano text. */
export function formatRfc3339Nano(epochMs: number): string {
  const wholeMs = Math.floor(epochMs);
  const subMsNanos = Math.round((epochMs - wholeMs) * 1e6);
  const iso = new Date(wholeMs).toISOString(); // 2026-11-22T20:18:13.156Z
  const ms = iso.slice(20, 23);
  const fraction = `${ms}${String(Math.min(subMsNanos, 999_999)).padStart(6, '0')}`.replace(/0+$/, '');
  return `${iso.slice(0, 19)}${fraction ? `.${fraction}` : ''}Z`;
}

/** Now, with the sub-millisecond precision the clock offers, as Go would write it. */
export function nowRfc3339Nano(): string {
  return formatRfc3339Nano(performance.timeOrigin + performance.now());
}

/** Parses RFC 3339 to epoch milliseconds; `null` for anything Go would reject. */
export function parseRfc3339(text: string): number | null {
  const m = RFC3339.exec(text);
  if (!m) return null;
  const [, y, mo, d, h, mi, s, frac, z, sign, oh, om] = m;
  const base = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
  if (Number.isNaN(base)) return null;
  const fractionMs = frac ? Number(`0.${frac}`) * 1000 : 0;
  const offsetMs = z ? 0 : (sign === '-' ? -1 : 1) * (Number(oh) * 60 + Number(om)) * 60_000;
  return base + fractionMs - offsetMs;
}
