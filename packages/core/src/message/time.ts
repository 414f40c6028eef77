/**
 * RFC 3339 times as Go writes them (`time.RFC3339Nano`, UTC, trailing zeros of the
 * fraction trimmed) and as Go reads them (any RFC 3339 form, numeric offsets too).
 */

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/** The `YYYY-MM-DDTHH:MM:SS` of the last second formatted: every state write formats "now". */
let cachedSecond = Number.NaN;
let cachedPrefix = '';

/** Epoch milliseconds (fractional, so sub-millisecond digits survive) to Go's RFC3339Nano text. */
export function formatRfc3339Nano(epochMs: number): string {
  const wholeMs = Math.floor(epochMs);
  const second = Math.floor(wholeMs / 1000);
  if (second !== cachedSecond) {
    cachedPrefix = new Date(second * 1000).toISOString().slice(0, 19); // 2026-11-22T20:18:13
    cachedSecond = second;
  }
  const nanos = (wholeMs - second * 1000) * 1e6 + Math.min(Math.round((epochMs - wholeMs) * 1e6), 999_999);
  if (nanos === 0) return `${cachedPrefix}Z`;
  const digits = String(nanos).padStart(9, '0');
  let end = digits.length;
  while (digits.charCodeAt(end - 1) === 48 /* '0' */) end--;
  return `${cachedPrefix}.${digits.slice(0, end)}Z`;
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
