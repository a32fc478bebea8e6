// lastSeenText against a table of cases in two time zones (one with DST), and the four buckets.
// Expected texts are written out by hand from the calendar, not computed by the code under test.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { lastSeenText } from '../index.js';

const seen = (iso) => ({ user: 'bob', online: false, last_seen: iso });

// Asia/Kolkata: UTC+5:30 all year, so a UTC-based day would be wrong for 5.5 hours of each day.
// now: Wednesday 2026-12-02 10:00 in Kolkata.
const KOLKATA_NOW = Date.parse('2026-12-02T04:30:00.000Z');
const KOLKATA = [
  ['same minute', '2026-12-02T04:30:00.000Z', 'last seen today at 10:00'],
  ['local midnight, still 1 Dec in UTC', '2026-12-01T18:30:00.000Z', 'last seen today at 0:00'],
  ['a second before local midnight', '2026-12-01T18:29:59.999Z', 'last seen yesterday at 23:59'],
  ['yesterday morning', '2026-12-01T03:35:00.000Z', 'last seen yesterday at 9:05'],
  ['this week: Saturday', '2026-11-28T03:42:00.000Z', 'last seen Saturday at 9:12'],
  ['this week: 6 days ago', '2026-11-26T15:00:00.000Z', 'last seen Thursday at 20:30'],
  ['older: 7 days ago', '2026-11-25T06:00:00.000Z', 'last seen 25 Nov at 11:30'],
  ['older, this year', '2026-01-01T00:00:00.000Z', 'last seen 1 Jan at 5:30'],
  ['another year', '2025-12-31T12:00:00.000Z', 'last seen 31 Dec 2025 at 17:30'],
  ['ahead of this clock (another machine)', '2026-12-02T04:31:00.000Z', 'last seen today at 10:01'],
];

// America/New_York, around both DST changes of 2026 (8 March: 2:00 -> 3:00; 1 November: 2:00 -> 1:00).
const NEW_YORK = [
  // now: Sunday 8 March 2026 12:00 EDT (16:00Z), a 23-hour day.
  ['spring: just before midnight', '2026-03-08T04:59:00.000Z', '2026-03-08T16:00:00.000Z', 'last seen yesterday at 23:59'],
  ['spring: just after midnight', '2026-03-08T05:30:00.000Z', '2026-03-08T16:00:00.000Z', 'last seen today at 0:30'],
  ['spring: first minute of EDT', '2026-03-08T07:00:00.000Z', '2026-03-08T16:00:00.000Z', 'last seen today at 3:00'],
  // now: Sunday 1 November 2026 23:30 EST (04:30Z on the 2nd), a 25-hour day.
  ['fall: the first 1:30 (EDT)', '2026-11-01T05:30:00.000Z', '2026-11-02T04:30:00.000Z', 'last seen today at 1:30'],
  ['fall: the second 1:30 (EST)', '2026-11-01T06:30:00.000Z', '2026-11-02T04:30:00.000Z', 'last seen today at 1:30'],
  ['fall: a minute before midnight EDT', '2026-11-01T03:59:00.000Z', '2026-11-02T04:30:00.000Z', 'last seen yesterday at 23:59'],
  ['fall: 24 h before now is still today', '2026-11-01T04:30:00.000Z', '2026-11-02T04:30:00.000Z', 'last seen today at 0:30'],
  ['this week across the change', '2026-10-29T13:00:00.000Z', '2026-11-02T04:30:00.000Z', 'last seen Thursday at 9:00'],
  ['older across the change', '2026-10-25T13:00:00.000Z', '2026-11-02T04:30:00.000Z', 'last seen 25 Oct at 9:00'],
  ['another year', '2025-11-02T13:00:00.000Z', '2026-11-02T04:30:00.000Z', 'last seen 2 Nov 2025 at 8:00'],
];

test('exact last seen, Asia/Kolkata, en-GB', () => {
  for (const [what, at, want] of KOLKATA) {
    assert.equal(lastSeenText(seen(at), new Date(KOLKATA_NOW), 'en-GB', { timeZone: 'Asia/Kolkata' }), want, what);
  }
});

test('exact last seen, America/New_York across DST changes, en-GB', () => {
  for (const [what, at, now, want] of NEW_YORK) {
    assert.equal(lastSeenText(seen(at), Date.parse(now), 'en-GB', { timeZone: 'America/New_York' }), want, what);
  }
});

test('the locale shapes the clock and the date, not the words', () => {
  const opts = { timeZone: 'America/New_York' };
  const now = Date.parse('2026-11-02T04:30:00.000Z');
  // Some ICU versions (browsers) write a narrow no-break space (U+202F) before AM/PM, others
  // (Node 20) a plain space: both read the same.
  const us = (at) => lastSeenText(seen(at), now, 'en-US', opts).replace(/\u202f/g, ' ');
  assert.equal(us('2026-11-01T06:30:00.000Z'), 'last seen today at 1:30 AM');
  assert.equal(us('2026-10-25T13:00:00.000Z'), 'last seen Oct 25 at 9:00 AM');
  assert.equal(us('2025-11-02T13:00:00.000Z'), 'last seen Nov 2, 2025 at 8:00 AM');
});

test('online, never seen, and the buckets of a hidden last seen', () => {
  const now = new Date(KOLKATA_NOW);
  const hidden = (approx) => ({ user: 'bob', online: false, last_seen: null, last_seen_approx: approx });
  assert.equal(lastSeenText({ user: 'bob', online: true, last_seen: null }, now), 'online');
  assert.equal(lastSeenText({ user: 'bob', online: false, last_seen: null }, now), 'never seen');
  assert.equal(lastSeenText(hidden('recently'), now), 'last seen recently');
  assert.equal(lastSeenText(hidden('within_week'), now), 'last seen within a week');
  assert.equal(lastSeenText(hidden('within_month'), now), 'last seen within a month');
  assert.equal(lastSeenText(hidden('long_ago'), now), 'last seen a long time ago');
});

test('without options, the runtime time zone decides the day', () => {
  // The zone of this process (npm test runs it twice, under TZ=Asia/Kolkata and TZ=America/New_York).
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone;
  const now = new Date(KOLKATA_NOW);
  for (const [, at] of KOLKATA) {
    assert.equal(lastSeenText(seen(at), now, 'en-GB'), lastSeenText(seen(at), now, 'en-GB', { timeZone: tz }));
  }
});
