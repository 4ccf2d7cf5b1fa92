// forms.js - pieces of the administration forms: lists of rows that can grow and shrink
// (licenses, privileges, shifts, AE titles, rules), each control named with the server's field
// path ("licenses[1].expires") so that a validation error lands next to it; an editor dialog
// that saves through the API and shows the error it gets.
import { h, put, clear, field, input, modal, showError, clearErrors, toast, announce } from './ui.js';

/**
 * repeater({legend, name, values, row, blank, addLabel, itemLabel}) -> {el, read()}.
 * row(value, path) -> {el, read(), first} builds one row; path is `${name}[i]`.
 */
export function repeater({ legend, name, values = [], row, blank, addLabel = 'Add', itemLabel = 'entry', hint }) {
  const list = h('div');
  const add = h('button.btn.btn-small', { type: 'button', dataset: { field: name } }, `+ ${addLabel}`);
  const el = h('fieldset', h('legend', legend), hint ? h('p.muted.small', { style: 'margin-top:0' }, hint) : null, list, add);
  let rows = [];
  function draw(vals, focusIndex) {
    clear(list);
    rows = vals.map((v, i) => {
      const r = row(v, `${name}[${i}]`, i);
      const remove = h('button.btn.btn-small', { type: 'button', 'aria-label': `Remove ${itemLabel} ${i + 1}`, on: { click: () => {
        const now = rows.map(x => x.read());
        now.splice(i, 1);
        draw(now, Math.min(i, now.length - 1));
      } } }, 'Remove');
      const wrap = r.el.classList.contains('row-fields') ? r.el : h('div.row-fields', r.el);
      wrap.setAttribute('role', 'group');
      wrap.setAttribute('aria-label', `${itemLabel} ${i + 1}`);
      wrap.append(h('div.field.field-button', remove));
      list.append(wrap);
      return r;
    });
    if (focusIndex !== undefined) {
      const target = rows[focusIndex];
      (target && target.first ? target.first : add).focus();
    }
  }
  add.addEventListener('click', () => {
    const now = rows.map(x => x.read());
    now.push(blank());
    draw(now, now.length - 1);
  });
  draw(values);
  return { el, read: () => rows.map(r => r.read()) };
}

/** A comma-separated list control <-> an array of strings. */
export function listInput(values, attrs = {}) {
  const el = input({ ...attrs, value: (values || []).join(', ') });
  el.readList = () => el.value.split(',').map(s => s.trim()).filter(Boolean);
  return el;
}

export const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];

/** Day checkboxes; read() -> ["mon", ...]. */
export function daysPicker(days, path) {
  const set = new Set((days || DAYS).map(d => d.slice(0, 3).toLowerCase()));
  const boxes = DAYS.map(d => h('input', { type: 'checkbox', value: d, checked: set.has(d) }));
  boxes[0].dataset.field = `${path}.days`;
  const el = h('fieldset.checks', { style: 'margin:0;padding:.2rem .5rem' }, h('legend.small', 'Days'),
    boxes.map((b, i) => h('label', b, DAYS[i])));
  return { el, read: () => boxes.filter(b => b.checked).map(b => b.value), first: boxes[0] };
}

/** Time zones the browser knows, for a datalist. */
export function timezoneList(id) {
  let zones = [];
  try {
    zones = Intl.supportedValuesOf('timeZone');
  } catch {
    zones = ['UTC', 'America/Chicago', 'America/New_York', 'Europe/London', 'Asia/Shanghai'];
  }
  return h('datalist', { id }, zones.map(z => h('option', { value: z })));
}

/**
 * Opens an editor dialog: build(body) fills it and returns collect() -> the JSON to send;
 * save(json) sends it (throws ApiError). On success the dialog closes and done() runs.
 */
export function editor(title, build, save, done, { wide = true, submitLabel = 'Save' } = {}) {
  const { body, close } = modal(title, { wide });
  const form = h('form', { novalidate: true });
  put(body, form);
  const collect = build(form);
  const submit = h('button.btn.btn-primary', { type: 'submit' }, submitLabel);
  put(form, h('div.actions', submit, h('button.btn', { type: 'button', on: { click: close } }, 'Cancel')));
  form.addEventListener('submit', async e => {
    e.preventDefault();
    clearErrors(form);
    let json;
    try {
      json = collect();
    } catch (err) {
      showError(form, err);
      return;
    }
    submit.disabled = true;
    try {
      const answer = await save(json);
      close();
      toast(`${title}: saved.`, 'ok');
      announce('Saved');
      if (done) await done(answer, json);
    } catch (err) {
      showError(form, err);
    } finally {
      submit.disabled = false;
    }
  });
  const first = form.querySelector('input:not([readonly]):not([type=hidden]), select, textarea');
  if (first) first.focus();
  return { form, close };
}

/** A number from an input, or undefined when empty; throws a field error when not a number. */
export function numberOf(el, fieldName, { integer = false } = {}) {
  const s = el.value.trim();
  if (!s) return undefined;
  const n = Number(s);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw { field: fieldName, detail: integer ? 'a whole number' : 'a number' };
  }
  return n;
}

export { field, input };
