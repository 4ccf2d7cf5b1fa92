// ui.js - small DOM helpers shared by the pages: element building, announcements, toasts,
// dialogs, form errors placed next to the field the server names, times and urgency.

/**
 * h('tag.class#id', {attrs, on: {click}}, ...children) -> Element. Children may be strings,
 * nodes, arrays, or null/false (left out). Attributes: 'class', 'text', 'html' is not offered
 * on purpose (no markup from data), booleans set/unset the attribute, 'dataset', 'style'.
 */
export function h(spec, attrs, ...children) {
  if (attrs === null || typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  const m = spec.match(/^([a-z0-9-]+)?((?:[.#][\w-]+)*)$/i);
  const el = document.createElement((m && m[1]) || 'div');
  if (m && m[2]) {
    for (const part of m[2].match(/[.#][\w-]+/g)) {
      if (part[0] === '.') el.classList.add(part.slice(1));
      else el.id = part.slice(1);
    }
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'on') {
      for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    } else if (k === 'class') {
      for (const c of String(v).split(/\s+/).filter(Boolean)) el.classList.add(c);
    } else if (k === 'text') {
      el.textContent = v;
    } else if (k === 'dataset') {
      Object.assign(el.dataset, v);
    } else if (k === 'style') {
      el.setAttribute('style', v);
    } else if (k === 'value') {
      el.value = v;
    } else if (k === 'checked' || k === 'selected' || k === 'disabled' || k === 'hidden' || k === 'required' || k === 'multiple' || k === 'readOnly') {
      el[k] = Boolean(v);
    } else if (v === true) {
      el.setAttribute(k, '');
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Appends children as h() does (arrays flattened, null/false left out); returns el. */
export function put(el, ...children) {
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

let idCounter = 0;
export const uid = prefix => `${prefix || 'id'}-${++idCounter}`;

/** Says something to screen readers (the polite live region). */
export function announce(text) {
  const live = document.getElementById('live');
  if (!live) return;
  live.textContent = '';
  setTimeout(() => { live.textContent = text; }, 30);
}

/** A short message in the corner; kind 'ok' | 'error' | ''. */
export function toast(text, kind = '', ms = 5000) {
  const box = document.getElementById('toasts');
  const t = h('div.toast', { class: kind ? `toast-${kind}` : '', role: kind === 'error' ? 'alert' : 'status' }, text);
  box.append(t);
  setTimeout(() => t.remove(), ms);
}

/** The message for an error of the API, said for people. */
export function explain(err) {
  if (!err) return '';
  if (err.status === 403) return `Not allowed: ${err.detail || 'your role may not do this'}`;
  if (err.status === 404) return err.detail ? `Not found: ${err.detail}` : 'Not found';
  if (err.status === 0) return err.detail;
  return err.detail || err.title || err.message || String(err);
}

/* ---- labelled fields ---- */

/**
 * field(label, control, {hint, field}) -> a .field wrapper with a <label for> bound to the
 * control. `field` is the server's name for it ("licenses[0].expires"): errors of that field
 * are shown under this control.
 */
export function field(label, control, opts = {}) {
  if (!control.id) control.id = uid('f');
  if (opts.field) control.dataset.field = opts.field;
  const wrap = h('div.field', opts.attrs || {}, h('label', { for: control.id }, label), control);
  if (opts.hint) {
    const hint = h('div.hint', { id: uid('hint') }, opts.hint);
    control.setAttribute('aria-describedby', hint.id);
    wrap.append(hint);
  }
  return wrap;
}

export function input(attrs = {}) {
  return h('input', { type: 'text', ...attrs });
}

/** select(options: [value, label][] | string[], attrs) */
export function select(options, attrs = {}) {
  const s = h('select', attrs);
  for (const o of options) {
    const [value, label] = Array.isArray(o) ? o : [o, o];
    s.append(h('option', { value }, label));
  }
  if (attrs.value !== undefined) s.value = attrs.value;
  return s;
}

/** Remove every error shown in `form`. */
export function clearErrors(form) {
  form.querySelectorAll('.field-error, .form-error').forEach(e => e.remove());
  form.querySelectorAll('[aria-invalid="true"]').forEach(c => {
    c.removeAttribute('aria-invalid');
    const ids = (c.getAttribute('aria-describedby') || '').split(' ').filter(i => !i.startsWith('err-'));
    if (ids.length) c.setAttribute('aria-describedby', ids.join(' '));
    else c.removeAttribute('aria-describedby');
  });
}

/**
 * Shows an API error in a form: next to the control whose data-field is the problem's
 * "field" (or the closest one: "licenses[0]" finds "licenses[0].jurisdiction"), else at the
 * top of the form. Focuses the control. Returns the control, or null.
 */
export function showError(form, err) {
  clearErrors(form);
  const message = explain(err);
  let control = null;
  if (err && err.field) {
    const all = [...form.querySelectorAll('[data-field]')];
    control = all.find(c => c.dataset.field === err.field) ||
              all.find(c => c.dataset.field.startsWith(err.field + '.') || c.dataset.field.startsWith(err.field + '[')) ||
              all.find(c => err.field.startsWith(c.dataset.field + '.') || err.field.startsWith(c.dataset.field + '['));
  }
  if (control) {
    const id = `err-${uid('e')}`;
    const note = h('div.field-error', { id }, message);
    (control.closest('.field') || control.parentElement).append(note);
    control.setAttribute('aria-invalid', 'true');
    const d = control.getAttribute('aria-describedby');
    control.setAttribute('aria-describedby', d ? `${d} ${id}` : id);
    // The message goes once the field is changed.
    const fixed = () => {
      note.remove();
      control.removeAttribute('aria-invalid');
      const rest = (control.getAttribute('aria-describedby') || '').split(' ').filter(x => x && x !== id);
      if (rest.length) control.setAttribute('aria-describedby', rest.join(' '));
      else control.removeAttribute('aria-describedby');
    };
    control.addEventListener('input', fixed, { once: true });
    control.addEventListener('change', fixed, { once: true });
    control.focus();
  } else {
    const note = h('div.form-error', { role: 'alert' }, message);
    form.prepend(note);
    note.scrollIntoView({ block: 'nearest' });
  }
  announce(message);
  return control;
}

/* ---- dialogs ---- */

/** A modal <dialog> with a title; returns {dialog, body, close}. Esc closes; focus returns. */
export function modal(title, { wide = false, onClose } = {}) {
  const back = document.activeElement;
  const titleId = uid('dlg');
  const body = h('div');
  const closeBtn = h('button.btn.btn-small', { type: 'button', 'aria-label': 'Close' }, '×');
  const dialog = h('dialog', { 'aria-labelledby': titleId, class: wide ? 'wide' : '' },
    h('div.page-head', h('h2', { id: titleId, style: 'margin:0' }, title), closeBtn), body);
  document.body.append(dialog);
  const close = () => {
    if (dialog.open) dialog.close();
  };
  dialog.addEventListener('close', () => {
    dialog.remove();
    if (back && back.focus) back.focus();
    if (onClose) onClose();
  });
  closeBtn.addEventListener('click', close);
  dialog.showModal();
  return { dialog, body, close };
}

/** Asks a yes/no question in a dialog; resolves true for yes. */
export function confirmDialog(title, text, yes = 'Confirm', danger = false) {
  return new Promise(resolve => {
    let answer = false;
    const { body, close } = modal(title, { onClose: () => resolve(answer) });
    const ok = h('button.btn', { type: 'button', class: danger ? 'btn-danger' : 'btn-primary' }, yes);
    const no = h('button.btn', { type: 'button' }, 'Cancel');
    ok.addEventListener('click', () => { answer = true; close(); });
    no.addEventListener('click', close);
    body.append(h('p', text), h('div.actions', ok, no));
    ok.focus();
  });
}

/* ---- times ---- */

export function fmtTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' });
}

export function fmtClock(iso) {
  if (!iso) return '';
  return new Date(iso).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

/** 95 -> "1m 35s", 4000 -> "1h 06m", 200000 -> "2d 7h". */
export function fmtDuration(seconds) {
  const s = Math.abs(Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/** Urgency class and words for seconds left: overdue / < 15 min / < 1 h / later. */
export function urgency(secondsLeft) {
  if (secondsLeft < 0) return { cls: 'due-overdue', words: 'Overdue' };
  if (secondsLeft < 15 * 60) return { cls: 'due-15', words: 'Due < 15 min' };
  if (secondsLeft < 3600) return { cls: 'due-60', words: 'Due < 1 h' };
  return { cls: 'due-later', words: 'Due later' };
}

/**
 * A live SLA countdown badge for a read. The deadline is taken from the server's
 * time_left_seconds at fetch time (so a skewed browser clock does not matter). Updated by
 * tickCountdowns() every second.
 */
export function countdown(read, fetchedAt = Date.now()) {
  const el = h('span.due', { role: 'timer', 'aria-live': 'off' });
  if (read.state === 'final' || read.state === 'cancelled') {
    el.classList.add('due-done');
    el.textContent = read.state === 'final' ? 'Reported' : 'Cancelled';
    return el;
  }
  el.dataset.deadline = String(fetchedAt + read.time_left_seconds * 1000);
  paint(el, Date.now());
  return el;
}

function paint(el, now) {
  const left = (Number(el.dataset.deadline) - now) / 1000;
  const u = urgency(left);
  el.className = `due ${u.cls}`;
  const text = left < 0 ? `−${fmtDuration(-left)}` : fmtDuration(left);
  el.replaceChildren(document.createTextNode(text), h('small', u.words));
  el.setAttribute('aria-label', `${u.words}: ${left < 0 ? 'overdue by ' + fmtDuration(-left) : fmtDuration(left) + ' left'}`);
}

export function tickCountdowns(root = document) {
  const now = Date.now();
  root.querySelectorAll('.due[data-deadline]').forEach(el => paint(el, now));
}

/** "CT\\SR\\DOC" -> "CT + SR + DOC" */
export function modalities(m) {
  return (m || '').split('\\').filter(Boolean).join(' + ');
}

export function priorityBadge(p) {
  return h('span.prio', { class: `prio-${p}` }, p);
}

/** Downloads text as a file (CSV export). */
export function download(name, text, type = 'text/csv;charset=utf-8') {
  const blob = new Blob([text], { type });
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: name, style: 'display:none' });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(url); a.remove(); }, 1000);
}

export function csv(rows) {
  const cell = v => {
    const s = v === null || v === undefined ? '' : String(v);
    return /[",\n\r]/.test(s) || /^[=+\-@]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  };
  return rows.map(r => r.map(cell).join(',')).join('\r\n') + '\r\n';
}

/** A table of rows: columns [{label, cell(row) -> node|string}] */
export function table(columns, rows, { caption, empty = 'Nothing here yet.', rowAttrs } = {}) {
  if (!rows.length) return h('div.empty.panel', empty);
  const t = h('table.data',
    caption ? h('caption.visually-hidden', caption) : null,
    h('thead', h('tr', columns.map(c => h('th', { scope: 'col' }, c.label)))),
    h('tbody', rows.map(r => h('tr', rowAttrs ? rowAttrs(r) : {}, columns.map(c => h('td', c.cell(r)))))));
  return h('div.table-wrap', t);
}

export const stateNames = {
  pool: 'Waiting for a reader', assigned: 'Assigned', claimed: 'Claimed',
  preliminary: 'Preliminary', final: 'Final', cancelled: 'Cancelled',
};
