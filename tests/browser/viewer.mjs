// viewer.mjs - the OHIF viewer served by telerad, in a real headless Chromium: the study list
// shows a stored study, and opening it paints an image (the largest canvas is not blank).
//
//   [TELERAD_USER=admin TELERAD_PASSWORD=...] \
//     node viewer.mjs BASE_URL STUDY_UID STUDY_TEXT ARTIFACT_DIR
//
// BASE_URL is telerad's HTTP root (http://127.0.0.1:PORT); STUDY_TEXT is something the study
// list shows for the study (its description). With TELERAD_USER, the browser signs in first
// (POST /api/v1/auth/login), as a person would before opening the viewer. Screenshots go to
// ARTIFACT_DIR (studylist.png, viewer.png). Prints one line per check and a closing
// "N passed, N failed"; exits 0 when all held, 1 otherwise, 77 when Chromium or playwright-core
// is missing. Every browser console error and every failed request is printed; a 5xx from
// telerad, any 4xx to a DICOMweb request, or a missing file of the viewer fails the test.
//
// Debian's Chromium is driven by playwright-core (never `playwright install`): a fresh profile
// per run, no GPU, no background traffic.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const [base, studyUid, studyText, artifacts] = process.argv.slice(2);
if (!artifacts) {
  console.error('usage: node viewer.mjs BASE_URL STUDY_UID STUDY_TEXT ARTIFACT_DIR');
  process.exit(2);
}
if (!fs.existsSync(CHROMIUM)) {
  console.log(`SKIP: no Chromium at ${CHROMIUM} (Debian: apt-get install chromium)`);
  process.exit(77);
}
let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  console.log('SKIP: playwright-core is not installed (npm ci at the repository root): ' +
              e.message);
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
  viewport: { width: 1280, height: 800 },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = context.pages()[0] || (await context.newPage());

// What the page asked of telerad, and what went wrong.
const origin = new URL(base).origin;
const consoleErrors = [];
const failedRequests = [];
const foreignRequests = [];
const requests = { qido: 0, metadata: 0, frames: 0, bulkdata: 0, thumbnail: 0, rendered: 0,
                   viewer: 0, other: 0 };
page.on('request', req => {
  const url = req.url();
  if (!url.startsWith(origin) && !/^(data|blob):/.test(url)) foreignRequests.push(url);
});
page.on('console', msg => {
  if (msg.type() === 'error') consoleErrors.push(msg.text().slice(0, 500));
});
page.on('pageerror', err => {
  consoleErrors.push(`uncaught: ${String(err.stack || err).slice(0, 500)}`);
});
// Cornerstone stops reading a frame once Content-Length bytes arrived and never reads to the
// end of the stream: Chromium then reports the request as aborted although it was used.
const answered = new Set();
let abortedAfterAnswer = 0;
page.on('requestfailed', req => {
  if (req.failure()?.errorText === 'net::ERR_ABORTED' && answered.has(req.url())) {
    abortedAfterAnswer++;
    return;
  }
  failedRequests.push({ url: req.url(), status: 0, error: req.failure()?.errorText,
                        method: req.method(), headers: req.headers() });
});
page.on('response', async res => {
  const url = res.url();
  if (!url.startsWith(origin)) return;
  if (res.status() === 200) answered.add(url);
  const p = new URL(url).pathname;
  if (p.startsWith('/viewer/')) requests.viewer++;
  else if (/\/metadata$/.test(p)) requests.metadata++;
  else if (/\/frames\//.test(p)) requests.frames++;
  else if (/\/bulkdata\//.test(p)) requests.bulkdata++;
  else if (/\/thumbnail$/.test(p)) requests.thumbnail++;
  else if (/\/rendered$/.test(p)) requests.rendered++;
  else if (/^\/dicom-web\/(studies|series|instances)/.test(p)) requests.qido++;
  else requests.other++;
  if (res.status() >= 400) {
    let body = '';
    try {
      body = (await res.text()).slice(0, 300);
    } catch {
      /* the body is gone with a navigation */
    }
    failedRequests.push({ url, status: res.status(), method: res.request().method(),
                          headers: res.request().headers(), body });
  }
});

// Samples the largest canvas: the share of pixels brighter than near-black, and the variance.
async function sampleCanvas() {
  return page.evaluate(() => {
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
    for (let i = 0; i < data.length; i += 4 * 7) { // every 7th pixel is plenty
      const v = (data[i] + data[i + 1] + data[i + 2]) / 3;
      n++;
      if (v > 16) lit++;
      sum += v;
      sum2 += v * v;
    }
    const mean = sum / n;
    return { width: c.width, height: c.height, canvases: canvases.length, lit: lit / n, mean,
             variance: sum2 / n - mean * mean };
  });
}

const shot = name => page.screenshot({ path: path.join(artifacts, name) });
let status = 0;
try {
  // 0. Sign in: the session cookie then rides along with the viewer's DICOMweb requests.
  const user = process.env.TELERAD_USER;
  if (user) {
    const res = await context.request.post(`${base}/api/v1/auth/login`, {
      data: { username: user, password: process.env.TELERAD_PASSWORD },
    });
    if (res.status() === 404) {
      console.log('      (no /api/v1/auth/login: this telerad has no accounts)');
    } else {
      check(res.ok(), `signed in as ${user} (session cookie)`,
            `${res.status()} ${(await res.text()).slice(0, 300)}`);
    }
  }

  // 1. The study list shows the study.
  let t0 = Date.now();
  await page.goto(`${base}/viewer/`, { waitUntil: 'domcontentloaded' });
  let listed = false;
  try {
    await page.getByText(studyText, { exact: false }).first().waitFor({ timeout: 60000 });
    listed = true;
  } catch (e) {
    /* reported below */
  }
  const listTime = (Date.now() - t0) / 1000;
  await shot('studylist.png');
  check(listed, `study list shows "${studyText}" (${listTime.toFixed(1)} s)`,
        'not found on the page');

  // 2. The study opens and an image is painted.
  t0 = Date.now();
  await page.goto(`${base}/viewer/viewer?StudyInstanceUIDs=${studyUid}`,
                  { waitUntil: 'domcontentloaded' });
  let sample = null;
  let painted = false;
  while (Date.now() - t0 < 90000) {
    sample = await sampleCanvas().catch(() => null);
    if (sample && sample.lit > 0.05 && sample.variance > 0) {
      painted = true;
      break;
    }
    await page.waitForTimeout(200);
  }
  const imageTime = (Date.now() - t0) / 1000;
  // Let the rest (thumbnails, prefetch) settle before the screenshot and the request tally.
  await page.waitForTimeout(1500);
  await shot('viewer.png');
  check(painted, `viewer paints the image (${imageTime.toFixed(1)} s to first image)`,
        `largest canvas ${JSON.stringify(sample)}`);
  if (sample) {
    console.log(`      canvas ${sample.width}x${sample.height} of ${sample.canvases}: ` +
                `${(sample.lit * 100).toFixed(1)}% non-black, mean ${sample.mean.toFixed(1)}, ` +
                `variance ${sample.variance.toFixed(1)}`);
  }
  console.log(`time-to-first-image ${imageTime.toFixed(2)} s; study list ${listTime.toFixed(2)} s`);
} catch (e) {
  check(false, 'browser session', String(e.stack || e));
  await shot('error.png').catch(() => {});
  status = 1;
} finally {
  await context.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}

// What the browser saw go wrong.
console.log(`requests to telerad: ${JSON.stringify(requests)}`);
for (const e of consoleErrors) console.log(`console error: ${e}`);
for (const r of failedRequests) {
  console.log(`failed request: ${r.method} ${r.url} -> ${r.status || r.error}` +
              (r.body ? ` ${JSON.stringify(r.body)}` : ''));
  if (r.url.startsWith(origin)) console.log(`      request headers ${JSON.stringify(r.headers)}`);
}
const ours = failedRequests.filter(r => r.url.startsWith(origin));
const serverErrors = ours.filter(r => r.status >= 500);
check(serverErrors.length === 0, 'no 5xx from telerad',
      serverErrors.map(r => `${r.status} ${r.url}`).join(', '));
const dicomwebErrors = ours.filter(r => r.status < 500 &&
                                       !new URL(r.url).pathname.startsWith('/viewer/'));
check(dicomwebErrors.length === 0, 'every DICOMweb request answered (no 4xx, none failed)',
      dicomwebErrors.map(r => `${r.status || r.error} ${r.url}`).join(', '));
const missing = ours.filter(r => r.status === 404 &&
                               new URL(r.url).pathname.startsWith('/viewer/'));
check(missing.length === 0, 'every file of the viewer found (paths rewritten for /viewer/)',
      missing.map(r => r.url).join(', '));
if (abortedAfterAnswer) {
  console.log(`      (${abortedAfterAnswer} answered requests were then cancelled by the viewer)`);
}
check(requests.qido > 0 && requests.metadata > 0 && (requests.frames > 0 || requests.bulkdata > 0),
      'OHIF used QIDO-RS, WADO-RS metadata and frames', JSON.stringify(requests));
check(foreignRequests.length === 0, 'nothing requested from another origin (works offline)',
      foreignRequests.slice(0, 10).join(', '));
console.log(`viewer: ${passed} passed, ${failed} failed`);
process.exit(failed || status ? 1 : 0);
