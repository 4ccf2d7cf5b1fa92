// login.js - sign in with a telerad account (POST /api/v1/auth/login).
import * as api from '../api.js';
import { h, put, field, input, showError, clearErrors } from '../ui.js';

export function render({ main, signedIn }) {
  const user = input({ name: 'username', autocomplete: 'username', required: true, autocapitalize: 'off', spellcheck: 'false' });
  const pass = input({ type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button.btn.btn-primary', { type: 'submit', style: 'width:100%' }, 'Sign in');
  const form = h('form.panel', { novalidate: true, 'aria-labelledby': 'login-title' },
    field('User name', user, { field: 'username' }),
    field('Password', pass, { field: 'password' }),
    submit);
  form.addEventListener('submit', async e => {
    e.preventDefault();
    clearErrors(form);
    if (!user.value.trim()) return showError(form, { field: 'username', detail: 'Enter your user name' });
    if (!pass.value) return showError(form, { field: 'password', detail: 'Enter your password' });
    submit.disabled = true;
    submit.textContent = 'Signing in…';
    try {
      const me = await api.post('auth/login', { username: user.value.trim(), password: pass.value }, { noRedirect: true });
      signedIn(me);
    } catch (err) {
      pass.value = '';
      const detail = err.status === 401
        ? 'The user name or password is wrong, or the account is locked or disabled.'
        : err.detail;
      showError(form, { ...err, field: null, detail });
      submit.disabled = false;
      submit.textContent = 'Sign in';
    }
  });
  put(main, h('div.login',
    h('h1#login-title', 'Sign in to telerad'),
    h('p.muted', { style: 'text-align:center' }, 'Teleradiology worklist, reports and results'),
    form));
  user.focus();
}
