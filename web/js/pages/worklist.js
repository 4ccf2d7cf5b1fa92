// worklist.js - the reader's worklist (GET /api/v1/worklist): their assigned and claimed
// reads and the pool reads they may claim, by due time, each with a live SLA countdown
// coloured by urgency; filters; claim, open in the viewer, next case; keyboard navigation
// with a roving focus (j/k or arrows move, Enter opens, c claims, o opens the viewer,
// n takes the next case, ? shows the help).
import * as api from '../api.js';
import { h, put, modalities, clear, field, select, countdown, priorityBadge, stateNames, toast, announce, explain, tickCountdowns } from '../ui.js';
import { claim, openViewer, nextCase, showHelp, typing } from '../cases.js';

const FILTER_KEY = 'telerad.worklist.filters';

export async function render({ main, me, navigate }) {
  const filters = Object.assign({ priority: '', site: '', modality: '', state: '' },
    JSON.parse(sessionStorage.getItem(FILTER_KEY) || '{}'));
  let items = [];
  let fetchedAt = Date.now();
  let selectedId = null;
  let reader = null;

  const statusBtn = h('button.btn.btn-small', { type: 'button' });
  const load = h('span.muted');
  const banner = h('div');
  const counts = h('p.muted.small', { 'aria-live': 'polite' });
  const selects = {
    priority: select([['', 'All priorities'], 'STAT', 'URGENT', 'ROUTINE'], { name: 'priority' }),
    site: select([['', 'All sites']], { name: 'site' }),
    modality: select([['', 'All modalities']], { name: 'modality' }),
    state: select([['', 'All states'], ['claimed', 'Claimed by me'], ['assigned', 'Assigned to me'], ['pool', 'Claimable (pool)']], { name: 'state' }),
  };
  const filterBar = h('form.filters', { 'aria-label': 'Filter the worklist', on: { submit: e => e.preventDefault() } },
    field('Priority', selects.priority),
    field('Site', selects.site),
    field('Modality', selects.modality),
    field('State', selects.state),
    h('button.btn', { type: 'button', on: { click: () => { for (const k in selects) { selects[k].value = ''; filters[k] = ''; } saveFilters(); draw(); } } }, 'Clear filters'));
  for (const [k, s] of Object.entries(selects)) {
    s.addEventListener('change', () => { filters[k] = s.value; saveFilters(); draw(); });
  }
  const listBox = h('div');

  put(main, 
    h('div.page-head',
      h('h1', 'Worklist'),
      h('div.actions', { style: 'margin:0' },
        h('button.btn.btn-primary', { type: 'button', on: { click: takeNext } }, 'Next case ', h('kbd', 'n')),
        h('button.btn', { type: 'button', on: { click: refresh } }, 'Refresh'),
        h('button.btn', { type: 'button', 'aria-label': 'Keyboard shortcuts', on: { click: showHelp } }, h('kbd', '?'), ' Shortcuts'))),
    h('div.statusbar', h('span', 'Status: '), statusBtn, load,
      h('span.muted.small', 'Due: ', h('span.due.due-overdue', 'overdue'), ' ', h('span.due.due-15', '< 15 min'), ' ',
        h('span.due.due-60', '< 1 h'), ' ', h('span.due.due-later', 'later'))),
    banner, filterBar, counts, listBox);

  function saveFilters() {
    sessionStorage.setItem(FILTER_KEY, JSON.stringify(filters));
  }

  function visible() {
    return items.filter(r => (!filters.priority || r.priority === filters.priority) &&
      (!filters.site || r.site === filters.site) &&
      (!filters.modality || r.modality.split('\\').includes(filters.modality)) &&
      (!filters.state || r.state === filters.state));
  }

  function fillOptions(sel, values, allLabel) {
    const keep = sel.value;
    clear(sel);
    sel.append(h('option', { value: '' }, allLabel));
    for (const v of values) sel.append(h('option', { value: v }, v));
    sel.value = values.includes(keep) ? keep : '';
  }

  function rowFor(r, index, active) {
    const mine = r.assignee === me.reader;
    const claimBtn = r.claimable && r.state !== 'claimed'
      ? h('button.btn.btn-small.btn-primary', { type: 'button', tabindex: -1, 'aria-label': `Claim read ${r.id}`, on: { click: e => { e.stopPropagation(); doClaim(r); } } }, 'Claim')
      : null;
    const viewBtn = h('button.btn.btn-small', { type: 'button', tabindex: -1, 'aria-label': `Open read ${r.id} in the viewer`, on: { click: e => { e.stopPropagation(); doOpen(r); } } }, 'Viewer');
    const tr = h('tr', {
      tabindex: active ? 0 : -1, dataset: { id: r.id }, 'aria-selected': active ? 'true' : 'false',
      'aria-rowindex': index + 2,
      'aria-label': `${r.priority} ${r.description || r.modality}, ${r.site}, ${stateNames[r.state] || r.state}`,
      on: { click: () => select_(r.id, true), dblclick: () => navigate(`/reads/${r.id}`), focus: () => select_(r.id, false) },
    },
    h('td', countdown(r, fetchedAt)),
    h('td', priorityBadge(r.priority), r.priority_source ? h('div.muted.small', r.priority_source) : null),
    h('td', h('a.desc', { href: `/reads/${r.id}`, tabindex: -1 }, r.description || '(no description)'),
      h('div.muted.small', [modalities(r.modality), r.body_part, `${r.instances} images`].filter(Boolean).join(' · '))),
    h('td', r.site),
    h('td', h('div', r.patient_id), h('div.muted.small', r.accession)),
    h('td.state', mine ? (r.state === 'claimed' ? 'Claimed by me' : 'Assigned to me') : stateNames[r.state] || r.state,
      r.subspecialty ? h('div.muted.small', r.subspecialty) : null),
    h('td', h('div.actions', { style: 'margin:0' }, claimBtn, viewBtn)));
    return tr;
  }

  function draw() {
    const rows = visible();
    counts.textContent = `${rows.length} of ${items.length} reads shown` +
      (reader ? ` · ${reader.open_reads} open of at most ${reader.max_open}` : '');
    if (!rows.some(r => r.id === selectedId)) selectedId = rows.length ? rows[0].id : null;
    const hadFocus = listBox.contains(document.activeElement);
    clear(listBox);
    if (!rows.length) {
      listBox.append(h('div.panel.empty', items.length ? 'No read matches these filters.' : 'Nothing to read right now. New studies appear here as they arrive.'));
      return;
    }
    const table = h('table.data.worklist', { 'aria-label': 'Worklist, most urgent first', 'aria-rowcount': rows.length + 1 },
      h('thead', h('tr', ['Due', 'Priority', 'Study', 'Site', 'Patient / accession', 'State', 'Actions']
        .map(t => h('th', { scope: 'col' }, t)))),
      h('tbody', rows.map((r, i) => rowFor(r, i, r.id === selectedId))));
    listBox.append(h('div.table-wrap', table));
    if (hadFocus) focusSelected();
  }

  function rowsEls() {
    return [...listBox.querySelectorAll('tbody tr')];
  }

  function select_(id, focus) {
    selectedId = id;
    for (const tr of rowsEls()) {
      const on = Number(tr.dataset.id) === id;
      tr.tabIndex = on ? 0 : -1;
      tr.setAttribute('aria-selected', on ? 'true' : 'false');
      if (on && focus) tr.focus();
    }
  }

  function focusSelected() {
    const tr = rowsEls().find(t => Number(t.dataset.id) === selectedId);
    if (tr) tr.focus();
  }

  function move(delta) {
    const rows = visible();
    if (!rows.length) return;
    let i = rows.findIndex(r => r.id === selectedId);
    i = Math.max(0, Math.min(rows.length - 1, (i < 0 ? 0 : i + delta)));
    select_(rows[i].id, true);
    rowsEls()[i]?.scrollIntoView({ block: 'nearest' });
  }

  function current() {
    return items.find(r => r.id === selectedId) || null;
  }

  async function refresh() {
    try {
      const wl = await api.get('worklist');
      fetchedAt = Date.now();
      items = wl.items;
      reader = wl;
      fillOptions(selects.site, [...new Set(items.map(r => r.site))].sort(), 'All sites');
      fillOptions(selects.modality, [...new Set(items.flatMap(r => r.modality.split('\\')).filter(Boolean))].sort(), 'All modalities');
      for (const k in selects) selects[k].value = filters[k] && [...selects[k].options].some(o => o.value === filters[k]) ? filters[k] : '';
      load.textContent = wl.available ? '' : 'You are not available for new assignments (offline and outside your shifts).';
      clear(banner);
      draw();
    } catch (err) {
      if (err.status === 401) return;
      put(clear(banner), h('div.banner.banner-error', { role: 'alert' }, `The worklist cannot be loaded: ${explain(err)}`));
    }
  }

  async function loadReader() {
    try {
      const doc = await api.get(`readers/${encodeURIComponent(me.reader)}`);
      statusBtn.textContent = doc.status === 'online' ? 'Online — go offline' : 'Offline — go online';
      statusBtn.dataset.status = doc.status || 'offline';
      statusBtn.setAttribute('aria-pressed', doc.status === 'online' ? 'true' : 'false');
    } catch (err) {
      statusBtn.textContent = 'unknown';
      statusBtn.disabled = true;
    }
  }

  statusBtn.addEventListener('click', async () => {
    const next = statusBtn.dataset.status === 'online' ? 'offline' : 'online';
    try {
      await api.post(`readers/${encodeURIComponent(me.reader)}/status`, { status: next });
      announce(`You are ${next}`);
      await loadReader();
      await refresh();
    } catch (err) {
      toast(explain(err), 'error');
    }
  });

  async function doClaim(r) {
    if (!r) return;
    if (!r.claimable || r.state === 'claimed') {
      toast(r.state === 'claimed' ? 'You have claimed this read already.' : 'This read cannot be claimed.', '');
      return;
    }
    await claim(r, me);
    await refresh();
    select_(r.id, true);
  }

  function doOpen(r) {
    if (!r) return;
    if (r.state === 'pool') {
      toast('Claim the read first (c), then open it.', 'error');
      return;
    }
    openViewer(r, me);
  }

  async function takeNext() {
    try {
      const id = await nextCase(undefined, me);
      if (id) navigate(`/reads/${id}`);
      else toast('Nothing left to read. Well done.', 'ok');
    } catch (err) {
      toast(explain(err), 'error');
    }
  }

  function onKey(e) {
    if (typing(e)) return;
    const key = e.key;
    if (key === 'j' || key === 'ArrowDown') { e.preventDefault(); move(1); }
    else if (key === 'k' || key === 'ArrowUp') { e.preventDefault(); move(-1); }
    else if (key === 'Home') { e.preventDefault(); move(-1e9); }
    else if (key === 'End') { e.preventDefault(); move(1e9); }
    else if (key === 'Enter' && current()) {
      if (e.target.closest && e.target.closest('a, button')) return;
      e.preventDefault();
      navigate(`/reads/${selectedId}`);
    } else if (key === 'c') { e.preventDefault(); doClaim(current()); }
    else if (key === 'o') { e.preventDefault(); doOpen(current()); }
    else if (key === 'n') { e.preventDefault(); takeNext(); }
    else if (key === 'r') { e.preventDefault(); refresh(); }
    else if (key === '?') { e.preventDefault(); showHelp(); }
  }
  document.addEventListener('keydown', onKey);

  await Promise.all([refresh(), loadReader()]);
  tickCountdowns();
  const timer = setInterval(refresh, 15000);
  return () => {
    clearInterval(timer);
    document.removeEventListener('keydown', onKey);
  };
}
