// A tiny element builder: h('a', { href, class: 'x', onclick }, 'text', child).

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const STATUS_LABEL = {
  queued: 'queued',
  preparing: 'preparing',
  installing: 'installing',
  building: 'building',
  completed: 'completed',
  failed: 'failed',
  cancelled: 'cancelled',
};

/** A status badge element. */
export function badge(status) {
  const el = h('span', { class: `badge b-${status ?? 'unknown'}` }, h('span', { class: 'badge-dot' }), STATUS_LABEL[status] ?? status ?? 'unknown');
  return el;
}

export function setBadge(el, status) {
  const cls = `badge b-${status ?? 'unknown'}`;
  if (el.className !== cls) {
    el.className = cls;
    el.lastChild.textContent = STATUS_LABEL[status] ?? status ?? 'unknown';
  }
}

export function progressBar() {
  const fill = h('div', { class: 'bar-fill' });
  const el = h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' }, fill);
  return el;
}

export function setProgress(bar, pct, status) {
  const v = Math.max(0, Math.min(100, Math.round(pct ?? 0)));
  bar.setAttribute('aria-valuenow', String(v));
  bar.dataset.status = status ?? '';
  bar.firstChild.style.width = `${v}%`;
}
