// cases.js - what a reader does to a read, shared by the worklist and the report editor:
// claim (a lost race is a clear message, not an error), open the study in the viewer, go to
// the next case, and the keyboard help.
import * as api from './api.js';
import { h, put, modal, toast, announce, explain } from './ui.js';

/** The viewer's address for a study (the study UID is the only identifier in the URL). */
export function viewerUrl(studyUid) {
  return `/viewer/viewer?StudyInstanceUIDs=${encodeURIComponent(studyUid)}`;
}

/**
 * Claims a read. Resolves to the claimed read, or null when it could not be claimed: a 409
 * (another reader was faster, or it is no longer claimable) is told in words.
 */
export async function claim(read, me) {
  try {
    const claimed = await api.post(`reads/${read.id}/claim`, {});
    toast(`Claimed: ${read.description || 'read ' + read.id}`, 'ok');
    announce(`Read ${read.id} claimed`);
    return claimed;
  } catch (err) {
    if (err.status === 409) {
      // Another reader (or an administrator's reassignment) was faster.
      const m = err.detail.match(/(claimed|assigned) by ([\w.@-]+)/);
      const what = `Read ${read.id} (${read.description || read.modality})`;
      if (m && me && m[2] === me.reader) {
        toast(`${what} is yours already (claimed from another window).`, '', 8000);
      } else if (m) {
        toast(`Too late: ${what} was just ${m[1]} ${m[1] === 'claimed' ? 'by' : 'to'} ${m[2]}. Your worklist is refreshed.`, 'error', 10000);
      } else {
        toast(`${what} cannot be claimed any more: ${err.detail}. Your worklist is refreshed.`, 'error', 10000);
      }
    } else {
      toast(`Cannot claim read ${read.id}: ${explain(err)}`, 'error', 8000);
    }
    return null;
  }
}

/**
 * Opens the study in the OHIF viewer (one named tab, reused from case to case), and records
 * that the assignee opened it (POST /reads/{id}/open, which also keeps the claim alive).
 * Must be called from the user's gesture (the browser allows the new tab then).
 */
export function openViewer(read, me) {
  const win = window.open(viewerUrl(read.study_uid), 'telerad-viewer');
  if (!win) toast('The browser blocked the viewer\'s tab: allow pop-ups for telerad.', 'error', 8000);
  const mine = me && me.role === 'reader' && read.assignee === me.reader;
  if (mine && (read.state === 'assigned' || read.state === 'claimed')) {
    api.post(`reads/${read.id}/open`, {}).catch(err => {
      if (err.status !== 409) toast(`Could not record the viewing: ${explain(err)}`, 'error');
    });
  }
  return win;
}

/**
 * The next case: the most urgent read this reader can work on now (their claimed or
 * assigned reads and the claimable pool, by due time), skipping `skipId`; claims it when
 * needed and returns its id (null when the worklist is empty).
 */
export async function nextCase(skipId, me) {
  const wl = await api.get('worklist');
  const items = wl.items.filter(r => r.id !== Number(skipId));
  for (const r of items) {
    if (r.state === 'claimed') return r.id;
    const claimed = await claim(r, me);
    if (claimed) return r.id;
  }
  return null;
}

export const shortcuts = [
  ['j / ↓', 'next read in the worklist'],
  ['k / ↑', 'previous read'],
  ['Enter', 'open the read (report editor)'],
  ['c', 'claim the selected read'],
  ['o', 'open the selected study in the viewer'],
  ['n', 'next case: claim and open the most urgent read'],
  ['r', 'refresh the worklist'],
  ['Ctrl+S', 'save the draft (report editor)'],
  ['?', 'this help'],
  ['Esc', 'close a dialog'],
];

export function showHelp() {
  const { body } = modal('Keyboard shortcuts');
  put(body, 
    h('p.muted', 'Shortcuts work when the cursor is not in a text field.'),
    h('table.data', h('caption.visually-hidden', 'Keyboard shortcuts'),
      h('thead', h('tr', h('th', { scope: 'col' }, 'Key'), h('th', { scope: 'col' }, 'Does'))),
      h('tbody', shortcuts.map(([k, d]) => h('tr', h('td', h('kbd', k)), h('td', d))))));
  body.closest('dialog').querySelector('button').focus();
}

/** True when a key press is for a text field, not a shortcut. */
export function typing(e) {
  const t = e.target;
  if (e.ctrlKey || e.metaKey || e.altKey) return true;
  if (!t || !t.closest) return false;
  if (t.closest('dialog')) return true;
  return Boolean(t.closest('input, textarea, select, [contenteditable="true"]'));
}
