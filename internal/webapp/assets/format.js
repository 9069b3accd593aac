// Formatting for people: times, days, sizes, durations, previews, avatars.

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const weekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'long' });
const shortWeekdayFmt = new Intl.DateTimeFormat(undefined, { weekday: 'short' });
const dateFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'long', year: 'numeric' });
const shortDateFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: '2-digit' });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

export function parseTime(s) {
  if (!s) return null;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

export function startOfDay(d) {
  return new Date(d.getFullYear(), d.getMonth(), d.getDate());
}

function daysAgo(d) {
  return Math.round((startOfDay(new Date()) - startOfDay(d)) / 86400000);
}

// "10:04"
export function clock(d) {
  return d ? timeFmt.format(d) : '';
}

// "Monday, 7 December 2026 at 10:04:00": for title tooltips.
export function full(d) {
  return d ? fullFmt.format(d) : '';
}

// The label of a day separator: Today, Yesterday, a weekday this week, or a date.
export function dayLabel(d) {
  const n = daysAgo(d);
  if (n === 0) return 'Today';
  if (n === 1) return 'Yesterday';
  if (n > 1 && n < 7) return weekdayFmt.format(d);
  return dateFmt.format(d);
}

// The time in the conversation list: 10:04, Yesterday, Mon, 7 Dec 26.
export function listTime(d) {
  if (!d) return '';
  const n = daysAgo(d);
  if (n === 0) return clock(d);
  if (n === 1) return 'Yesterday';
  if (n > 1 && n < 7) return shortWeekdayFmt.format(d);
  return shortDateFmt.format(d);
}

// 0:12, 3:04, 1:02:03
export function duration(ms) {
  const total = Math.max(0, Math.round((ms || 0) / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
}

// 6.2 KB, 3.4 MB (powers of 1024)
export function size(n) {
  if (!Number.isFinite(n) || n < 0) return '';
  if (n < 1024) return `${n} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = -1;
  do {
    v /= 1024;
    i++;
  } while (v >= 1024 && i < units.length - 1);
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

export function percent(done, total) {
  if (!total || total <= 0) return 0;
  return Math.max(0, Math.min(100, Math.floor((done / total) * 100)));
}

// One line that stands for a message in the conversation list and in
// notifications.
export function preview(m) {
  if (!m) return '';
  if (m.state === 'unreadable') return '🔒 Message could not be read';
  const a = m.attachment;
  const text = (m.text || '').trim();
  if (a) {
    switch (a.kind) {
      case 'image':
        return text ? `📷 ${text}` : '📷 Photo';
      case 'voice':
        return `🎤 Voice note ${duration(a.duration_ms)}`;
      case 'video':
        return text ? `🎬 ${text}` : `🎬 Video${a.duration_ms ? ' ' + duration(a.duration_ms) : ''}`;
      default:
        return `📄 ${a.name || 'File'}`;
    }
  }
  return text.split('\n', 1)[0];
}

// A stable hue per name, for avatars.
export function hue(name) {
  let h = 2166136261;
  for (const c of name || '') {
    h ^= c.codePointAt(0);
    h = Math.imul(h, 16777619);
  }
  return Math.abs(h) % 360;
}

export function initial(name) {
  const c = (name || '?').trim()[0] || '?';
  return c.toUpperCase();
}

// Text made only of one to three emoji is shown large.
const emojiOnly = /^(?:\p{Extended_Pictographic}|\p{Emoji_Component}|\u200d|\ufe0f|\s)+$/u;
export function isEmojiOnly(text) {
  if (!text || !emojiOnly.test(text) || /^[\d#*\s]+$/.test(text)) return false;
  const seg = typeof Intl.Segmenter === 'function'
    ? [...new Intl.Segmenter(undefined, { granularity: 'grapheme' }).segment(text.trim())].length
    : [...text.trim()].length;
  return seg <= 3;
}

// The username rules (package username): 3 to 32 of a-z, 0-9, _; starts
// with a letter; does not end with _. Case does not matter.
export function checkUsername(raw) {
  const name = (raw || '').trim().replace(/^@/, '').toLowerCase();
  if (!name) return { error: 'Type a username.' };
  if (name.length < 3 || name.length > 32) return { name, error: 'A username is 3 to 32 characters long.' };
  if (!/^[a-z0-9_]+$/.test(name)) return { name, error: 'A username has only letters a-z, digits and underscores.' };
  if (!/^[a-z]/.test(name)) return { name, error: 'A username starts with a letter.' };
  if (name.endsWith('_')) return { name, error: 'A username does not end with an underscore.' };
  return { name };
}

// Usernames typed in one box, separated by commas, semicolons or spaces:
// { names } (checked, lower case, each once), or { error } about the first
// that is not a username.
export function parseUsernames(raw) {
  const names = [];
  for (const part of (raw || '').split(/[\s,;]+/)) {
    if (!part) continue;
    const { name, error } = checkUsername(part);
    if (error) return { error: `“${part}”: ${error}` };
    if (!names.includes(name)) names.push(name);
  }
  return { names };
}

// "alice", "alice and bob", "alice, bob and carol"; past max names, "alice,
// bob and 3 others".
export function nameList(names, max = 4) {
  const shown = names.slice(0, names.length > max ? max - 1 : max);
  const rest = names.length - shown.length;
  const parts = rest > 0 ? [...shown, `${rest} other${rest === 1 ? '' : 's'}`] : shown;
  if (parts.length <= 1) return parts.join('');
  return `${parts.slice(0, -1).join(', ')} and ${parts[parts.length - 1]}`;
}

// Who is typing: "alice is typing…", "alice and bob are typing…", "4 people
// are typing…".
export function typingLine(names) {
  if (!names || names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length <= 3) return `${nameList(names)} are typing…`;
  return `${names.length} people are typing…`;
}

// A span of seconds in words, for disappearing messages: "Off" for 0, else
// "1 hour", "8 hours", "1 day", "4 weeks", "90 days"...
export function span(seconds) {
  const s = Math.max(0, Math.round(seconds || 0));
  if (s === 0) return 'Off';
  const units = [[7 * 86400, 'week'], [86400, 'day'], [3600, 'hour'], [60, 'minute'], [1, 'second']];
  for (const [n, word] of units) {
    if (s % n === 0 && (word !== 'week' || s / n <= 8)) {
      const v = s / n;
      return `${v} ${word}${v === 1 ? '' : 's'}`;
    }
  }
  return `${s} seconds`;
}
