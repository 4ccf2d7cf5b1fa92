// admin-rules.js - priority rules (GET/POST/DELETE /api/v1/priority-rules): words in the study
// description, a modality or a body part that make a read STAT, URGENT or ROUTINE.
import * as api from '../api.js';
import { h, put, clear, field, input, select, table, toast, explain, confirmDialog } from '../ui.js';
import { editor, listInput } from '../forms.js';

export async function render({ main }) {
  const box = h('div');
  put(main, 
    h('div.page-head', h('h1', 'Priority rules'), h('button.btn.btn-primary', { type: 'button', on: { click: add } }, 'Add a rule')),
    h('p.muted', 'A study that matches a rule gets its priority (the highest of the matching rules, its order and the AI findings wins).'),
    box);

  async function load() {
    try {
      const rules = await api.get('priority-rules');
      put(clear(box), table([
        { label: '#', cell: r => String(r.id) },
        { label: 'Priority', cell: r => h('span.prio', { class: `prio-${r.priority}` }, r.priority) },
        { label: 'Description contains', cell: r => (r.description_contains || []).map(w => h('span.tag', w)) },
        { label: 'Modality', cell: r => r.modality || '—' },
        { label: 'Body part', cell: r => r.body_part || '—' },
        { label: 'Actions', cell: r => h('button.btn.btn-small', { type: 'button', 'aria-label': `Delete rule ${r.id}`, on: { click: () => remove(r) } }, 'Delete') },
      ], rules, { caption: 'Priority rules', empty: 'No rule yet.' }));
    } catch (err) {
      put(clear(box), h('div.banner.banner-error', { role: 'alert' }, explain(err)));
    }
  }

  function add() {
    editor('New priority rule', form => {
      const prio = select(['STAT', 'URGENT', 'ROUTINE']);
      const words = listInput([], { placeholder: 'STROKE, CTA HEAD, TRAUMA' });
      const modality = input({ placeholder: 'CT' });
      const part = input({ placeholder: 'HEAD' });
      put(form, field('Priority', prio, { field: 'priority' }),
        field('Description contains (any of)', words, { field: 'description_contains', hint: 'Comma-separated words or phrases' }),
        h('div.row-fields', field('Modality', modality, { field: 'modality' }), field('Body part', part, { field: 'body_part' })));
      return () => {
        const out = { priority: prio.value };
        const w = words.readList();
        if (w.length) out.description_contains = w;
        if (modality.value.trim()) out.modality = modality.value.trim();
        if (part.value.trim()) out.body_part = part.value.trim();
        return out;
      };
    }, json => api.post('priority-rules', json), load, { wide: false, submitLabel: 'Add rule' });
  }

  async function remove(r) {
    if (!(await confirmDialog(`Delete rule ${r.id}?`, 'New studies no longer get this priority from it.', 'Delete', true))) return;
    try {
      await api.del(`priority-rules/${r.id}`);
      toast('Rule deleted.', 'ok');
      await load();
    } catch (err) {
      toast(explain(err), 'error');
    }
  }

  await load();
}
