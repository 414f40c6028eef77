import { describe, expect, it } from 'vitest';
import { formatRfc3339Nano, nowRfc3339Nano, parseRfc3339 } from '../src/message/time.js';

/** The plain way to write the same text, for comparison. */
function slowFormat(epochMs: number): string {
  const wholeMs = Math.floor(epochMs);
  const subMsNanos = Math.min(Math.round((epochMs - wholeMs) * 1e6), 999_999);
  const iso = new Date(wholeMs).toISOString();
  const fraction = `${iso.slice(20, 23)}${String(subMsNanos).padStart(6, '0')}`.replace(/0+$/, '');
  return `${iso.slice(0, 19)}${fraction ? `.${fraction}` : ''}Z`;
}

describe('RFC 3339 times as Go writes them', () => {
  it('trims trailing zeros of the fraction and drops an empty one', () => {
    const second = Date.UTC(2026, 10, 22, 20, 18, 13);
    expect(formatRfc3339Nano(second)).toBe('2026-11-22T20:18:13Z');
    expect(formatRfc3339Nano(second + 100)).toBe('2026-11-22T20:18:13.1Z');
    // Binary fractions, exact in a double at this magnitude (which resolves ~0.24 µs).
    expect(formatRfc3339Nano(second + 156.75)).toBe('2026-11-22T20:18:13.15675Z');
    expect(formatRfc3339Nano(second + 0.5)).toBe('2026-11-22T20:18:13.0005Z');
    expect(formatRfc3339Nano(second + 999.99951171875)).toBe('2026-11-22T20:18:13.999999512Z');
    expect(formatRfc3339Nano(0.000001)).toBe('1970-01-01T00:00:00.000000001Z');
  });

  it('writes the right second across second, day and year boundaries, before 1970 too', () => {
    const times = [
      Date.UTC(2026, 11, 31, 23, 59, 59) + 999.5,
      Date.UTC(2027, 0, 1),
      Date.UTC(2027, 0, 1) + 0.25,
      -1.5,
      -1000,
      -999.999,
      0,
    ];
    for (const t of times) expect(formatRfc3339Nano(t)).toBe(slowFormat(t));
  });

  it('agrees with the plain formatting on random times, in and out of order', () => {
    let seed = 7;
    const next = (): number => ((seed = (seed * 48271) % 2147483647) / 2147483647);
    const base = Date.UTC(2026, 10, 23);
    for (let i = 0; i < 5000; i++) {
      const t = base + (next() - 0.5) * 86_400_000 * (i % 2 === 0 ? 1 : 0.001) + next();
      expect(formatRfc3339Nano(t)).toBe(slowFormat(t));
    }
  });

  it('reads back what it writes, to the microsecond', () => {
    const now = nowRfc3339Nano();
    expect(now).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z$/);
    const t = Date.UTC(2026, 10, 22, 20, 18, 13) + 156.749485;
    expect(parseRfc3339(formatRfc3339Nano(t))).toBeCloseTo(t, 3);
  });
});
