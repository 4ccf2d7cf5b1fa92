// admin-sites.js - client sites (GET/POST/PUT/DELETE /api/v1/sites): jurisdiction, time zone,
// the AE titles that send from each, where results go, the data-region policy; and the AE
// titles of every site at a glance.
import * as api from '../api.js';
import { h, put, clear, field, input, table, toast, explain, confirmDialog } from '../ui.js';
import { repeater, editor, timezoneList } from '../forms.js';

export async function render({ main }) {
  const box = h('div');
  const aeBox = h('div');
  put(main, 
    h('div.page-head', h('h1', 'Sites'), h('button.btn.btn-primary', { type: 'button', on: { click: () => edit(null) } }, 'Add a site')),
    h('p.muted', 'The hospitals the group reads for. A study is the site\'s when it comes from one of its AE titles.'),
    box, h('h2', 'AE titles'), h('p.muted', 'Which site each calling AE title stores into (an AE title belongs to one site).'), aeBox,
    timezoneList('tz-list'));

  async function load() {
    try {
      const sites = await api.get('sites');
      put(clear(box), table([
        { label: 'Site', cell: s => [h('b', s.name), h('div.muted.small', s.id)] },
        { label: 'Jurisdiction', cell: s => s.jurisdiction },
        { label: 'Time zone', cell: s => s.timezone },
        { label: 'AE titles', cell: s => (s.ae_titles || []).map(a => h('span.tag', a)) },
        { label: 'Region / policy', cell: s => [s.region || '—', s.pseudonymize_outside ? h('div.small', `pseudonymized outside ${s.pseudonymize_outside}`) : null] },
        { label: 'Results to', cell: s => Object.entries(s.results || {}).map(([k, v]) => h('div.small', `${k}: ${v}`)) },
        { label: 'Actions', cell: s => h('div.actions', { style: 'margin:0' },
          h('button.btn.btn-small', { type: 'button', 'aria-label': `Edit site ${s.id}`, on: { click: () => edit(s) } }, 'Edit'),
          h('button.btn.btn-small', { type: 'button', 'aria-label': `Delete site ${s.id}`, on: { click: () => remove(s) } }, 'Delete')) },
      ], sites, { caption: 'Sites', empty: 'No site yet: add the first hospital.' }));
      const aes = sites.flatMap(s => (s.ae_titles || []).map(a => ({ ae: a, site: s })));
      aes.sort((a, b) => a.ae.localeCompare(b.ae));
      put(clear(aeBox), table([
        { label: 'AE title', cell: x => h('code', x.ae) },
        { label: 'Site', cell: x => `${x.site.name} (${x.site.id})` },
      ], aes, { caption: 'AE titles', empty: 'No AE title yet.' }));
    } catch (err) {
      put(clear(box), h('div.banner.banner-error', { role: 'alert' }, explain(err)));
    }
  }

  function edit(site) {
    const doc = site ? JSON.parse(JSON.stringify(site)) : {};
    editor(site ? `Site ${site.id}` : 'New site', form => {
      const id = input({ value: doc.id || '', readOnly: Boolean(site), autocomplete: 'off', spellcheck: 'false' });
      const name = input({ value: doc.name || '' });
      const jur = input({ value: doc.jurisdiction || '', placeholder: 'US-TX', autocomplete: 'off' });
      const tz = input({ value: doc.timezone || '', list: 'tz-list', placeholder: 'America/Chicago', autocomplete: 'off' });
      const region = input({ value: doc.region || '', placeholder: 'US, EU, CN…' });
      const pseudo = input({ value: doc.pseudonymize_outside || '', placeholder: 'e.g. EU' });
      const results = doc.results || {};
      const hl7 = input({ value: results.hl7 || '', placeholder: 'ris.example.org:2575' });
      const fhir = input({ value: results.fhir || '', placeholder: 'https://ehr.example.org/fhir' });
      const dicom = input({ value: results.dicom || '', placeholder: 'PACS@pacs.example.org:104' });
      const aes = repeater({
        legend: 'AE titles that send from this site', name: 'ae_titles', values: doc.ae_titles || [], itemLabel: 'AE title', addLabel: 'Add an AE title',
        blank: () => '',
        row: (v, path, i) => {
          const c = input({ value: v, maxlength: 16, autocomplete: 'off', spellcheck: 'false' });
          return { el: field(`AE title ${i + 1}`, c, { field: path }), read: () => c.value.trim(), first: c };
        },
      });
      put(form, 
        h('div.grid',
          field('Site id', id, { field: 'id', hint: site ? 'An id cannot change.' : 'lower-case letters, digits, - _ .' }),
          field('Name', name, { field: 'name' }),
          field('Jurisdiction', jur, { field: 'jurisdiction', hint: 'ISO 3166-2, e.g. US-TX, GB-ENG, CN-GD' }),
          field('Time zone', tz, { field: 'timezone', hint: 'IANA, e.g. America/Chicago' }),
          field('Data region', region, { field: 'region' }),
          field('Pseudonymize for readers outside region', pseudo, { field: 'pseudonymize_outside' })),
        aes.el,
        h('fieldset', h('legend', 'Where results go'),
          h('div.grid',
            field('HL7 v2 (MLLP host:port)', hl7, { field: 'results.hl7' }),
            field('FHIR base URL', fhir, { field: 'results.fhir' }),
            field('DICOM (AE@host:port)', dicom, { field: 'results.dicom' }))));
      return () => {
        const out = { ...doc, id: id.value.trim(), name: name.value.trim(), jurisdiction: jur.value.trim(), timezone: tz.value.trim(), ae_titles: aes.read().filter(Boolean) };
        for (const [k, el] of [['region', region], ['pseudonymize_outside', pseudo]]) {
          if (el.value.trim()) out[k] = el.value.trim(); else delete out[k];
        }
        const res = {};
        for (const [k, el] of [['hl7', hl7], ['fhir', fhir], ['dicom', dicom]]) if (el.value.trim()) res[k] = el.value.trim();
        if (Object.keys(res).length) out.results = res; else delete out.results;
        return out;
      };
    }, json => site ? api.put(`sites/${encodeURIComponent(site.id)}`, json) : api.post('sites', json), load);
  }

  async function remove(site) {
    if (!(await confirmDialog(`Delete site ${site.id}?`, `${site.name} and its AE titles are removed from the catalog. Its studies and reads stay.`, 'Delete', true))) return;
    try {
      await api.del(`sites/${encodeURIComponent(site.id)}`);
      toast(`Site ${site.id} deleted.`, 'ok');
      await load();
    } catch (err) {
      toast(explain(err), 'error');
    }
  }

  await load();
}
