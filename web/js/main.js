// main.js - the web application's shell: who is signed in, the navigation their role may use,
// and a small router over the History API (paths hold ids and study UIDs only, never patient
// data). Each page module exports render(ctx) and may return a cleanup function.
import * as api from './api.js';
import { h, clear, toast, announce, explain, tickCountdowns } from './ui.js';

const pages = {
  login: () => import('./pages/login.js'),
  worklist: () => import('./pages/worklist.js'),
  read: () => import('./pages/read.js'),
  myreports: () => import('./pages/myreports.js'),
  studies: () => import('./pages/studies.js'),
  critical: () => import('./pages/critical.js'),
  analytics: () => import('./pages/analytics.js'),
  sites: () => import('./pages/admin-sites.js'),
  readers: () => import('./pages/admin-readers.js'),
  contracts: () => import('./pages/admin-contracts.js'),
  rules: () => import('./pages/admin-rules.js'),
  users: () => import('./pages/admin-users.js'),
  apikeys: () => import('./pages/apikeys.js'),
  audit: () => import('./pages/audit.js'),
};

// path pattern -> page, the roles that may open it, the navigation label.
const routes = [
  { path: /^\/login$/, page: 'login', roles: null },
  { path: /^\/worklist$/, page: 'worklist', roles: ['reader'], nav: 'Worklist' },
  { path: /^\/my-reports$/, page: 'myreports', roles: ['reader'], nav: 'My reports' },
  { path: /^\/studies$/, page: 'studies', roles: ['site_user', 'admin'], nav: { site_user: 'Studies', admin: 'Reads' } },
  { path: /^\/reads\/(\d+)$/, page: 'read', roles: ['reader', 'site_user', 'admin'] },
  { path: /^\/critical$/, page: 'critical', roles: ['site_user', 'admin', 'reader'], nav: 'Critical results' },
  { path: /^\/analytics$/, page: 'analytics', roles: ['admin', 'site_user'], nav: 'Analytics' },
  { path: /^\/admin\/sites$/, page: 'sites', roles: ['admin'], nav: 'Sites' },
  { path: /^\/admin\/readers$/, page: 'readers', roles: ['admin'], nav: 'Readers' },
  { path: /^\/admin\/contracts$/, page: 'contracts', roles: ['admin'], nav: 'Contracts' },
  { path: /^\/admin\/rules$/, page: 'rules', roles: ['admin'], nav: 'Priority rules' },
  { path: /^\/admin\/users$/, page: 'users', roles: ['admin'], nav: 'Users' },
  { path: /^\/api-keys$/, page: 'apikeys', roles: ['admin', 'site_user', 'reader', 'service'], nav: 'API keys' },
  { path: /^\/audit$/, page: 'audit', roles: ['admin', 'auditor'], nav: 'Audit log' },
];

const home = { reader: '/worklist', site_user: '/studies', admin: '/studies', auditor: '/audit', service: '/api-keys' };
const navPaths = {
  worklist: '/worklist', myreports: '/my-reports', studies: '/studies', critical: '/critical',
  analytics: '/analytics', sites: '/admin/sites', readers: '/admin/readers', contracts: '/admin/contracts',
  rules: '/admin/rules', users: '/admin/users', apikeys: '/api-keys', audit: '/audit',
};
const roleNames = { admin: 'administrator', site_user: 'site user', reader: 'reader', auditor: 'auditor', service: 'service' };

const state = { me: null, cleanup: null, token: 0 };

export function session() {
  return state.me;
}

/** Goes to an application path (pushes history unless replace). */
export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, '', path);
  else history.pushState(null, '', path);
  route();
}

function renderNav() {
  const nav = document.getElementById('nav');
  clear(nav);
  const me = state.me;
  document.getElementById('session').hidden = !me;
  if (!me) return;
  const who = me.reader ? `${me.user} (${me.reader})` : me.site ? `${me.user} · ${me.site}` : me.user;
  document.getElementById('session-who').textContent = `${who} — ${roleNames[me.role] || me.role}`;
  for (const r of routes) {
    if (!r.nav || !r.roles.includes(me.role)) continue;
    const label = typeof r.nav === 'string' ? r.nav : r.nav[me.role];
    const href = navPaths[r.page];
    nav.append(h('a', { href, dataset: { nav: r.page } }, label));
  }
  markCurrent();
}

function markCurrent() {
  const path = location.pathname;
  document.querySelectorAll('#nav a').forEach(a => {
    if (a.getAttribute('href') === path) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  });
}

async function route() {
  const token = ++state.token;
  if (state.cleanup) {
    try { state.cleanup(); } catch { /* a page's cleanup must not stop the next page */ }
    state.cleanup = null;
  }
  const main = document.getElementById('main');
  let path = location.pathname.replace(/\/+$/, '') || '/';
  if (!state.me && path !== '/login') {
    history.replaceState(null, '', '/login');
    path = '/login';
  }
  if (state.me && (path === '/' || path === '/login' || path === '/index.html')) {
    path = home[state.me.role] || '/api-keys';
    history.replaceState(null, '', path);
  }
  let match = null;
  let route = null;
  for (const r of routes) {
    match = path.match(r.path);
    if (match) { route = r; break; }
  }
  markCurrent();
  clear(main);
  if (!route) {
    main.append(h('h1', 'Page not found'), h('p', 'There is no page at this address. ', h('a', { href: '/' }, 'Go to the start page')));
    document.title = 'Not found · telerad';
    return;
  }
  if (route.roles && !route.roles.includes(state.me.role)) {
    main.append(h('h1', 'Not available for your role'),
      h('p', `This page is for ${route.roles.map(r => roleNames[r]).join(', ')} accounts; you are signed in as ${roleNames[state.me.role]}.`),
      h('p', h('a', { href: home[state.me.role] || '/' }, 'Go to your start page')));
    document.title = 'Not available · telerad';
    return;
  }
  main.append(h('p.loading', 'Loading…'));
  try {
    const mod = await pages[route.page]();
    if (token !== state.token) return;
    clear(main);
    const cleanup = await mod.render({ main, params: match.slice(1), me: state.me, navigate, signedIn, token: () => token === state.token });
    if (token !== state.token) {
      if (typeof cleanup === 'function') cleanup();
      return;
    }
    state.cleanup = typeof cleanup === 'function' ? cleanup : null;
    const h1 = main.querySelector('h1');
    document.title = `${h1 ? h1.textContent : 'telerad'} · telerad`;
  } catch (e) {
    if (token !== state.token) return;
    clear(main);
    if (e instanceof api.ApiError && e.status === 401) return; // on its way to the login page
    main.append(h('h1', e.status === 403 ? 'Not allowed' : 'Something went wrong'),
      h('div.banner.banner-error', { role: 'alert' }, explain(e)),
      h('p', h('button.btn', { type: 'button', on: { click: () => route() } }, 'Try again')));
    console.error(e);
  }
}

/** After a login: remember who, then go to their start page. */
function signedIn(me) {
  state.me = me;
  if (me.csrf) api.setCsrf(me.csrf);
  renderNav();
  navigate(home[me.role] || '/api-keys', { replace: true });
}

async function logout() {
  try {
    await api.post('auth/logout', {}, { noRedirect: true });
  } catch {
    /* the session may have ended already */
  }
  state.me = null;
  api.setCsrf(null);
  renderNav();
  navigate('/login', { replace: true });
  announce('Signed out');
}

api.onUnauthorized(() => {
  if (!state.me) return;
  state.me = null;
  renderNav();
  toast('Your session has ended: please sign in again.', 'error');
  navigate('/login', { replace: true });
});

document.addEventListener('click', e => {
  // Same-origin application links go through the router (not /viewer/, /api/, downloads).
  const a = e.target.closest('a[href]');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  if (a.target || a.hasAttribute('download')) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || /^\/(viewer|api|dicom-web|fhir|wado)(\/|$)/.test(url.pathname)) return;
  e.preventDefault();
  navigate(url.pathname + url.search);
});
window.addEventListener('popstate', route);
document.getElementById('logout').addEventListener('click', logout);
setInterval(() => tickCountdowns(), 1000);

async function start() {
  try {
    // Who the session cookie is (a 401 without one: the sign-in page). A server started with
    // --no-auth answers for everyone, as an administrator.
    state.me = await api.get('auth/me', { noRedirect: true });
  } catch (e) {
    state.me = null;
    if (e.status && e.status !== 401) toast(explain(e), 'error');
  }
  renderNav();
  route();
}
start();
