// api.js - telerad's REST API (/api/v1, docs/api.md) as promises.
//
// The session is the HttpOnly cookie set by POST /api/v1/auth/login; every change (POST, PUT,
// DELETE) carries the session's CSRF token in X-CSRF-Token (from the login answer, else the
// readable telerad_csrf cookie). Errors are thrown as ApiError with the problem+json members
// (status, title, detail, field), so that forms can show a message next to the field the
// server names.

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem.title || '';
    this.detail = problem.detail || '';
    this.field = problem.field ?? null;
  }
}

let csrfToken = null;
const listeners = { unauthorized: [] };

export function setCsrf(token) {
  csrfToken = token || null;
}

function csrf() {
  if (csrfToken) return csrfToken;
  const m = document.cookie.match(/(?:^|;\s*)telerad_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : '';
}

/** Called when a request answers 401 (the session ended): the app goes to the login page. */
export function onUnauthorized(fn) {
  listeners.unauthorized.push(fn);
}

/**
 * request(method, path, body?, options?) -> the parsed JSON answer (null for 204).
 * path is relative to /api/v1 unless it starts with '/'. options.raw: return the Response.
 */
export async function request(method, path, body, options = {}) {
  const url = path.startsWith('/') ? path : `/api/v1/${path}`;
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrf();
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new ApiError(0, { title: 'Network error', detail: 'telerad does not answer: check the connection' });
  }
  if (options.raw) return res;
  if (res.status === 204) return null;
  const type = res.headers.get('Content-Type') || '';
  let data = null;
  if (type.includes('json')) {
    try {
      data = await res.json();
    } catch {
      data = null;
    }
  } else {
    data = await res.text();
  }
  if (!res.ok) {
    const problem = data && typeof data === 'object' ? data : { title: res.statusText, detail: String(data || '') };
    const err = new ApiError(res.status, problem);
    if (res.status === 401 && !options.noRedirect) listeners.unauthorized.forEach(fn => fn(err));
    throw err;
  }
  return data;
}

export const get = (path, options) => request('GET', path, undefined, options);
export const post = (path, body = {}, options) => request('POST', path, body, options);
export const put = (path, body, options) => request('PUT', path, body, options);
export const del = (path, options) => request('DELETE', path, undefined, options);

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** Every page of a list endpoint that takes limit/offset (at most `max` items). */
export async function getAll(path, params = {}, max = 20000) {
  const out = [];
  const limit = 1000;
  for (let offset = 0; offset < max; offset += limit) {
    const page = await get(path + query({ ...params, limit, offset }));
    out.push(...page);
    if (page.length < limit) break;
  }
  return out;
}

export const enc = encodeURIComponent;
