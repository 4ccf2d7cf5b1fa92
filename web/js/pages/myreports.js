// myreports.js - a reader's signed reads (preliminary and final), newest first, to look back
// at a report or add an addendum.
import * as api from '../api.js';
import { h, put, modalities, clear, field, select, priorityBadge, explain, fmtTime, fmtDuration, table } from '../ui.js';

export async function render({ main, me }) {
  const which = select([['final', 'Final'], ['preliminary', 'Preliminary']], { value: 'final' });
  const box = h('div');
  put(main, h('div.page-head', h('h1', 'My reports'),
    h('form.filters', { style: 'margin:0', on: { submit: e => e.preventDefault() } }, field('Reports', which))),
  h('p.muted', 'Reads you signed. Open one to see its report, print it, or add an addendum.'), box);

  async function load() {
    try {
      const reads = await api.get('reads' + api.query({ state: which.value, assignee: me.reader, limit: 500 }));
      const key = which.value === 'final' ? 'final' : 'preliminary';
      reads.sort((a, b) => Date.parse(b.clocks[key] || 0) - Date.parse(a.clocks[key] || 0));
      put(clear(box), table([
        { label: 'Signed', cell: r => fmtTime(r.clocks[key]) },
        { label: 'Study', cell: r => [h('a', { href: `/reads/${r.id}` }, r.description || '(no description)'), h('div.muted.small', `${modalities(r.modality)} · ${r.site}`)] },
        { label: 'Patient / accession', cell: r => [h('div', r.patient_id), h('div.muted.small', r.accession)] },
        { label: 'Priority', cell: r => priorityBadge(r.priority) },
        { label: 'Turnaround', cell: r => r.clocks[key] ? fmtDuration((Date.parse(r.clocks[key]) - Date.parse(r.clocks.received)) / 1000) : '' },
        { label: 'In time', cell: r => (Date.parse(r.clocks[key]) <= Date.parse(r.due_at) ? 'yes' : 'late') },
        { label: 'RVU', cell: r => r.rvu.toFixed(2) },
      ], reads, { caption: 'My reports', empty: 'No signed report yet.' }));
    } catch (err) {
      put(clear(box), h('div.banner.banner-error', { role: 'alert' }, explain(err)));
    }
  }
  which.addEventListener('change', load);
  await load();
}
