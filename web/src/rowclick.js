// Clicks on the rows of a log view whose rows are redrawn while a build runs.
//
// A view replaces its rows' elements when lines arrive, and once a second while
// the job runs (durations tick). When a press and its release straddle such a
// redraw, the element pressed is gone by the release, and the browser sends no
// `click` at all: the reader's click would be lost. So a click is taken here from
// the press and the release themselves: both with the main button, over the same
// row, whichever elements draw that row at each moment.

/** What the element `el` is part of: a section header, a line's number, or nothing. */
function rowOf(el) {
  const header = el?.closest?.('.r.h');
  if (header) return { section: Number(header.dataset.s) };
  const no = el?.closest?.('.n');
  const line = no?.parentElement?.dataset.i;
  return line === undefined ? null : { line: Number(line) };
}

const same = (a, b) => a !== null && b !== null && a.section === b.section && a.line === b.line;

/**
 * Calls `handle({ section } | { line }, event)` for each click on a section
 * header or a line's number among `rowsEl`'s rows, redrawn or not in between.
 */
export function onRowClick(rowsEl, handle) {
  let pressed = null;
  rowsEl.addEventListener('mousedown', (e) => {
    pressed = e.button === 0 ? rowOf(e.target) : null;
  });
  rowsEl.addEventListener('mouseup', (e) => {
    const row = e.button === 0 ? rowOf(e.target) : null;
    const was = pressed;
    pressed = null;
    if (same(was, row)) handle(row, e);
  });
}

/**
 * A click on line `i`'s number: selects that line, or with Shift the lines from
 * the last one clicked to it. `view` has `selection`, `selectionAnchor`,
 * `select(from, to)` and `onSelect`.
 */
export function selectByClick(view, i, e) {
  const anchor = view.selection && e.shiftKey ? view.selectionAnchor : i;
  view.select(Math.min(anchor, i), Math.max(anchor, i));
  view.selectionAnchor = anchor;
  if (e.shiftKey) window.getSelection()?.removeAllRanges();
  view.onSelect?.(view.selection);
}
