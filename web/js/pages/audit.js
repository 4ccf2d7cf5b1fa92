// audit.js - the audit log (GET /api/v1/audit, /audit/verify): who did what to which object,
// when, from where, with what outcome; the hash chain checked on demand.
import * as api from '../api.js';
import { h, put, clear, field, select, table, explain, download, csv } from '../ui.js';

const PAGE = 5000;

export async function render({ main }) {
  const box = h('div');
  const verdict = h('div', { 'aria-live': 'polite' });
  const outcome = select([['', 'All outcomes'], 'success', 'failure', 'denied']);
  let entries = [];
  let since = 0;
  const more = h('button.btn', { type: 'button', on: { click: () => load() } }, 'Load more');
  put(main, 
    h('div.page-head', h('h1', 'Audit log'), h('div.actions', { style: 'margin:0' },
      h('button.btn', { type: 'button', on: { click: verify } }, 'Verify the chain'),
      h('button.btn', { type: 'button', on: { click: exportCsv } }, 'Export CSV'))),
    h('p.muted', 'Every access to patient data and every change, chained by SHA-256: an edited or removed entry breaks the chain.'),
    verdict,
    h('form.filters', { on: { submit: e => e.preventDefault() } }, field('Outcome', outcome)),
    box, h('div.actions', more));

  function draw() {
    const rows = entries.filter(e => !outcome.value || e.outcome === outcome.value).slice().reverse();
    put(clear(box), table([
      { label: '#', cell: e => String(e.seq) },
      { label: 'When', cell: e => new Date(e.at).toLocaleString() },
      { label: 'Who', cell: e => [e.actor, h('div.muted.small', `${e.role} · ${e.peer}`)] },
      { label: 'Action', cell: e => e.action },
      { label: 'Object', cell: e => [e.object_type, h('div.muted.small', e.object_id)] },
      { label: 'Outcome', cell: e => e.outcome === 'success' ? e.outcome : h('span.tag.tag-expired', e.outcome) },
      { label: 'Detail', cell: e => e.detail },
    ], rows, { caption: 'Audit entries', empty: 'No entry.' }));
  }

  async function load() {
    try {
      // The API pages forwards from a sequence number, PAGE entries at a time.
      const page = await api.get(`audit?since=${since}&limit=${PAGE}`);
      entries = entries.concat(page);
      if (page.length) since = page[page.length - 1].seq;
      more.hidden = page.length < PAGE;
      draw();
    } catch (err) {
      put(clear(box), h('div.banner.banner-error', { role: 'alert' }, explain(err)));
    }
  }

  async function verify() {
    put(clear(verdict), h('p.muted', 'Checking…'));
    try {
      const v = await api.get('audit/verify');
      put(clear(verdict), v.intact
        ? h('div.banner.banner-info', `The chain is intact: ${v.entries} entries.`)
        : h('div.banner.banner-error', { role: 'alert' }, `The chain is broken at entry ${v.first_bad_entry}: ${v.detail}`));
    } catch (err) {
      put(clear(verdict), h('div.banner.banner-error', { role: 'alert' }, explain(err)));
    }
  }

  function exportCsv() {
    const cols = ['seq', 'at', 'actor', 'role', 'peer', 'action', 'outcome', 'object_type', 'object_id', 'site', 'detail', 'hash'];
    download('telerad-audit.csv', csv([cols, ...entries.map(e => cols.map(c => c === 'at' ? new Date(e.at).toISOString() : e[c]))]));
  }

  await load();
}
