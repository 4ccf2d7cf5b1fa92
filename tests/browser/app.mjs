// app.mjs - telerad's web application in a real headless Chromium, as its three kinds of
// users work with it, against `telerad serve --demo`:
//   1. an administrator signs in, adds a reader through the form (a validation error shows
//      next to the field the server names, then the fixed form saves), makes a user account
//      for it, and accounts for a demo reader (dr-lee) and a site user (tx-general);
//   2. the reader signs in, moves through the worklist by keyboard (roving focus, visible
//      focus), loses a claim race with a clear message, claims the most urgent read (c),
//      opens it in the viewer (o: a new tab at /viewer/ that paints an image, when the OHIF
//      viewer is installed), opens the report editor (Enter: its heartbeat keeps the claim),
//      is told when the impression is missing, writes the report with a critical finding
//      (ACR 1) and signs it final; the help overlay (?) lists the shortcuts;
//   3. the site user sees the study with its final report and PDF, is kept out of the admin
//      pages, and acknowledges the critical result (who, how);
//   4. the administrator's analytics show the signed read; a chart exports as CSV.
// Every input, select, textarea and button on each page has an accessible name.
//
//   TELERAD_ADMIN_PASSWORD=... node app.mjs BASE_URL ARTIFACT_DIR [--no-viewer]
//
// Screenshots go to ARTIFACT_DIR. Prints one line per check and "N passed, N failed"; exits 0
// when all held, 1 otherwise, 77 when Chromium or playwright-core is missing. --no-viewer:
// the OHIF viewer is not installed, so the viewer tab is not expected to paint.
//
// The browser is launched as tests/browser/viewer.mjs does: Debian's Chromium driven by
// playwright-core (never `playwright install`), a fresh profile per run, no GPU, no
// background traffic.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const args = process.argv.slice(2).filter(a => !a.startsWith('--'));
const noViewer = process.argv.includes('--no-viewer');
const [base, artifacts] = args;
const adminPassword = process.env.TELERAD_ADMIN_PASSWORD;
if (!artifacts || !adminPassword) {
  console.error('usage: TELERAD_ADMIN_PASSWORD=... node app.mjs BASE_URL ARTIFACT_DIR [--no-viewer]');
  process.exit(2);
}
if (!fs.existsSync(CHROMIUM)) {
  console.log(`SKIP: no Chromium at ${CHROMIUM} (Debian: apt-get install chromium)`);
  process.exit(77);
}
let chromium, request;
try {
  ({ chromium, request } = await import('playwright-core'));
} catch (e) {
  console.log('SKIP: playwright-core is not installed (npm ci at the repository root): ' + e.message);
  process.exit(77);
}

let passed = 0;
let failed = 0;
function check(ok, what, detail = '') {
  if (ok) passed++;
  else failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'}  ${what}${!ok && detail ? ': ' + detail : ''}`);
  return ok;
}

fs.mkdirSync(artifacts, { recursive: true });
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'telerad-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: CHROMIUM,
  headless: true,
  viewport: { width: 1360, height: 900 },
  acceptDownloads: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
context.setDefaultTimeout(20000);
const page = context.pages()[0] || (await context.newPage());
const origin = new URL(base).origin;

// What went wrong in the browser: uncaught errors and 5xx fail the test; the 4xx the test
// provokes on purpose (a validation error, a lost claim) are only listed.
const pageErrors = [];
const serverErrors = [];
const clientErrors = [];
const foreign = [];
function watch(p) {
  p.on('pageerror', err => pageErrors.push(`${p.url()}: ${String(err.stack || err).slice(0, 500)}`));
  p.on('request', req => {
    const url = req.url();
    if (!url.startsWith(origin) && !/^(data|blob|about):/.test(url)) foreign.push(url);
  });
  p.on('response', res => {
    if (!res.url().startsWith(origin)) return;
    if (res.status() >= 500) serverErrors.push(`${res.status()} ${res.request().method()} ${res.url()}`);
    else if (res.status() >= 400) clientErrors.push(`${res.status()} ${res.request().method()} ${res.url()}`);
  });
}
watch(page);
context.on('page', watch);

const shot = (name, p = page) => p.screenshot({ path: path.join(artifacts, name), fullPage: true });

/** Every visible input, select, textarea and button without an accessible name. */
async function unnamedControls(p = page) {
  return p.evaluate(() => {
    const text = el => (el ? el.textContent.replace(/\s+/g, ' ').trim() : '');
    const nameOf = el => {
      const label = el.getAttribute('aria-label');
      if (label && label.trim()) return label.trim();
      const by = el.getAttribute('aria-labelledby');
      if (by) {
        const t = by.split(/\s+/).map(id => text(document.getElementById(id))).join(' ').trim();
        if (t) return t;
      }
      if (el.labels && el.labels.length) {
        const t = [...el.labels].map(text).join(' ').trim();
        if (t) return t;
      }
      if (el.tagName === 'BUTTON') {
        const t = text(el);
        if (t) return t;
      }
      const title = el.getAttribute('title');
      return title && title.trim() ? title.trim() : '';
    };
    const controls = [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]
      .filter(el => el.getClientRects().length > 0);
    return {
      count: controls.length,
      unnamed: controls.filter(el => !nameOf(el)).map(el => el.outerHTML.slice(0, 160)),
    };
  });
}

/**
 * Text whose contrast with what is behind it is under WCAG AA (4.5:1; 3:1 for large text):
 * every visible element with text of its own, the background composed up its ancestors.
 */
async function lowContrast(p = page) {
  return p.evaluate(() => {
    const rgba = s => {
      const m = s.match(/rgba?\(([^)]+)\)/);
      if (!m) return [0, 0, 0, 0];
      const v = m[1].split(/[ ,/]+/).filter(Boolean).map(Number);
      return [v[0], v[1], v[2], v.length > 3 ? v[3] : 1];
    };
    const lum = ([r, g, b]) => {
      const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const over = (top, bottom) => [0, 1, 2].map(i => top[i] * top[3] + bottom[i] * (1 - top[3])).concat(1);
    const backdrop = el => {
      const layers = [];
      for (let e = el; e; e = e.parentElement) {
        const c = rgba(getComputedStyle(e).backgroundColor);
        if (c[3] > 0) layers.push(c);
        if (c[3] >= 1) break;
      }
      let bg = [255, 255, 255, 1];
      for (const l of layers.reverse()) bg = over(l, bg);
      return bg;
    };
    const bad = [];
    let checked = 0;
    for (const el of document.querySelectorAll('body *')) {
      if (!el.getClientRects().length || el.closest('[hidden], canvas, svg, .visually-hidden, dialog:not([open])')) continue;
      if ([...el.childNodes].every(n => n.nodeType !== 3 || !n.textContent.trim())) continue;
      if (el.disabled || el.closest('[disabled]')) continue;
      const st = getComputedStyle(el);
      if (st.visibility === 'hidden' || Number(st.opacity) === 0) continue;
      const fg = rgba(st.color);
      const bg = backdrop(el);
      const color = over(fg, bg);
      const [l1, l2] = [lum(color), lum(bg)].sort((x, y) => y - x);
      const ratio = (l1 + 0.05) / (l2 + 0.05);
      const size = parseFloat(st.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(st.fontWeight) >= 700);
      checked++;
      if (ratio < (large ? 3 : 4.5)) bad.push(`${ratio.toFixed(2)} "${el.textContent.trim().slice(0, 30)}" (${st.color} on rgb(${bg.slice(0, 3).map(Math.round)}))`);
    }
    return { checked, bad };
  });
}

async function a11y(where, p = page) {
  const r = await unnamedControls(p);
  check(r.unnamed.length === 0, `${where}: all ${r.count} controls have an accessible name`, r.unnamed.join(' | '));
  const c = await lowContrast(p);
  check(c.bad.length === 0, `${where}: text contrast at least WCAG AA (${c.checked} elements)`, c.bad.slice(0, 8).join(' | '));
}

async function login(user, password) {
  await page.goto(`${base}/login`);
  await page.getByLabel('User name', { exact: true }).fill(user);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.locator('#session').waitFor({ state: 'visible' });
}

async function logout() {
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in to telerad' }).waitFor();
}

/** Waits for a toast whose text matches; returns its text (or null). */
async function toastText(re, timeout = 10000) {
  try {
    const t = page.locator('.toast', { hasText: re }).first();
    await t.waitFor({ timeout });
    return await t.textContent();
  } catch {
    return null;
  }
}

/** The API as a program sees it (its own session, not the browser's). */
async function apiAs(username, password) {
  const api = await request.newContext({ baseURL: base });
  const res = await api.post('/api/v1/auth/login', { data: { username, password } });
  const { csrf } = await res.json();
  return { api, headers: { 'X-CSRF-Token': csrf } };
}
const adminApi = () => apiAs('admin', adminPassword);

/** Nearest-rank percentile of minutes, one decimal (as the server computes it). */
function percentile(values, pct) {
  const v = [...values].sort((x, y) => x - y);
  return v[Math.max(0, Math.ceil((pct * v.length) / 100) - 1)];
}

// The largest canvas of a page: share of pixels brighter than near-black, and the variance
// (as tests/browser/viewer.mjs samples the OHIF viewport).
async function sampleCanvas(p) {
  return p.evaluate(() => {
    const canvases = [...document.querySelectorAll('canvas')];
    if (!canvases.length) return null;
    const c = canvases.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a));
    if (!c.width || !c.height) return null;
    const copy = document.createElement('canvas');
    copy.width = c.width;
    copy.height = c.height;
    const ctx = copy.getContext('2d');
    ctx.drawImage(c, 0, 0);
    const data = ctx.getImageData(0, 0, c.width, c.height).data;
    let n = 0, lit = 0, sum = 0, sum2 = 0;
    for (let i = 0; i < data.length; i += 4 * 7) {
      const v = (data[i] + data[i + 1] + data[i + 2]) / 3;
      n++;
      if (v > 16) lit++;
      sum += v;
      sum2 += v * v;
    }
    const mean = sum / n;
    return { width: c.width, height: c.height, lit: lit / n, mean, variance: sum2 / n - mean * mean };
  });
}

const PASSWORDS = { 'nia.new': 'nia-new-password-1', lee: 'lee-reader-password-1', 'tx.staff': 'tx-staff-password-1' };
let status = 0;
let mostUrgent = null;
try {
  /* ---- 0. the login page ---- */
  await page.goto(`${base}/`);
  await page.getByRole('heading', { name: 'Sign in to telerad' }).waitFor();
  check(new URL(page.url()).pathname === '/login', 'the application at / asks to sign in first');
  await a11y('login page');
  await shot('01-login.png');

  /* ---- 1. the administrator adds a reader, and accounts ---- */
  await login('admin', adminPassword);
  await page.getByRole('heading', { name: 'Reads' }).waitFor();
  await page.locator('table.data tbody tr').first().waitFor();
  check(await page.getByRole('link', { name: 'Readers' }).isVisible(), 'administrator: the admin pages are in the navigation');
  check(!(await page.getByRole('link', { name: 'Worklist' }).count()), 'administrator: no reader worklist in the navigation');
  await a11y('administrator: reads');
  await shot('02-admin-reads.png');

  await page.getByRole('link', { name: 'Readers' }).click();
  await page.getByRole('heading', { name: 'Readers' }).waitFor();
  await page.getByRole('button', { name: 'Add a reader' }).click();
  const dlg = page.locator('dialog[open]');
  await dlg.getByLabel('Reader id').fill('dr-new');
  await dlg.getByLabel('Name', { exact: true }).fill('Dr Nia New');
  await dlg.getByLabel('Status').selectOption('online');
  await dlg.getByLabel('Time zone').fill('America/Chicago');
  await dlg.getByLabel('Subspecialties').fill('neuro, body');
  await dlg.getByRole('button', { name: '+ Add a license' }).click();
  await dlg.getByLabel('License 1 jurisdiction').fill('Texas');
  await dlg.getByRole('button', { name: '+ Add a privilege' }).click();
  await dlg.getByLabel('Privilege 1 site').selectOption('tx-general');
  await dlg.getByRole('button', { name: '+ Add a shift' }).click();
  await a11y('administrator: reader form (dialog)');
  await dlg.getByRole('button', { name: 'Save' }).click();
  const jur = dlg.getByLabel('License 1 jurisdiction');
  let shown = '';
  try {
    await dlg.locator('.field-error').first().waitFor();
    shown = await jur.locator('xpath=..').locator('.field-error').textContent().catch(() => '');
  } catch { /* reported below */ }
  check(await jur.getAttribute('aria-invalid') === 'true' && /ISO 3166-2/.test(shown || ''),
        'server validation error shown next to the field it names (licenses[0].jurisdiction)', `"${shown}"`);
  await shot('03-admin-reader-field-error.png');
  await jur.fill('US-TX');
  await dlg.getByRole('button', { name: 'Save' }).click();
  await dlg.waitFor({ state: 'detached' });
  const newRow = page.locator('table.data tbody tr', { hasText: 'dr-new' });
  await newRow.waitFor();
  check(await newRow.isVisible(), 'administrator added reader dr-new through the form');
  const readerDoc = await (await page.request.get(`${base}/api/v1/readers/dr-new`)).json();
  check(readerDoc.licenses?.[0]?.jurisdiction === 'US-TX' && readerDoc.privileges?.[0]?.site === 'tx-general' &&
        readerDoc.shifts?.length === 1 && readerDoc.subspecialties?.join() === 'neuro,body',
        'the reader is stored with its license, privilege, shift and subspecialties', JSON.stringify(readerDoc));

  // Its user account, from the reader's row.
  await page.getByRole('button', { name: 'Create a user account for dr-new' }).click();
  await dlg.getByLabel('User name').fill('nia.new');
  await dlg.getByLabel('Password', { exact: true }).fill(PASSWORDS['nia.new']);
  await dlg.getByLabel('Password again').fill(PASSWORDS['nia.new']);
  await a11y('administrator: account form (dialog)');
  await dlg.getByRole('button', { name: 'Create account' }).click();
  await dlg.waitFor({ state: 'detached' });
  await page.locator('table.data tbody tr', { hasText: 'dr-new' }).getByText('nia.new').waitFor();
  check(true, 'administrator made the account nia.new for reader dr-new');
  await shot('04-admin-readers.png');

  // Accounts for the demo's dr-lee and a user of tx-general, from the Users page.
  await page.getByRole('link', { name: 'Users' }).click();
  await page.getByRole('heading', { name: 'Users' }).waitFor();
  for (const [user, role, what] of [['lee', 'reader', 'dr-lee'], ['tx.staff', 'site_user', 'tx-general']]) {
    await page.getByRole('button', { name: 'Add an account' }).click();
    await dlg.getByLabel('User name').fill(user);
    await dlg.getByLabel('Role').selectOption(role);
    await dlg.getByLabel(role === 'reader' ? 'Reader' : 'Site', { exact: true }).selectOption(what);
    await dlg.getByLabel('Password', { exact: true }).fill(PASSWORDS[user]);
    await dlg.getByLabel('Password again').fill(PASSWORDS[user]);
    await dlg.getByRole('button', { name: 'Create account' }).click();
    await dlg.waitFor({ state: 'detached' });
  }
  let listed = true;
  for (const user of ['lee', 'tx.staff', 'nia.new']) {
    listed = listed && await page.locator('table.data tbody tr', { hasText: user }).first().waitFor().then(() => true, () => false);
  }
  check(listed, 'the users page lists the new accounts');
  await a11y('administrator: users');
  await shot('05-admin-users.png');
  await logout();

  /* ---- 2. the reader ---- */
  await login('lee', PASSWORDS.lee);
  await page.getByRole('heading', { name: 'Worklist' }).waitFor();
  const rows = page.locator('table.worklist tbody tr');
  await rows.first().waitFor();
  const wl = await (await page.request.get(`${base}/api/v1/worklist`)).json();
  mostUrgent = wl.items[0];
  const firstId = Number(await rows.first().getAttribute('data-id'));
  check(firstId === mostUrgent.id && mostUrgent.priority === 'STAT',
        `the worklist starts with the most urgent read (${mostUrgent.priority} ${mostUrgent.description})`,
        `first row ${firstId}, API ${JSON.stringify(wl.items.map(i => [i.id, i.priority]))}`);
  const badge = await rows.first().locator('.due').textContent();
  await page.waitForTimeout(2100);
  const badgeLater = await rows.first().locator('.due').textContent();
  check(badge !== badgeLater && /Due < 1 h|Due < 15 min|Overdue/.test(badgeLater),
        'the SLA countdown runs and says its urgency in words', `${badge} -> ${badgeLater}`);
  await a11y('reader: worklist');
  await shot('06-reader-worklist.png');

  // Keyboard: the worklist is one tab stop; j/k move a visible focus from row to row.
  const rowCount = await rows.count();
  await page.locator('table.worklist tbody tr[tabindex="0"]').focus();
  const active = () => page.evaluate(() => ({
    id: document.activeElement?.dataset?.id, selected: document.activeElement?.getAttribute('aria-selected'),
    tabindex: document.activeElement?.getAttribute('tabindex'),
    outline: getComputedStyle(document.activeElement).outlineStyle,
    stops: document.querySelectorAll('table.worklist tbody tr[tabindex="0"]').length,
  }));
  let a = await active();
  check(Number(a.id) === firstId && a.outline !== 'none' && a.stops === 1,
        'worklist: the first row takes the focus, visibly, and is the only tab stop', JSON.stringify(a));
  await page.keyboard.press('j');
  const secondId = Number(await rows.nth(1).getAttribute('data-id'));
  a = await active();
  check(rowCount > 1 && Number(a.id) === secondId && a.selected === 'true' && a.tabindex === '0',
        'worklist: j moves the focus to the next read', JSON.stringify(a));
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('k');
  a = await active();
  check(Number(a.id) === secondId, 'worklist: ArrowDown and k move down and up', JSON.stringify(a));

  // A claim race: an administrator gives the selected read to another reader meanwhile.
  const { api: adminReq, headers } = await adminApi();
  const reassigned = await adminReq.post(`/api/v1/reads/${secondId}/reassign`, { headers, data: { reader: 'dr-patel' } });
  check(reassigned.ok(), `meanwhile read ${secondId} goes to dr-patel (administrator)`, await reassigned.text());
  await page.keyboard.press('c');
  const lost = await toastText(/Too late/);
  check(lost !== null && /dr-patel/.test(lost), 'a lost claim (409) is told clearly', String(lost));
  await page.locator(`table.worklist tbody tr[data-id="${secondId}"]`).waitFor({ state: 'detached' });
  check(true, 'the worklist is refreshed without the lost read');
  await shot('07-reader-claim-lost.png');

  // Claim the most urgent read with the keyboard.
  await page.locator(`table.worklist tbody tr[data-id="${firstId}"]`).click();
  await page.keyboard.press('c');
  const claimedToast = await toastText(/Claimed/);
  await page.locator(`table.worklist tbody tr[data-id="${firstId}"]`, { hasText: 'Claimed by me' }).waitFor();
  check(claimedToast !== null, `reader claimed the most urgent read (${firstId}) with c`);

  // o: the viewer in a new tab, on that study.
  await page.locator(`table.worklist tbody tr[data-id="${firstId}"]`).focus();
  const [viewer] = await Promise.all([context.waitForEvent('page'), page.keyboard.press('o')]);
  await viewer.waitForLoadState('domcontentloaded');
  const vurl = new URL(viewer.url());
  check(vurl.pathname === '/viewer/viewer' && vurl.searchParams.get('StudyInstanceUIDs') === mostUrgent.study_uid &&
        [...vurl.searchParams.keys()].length === 1,
        'o opens the viewer in a new tab at /viewer/viewer?StudyInstanceUIDs=<uid> (no other identifier in the URL)', viewer.url());
  if (noViewer) {
    console.log('      (the OHIF viewer is not installed here: the image check is skipped; scripts/ohif.sh installs it)');
  } else {
    const t0 = Date.now();
    let sample = null;
    let painted = false;
    while (Date.now() - t0 < 90000) {
      sample = await sampleCanvas(viewer).catch(() => null);
      if (sample && sample.lit > 0.05 && sample.variance > 0) {
        painted = true;
        break;
      }
      await viewer.waitForTimeout(250);
    }
    await viewer.waitForTimeout(1000);
    await shot('08-viewer.png', viewer);
    check(painted, `the viewer paints the study (${((Date.now() - t0) / 1000).toFixed(1)} s)`, JSON.stringify(sample));
  }
  await viewer.close();
  let opened = null;
  for (let i = 0; i < 20 && !opened; i++) {
    opened = (await (await page.request.get(`${base}/api/v1/reads/${firstId}`)).json()).clocks.opened;
    if (!opened) await page.waitForTimeout(250);
  }
  check(Boolean(opened), 'opening the viewer recorded the read as opened (POST /reads/{id}/open)');

  // Enter: the report editor; its heartbeat keeps the claim alive.
  const beat = page.waitForResponse(r => r.url().endsWith(`/api/v1/reads/${firstId}/activity`) && r.status() === 204);
  await page.locator(`table.worklist tbody tr[data-id="${firstId}"]`).focus();
  await page.keyboard.press('Enter');
  await page.getByRole('heading', { name: 'Report', exact: true }).waitFor();
  check(new URL(page.url()).pathname === `/reads/${firstId}`, 'Enter opens the read (/reads/{id}: no patient data in the URL)', page.url());
  check(Boolean(await beat.catch(() => null)), 'the editor sends the claim heartbeat (POST /reads/{id}/activity)');
  await a11y('reader: report editor');

  const impression = page.getByLabel('Impression', { exact: true });
  await impression.fill('');
  await page.getByRole('button', { name: 'Sign final' }).click();
  const impressionError = await impression.locator('xpath=..').locator('.field-error').textContent().catch(() => '');
  check(await impression.getAttribute('aria-invalid') === 'true' && /impression/i.test(impressionError),
        'signing without an impression is refused next to the Impression field', impressionError);
  await page.getByLabel('Clinical information').fill('Sudden right-sided weakness and aphasia, onset 50 minutes ago.');
  await page.getByLabel('Findings', { exact: true }).fill('Hyperdense left middle cerebral artery. Loss of grey-white differentiation in the left insula. No haemorrhage.');
  await impression.fill('Acute left MCA territory infarct. No intracranial haemorrhage.');
  await page.getByLabel('This study has a critical finding').check();
  await page.getByLabel('ACR category').selectOption('1');
  await page.getByLabel('Critical finding', { exact: true }).fill('Acute left MCA infarct: stroke team to be informed now.');
  await page.keyboard.press('Control+s');
  await page.locator('form span', { hasText: /^Draft saved/ }).first().waitFor();
  check(true, 'Ctrl+S saves the draft');
  await shot('09-reader-report-draft.png');
  await page.getByRole('button', { name: 'Sign final' }).click();
  await dlg.getByRole('button', { name: 'Sign final' }).click();
  await page.getByRole('heading', { name: 'Signed reports' }).waitFor();
  const signedText = await page.locator('article.signed-report').first().textContent();
  check(/Final report/.test(signedText) && /Acute left MCA/.test(signedText) && /ACR category 1/.test(signedText),
        'the final report is signed, with its critical result', signedText.slice(0, 200));
  const after = await (await page.request.get(`${base}/api/v1/reads/${firstId}`)).json();
  check(after.state === 'final' && Boolean(after.clocks.final), 'the read is final (its clock set)', after.state);
  await shot('10-reader-report-signed.png');

  // The help overlay.
  await page.goto(`${base}/worklist`);
  await page.getByRole('heading', { name: 'Worklist' }).waitFor();
  await page.keyboard.press('?');
  const help = page.locator('dialog[open]', { hasText: 'Keyboard shortcuts' });
  await help.waitFor();
  const helpText = await help.textContent();
  check(/next case/.test(helpText) && /claim/.test(helpText), '? shows the keyboard shortcuts');
  await shot('11-reader-help.png');
  await page.keyboard.press('Escape');
  await help.waitFor({ state: 'detached' });
  check(true, 'Esc closes the help');

  // n: the next case is claimed and opened.
  const nextUp = (await (await page.request.get(`${base}/api/v1/worklist`)).json()).items[0];
  // The worklist row has the focus again (not the closed dialog, not the page): a shortcut
  // pressed while focus is still in the dialog is for the dialog.
  await page.locator('table.data tbody tr').first().focus();
  await page.keyboard.press('n');
  await page.waitForURL(/\/reads\/\d+$/, { timeout: 60000 });
  await page.getByRole('heading', { name: 'Report', exact: true }).waitFor();
  const nextRead = await (await page.request.get(`${base}/api/v1/reads/${nextUp.id}`)).json();
  check(new URL(page.url()).pathname === `/reads/${nextUp.id}` && nextRead.state === 'claimed' && nextRead.assignee === 'dr-lee',
        `n claims and opens the next most urgent read (${nextUp.priority} ${nextUp.description})`, `${page.url()} ${nextRead.state}`);
  await logout();

  /* ---- 3. the site user ---- */
  await login('tx.staff', PASSWORDS['tx.staff']);
  await page.getByRole('heading', { name: 'Studies sent' }).waitFor();
  const studyRow = page.locator('table.data tbody tr', { hasText: mostUrgent.accession });
  await studyRow.waitFor();
  check(/Final/.test(await studyRow.textContent()), 'site user: the study is listed as final');
  const otherSites = await page.locator('table.data tbody tr', { hasText: /DEMOACC000[5-9]/ }).count();
  check(otherSites === 0, 'site user: only their own site\'s studies are listed');
  await a11y('site user: studies');
  await shot('12-site-studies.png');
  await studyRow.getByRole('link').click();
  await page.getByRole('heading', { name: 'Signed reports' }).waitFor();
  const siteReport = await page.locator('article.signed-report').first().textContent();
  check(/Final report/.test(siteReport) && /Acute left MCA/.test(siteReport), 'site user sees the final report');
  const steps = await page.locator('ol.timeline li.done .step').allTextContents();
  check(steps.join() === 'Received,Assigned,Final', 'the timeline shows received -> assigned -> final (no preliminary)', steps.join());
  const pdfHref = await page.getByRole('link', { name: 'PDF / print' }).first().getAttribute('href');
  const pdf = await page.request.get(`${base}${pdfHref}`);
  const pdfBody = await pdf.body();
  check(pdf.status() === 200 && /application\/pdf/.test(pdf.headers()['content-type']) && pdfBody.subarray(0, 5).toString() === '%PDF-',
        'the report prints as PDF (the reports PDF endpoint)', `${pdf.status()} ${pdf.headers()['content-type']}`);
  await a11y('site user: report');
  await shot('13-site-report.png');

  await page.goto(`${base}/admin/readers`);
  await page.getByRole('heading', { name: 'Not available for your role' }).waitFor();
  check(true, 'site user: an admin page says it is not for their role');

  await page.getByRole('link', { name: 'Critical results' }).click();
  await page.getByRole('heading', { name: 'Critical results' }).waitFor();
  const item = page.locator('section.panel', { hasText: 'Acute left MCA infarct' });
  await item.waitFor();
  await item.getByRole('button', { name: 'Acknowledge' }).click();
  const byField = item.getByLabel('Who at the site received it');
  check(await byField.getAttribute('aria-invalid') === 'true', 'acknowledging without saying who is refused next to that field');
  await byField.fill('Dr Amy Smith, ED attending');
  await item.getByLabel('How').selectOption('phone');
  await item.getByLabel('Note (optional)').fill('Read back confirmed; stroke team activated.');
  await a11y('site user: critical results');
  await shot('14-site-critical-open.png');
  await item.getByRole('button', { name: 'Acknowledge' }).click();
  check(await toastText(/acknowledged/i) !== null, 'site user acknowledged the critical result');
  await page.getByLabel('Show').selectOption('acknowledged');
  const acked = page.locator('section.panel', { hasText: 'Acute left MCA infarct' });
  await acked.getByText(/Acknowledged/).waitFor();
  const ackText = await acked.textContent();
  check(/tx\.staff/.test(ackText) && /Dr Amy Smith/.test(ackText) && /Phone call/.test(ackText),
        'the acknowledgement records who at the site was told, how, and by whom', ackText.slice(0, 300));
  await shot('15-site-critical-acknowledged.png');
  await logout();

  /* ---- 4. analytics ---- */
  // A second final report of tx-general, signed through the API by the same reader, so that
  // the percentiles are taken over more than one read.
  const { api: leeReq, headers: leeHeaders } = await apiAs('lee', PASSWORDS.lee);
  const other = (await (await leeReq.get('/api/v1/worklist')).json()).items.find(r => r.site === 'tx-general' && r.id !== mostUrgent.id);
  let signedOther = false;
  if (other) {
    await leeReq.post(`/api/v1/reads/${other.id}/claim`, { headers: leeHeaders, data: {} });
    await leeReq.post(`/api/v1/reads/${other.id}/report`, { headers: leeHeaders, data: { sections: { impression: 'No acute abnormality.' } } });
    signedOther = (await leeReq.post(`/api/v1/reads/${other.id}/report/sign`, { headers: leeHeaders, data: { kind: 'final' } })).ok();
  }
  check(signedOther, 'a second tx-general read is signed final through the API', JSON.stringify(other && other.id));
  const leeAnalytics = await leeReq.get('/api/v1/analytics');
  check(leeAnalytics.status() === 403, 'GET /api/v1/analytics: a reader gets 403', String(leeAnalytics.status()));
  await leeReq.dispose();

  await login('admin', adminPassword);
  await page.getByRole('link', { name: 'Analytics' }).click();
  await page.getByRole('heading', { name: 'Analytics' }).waitFor();
  await page.locator('.charts[data-loaded]').waitFor();
  const charts = await page.locator('.charts canvas').count();
  const tat = await page.locator('#tat-priority').textContent();
  check(charts >= 5 && /STAT/.test(tat), `analytics: ${charts} charts drawn (Chart.js), turnaround by priority has the signed read`);
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByRole('button', { name: 'Export Turnaround by priority as CSV' }).click(),
  ]);
  const csvText = fs.readFileSync(await download.path(), 'utf8');
  check(/^group,final reports,p50 minutes,p90 minutes\r\nSTAT,1,[\d.]+,[\d.]+\r\n/.test(csvText), 'a chart exports its numbers as CSV', csvText.slice(0, 120));
  await a11y('administrator: analytics');
  await shot('16-admin-analytics.png');
  // The aggregate endpoint against the reads' own clocks.
  const site = await (await page.request.get(`${base}/api/v1/analytics?site=tx-general`)).json();
  const finals = (await (await page.request.get(`${base}/api/v1/reads?site=tx-general&state=final&limit=1000`)).json());
  const tats = finals.map(r => (Date.parse(r.clocks.final) - Date.parse(r.clocks.received)) / 60000);
  const bySite = site.turnaround.by_site.find(g => g.key === 'tx-general') || {};
  const near = (x, y) => typeof x === 'number' && Math.abs(x - y) <= 0.1;
  check(finals.length === 2 && bySite.reads === 2 && near(bySite.p50_minutes, percentile(tats, 50)) &&
        near(bySite.p90_minutes, percentile(tats, 90)),
        'analytics: turnaround p50/p90 agree with the reads\' clocks', JSON.stringify({ bySite, tats }));
  const met = finals.filter(r => Date.parse(r.clocks.final) <= Date.parse(r.due_at)).length;
  check(site.sla.met === met && site.sla.met + site.sla.breached === 2 && site.volume.received >= 4,
        'analytics: SLA compliance and volumes agree with the reads', JSON.stringify(site.sla));
  const lee = site.readers.find(r => r.reader === 'dr-lee') || {};
  const rvu = finals.reduce((sum, r) => sum + r.rvu, 0);
  check(lee.reads === 2 && Math.abs(lee.rvu - rvu) < 1e-6 && lee.active_hours >= 1 &&
        Math.abs(lee.rvu_per_hour - rvu / lee.active_hours) < 1e-6,
        'analytics: dr-lee\'s reads and RVUs per active hour', JSON.stringify(lee));
  for (const [q, field] of [['bucket=week', 'bucket'], ['from=2026-02-30', 'from'], ['from=2026-01-02&to=2026-01-01', 'from'],
                            ['from=2020-01-01&to=2026-01-01', 'from'], ['from=2026-01-01&to=2026-06-01&bucket=hour', 'bucket']]) {
    const res = await page.request.get(`${base}/api/v1/analytics?${q}`);
    const problem = await res.json().catch(() => ({}));
    check(res.status() === 422 && problem.field === field, `analytics: ?${q} is a 422 naming ${field}`, `${res.status()} ${JSON.stringify(problem)}`);
  }
  await adminReq.dispose();
} catch (e) {
  check(false, 'browser session', String(e.stack || e));
  await shot('error.png').catch(() => {});
  status = 1;
} finally {
  await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}

for (const e of pageErrors) console.log(`uncaught: ${e}`);
for (const e of clientErrors) console.log(`      (4xx seen: ${e})`);
check(pageErrors.length === 0, 'no uncaught error in the pages', `${pageErrors.length}`);
check(serverErrors.length === 0, 'no 5xx from telerad', serverErrors.join(', '));
check(foreign.length === 0, 'nothing requested from another origin (works offline)', foreign.slice(0, 5).join(', '));
console.log(`app: ${passed} passed, ${failed} failed`);
process.exit(failed || status ? 1 : 0);
