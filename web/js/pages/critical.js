// critical.js - critical results (GET /api/v1/critical): a site's users acknowledge theirs,
// saying who at the site was told and how (POST /api/v1/critical/{id}/ack); administrators
// and readers follow them. Open ones first, with the time left to acknowledge.
import * as api from '../api.js';
import { h, put, clear, field, select, input, toast, announce, explain, showError, clearErrors, fmtTime, countdown } from '../ui.js';

export const METHODS = [
  ['phone', 'Phone call'], ['in_person', 'In person'], ['secure_message', 'Secure message'], ['page', 'Page'],
  ['electronic', 'Electronic (EHR)'], ['fax', 'Fax'], ['other', 'Other'],
];
const CATEGORY = { 1: 'ACR 1 — minutes', 2: 'ACR 2 — hours', 3: 'ACR 3 — days' };

/** One critical result, described. */
export function criticalCard(c) {
  const ack = c.acknowledgement;
  const left = c.state === 'open'
    ? countdown({ state: 'open', time_left_seconds: Math.round((Date.parse(c.acknowledge_by) - Date.now()) / 1000) })
    : null;
  return h('div.critical-item', { style: 'margin-bottom:.6rem' },
    h('div.page-head', { style: 'margin:0' },
      h('div', h('b', CATEGORY[c.category] || `Category ${c.category}`), ' · ', h('a', { href: `/reads/${c.read}` }, `Read ${c.read}`), ` · ${c.site}`),
      left),
    h('p', { style: 'margin:.3rem 0' }, c.finding),
    h('p.muted.small', { style: 'margin:0' }, `Raised by ${c.opened_by} on ${fmtTime(c.opened_at)}; to acknowledge by ${fmtTime(c.acknowledge_by)}`,
      c.escalations ? `; escalated ${c.escalations}×` : ''),
    ack ? h('p.small', { style: 'margin:.3rem 0 0' }, h('b', 'Acknowledged'), ` by ${ack.user} on ${fmtTime(ack.at)}: ${ack.by} was told (${(METHODS.find(m => m[0] === ack.method) || [0, ack.method])[1]})`,
      ack.note ? ` — ${ack.note}` : '', ack.late ? h('span.tag.tag-expired', { style: 'margin-left:.4rem' }, 'late') : null) : null);
}

/** The acknowledgement form of an open result; `after` runs once it is acknowledged. */
export function ackForm(c, after) {
  const by = input({ autocomplete: 'off' });
  const method = select([['', 'Choose how'], ...METHODS]);
  const note = input({ autocomplete: 'off' });
  const form = h('form.panel', { novalidate: true, 'aria-label': `Acknowledge critical result ${c.id}` },
    h('div.row-fields',
      field('Who at the site received it', by, { field: 'by', hint: 'Name and role, e.g. Dr Smith, ED attending' }),
      field('How', method, { field: 'method' }),
      field('Note (optional)', note, { field: 'note' })),
    h('div.actions', { style: 'margin-top:0' }, h('button.btn.btn-primary', { type: 'submit' }, 'Acknowledge')));
  form.addEventListener('submit', async e => {
    e.preventDefault();
    clearErrors(form);
    if (!by.value.trim()) return showError(form, { field: 'by', detail: 'Say who at the site received the result' });
    if (!method.value) return showError(form, { field: 'method', detail: 'Say how it was communicated' });
    try {
      await api.post(`critical/${c.id}/ack`, { by: by.value.trim(), method: method.value, ...(note.value.trim() ? { note: note.value.trim() } : {}) });
      toast('Critical result acknowledged.', 'ok');
      announce('Critical result acknowledged');
      await after();
    } catch (err) {
      showError(form, err);
    }
  });
  return form;
}

export async function render({ main, me }) {
  const stateSel = select([['open', 'Open (to acknowledge)'], ['acknowledged', 'Acknowledged'], ['', 'All']], { value: 'open' });
  const list = h('div');
  put(main, h('div.page-head', h('h1', 'Critical results'),
    h('form.filters', { style: 'margin:0', on: { submit: e => e.preventDefault() } }, field('Show', stateSel))),
  me.role === 'site_user'
    ? h('p.muted', 'Critical findings the radiologists raised for your site. Acknowledge each once the right person at your site knows: who, and how they were told.')
    : h('p.muted', me.role === 'reader' ? 'The critical results you raised, and whether the site acknowledged them.' : 'Every site\'s critical results. Only a user of the site acknowledges a result.'),
  list);

  async function load() {
    try {
      const items = await api.get(`critical${stateSel.value ? '?state=' + stateSel.value : ''}`);
      clear(list);
      if (!items.length) {
        put(list, h('div.panel.empty', stateSel.value === 'open' ? 'No critical result is waiting for acknowledgement.' : 'No critical result.'));
        return;
      }
      items.sort((a, b) => (b.state === 'open') - (a.state === 'open') || Date.parse(a.acknowledge_by) - Date.parse(b.acknowledge_by));
      for (const c of items) {
        put(list, h('section.panel', { class: c.state === 'open' ? 'critical-box' : '', 'aria-label': `Critical result ${c.id}` },
          criticalCard(c), me.role === 'site_user' && c.state === 'open' ? ackForm(c, load) : null));
      }
    } catch (err) {
      put(clear(list), h('div.banner.banner-error', { role: 'alert' }, explain(err)));
    }
  }
  stateSel.addEventListener('change', load);
  await load();
  // Refreshed every 30 s, unless someone is filling in an acknowledgement.
  const timer = setInterval(() => {
    const busy = list.contains(document.activeElement) ||
      [...list.querySelectorAll('input, select')].some(c => c.value);
    if (!busy) load();
  }, 30000);
  return () => clearInterval(timer);
}
