// The chat-app wording of a presence entry ("online", "last seen today at 9:42", "last seen
// recently", ...), so that every app built on this library shows the same words.
//
// The words are English; the locale shapes the clock and the date ("9:42" in en-GB, "9:42 AM" in
// en-US, "3 Nov" or "Nov 3"). Calendar days are counted in the viewer's time zone (the runtime's
// own, or `options.timeZone`), so "yesterday" is right across midnight and on a DST change day.

/** @typedef {import('../index.js').PresenceEntry} PresenceEntry */

const APPROX_TEXT = {
  recently: 'last seen recently',
  within_week: 'last seen within a week',
  within_month: 'last seen within a month',
  long_ago: 'last seen a long time ago',
};

const DAY_MS = 86_400_000;
const formatters = new Map();

function formatter(locale, timeZone, kind) {
  const key = `${locale ?? ''}|${timeZone ?? ''}|${kind}`;
  let f = formatters.get(key);
  if (!f) {
    const base = timeZone ? { timeZone } : {};
    const shapes = {
      // A fixed, locale-independent reading of the calendar day in the zone.
      day: { ...base, calendar: 'gregory', numberingSystem: 'latn', year: 'numeric', month: 'numeric', day: 'numeric' },
      time: { ...base, hour: 'numeric', minute: '2-digit' },
      weekday: { ...base, weekday: 'long' },
      date: { ...base, day: 'numeric', month: 'short' },
      dateYear: { ...base, day: 'numeric', month: 'short', year: 'numeric' },
    };
    f = new Intl.DateTimeFormat(kind === 'day' ? 'en-US' : locale, shapes[kind]);
    formatters.set(key, f);
  }
  return f;
}

// The zone's calendar day of an instant, as a day count (only differences between two are used).
function dayNumber(ms, timeZone) {
  const parts = Object.fromEntries(formatter(undefined, timeZone, 'day').formatToParts(new Date(ms)).map((p) => [p.type, p.value]));
  return { n: Math.round(Date.UTC(Number(parts.year), Number(parts.month) - 1, Number(parts.day)) / DAY_MS), year: Number(parts.year) };
}

/**
 * The words a chat app shows for a presence entry.
 *
 * @param {PresenceEntry} entry an entry of a `presence` frame (from `query` or `subscribe`)
 * @param {Date | number} [now] the viewer's now (default: the current time)
 * @param {string | string[]} [locale] a BCP 47 locale for the clock and date (default: the runtime's)
 * @param {{ timeZone?: string }} [options] the viewer's IANA time zone (default: the runtime's)
 * @returns {string}
 */
export function lastSeenText(entry, now = new Date(), locale = undefined, options = {}) {
  if (entry.online) return 'online';
  if (typeof entry.last_seen !== 'string') {
    const approx = entry.last_seen_approx ? APPROX_TEXT[entry.last_seen_approx] : undefined;
    return approx ?? 'never seen';
  }
  const seenMs = Date.parse(entry.last_seen);
  if (Number.isNaN(seenMs)) return 'never seen';
  const nowMs = typeof now === 'number' ? now : now.getTime();
  const tz = options.timeZone;
  const seen = dayNumber(seenMs, tz);
  const today = dayNumber(nowMs, tz);
  const days = today.n - seen.n;
  const time = formatter(locale, tz, 'time').format(seenMs);
  // A value slightly ahead of this clock (another machine's clock) still reads as today.
  if (days <= 0) return `last seen today at ${time}`;
  if (days === 1) return `last seen yesterday at ${time}`;
  if (days < 7) return `last seen ${formatter(locale, tz, 'weekday').format(seenMs)} at ${time}`;
  const date = formatter(locale, tz, seen.year === today.year ? 'date' : 'dateYear').format(seenMs);
  return `last seen ${date} at ${time}`;
}
