// read.js - one read (/reads/{id}). What it shows depends on the role:
//   reader (the assignee): claim, open in the viewer, the report editor (templates; sections
//     clinical information, technique, comparison, findings, impression; critical flag with
//     its ACR category), save, sign preliminary / final, addenda; a heartbeat keeps the claim
//     alive while they work; n goes to the next case.
//   site user: the timeline, the signed reports with their PDF, the critical results to
//     acknowledge.
//   administrator: all of that read-only, plus the routing explanation, release, reassign.
import * as api from '../api.js';
import { h, put, modalities, clear, field, select, input, countdown, priorityBadge, stateNames, toast, announce, explain,
  showError, clearErrors, fmtTime, fmtClock, fmtDuration, confirmDialog, modal } from '../ui.js';
import { claim, openViewer, nextCase, showHelp, typing } from '../cases.js';
import { ackForm, criticalCard } from './critical.js';

const SECTION_KEYS = ['clinical_information', 'technique', 'comparison', 'findings', 'impression'];
const SECTION_TITLES = {
  clinical_information: 'Clinical information', technique: 'Technique', comparison: 'Comparison',
  findings: 'Findings', impression: 'Impression',
};
export const ACR = [
  ['1', 'Category 1 — communicate within minutes (verbally)'],
  ['2', 'Category 2 — within hours'],
  ['3', 'Category 3 — within days'],
];
const HEARTBEAT_MS = 60000;
const IDLE_MS = 5 * 60000;
const AUTOSAVE_MS = 30000;

/** The timeline of a read's clocks: received -> assigned -> preliminary -> final. */
export function timeline(read) {
  const c = read.clocks || {};
  const steps = [
    ['Received', c.received], ['Assigned', c.assigned || c.claimed], ['Preliminary', c.preliminary], ['Final', c.final],
  ];
  const from = c.received ? Date.parse(c.received) : null;
  // A final signed without a preliminary skips that step.
  const skipped = i => i === 2 && !c.preliminary && c.final;
  return h('ol.timeline', { 'aria-label': 'Timeline' }, steps.map(([name, at], i) => h('li', { class: at ? 'done' : skipped(i) ? 'skipped' : '' },
    h('span.step', name),
    h('span.when', at ? fmtTime(at) : skipped(i) ? 'none (final signed directly)' : i === 3 && c.preliminary ? 'pending' : '—'),
    at && from && i > 0 ? h('span.when', ` (+${fmtDuration((Date.parse(at) - from) / 1000)})`) : null,
    h('span.visually-hidden', at ? ' done' : skipped(i) ? '' : ' not yet'))));
}

/** A read's facts as a definition list. */
function facts(read) {
  const rows = [
    ['Patient ID', read.patient_id], ['Accession', read.accession], ['Site', read.site],
    ['Modality', [modalities(read.modality), read.body_part].filter(Boolean).join(' · ')], ['Images', read.instances],
    ['Priority from', read.priority_source], ['Subspecialty', read.subspecialty || '—'],
    ['Due', fmtTime(read.due_at)], ['Assignee', read.assignee || '—'], ['State', stateNames[read.state] || read.state],
  ];
  return h('dl.kv', rows.map(([k, v]) => [h('dt', k), h('dd', v === undefined || v === null || v === '' ? '—' : String(v))]));
}

/** A signed report version, read-only. */
export function signedReport(v) {
  const kindName = { preliminary: 'Preliminary report', final: 'Final report', addendum: 'Addendum' }[v.kind] || v.kind;
  const body = h('article.signed-report', { 'aria-label': `${kindName}, version ${v.version}` },
    h('div.page-head', h('h3', { style: 'margin:0' }, `${kindName} · version ${v.version}`),
      v.pdf ? h('a.btn.btn-small', { href: v.pdf, target: '_blank', rel: 'noopener' }, 'PDF / print') : null),
    h('p.muted.small', `Signed by ${v.signer_name || v.signed_by} on ${fmtTime(v.signed_at)}`));
  if (v.kind === 'addendum') {
    put(body, h('section', h('p', v.sections.addendum || '')));
  } else {
    for (const k of SECTION_KEYS) {
      if (v.sections[k]) put(body, h('section', h('h3', SECTION_TITLES[k]), h('p', v.sections[k])));
    }
  }
  if (v.critical) {
    put(body, h('p.banner.banner-error', `Critical result, ACR category ${v.critical.category}: ${v.critical.finding || ''}`));
  }
  return body;
}

export async function render({ main, params, me, navigate, token }) {
  const id = Number(params[0]);
  let read = await api.get(`reads/${id}`);
  let fetchedAt = Date.now();
  let report = null;
  let templates = [];
  let criticals = [];
  const isReader = me.role === 'reader';
  const cleanups = [];

  const loadReport = async () => {
    try {
      report = await api.get(`reads/${id}/report`);
    } catch (err) {
      if (err.status !== 404 && err.status !== 403) throw err;
      report = null;
    }
  };
  const loadCriticals = async () => {
    try {
      criticals = await api.get(`critical?read=${id}`);
    } catch {
      criticals = [];
    }
  };
  await Promise.all([loadReport(), loadCriticals(),
    isReader ? api.get('templates').then(t => { templates = t; }) : null]);
  if (!token()) return;

  const root = h('div');
  put(main, root);
  let editorState = null; // the reader's editor, kept across redraws

  function draw() {
    clear(root);
    const mine = isReader && read.assignee === me.reader;
    const head = h('div.report-head',
      h('div',
        h('p.muted.small', { style: 'margin:0' }, h('a', { href: isReader ? '/worklist' : '/studies' }, isReader ? '← Worklist' : '← Studies'), ` · Read ${read.id}`),
        h('h1', read.description || '(no description)'),
        h('div', priorityBadge(read.priority), ' ', h('span.muted', `${modalities(read.modality)} · ${read.site} · ${stateNames[read.state] || read.state}`))),
      h('div', countdown(read, fetchedAt)));
    put(root, head);

    const actions = h('div.actions');
    if (isReader) {
      if (read.state === 'pool' || (read.state === 'assigned' && mine)) {
        put(actions, h('button.btn.btn-primary', { type: 'button', on: { click: doClaim } }, 'Claim ', h('kbd', 'c')));
      }
      if (read.state !== 'pool') {
        put(actions, h('button.btn', { type: 'button', on: { click: () => openViewer(read, me) } }, 'Open in viewer ', h('kbd', 'o')));
      }
      if (mine && (read.state === 'claimed' || read.state === 'assigned')) {
        put(actions, h('button.btn', { type: 'button', on: { click: doRelease } }, 'Release'));
      }
      put(actions, h('button.btn', { type: 'button', on: { click: takeNext } }, 'Next case ', h('kbd', 'n')),
        h('button.btn', { type: 'button', 'aria-label': 'Keyboard shortcuts', on: { click: showHelp } }, h('kbd', '?')));
    } else {
      put(actions, h('a.btn', { href: `/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(read.study_uid)}`, target: 'telerad-viewer' }, 'Open in viewer'));
      if (me.role === 'admin') {
        if (['assigned', 'claimed'].includes(read.state)) put(actions, h('button.btn', { type: 'button', on: { click: doRelease } }, 'Release to pool'));
        if (['pool', 'assigned', 'claimed'].includes(read.state)) put(actions, h('button.btn', { type: 'button', on: { click: doReassign } }, 'Reassign…'));
        put(actions, h('button.btn', { type: 'button', on: { click: showRouting } }, 'Routing explanation'));
      }
    }
    put(root, actions);

    const left = h('div');
    const right = h('div');
    put(root, h('div.cols', { style: 'margin-top:1rem' }, left, right));

    put(right, h('section.panel', { 'aria-labelledby': 'tl-h' }, h('h2#tl-h', 'Timeline'), timeline(read)),
      h('section.panel', { 'aria-labelledby': 'facts-h' }, h('h2#facts-h', 'Study'), facts(read)));

    // Critical results of this read.
    if (criticals.length) {
      put(right, h('section.panel.critical-box', { 'aria-labelledby': 'crit-h' }, h('h2#crit-h', 'Critical results'),
        criticals.map(c => h('div', criticalCard(c), me.role === 'site_user' && c.state === 'open'
          ? ackForm(c, async () => { await loadCriticals(); draw(); }) : null))));
    }
    if (read.ai_findings && read.ai_findings.length) {
      put(right, h('section.panel', h('h2', 'AI findings'), h('ul', read.ai_findings.map(f =>
        h('li', h('b', f.source), `: ${f.finding}`, f.priority ? ` (priority ${f.priority})` : '', h('span.muted.small', ` ${fmtTime(f.at)}`))))));
    }
    if (read.history && me.role !== 'site_user') {
      put(right, h('section.panel', h('details', h('summary', `History (${read.history.length} events)`),
        h('ul.small', read.history.map(e => h('li', `${fmtTime(e.at)} — ${e.kind.replace(/_/g, ' ')}${e.actor ? ' by ' + e.actor : ''}`))))));
    }

    const signed = report ? report.versions.filter(v => v.signed) : [];
    const hasFinal = signed.some(v => v.kind === 'final');
    if (mine && !hasFinal && ['assigned', 'claimed', 'preliminary'].includes(read.state)) {
      put(left, editor());
    }
    if (signed.length) {
      put(left, h('section.panel', { 'aria-labelledby': 'rep-h' }, h('h2#rep-h', 'Signed reports'),
        signed.slice().reverse().map(v => h('div', { style: 'border-top:1px solid var(--line);padding-top:.6rem;margin-top:.6rem' }, signedReport(v)))));
      if (mine && hasFinal) put(left, addendumForm());
    } else if (!mine) {
      put(left, h('section.panel', h('h2', 'Report'), h('p.muted', isReader
        ? 'This read is not assigned to you. Claim it to write the report.'
        : 'No signed report yet.')));
    }
    if (report && me.role === 'admin') {
      const drafts = report.versions.filter(v => !v.signed);
      if (drafts.length) put(left, h('section.panel', h('h2', 'Draft'), h('p.muted', `A draft by ${drafts[0].author}, last saved ${fmtTime(drafts[0].updated_at)}.`)));
    }
  }

  /* ---- the report editor ---- */

  function startingPoint() {
    const versions = report ? report.versions : [];
    const draft = [...versions].reverse().find(v => !v.signed);
    const lastSigned = [...versions].reverse().find(v => v.signed && v.kind !== 'addendum');
    const base = draft || lastSigned;
    const suggested = (report && report.suggested_template) || (templates[0] && templates[0].id);
    if (base) return { template: base.template, sections: { ...base.sections }, critical: base.critical, saved: draft ? draft.updated_at : null };
    const t = templates.find(x => x.id === suggested) || templates[0];
    return { template: t ? t.id : '', sections: t ? { ...t.text } : {}, critical: null, saved: null };
  }

  function editor() {
    if (!editorState) {
      editorState = startingPoint();
      editorState.dirty = false;
    }
    const st = editorState;
    const form = h('form.panel', { 'aria-labelledby': 'ed-h', novalidate: true });
    const status = h('span.muted.small', { 'aria-live': 'polite' }, st.saved ? `Draft saved ${fmtClock(st.saved)}` : 'Not saved yet');
    const beat = h('span.heartbeat', { 'aria-live': 'off' });
    const tplSelect = select(templates.map(t => [t.id, t.name]), { value: st.template });
    const areas = {};
    for (const k of SECTION_KEYS) {
      areas[k] = h('textarea', { name: k, rows: k === 'findings' ? 8 : k === 'impression' ? 4 : 3, value: st.sections[k] || '' });
      areas[k].value = st.sections[k] || '';
    }
    const critOn = h('input', { type: 'checkbox', checked: Boolean(st.critical) });
    const critCat = select([['', 'Choose the ACR category'], ...ACR], { value: st.critical ? String(st.critical.category) : '' });
    const critText = h('textarea', { rows: 2, value: st.critical ? st.critical.finding || '' : '' });
    critText.value = st.critical ? st.critical.finding || '' : '';
    const critFields = h('div', { hidden: !st.critical },
      field('ACR category', critCat, { field: 'critical.category' }),
      field('Critical finding', critText, { field: 'critical.finding', hint: 'What must be communicated, in words the referring clinician acts on.' }),
      h('button.btn.btn-danger.btn-small', { type: 'button', on: { click: notifyNow } }, 'Notify the site now'),
      h('span.muted.small', ' (opens the critical result at once, before signing)'));
    critOn.addEventListener('change', () => { critFields.hidden = !critOn.checked; changed(); if (critOn.checked) critCat.focus(); });
    const critBox = h('fieldset', { class: 'critical-box' }, h('legend', 'Critical result'),
      h('label.inline', critOn, 'This study has a critical finding'), critFields);

    const save = h('button.btn', { type: 'button', on: { click: () => doSave(true) } }, 'Save draft');
    const signPrelim = h('button.btn', { type: 'button', on: { click: () => doSign('preliminary') } }, 'Sign preliminary');
    const signFinal = h('button.btn.btn-primary', { type: 'button', on: { click: () => doSign('final') } }, 'Sign final');

    put(form, 
      h('div.page-head', h('h2#ed-h', { style: 'margin:0' }, 'Report'), h('div', status, ' ', beat)),
      read.state === 'assigned' ? h('div.banner.banner-info', 'This read is assigned to you. Claiming it (c) tells the others you are on it.') : null,
      read.state === 'preliminary' ? h('div.banner.banner-info', 'A preliminary report is signed. Edit and sign the final report.') : null,
      field('Template', tplSelect, { field: 'template' }),
      SECTION_KEYS.map(k => field(SECTION_TITLES[k], areas[k], { field: `sections.${k}` })),
      critBox,
      h('div.actions', save, read.state !== 'preliminary' ? signPrelim : null, signFinal,
        h('span.muted.small', h('kbd', 'Ctrl+S'), ' saves')));

    function collect() {
      for (const k of SECTION_KEYS) st.sections[k] = areas[k].value;
      st.template = tplSelect.value;
      st.critical = critOn.checked ? { category: Number(critCat.value) || null, finding: critText.value } : null;
    }
    function changed() {
      st.dirty = true;
      status.textContent = 'Unsaved changes';
    }
    form.addEventListener('input', changed);
    tplSelect.addEventListener('change', async () => {
      const t = templates.find(x => x.id === tplSelect.value);
      if (!t) return;
      const edited = SECTION_KEYS.some(k => areas[k].value.trim() && areas[k].value !== (templates.find(x => x.id === st.template)?.text[k] || ''));
      if (edited && !(await confirmDialog('Use this template?', `Replace the text of the sections with the ${t.name} template? What you wrote is replaced.`, 'Replace'))) {
        tplSelect.value = st.template;
        return;
      }
      for (const k of SECTION_KEYS) areas[k].value = t.text[k] || '';
      st.template = t.id;
      changed();
    });

    async function doSave(explicit) {
      collect();
      clearErrors(form);
      if (st.critical && !st.critical.category) {
        showError(form, { field: 'critical.category', detail: 'Choose the ACR category of the critical finding' });
        return false;
      }
      save.disabled = true;
      try {
        const v = await api.post(`reads/${id}/report`, { template: st.template, sections: st.sections, critical: st.critical });
        st.dirty = false;
        st.saved = v.updated_at;
        status.textContent = `Draft saved ${fmtClock(v.updated_at)}`;
        if (explicit) announce('Draft saved');
        return true;
      } catch (err) {
        showError(form, err);
        return false;
      } finally {
        save.disabled = false;
      }
    }
    st.save = doSave;

    async function doSign(kind) {
      collect();
      if (!st.sections.impression || !st.sections.impression.trim()) {
        showError(form, { field: 'sections.impression', detail: 'A report is signed with an impression' });
        return;
      }
      const what = kind === 'final' ? 'the final report' : 'a preliminary report';
      if (!(await confirmDialog(`Sign ${what}?`, `You sign ${what} for ${read.description} as ${me.reader}. A signed version cannot be changed${kind === 'final' ? ' (only added to, with an addendum)' : ''}.`, `Sign ${kind}`))) return;
      if (!(await doSave(false))) return;
      signFinal.disabled = signPrelim.disabled = true;
      try {
        await api.post(`reads/${id}/report/sign`, { kind });
        toast(kind === 'final' ? 'Final report signed and sent to the site.' : 'Preliminary report signed.', 'ok');
        announce(`${kind} report signed`);
        editorState = null;
        await reload();
      } catch (err) {
        showError(form, err);
        signFinal.disabled = signPrelim.disabled = false;
      }
    }

    async function notifyNow() {
      collect();
      if (!st.critical || !st.critical.category) {
        showError(form, { field: 'critical.category', detail: 'Choose the ACR category first' });
        return;
      }
      if (!st.critical.finding.trim()) {
        showError(form, { field: 'critical.finding', detail: 'Say what the critical finding is' });
        return;
      }
      try {
        await api.post(`reads/${id}/critical`, { category: st.critical.category, finding: st.critical.finding });
        toast('The site is asked to acknowledge the critical result.', 'ok');
        await loadCriticals();
        draw();
      } catch (err) {
        showError(form, err);
      }
    }

    // The heartbeat: keeps the claim alive while the reader works (input in the last 5 min).
    st.beat = beat;
    return form;
  }

  function addendumForm() {
    const text = h('textarea', { rows: 4 });
    const critOn = h('input', { type: 'checkbox' });
    const critCat = select([['', 'Choose the ACR category'], ...ACR]);
    const critText = input();
    const critFields = h('div', { hidden: true }, field('ACR category', critCat, { field: 'critical.category' }),
      field('Critical finding', critText, { field: 'critical.finding' }));
    critOn.addEventListener('change', () => { critFields.hidden = !critOn.checked; });
    const form = h('form.panel', { 'aria-labelledby': 'add-h', novalidate: true },
      h('h2#add-h', 'Addendum'),
      h('p.muted.small', 'The final report is signed. An addendum adds to it (a correction or new information) and is sent to the site as a corrected result.'),
      field('Addendum text', text, { field: 'text' }),
      h('fieldset', h('legend', 'Critical result'), h('label.inline', critOn, 'The addendum reports a critical finding'), critFields),
      h('div.actions', h('button.btn.btn-primary', { type: 'submit' }, 'Sign addendum')));
    form.addEventListener('submit', async e => {
      e.preventDefault();
      clearErrors(form);
      if (!text.value.trim()) return showError(form, { field: 'text', detail: 'Write the addendum' });
      const body = { text: text.value };
      if (critOn.checked) {
        if (!critCat.value) return showError(form, { field: 'critical.category', detail: 'Choose the ACR category' });
        body.critical = { category: Number(critCat.value), finding: critText.value };
      }
      if (!(await confirmDialog('Sign the addendum?', 'A signed addendum cannot be changed.', 'Sign addendum'))) return;
      try {
        await api.post(`reads/${id}/addenda`, body);
        toast('Addendum signed and sent.', 'ok');
        await reload();
      } catch (err) {
        showError(form, err);
      }
    });
    return form;
  }

  /* ---- actions ---- */

  async function reload() {
    read = await api.get(`reads/${id}`);
    fetchedAt = Date.now();
    await Promise.all([loadReport(), loadCriticals()]);
    draw();
  }

  async function doClaim() {
    const ok = await claim(read, me);
    await reload();
    if (!ok && read.assignee !== me.reader) announce('Not claimed');
  }

  async function doRelease() {
    if (!(await confirmDialog('Release this read?', 'It goes back to the pool and is routed to another reader.', 'Release', true))) return;
    try {
      await api.post(`reads/${id}/release`, { reason: 'released from the web application' });
      toast('Released to the pool.', 'ok');
      if (isReader) navigate('/worklist');
      else await reload();
    } catch (err) {
      toast(explain(err), 'error');
    }
  }

  async function doReassign() {
    const readers = await api.get('readers');
    const { body, close } = modal('Reassign the read');
    const sel = select(readers.map(r => [r.id, `${r.name} (${r.id})`]));
    const form = h('form', field('Reader', sel, { field: 'reader' }),
      h('div.actions', h('button.btn.btn-primary', { type: 'submit' }, 'Reassign'), h('button.btn', { type: 'button', on: { click: close } }, 'Cancel')));
    form.addEventListener('submit', async e => {
      e.preventDefault();
      try {
        await api.post(`reads/${id}/reassign`, { reader: sel.value });
        close();
        toast(`Reassigned to ${sel.value}.`, 'ok');
        await reload();
      } catch (err) {
        showError(form, { ...err, field: err.field || 'reader' });
      }
    });
    put(body, form);
    sel.focus();
  }

  async function showRouting() {
    const r = await api.get(`reads/${id}/routing`);
    const { body } = modal('Routing explanation', { wide: true });
    const part = (title, d) => d ? h('section', h('h3', title),
      h('p.small', `Priority ${d.priority}, jurisdiction ${d.jurisdiction}${d.subspecialty ? ', subspecialty ' + d.subspecialty : ''}: `,
        d.chosen ? h('b', `chosen ${d.chosen}`) : h('b', 'no eligible reader'), d.rule ? ` (${d.rule})` : ''),
      h('table.data', h('caption.visually-hidden', title), h('thead', h('tr', ['Reader', 'Verdict', 'Why', 'Open reads'].map(t => h('th', { scope: 'col' }, t)))),
        h('tbody', (d.considered || []).map(c => h('tr', h('td', c.reader), h('td', c.verdict), h('td', c.reason || ''), h('td', String(c.open_reads ?? '')))))))
      : null;
    put(body, part(`When it was routed (${fmtTime(r.decision?.decided_at)})`, r.decision), part('If it were routed now', r.now));
  }

  async function takeNext() {
    if (editorState && editorState.dirty && editorState.save) await editorState.save(false);
    try {
      const next = await nextCase(id, me);
      if (next) navigate(`/reads/${next}`);
      else toast('Nothing left to read.', 'ok');
    } catch (err) {
      toast(explain(err), 'error');
    }
  }

  /* ---- keyboard, heartbeat, autosave ---- */

  let lastInput = Date.now();
  const touch = () => { lastInput = Date.now(); };
  ['keydown', 'input', 'pointerdown'].forEach(ev => document.addEventListener(ev, touch, true));
  cleanups.push(() => ['keydown', 'input', 'pointerdown'].forEach(ev => document.removeEventListener(ev, touch, true)));

  function onKey(e) {
    if ((e.ctrlKey || e.metaKey) && e.key === 's') {
      if (editorState && editorState.save) { e.preventDefault(); editorState.save(true); }
      return;
    }
    if (typing(e)) return;
    if (!isReader) return;
    if (e.key === 'c' && (read.state === 'pool' || read.state === 'assigned')) { e.preventDefault(); doClaim(); }
    else if (e.key === 'o' && read.state !== 'pool') { e.preventDefault(); openViewer(read, me); }
    else if (e.key === 'n') { e.preventDefault(); takeNext(); }
    else if (e.key === '?') { e.preventDefault(); showHelp(); }
  }
  document.addEventListener('keydown', onKey);
  cleanups.push(() => document.removeEventListener('keydown', onKey));

  if (isReader) {
    const beat = setInterval(async () => {
      const mine = read.assignee === me.reader && ['assigned', 'claimed'].includes(read.state);
      if (!mine || Date.now() - lastInput > IDLE_MS || document.hidden) return;
      try {
        await api.post(`reads/${id}/activity`, {});
        if (editorState && editorState.beat) editorState.beat.textContent = `· claim kept alive ${fmtClock(new Date().toISOString())}`;
      } catch (err) {
        if (err.status === 409 || err.status === 403) {
          toast('This read is no longer yours (the claim lapsed or it was reassigned).', 'error', 10000);
          await reload();
        }
      }
    }, HEARTBEAT_MS);
    cleanups.push(() => clearInterval(beat));
    const autosave = setInterval(() => {
      if (editorState && editorState.dirty && editorState.save) editorState.save(false);
    }, AUTOSAVE_MS);
    cleanups.push(() => clearInterval(autosave));
    const leave = e => {
      if (editorState && editorState.dirty) { e.preventDefault(); e.returnValue = ''; }
    };
    window.addEventListener('beforeunload', leave);
    cleanups.push(() => window.removeEventListener('beforeunload', leave));
  }

  draw();
  // Start the heartbeat's clock now: opening the editor counts as activity.
  if (isReader && read.assignee === me.reader && ['assigned', 'claimed'].includes(read.state)) {
    api.post(`reads/${id}/activity`, {}).then(() => {
      if (editorState && editorState.beat) editorState.beat.textContent = `· claim kept alive ${fmtClock(new Date().toISOString())}`;
    }).catch(() => {});
  }
  return () => {
    if (editorState && editorState.dirty && editorState.save) editorState.save(false);
    cleanups.forEach(fn => fn());
  };
}

