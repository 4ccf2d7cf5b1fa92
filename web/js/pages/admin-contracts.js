// admin-contracts.js - contracts (GET/POST/PUT/DELETE /api/v1/contracts): per site the SLA
// minutes for each priority, the hours covered, subspecialty rules (MR brain -> neuro), the
// price per read.
import * as api from '../api.js';
import { h, put, clear, field, input, select, table, toast, explain, confirmDialog, fmtDuration } from '../ui.js';
import { repeater, editor, daysPicker, numberOf } from '../forms.js';

const PRIOS = ['STAT', 'URGENT', 'ROUTINE'];

export async function render({ main }) {
  const box = h('div');
  let sites = [];
  put(main, 
    h('div.page-head', h('h1', 'Contracts'), h('button.btn.btn-primary', { type: 'button', on: { click: () => edit(null) } }, 'Add a contract')),
    h('p.muted', 'A read is due at its arrival plus the contract\'s minutes for its priority (counted within the covered hours when the contract sets them).'),
    box);

  async function load() {
    try {
      const [contracts, s] = await Promise.all([api.get('contracts'), api.get('sites')]);
      sites = s;
      put(clear(box), table([
        { label: 'Site', cell: k => [h('b', (sites.find(x => x.id === k.site) || {}).name || k.site), h('div.muted.small', k.id)] },
        ...PRIOS.map(p => ({ label: `${p} SLA`, cell: k => fmtDuration((k.sla_minutes || {})[p] * 60) })),
        { label: 'Hours', cell: k => k.hours ? `${(k.hours.days || []).join(' ')} ${k.hours.start}–${k.hours.end}` : 'around the clock' },
        { label: 'Subspecialty rules', cell: k => (k.subspecialty_rules || []).map(r => h('div.small', `${[r.modality, r.body_part, r.description].filter(Boolean).join(' ')} → ${r.subspecialty}`)) },
        { label: 'Price', cell: k => k.price_per_read !== undefined ? `${k.price_per_read} ${k.currency || ''}` : '—' },
        { label: 'Actions', cell: k => h('div.actions', { style: 'margin:0' },
          h('button.btn.btn-small', { type: 'button', 'aria-label': `Edit contract ${k.id}`, on: { click: () => edit(k) } }, 'Edit'),
          h('button.btn.btn-small', { type: 'button', 'aria-label': `Delete contract ${k.id}`, on: { click: () => remove(k) } }, 'Delete')) },
      ], contracts, { caption: 'Contracts', empty: 'No contract yet: reads then use the server\'s default SLA.' }));
    } catch (err) {
      put(clear(box), h('div.banner.banner-error', { role: 'alert' }, explain(err)));
    }
  }

  function edit(k) {
    const doc = k ? JSON.parse(JSON.stringify(k)) : { sla_minutes: { STAT: 30, URGENT: 60, ROUTINE: 1440 } };
    editor(k ? `Contract ${k.id}` : 'New contract', form => {
      const site = select(sites.map(s => [s.id, `${s.name} (${s.id})`]), { value: doc.site || (sites[0] && sites[0].id) });
      if (k) site.disabled = true;
      const sla = {};
      for (const p of PRIOS) sla[p] = input({ type: 'number', min: 1, value: (doc.sla_minutes || {})[p] ?? '' });
      const limited = h('input', { type: 'checkbox', checked: Boolean(doc.hours) });
      const hours = doc.hours || { days: ['mon', 'tue', 'wed', 'thu', 'fri'], start: '08:00', end: '18:00' };
      const days = daysPicker(hours.days, 'hours');
      const start = input({ type: 'time', value: hours.start });
      const end = input({ type: 'time', value: hours.end === '24:00' ? '23:59' : hours.end });
      const hoursBox = h('div.row-fields', { hidden: !doc.hours }, days.el, field('From', start, { field: 'hours.start' }), field('To', end, { field: 'hours.end' }));
      limited.addEventListener('change', () => { hoursBox.hidden = !limited.checked; });
      const rules = repeater({
        legend: 'Subspecialty rules', name: 'subspecialty_rules', values: doc.subspecialty_rules || [], itemLabel: 'rule', addLabel: 'Add a rule',
        hint: 'A read matching the modality, body part and description words needs a reader of that subspecialty.',
        blank: () => ({ modality: '', body_part: '', description: '', subspecialty: '' }),
        row: (v, path, i) => {
          const c = {
            modality: input({ value: v.modality || '', placeholder: 'MR', size: 4 }),
            body_part: input({ value: v.body_part || '', placeholder: 'BRAIN' }),
            description: input({ value: v.description || '', placeholder: 'words' }),
            subspecialty: input({ value: v.subspecialty || '', placeholder: 'neuro' }),
          };
          return {
            el: h('div.row-fields',
              field(`Rule ${i + 1} modality`, c.modality, { field: `${path}.modality` }),
              field(`Rule ${i + 1} body part`, c.body_part, { field: `${path}.body_part` }),
              field(`Rule ${i + 1} description has`, c.description, { field: `${path}.description` }),
              field(`Rule ${i + 1} subspecialty`, c.subspecialty, { field: `${path}.subspecialty` })),
            read: () => Object.fromEntries(Object.entries(c).map(([key, el]) => [key, el.value.trim()]).filter(([key, val]) => val || key === 'subspecialty')),
            first: c.modality,
          };
        },
      });
      const price = input({ type: 'number', min: 0, step: 0.01, value: doc.price_per_read ?? '' });
      const currency = input({ value: doc.currency || '', placeholder: 'USD', maxlength: 8 });
      put(form, 
        field('Site', site, { field: 'site' }),
        h('fieldset', h('legend', 'Turnaround promised (minutes)'),
          h('div.row-fields', PRIOS.map(p => field(p, sla[p], { field: `sla_minutes.${p}` })))),
        h('fieldset', h('legend', 'Hours covered'), h('label.inline', limited, 'Only some hours (otherwise around the clock)'), hoursBox),
        rules.el,
        h('div.row-fields', field('Price per read', price, { field: 'price_per_read' }), field('Currency', currency, { field: 'currency' })));
      return () => {
        const out = { ...doc, site: site.value, sla_minutes: {} };
        for (const p of PRIOS) {
          const n = numberOf(sla[p], `sla_minutes.${p}`, { integer: true });
          if (n === undefined) throw { field: `sla_minutes.${p}`, detail: `minutes for ${p}` };
          out.sla_minutes[p] = n;
        }
        if (limited.checked) out.hours = { days: days.read(), start: start.value, end: end.value };
        else delete out.hours;
        out.subspecialty_rules = rules.read();
        const pr = numberOf(price, 'price_per_read');
        if (pr === undefined) delete out.price_per_read; else out.price_per_read = pr;
        if (currency.value.trim()) out.currency = currency.value.trim(); else delete out.currency;
        return out;
      };
    }, json => k ? api.put(`contracts/${encodeURIComponent(k.id)}`, json) : api.post('contracts', json), load);
  }

  async function remove(k) {
    if (!(await confirmDialog(`Delete contract ${k.id}?`, 'New reads of the site then use the server\'s default SLA.', 'Delete', true))) return;
    try {
      await api.del(`contracts/${encodeURIComponent(k.id)}`);
      toast(`Contract ${k.id} deleted.`, 'ok');
      await load();
    } catch (err) {
      toast(explain(err), 'error');
    }
  }

  await load();
}
