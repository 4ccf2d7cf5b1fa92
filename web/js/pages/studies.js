// studies.js - the studies a site sent (site users: their own site; administrators: every
// read, with the assignee), each with its timeline received -> assigned -> preliminary ->
// final from the read's clocks, its SLA countdown, and a link to the read's page (reports,
// PDF, critical results). Filters on state, priority, modality, site; a text search over the
// loaded reads (accession, patient ID, description) that never goes into the URL.
import * as api from '../api.js';
import { h, put, modalities, clear, field, select, input, countdown, priorityBadge, stateNames, explain, fmtTime, table } from '../ui.js';

const PAGE = 200;

export async function render({ main, me, navigate }) {
  const admin = me.role === 'admin';
  let reads = [];
  let offset = 0;
  let more = false;
  let fetchedAt = Date.now();
  const sel = {
    state: select([['', 'All states'], ...Object.entries(stateNames)], { name: 'state' }),
    priority: select([['', 'All priorities'], 'STAT', 'URGENT', 'ROUTINE'], { name: 'priority' }),
    site: admin ? select([['', 'All sites']], { name: 'site' }) : null,
  };
  const modality = select([['', 'All modalities']], { name: 'modality' });
  const search = input({ type: 'search', placeholder: 'Accession, patient ID, description', autocomplete: 'off' });
  const box = h('div');
  const more_ = h('button.btn', { type: 'button', hidden: true, on: { click: () => load(true) } }, 'Load more');
  const summary = h('p.muted.small', { 'aria-live': 'polite' });

  put(main, 
    h('div.page-head', h('h1', admin ? 'Reads' : 'Studies sent'),
      h('button.btn', { type: 'button', on: { click: () => load(false) } }, 'Refresh')),
    h('p.muted', admin ? 'Every read of every site, most urgent first.' : `The studies ${me.site} sent for reading, with where each one stands.`),
    h('form.filters', { on: { submit: e => e.preventDefault() }, 'aria-label': 'Filter the studies' },
      field('State', sel.state), field('Priority', sel.priority), sel.site ? field('Site', sel.site) : null,
      field('Modality', modality), field('Search', search, { attrs: { style: 'min-width:16rem' } })),
    summary, box, h('div.actions', more_));

  if (admin) {
    try {
      const sites = await api.get('sites');
      for (const s of sites) sel.site.append(h('option', { value: s.id }, `${s.name} (${s.id})`));
    } catch { /* the filter stays with "All sites" */ }
  }

  function mini(read) {
    const c = read.clocks || {};
    const steps = [['received', c.received], ['assigned', c.assigned || c.claimed], ['preliminary', c.preliminary], ['final', c.final]];
    const done = steps.filter(s => s[1]).map(s => s[0]);
    return h('div', h('div.timeline-mini', { 'aria-hidden': 'true' }, steps.map(s => h('span', { class: s[1] ? 'done' : '' }))),
      h('span.small', `${done.length ? done[done.length - 1] : 'received'}`),
      h('span.visually-hidden', ` (done: ${done.join(', ') || 'none'})`));
  }

  function draw() {
    const q = search.value.trim().toLowerCase();
    const m = modality.value;
    const rows = reads.filter(r => (!m || r.modality.split('\\').includes(m)) &&
      (!q || [r.accession, r.patient_id, r.description, String(r.id)].some(v => (v || '').toLowerCase().includes(q))));
    summary.textContent = `${rows.length} shown of ${reads.length} loaded${more ? ' (more available)' : ''}`;
    const cols = [
      { label: 'Received', cell: r => fmtTime(r.clocks.received) },
      { label: 'Study', cell: r => [h('a', { href: `/reads/${r.id}` }, r.description || '(no description)'), h('div.muted.small', [modalities(r.modality), r.body_part].filter(Boolean).join(' · '))] },
      { label: 'Patient / accession', cell: r => [h('div', r.patient_id), h('div.muted.small', r.accession)] },
      { label: 'Priority', cell: r => priorityBadge(r.priority) },
      { label: 'Due', cell: r => countdown(r, fetchedAt) },
      { label: 'Timeline', cell: mini },
    ];
    if (admin) {
      cols.splice(3, 0, { label: 'Site', cell: r => r.site });
      cols.push({ label: 'Assignee', cell: r => r.assignee || '—' });
    }
    cols.push({ label: 'State', cell: r => stateNames[r.state] || r.state });
    put(clear(box), table(cols, rows, { caption: 'Studies', empty: 'No study matches.' }));
    more_.hidden = !more;
  }

  async function load(append) {
    if (!append) offset = 0;
    try {
      const page = await api.get('reads' + api.query({ state: sel.state.value, priority: sel.priority.value, site: sel.site ? sel.site.value : '', limit: PAGE, offset }));
      fetchedAt = Date.now();
      reads = append ? reads.concat(page) : page;
      offset += PAGE;
      more = page.length === PAGE;
      const mods = [...new Set(reads.flatMap(r => r.modality.split('\\')).filter(Boolean))].sort();
      const keep = modality.value;
      put(clear(modality), h('option', { value: '' }, 'All modalities'), mods.map(x => h('option', { value: x }, x)));
      modality.value = mods.includes(keep) ? keep : '';
      draw();
    } catch (err) {
      put(clear(box), h('div.banner.banner-error', { role: 'alert' }, explain(err)));
    }
  }
  for (const s of Object.values(sel)) if (s) s.addEventListener('change', () => load(false));
  modality.addEventListener('change', draw);
  search.addEventListener('input', draw);
  await load(false);
  const timer = setInterval(() => { if (offset <= PAGE) load(false); }, 30000);
  return () => clearInterval(timer);
}
