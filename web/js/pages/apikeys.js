// apikeys.js - API keys (GET/POST/DELETE /api/v1/api-keys) for programs: AI services,
// monitoring, scripts. A key is shown once, when it is made; administrators make keys for any
// account and see all of them, others their own.
import * as api from '../api.js';
import { h, put, clear, field, input, select, table, toast, explain, confirmDialog, modal, fmtTime } from '../ui.js';
import { editor } from '../forms.js';

export async function render({ main, me }) {
  const admin = me.role === 'admin';
  const box = h('div');
  put(main, 
    h('div.page-head', h('h1', 'API keys'), h('button.btn.btn-primary', { type: 'button', on: { click: add } }, 'Make a key')),
    h('p.muted', 'A key is a Bearer token (Authorization: Bearer trk_…) with the rights of its account. It is shown once; telerad keeps only its hash.'),
    box);

  async function load() {
    try {
      const keys = await api.get('api-keys');
      put(clear(box), table([
        { label: 'Label', cell: k => h('b', k.label || '(no label)') },
        { label: 'Key id', cell: k => h('code', k.id) },
        { label: 'Account', cell: k => k.user },
        { label: 'Made', cell: k => fmtTime(new Date(k.created_at).toISOString()) },
        { label: 'State', cell: k => k.revoked ? h('span.tag.tag-expired', 'revoked') : 'active' },
        { label: 'Actions', cell: k => k.revoked ? '' : h('button.btn.btn-small', { type: 'button', 'aria-label': `Revoke key ${k.label || k.id}`, on: { click: () => revoke(k) } }, 'Revoke') },
      ], keys, { caption: 'API keys', empty: 'No key yet.' }));
    } catch (err) {
      put(clear(box), h('div.banner.banner-error', { role: 'alert' }, explain(err)));
    }
  }

  async function add() {
    let users = [];
    if (admin) users = await api.get('users').catch(() => []);
    editor('New API key', form => {
      const label = input({ placeholder: 'e.g. stroke-ai, pacs-sync', autocomplete: 'off' });
      const user = admin ? select(users.map(u => [u.username, `${u.username} (${u.role})`]), { value: me.user }) : null;
      put(form, field('Label', label, { field: 'label', hint: 'What the key is for' }), user ? field('For account', user, { field: 'user' }) : null);
      return () => {
        if (!label.value.trim()) throw { field: 'label', detail: 'Give the key a label' };
        const out = { label: label.value.trim() };
        if (user) out.user = user.value;
        return out;
      };
    }, json => api.post('api-keys', json), created => { load(); showKey(created); }, { wide: false, submitLabel: 'Make the key' });
  }

  function showKey(k) {
    const { body, close } = modal('Copy the key now');
    const value = input({ value: k.key, readOnly: true, class: 'secret', 'aria-label': 'The new API key' });
    const copy = h('button.btn.btn-primary', { type: 'button', on: { click: async () => {
      value.select();
      try { await navigator.clipboard.writeText(k.key); toast('Copied.', 'ok'); } catch { document.execCommand('copy'); }
    } } }, 'Copy');
    put(body, h('p', `The key for ${k.user} (${k.label}). It is not shown again.`), value,
      h('div.actions', copy, h('button.btn', { type: 'button', on: { click: close } }, 'Done')));
    value.focus();
    value.select();
  }

  async function revoke(k) {
    if (!(await confirmDialog('Revoke the key?', `Programs using "${k.label || k.id}" are refused from now on.`, 'Revoke', true))) return;
    try {
      await api.del(`api-keys/${encodeURIComponent(k.id)}`);
      toast('Key revoked.', 'ok');
      await load();
    } catch (err) {
      toast(explain(err), 'error');
    }
  }

  await load();
}
