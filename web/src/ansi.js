// A small ANSI (SGR) to HTML converter for one log line.
//
// Each line is converted on its own, with no colour state carried over from the
// line before: the log view is virtualized and renders lines out of order, and
// build tools reset their colours at the end of a line anyway. Supported: the 16
// standard colours (30-37, 90-97, 40-47, 100-107), 256 colours (38;5;n / 48;5;n),
// truecolor (38;2;r;g;b / 48;2;r;g;b), bold, dim, italic, underline, inverse,
// strike-through, and the matching resets. Every other escape sequence (cursor
// movement, OSC titles and hyperlinks, ...) is removed. A carriage return keeps
// what was written after it, as a terminal would show a redrawn progress line.
//
// Pure functions, no DOM: unit-tested in tests/browser/unit.test.mjs.

const ESC = '\x1b';
// Control characters other than tab, and ESC sequences, need the slow path.
// eslint-disable-next-line no-control-regex
const NEEDS_WORK = /[\x00-\x08\x0b-\x1f\x7f]/;

/** Escapes text for HTML element content. */
export function escapeHtml(s) {
  let out = '';
  let last = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let rep;
    if (c === 38) rep = '&amp;';
    else if (c === 60) rep = '&lt;';
    else if (c === 62) rep = '&gt;';
    else continue;
    out += s.slice(last, i) + rep;
    last = i + 1;
  }
  return last === 0 ? s : out + s.slice(last);
}

/** Applies carriage returns: what a terminal would show of the line. */
function lastRedraw(s) {
  if (s.indexOf('\r') < 0) return s;
  s = s.replace(/\r+$/, '');
  const k = s.lastIndexOf('\r');
  return k < 0 ? s : s.slice(k + 1);
}

const XTERM_LEVELS = [0, 95, 135, 175, 215, 255];

/** The CSS colour of xterm colour n, 16..255 (0..15 use classes). */
export function color256(n) {
  if (n < 232) {
    const i = n - 16;
    const r = XTERM_LEVELS[Math.floor(i / 36)];
    const g = XTERM_LEVELS[Math.floor(i / 6) % 6];
    const b = XTERM_LEVELS[i % 6];
    return `rgb(${r},${g},${b})`;
  }
  const v = 8 + (n - 232) * 10;
  return `rgb(${v},${v},${v})`;
}

function newState() {
  return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false, strike: false };
}

// A colour is a number 0..15 (a palette class) or a CSS colour string.
function applySgr(st, params) {
  if (params.length === 0) params = [0];
  for (let i = 0; i < params.length; i++) {
    const p = params[i];
    if (p === 0) Object.assign(st, newState());
    else if (p === 1) st.bold = true;
    else if (p === 2) st.dim = true;
    else if (p === 3) st.italic = true;
    else if (p === 4) st.underline = true;
    else if (p === 7) st.inverse = true;
    else if (p === 9) st.strike = true;
    else if (p === 21 || p === 22) st.bold = st.dim = false;
    else if (p === 23) st.italic = false;
    else if (p === 24) st.underline = false;
    else if (p === 27) st.inverse = false;
    else if (p === 29) st.strike = false;
    else if (p >= 30 && p <= 37) st.fg = p - 30;
    else if (p === 39) st.fg = null;
    else if (p >= 40 && p <= 47) st.bg = p - 40;
    else if (p === 49) st.bg = null;
    else if (p >= 90 && p <= 97) st.fg = p - 90 + 8;
    else if (p >= 100 && p <= 107) st.bg = p - 100 + 8;
    else if (p === 38 || p === 48) {
      let color = null;
      if (params[i + 1] === 5 && i + 2 < params.length) {
        const n = params[i + 2];
        if (n >= 0 && n <= 255) color = n < 16 ? n : color256(n);
        i += 2;
      } else if (params[i + 1] === 2 && i + 4 < params.length) {
        const [r, g, b] = params.slice(i + 2, i + 5).map((v) => Math.max(0, Math.min(255, v)));
        color = `rgb(${r},${g},${b})`;
        i += 4;
      } else {
        break; // malformed extended colour: ignore the rest
      }
      if (p === 38) st.fg = color;
      else st.bg = color;
    }
    // anything else (blink, fonts, ...) is ignored
  }
}

function styleOf(st) {
  const cls = [];
  const css = [];
  let fg = st.fg;
  let bg = st.bg;
  if (st.inverse) {
    [fg, bg] = [bg ?? 'inv-fg', fg ?? 'inv-bg'];
  }
  for (const [which, c] of [['fg', fg], ['bg', bg]]) {
    if (c === null) continue;
    if (typeof c === 'number') cls.push(`a-${which}${c}`);
    else if (c === 'inv-fg') css.push(`${which === 'fg' ? 'color' : 'background-color'}:var(--log-bg)`);
    else if (c === 'inv-bg') css.push(`${which === 'fg' ? 'color' : 'background-color'}:var(--log-fg)`);
    else css.push(`${which === 'fg' ? 'color' : 'background-color'}:${c}`);
  }
  if (st.bold) cls.push('a-b');
  if (st.dim) cls.push('a-d');
  if (st.italic) cls.push('a-i');
  if (st.underline) cls.push('a-u');
  if (st.strike) cls.push('a-s');
  return { cls: cls.join(' '), css: css.join(';') };
}

/**
 * Splits a raw line into styled segments.
 * @returns {{text: string, cls: string, css: string}[]} (their texts joined are the plain text)
 */
export function parseAnsi(raw) {
  const s = lastRedraw(raw);
  if (!NEEDS_WORK.test(s)) return s ? [{ text: s, cls: '', css: '' }] : [];
  const segs = [];
  const st = newState();
  let cur = styleOf(st);
  let buf = '';
  const flush = () => {
    if (!buf) return;
    const prev = segs[segs.length - 1];
    if (prev && prev.cls === cur.cls && prev.css === cur.css) prev.text += buf;
    else segs.push({ text: buf, cls: cur.cls, css: cur.css });
    buf = '';
  };
  let i = 0;
  while (i < s.length) {
    const c = s.charCodeAt(i);
    if (c === 0x1b) {
      const next = s[i + 1];
      if (next === '[') {
        // CSI: parameters 0x30-0x3f, intermediates 0x20-0x2f, final 0x40-0x7e
        let j = i + 2;
        while (j < s.length && s.charCodeAt(j) >= 0x30 && s.charCodeAt(j) <= 0x3f) j++;
        const paramText = s.slice(i + 2, j);
        while (j < s.length && s.charCodeAt(j) >= 0x20 && s.charCodeAt(j) <= 0x2f) j++;
        const final = s[j];
        i = j + 1;
        if (final === 'm' && /^[0-9;:]*$/.test(paramText)) {
          flush();
          const params = paramText === '' ? [] : paramText.split(/[;:]/).map((v) => (v === '' ? 0 : Number(v)));
          applySgr(st, params);
          cur = styleOf(st);
        }
        continue;
      }
      if (next === ']' || next === 'P' || next === '_' || next === '^') {
        // OSC / DCS / APC / PM: up to BEL or ST (ESC \)
        let j = i + 2;
        while (j < s.length && s[j] !== '\x07' && !(s[j] === ESC && s[j + 1] === '\\')) j++;
        i = j >= s.length ? j : s[j] === '\x07' ? j + 1 : j + 2;
        continue;
      }
      i += next === undefined ? 1 : 2; // a two-character escape
      continue;
    }
    if (c < 0x20 && c !== 0x09) {
      i++; // other control characters are not shown
      continue;
    }
    if (c === 0x7f) {
      i++;
      continue;
    }
    buf += s[i];
    i++;
  }
  flush();
  return segs;
}

/** The text of a line as shown, without escape sequences. */
export function plainText(raw) {
  const s = lastRedraw(raw);
  if (!NEEDS_WORK.test(s)) return s;
  let out = '';
  for (const seg of parseAnsi(s)) out += seg.text;
  return out;
}

/**
 * HTML for a line's segments, with `ranges` ([from, to) in plain-text offsets,
 * sorted, not overlapping) wrapped in <mark>.
 */
export function segmentsToHtml(segs, ranges = []) {
  let html = '';
  let pos = 0;
  let r = 0;
  for (const seg of segs) {
    const end = pos + seg.text.length;
    let inner = '';
    let at = pos;
    while (at < end) {
      while (r < ranges.length && ranges[r][1] <= at) r++;
      const range = ranges[r];
      if (!range || range[0] >= end) {
        inner += escapeHtml(seg.text.slice(at - pos));
        at = end;
      } else if (range[0] > at) {
        inner += escapeHtml(seg.text.slice(at - pos, range[0] - pos));
        at = range[0];
      } else {
        const stop = Math.min(range[1], end);
        inner += `<mark>${escapeHtml(seg.text.slice(at - pos, stop - pos))}</mark>`;
        at = stop;
      }
    }
    if (seg.cls || seg.css) {
      html += `<span${seg.cls ? ` class="${seg.cls}"` : ''}${seg.css ? ` style="${seg.css}"` : ''}>${inner}</span>`;
    } else {
      html += inner;
    }
    pos = end;
  }
  return html;
}

/** HTML for a raw line (convenience for tests and one-off use). */
export function ansiToHtml(raw, ranges) {
  return segmentsToHtml(parseAnsi(raw), ranges);
}
