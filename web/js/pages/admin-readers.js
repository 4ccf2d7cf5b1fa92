// admin-readers.js - radiologists (GET/POST/PUT/DELETE /api/v1/readers): licenses
// (jurisdiction, expiry), privileges (site, expiry), subspecialties, status, weekly shifts in
// their own time zone, the cap on open reads, the RVU target; and a user account for a reader.
import * as api from '../api.js';
import { h, put, clear, field, input, select, table, toast, explain, confirmDialog } from '../ui.js';
import { repeater, editor, listInput, daysPicker, timezoneList, numberOf } from '../forms.js';
import { userEditor } from './admin-users.js';

function today() {
  return new Date().toISOString().slice(0, 10);
}

function expiryTag(text, expires) {
  const expired = expires && expires < today();
  return h('span.tag', { class: expired ? 'tag-expired' : '', title: `expires ${expires}` }, text, expired ? ' (expired)' : '');
}

export async function render({ main }) {
  const box = h('div');
  let sites = [];
  put(main, 
    h('div.page-head', h('h1', 'Readers'), h('button.btn.btn-primary', { type: 'button', on: { click: () => edit(null) } }, 'Add a reader')),
    h('p.muted', 'A read goes only to a reader licensed for the site\'s jurisdiction, privileged at the site, of the subspecialty it needs, available (online or on shift) and under their cap.'),
    box, timezoneList('tz-list-r'));

  async function load() {
    try {
      const [readers, s, users] = await Promise.all([api.get('readers'), api.get('sites'), api.get('users').catch(() => [])]);
      sites = s;
      const accounts = new Map();
      for (const u of users) if (u.reader) accounts.set(u.reader, (accounts.get(u.reader) || []).concat(u.username));
      put(clear(box), table([
        { label: 'Reader', cell: r => [h('b', r.name), h('div.muted.small', r.id)] },
        { label: 'Status', cell: r => r.status || 'offline' },
        { label: 'Licenses', cell: r => (r.licenses || []).map(l => expiryTag(l.jurisdiction, l.expires)) },
        { label: 'Privileges', cell: r => (r.privileges || []).map(p => expiryTag(p.site, p.expires)) },
        { label: 'Subspecialties', cell: r => (r.subspecialties || []).map(x => h('span.tag', x)) },
        { label: 'Shifts', cell: r => (r.shifts || []).map(sh => h('div.small', sh.days ? `${sh.days.join(' ')} ${sh.start}–${sh.end}` : `${sh.start} → ${sh.end}`)).concat(h('div.muted.small', r.timezone || 'UTC')) },
        { label: 'Cap / RVU target', cell: r => `${r.max_open ?? 10} open · ${r.rvu_target ?? 10} RVU/h` },
        { label: 'Account', cell: r => accounts.has(r.id) ? accounts.get(r.id).join(', ')
          : h('button.btn.btn-small', { type: 'button', 'aria-label': `Create a user account for ${r.id}`, on: { click: () => userEditor({ role: 'reader', reader: r.id }, sites, [r], load) } }, 'Create account') },
        { label: 'Actions', cell: r => h('div.actions', { style: 'margin:0' },
          h('button.btn.btn-small', { type: 'button', 'aria-label': `Edit reader ${r.id}`, on: { click: () => edit(r) } }, 'Edit'),
          h('button.btn.btn-small', { type: 'button', 'aria-label': `Delete reader ${r.id}`, on: { click: () => remove(r) } }, 'Delete')) },
      ], readers, { caption: 'Readers', empty: 'No reader yet.' }));
    } catch (err) {
      put(clear(box), h('div.banner.banner-error', { role: 'alert' }, explain(err)));
    }
  }

  function edit(reader) {
    const doc = reader ? JSON.parse(JSON.stringify(reader)) : {};
    delete doc.available_now;
    const weekly = (doc.shifts || []).filter(s => !(s.start || '').includes('T'));
    const intervals = (doc.shifts || []).filter(s => (s.start || '').includes('T'));
    editor(reader ? `Reader ${reader.id}` : 'New reader', form => {
      const id = input({ value: doc.id || '', readOnly: Boolean(reader), autocomplete: 'off', spellcheck: 'false' });
      const name = input({ value: doc.name || '' });
      const status = select(['offline', 'online'], { value: doc.status || 'offline' });
      const tz = input({ value: doc.timezone || '', list: 'tz-list-r', placeholder: 'UTC' });
      const region = input({ value: doc.region || '' });
      const maxOpen = input({ type: 'number', min: 1, max: 10000, value: doc.max_open ?? 10 });
      const rvu = input({ type: 'number', min: 0.1, step: 0.1, value: doc.rvu_target ?? 10 });
      const subs = listInput(doc.subspecialties, { placeholder: 'neuro, msk, body, chest, breast, peds' });
      const expiryDefault = () => { const d = new Date(); d.setFullYear(d.getFullYear() + 1); return d.toISOString().slice(0, 10); };
      const licenses = repeater({
        legend: 'Licenses', name: 'licenses', values: doc.licenses || [], itemLabel: 'license', addLabel: 'Add a license',
        hint: 'Where the reader may practise: the jurisdiction where the patient was imaged.',
        blank: () => ({ jurisdiction: '', expires: expiryDefault() }),
        row: (v, path, i) => {
          const j = input({ value: v.jurisdiction || '', placeholder: 'US-TX', autocomplete: 'off' });
          const e = input({ type: 'date', value: v.expires || '' });
          return {
            el: h('div.row-fields', field(`License ${i + 1} jurisdiction`, j, { field: `${path}.jurisdiction` }), field(`License ${i + 1} expires`, e, { field: `${path}.expires` })),
            read: () => ({ jurisdiction: j.value.trim(), expires: e.value }), first: j,
          };
        },
      });
      const privileges = repeater({
        legend: 'Privileges', name: 'privileges', values: doc.privileges || [], itemLabel: 'privilege', addLabel: 'Add a privilege',
        hint: 'The hospitals that credentialed the reader.',
        blank: () => ({ site: sites[0] ? sites[0].id : '', expires: expiryDefault() }),
        row: (v, path, i) => {
          const s = select(sites.map(x => [x.id, `${x.name} (${x.id})`]), { value: v.site });
          if (v.site && !sites.some(x => x.id === v.site)) { s.append(h('option', { value: v.site }, v.site)); s.value = v.site; }
          const e = input({ type: 'date', value: v.expires || '' });
          return {
            el: h('div.row-fields', field(`Privilege ${i + 1} site`, s, { field: `${path}.site` }), field(`Privilege ${i + 1} expires`, e, { field: `${path}.expires` })),
            read: () => ({ site: s.value, expires: e.value }), first: s,
          };
        },
      });
      const shifts = repeater({
        legend: 'Weekly shifts (in the reader\'s time zone)', name: 'shifts', values: weekly, itemLabel: 'shift', addLabel: 'Add a shift',
        hint: 'Outside every shift the reader gets new reads only while their status is online.',
        blank: () => ({ days: ['mon', 'tue', 'wed', 'thu', 'fri'], start: '08:00', end: '17:00' }),
        row: (v, path, i) => {
          const days = daysPicker(v.days, path);
          const start = input({ type: 'time', value: v.start || '' });
          const end = input({ type: 'time', value: v.end === '24:00' ? '23:59' : v.end || '' });
          return {
            el: h('div.row-fields', days.el, field(`Shift ${i + 1} starts`, start, { field: `${path}.start` }), field(`Shift ${i + 1} ends`, end, { field: `${path}.end` })),
            read: () => ({ days: days.read(), start: start.value, end: end.value }), first: days.first,
          };
        },
      });
      put(form, 
        h('div.grid',
          field('Reader id', id, { field: 'id', hint: reader ? 'An id cannot change.' : 'lower-case letters, digits, - _ .' }),
          field('Name', name, { field: 'name' }),
          field('Status', status, { field: 'status' }),
          field('Time zone', tz, { field: 'timezone' }),
          field('Region', region, { field: 'region', hint: 'Where the reader works (cross-border policy)' }),
          field('Open reads at most', maxOpen, { field: 'max_open' }),
          field('RVU target per hour', rvu, { field: 'rvu_target' })),
        field('Subspecialties', subs, { field: 'subspecialties', hint: 'Comma-separated' }),
        licenses.el, privileges.el, shifts.el,
        intervals.length ? h('p.muted.small', `Also ${intervals.length} dated interval(s) (kept as they are).`) : null);
      return () => {
        const out = { ...doc, id: id.value.trim(), name: name.value.trim(), status: status.value,
          licenses: licenses.read(), privileges: privileges.read(), subspecialties: subs.readList(),
          shifts: shifts.read().concat(intervals) };
        for (const [k, el] of [['timezone', tz], ['region', region]]) {
          if (el.value.trim()) out[k] = el.value.trim(); else delete out[k];
        }
        const m = numberOf(maxOpen, 'max_open', { integer: true });
        const t = numberOf(rvu, 'rvu_target');
        if (m === undefined) delete out.max_open; else out.max_open = m;
        if (t === undefined) delete out.rvu_target; else out.rvu_target = t;
        return out;
      };
    }, json => reader ? api.put(`readers/${encodeURIComponent(reader.id)}`, json) : api.post('readers', json), load);
  }

  async function remove(r) {
    if (!(await confirmDialog(`Delete reader ${r.id}?`, `${r.name} no longer gets reads. Reads already assigned stay until released or reassigned.`, 'Delete', true))) return;
    try {
      await api.del(`readers/${encodeURIComponent(r.id)}`);
      toast(`Reader ${r.id} deleted.`, 'ok');
      await load();
    } catch (err) {
      toast(explain(err), 'error');
    }
  }

  await load();
}
