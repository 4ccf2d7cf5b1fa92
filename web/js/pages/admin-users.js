// admin-users.js - accounts (GET/POST/PUT/DELETE /api/v1/users): role, the site of a site
// user, the reader of a reader account; new password (also ends a lockout); delete.
import * as api from '../api.js';
import { h, put, clear, field, input, select, table, toast, explain, confirmDialog } from '../ui.js';
import { editor } from '../forms.js';

export const ROLES = [
  ['reader', 'Reader (radiologist)'], ['site_user', 'Site user (hospital staff)'], ['admin', 'Administrator'],
  ['auditor', 'Auditor (audit log only)'], ['service', 'Service (programs: AI, monitoring)'],
];

/* The users API names no field in its errors: place them by what they say. */
function fieldOf(detail) {
  const d = (detail || '').toLowerCase();
  if (d.includes('password')) return 'password';
  if (d.includes('user name') || d.includes('username')) return 'username';
  if (d.includes('site')) return 'site';
  if (d.includes('reader')) return 'reader';
  if (d.includes('role')) return 'role';
  return null;
}

/**
 * The account editor: a new account (preset may fill role, reader, site) or a change to
 * `existing` (a new password is required: the API replaces the account).
 */
export function userEditor(preset, sites, readers, done, existing = null) {
  const v = existing || preset || {};
  return editor(existing ? `Account ${existing.username}` : 'New account', form => {
    const name = input({ value: existing ? existing.username : '', readOnly: Boolean(existing), autocomplete: 'off', spellcheck: 'false', autocapitalize: 'off' });
    const pass = input({ type: 'password', autocomplete: 'new-password', minlength: 12 });
    const pass2 = input({ type: 'password', autocomplete: 'new-password', minlength: 12 });
    const role = select(ROLES, { value: v.role || 'reader' });
    const site = select([['', 'Choose a site'], ...sites.map(s => [s.id, `${s.name} (${s.id})`])], { value: v.site || '' });
    const reader = select([['', 'Choose a reader'], ...readers.map(r => [r.id, `${r.name} (${r.id})`])], { value: v.reader || '' });
    const siteField = field('Site', site, { field: 'site', hint: 'A site user sees this site only' });
    const readerField = field('Reader', reader, { field: 'reader', hint: 'The radiologist this account signs as' });
    const sync = () => {
      siteField.hidden = role.value !== 'site_user';
      readerField.hidden = role.value !== 'reader';
    };
    role.addEventListener('change', sync);
    sync();
    put(form, h('div.grid',
      field('User name', name, { field: 'username', hint: existing ? 'A name cannot change.' : '1-64 of a-z 0-9 - _ . @' }),
      field('Role', role, { field: 'role' }), siteField, readerField,
      field(existing ? 'New password' : 'Password', pass, { field: 'password', hint: 'At least 12 characters' }),
      field('Password again', pass2, { field: 'password2' })));
    return () => {
      if (pass.value !== pass2.value) throw { field: 'password2', detail: 'The two passwords differ' };
      if (pass.value.length < 12) throw { field: 'password', detail: 'A password has at least 12 characters' };
      if (role.value === 'site_user' && !site.value) throw { field: 'site', detail: 'A site user needs a site' };
      if (role.value === 'reader' && !reader.value) throw { field: 'reader', detail: 'A reader account needs a reader' };
      const out = { username: name.value.trim(), password: pass.value, role: role.value };
      if (role.value === 'site_user') out.site = site.value;
      if (role.value === 'reader') out.reader = reader.value;
      return out;
    };
  }, async json => {
    try {
      return existing ? await api.put(`users/${encodeURIComponent(existing.username)}`, json) : await api.post('users', json);
    } catch (err) {
      if (!err.field) err.field = fieldOf(err.detail);
      throw err;
    }
  }, done, { wide: false, submitLabel: existing ? 'Save' : 'Create account' });
}

export async function render({ main }) {
  const box = h('div');
  let sites = [];
  let readers = [];
  put(main, 
    h('div.page-head', h('h1', 'Users'), h('button.btn.btn-primary', { type: 'button', on: { click: () => userEditor({}, sites, readers, load) } }, 'Add an account')),
    h('p.muted', 'Who signs in, and as what. Five wrong passwords in a row lock an account for a while; setting a new password ends the lockout.'),
    box);

  async function load() {
    try {
      const [users, s, r] = await Promise.all([api.get('users'), api.get('sites'), api.get('readers')]);
      sites = s;
      readers = r;
      put(clear(box), table([
        { label: 'User', cell: u => h('b', u.username) },
        { label: 'Role', cell: u => (ROLES.find(x => x[0] === u.role) || [0, u.role])[1] },
        { label: 'Site / reader', cell: u => u.site || u.reader || '—' },
        { label: 'Status', cell: u => [u.disabled ? h('span.tag.tag-expired', 'disabled') : null, u.locked ? h('span.tag.tag-expired', 'locked') : null, !u.disabled && !u.locked ? 'active' : null] },
        { label: 'Actions', cell: u => h('div.actions', { style: 'margin:0' },
          h('button.btn.btn-small', { type: 'button', 'aria-label': `Change account ${u.username}`, on: { click: () => userEditor(null, sites, readers, load, u) } }, 'Change / new password'),
          u.username === 'admin' ? null : h('button.btn.btn-small', { type: 'button', 'aria-label': `Delete account ${u.username}`, on: { click: () => remove(u) } }, 'Delete')) },
      ], users, { caption: 'Users' }));
    } catch (err) {
      put(clear(box), h('div.banner.banner-error', { role: 'alert' }, explain(err)));
    }
  }

  async function remove(u) {
    if (!(await confirmDialog(`Delete ${u.username}?`, 'The account, its sessions and its API keys are removed.', 'Delete', true))) return;
    try {
      await api.del(`users/${encodeURIComponent(u.username)}`);
      toast(`${u.username} deleted.`, 'ok');
      await load();
    } catch (err) {
      toast(explain(err), 'error');
    }
  }

  await load();
}
