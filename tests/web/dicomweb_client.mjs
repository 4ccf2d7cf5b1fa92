// telerad's DICOMweb driven by npm's dicomweb-client 0.11 (the client OHIF uses), in Node.
//
// usage: node dicomweb_client.mjs BASE_URL PLAN.json OUT_DIR
//
// PLAN.json (written by dicomweb_client.py) names the studies, series and instances the server
// holds and a file to store. Each call's result is checked here for its shape (one "ok ..." or
// "FAIL ..." line per check) and written to OUT_DIR for dicomweb_client.py to compare with
// pydicom. Exit 0 when every check here held, 1 otherwise.
//
// dicomweb-client uses the browser's XMLHttpRequest; Node has none, so a small one on node:http
// stands in (the parts of XMLHttpRequest the client uses: open, setRequestHeader, send,
// responseType, readyState, status, response, getResponseHeader, getAllResponseHeaders and the
// onreadystatechange / onload* / onprogress handlers).
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..');
const dwc = require(path.join(repo, 'node_modules', 'dicomweb-client'));

function bytesOf(view) {
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

class NodeXMLHttpRequest {
  constructor() {
    this.readyState = 0;
    this.status = 0;
    this.response = null;
    this.responseType = '';
    this.headers = {};
    this.responseHeaders = {};
    this.onreadystatechange = null;
  }

  open(method, url) {
    this.method = method.toUpperCase();
    this.url = new URL(url);
    this.readyState = 1;
  }

  setRequestHeader(name, value) {
    this.headers[name] = value;
  }

  getResponseHeader(name) {
    const v = this.responseHeaders[name.toLowerCase()];
    return v === undefined ? null : String(v);
  }

  getAllResponseHeaders() {
    return Object.entries(this.responseHeaders).map(([k, v]) => `${k}: ${v}`).join('\r\n');
  }

  send(data) {
    let body = null;
    if (data instanceof ArrayBuffer) body = Buffer.from(data);
    else if (ArrayBuffer.isView(data)) body = bytesOf(data);
    else if (typeof data === 'string') body = Buffer.from(data);
    const headers = { ...this.headers };
    if (body) headers['Content-Length'] = body.length;
    if (this.onloadstart) this.onloadstart();
    const req = http.request(this.url, { method: this.method, headers, agent: agent }, (res) => {
      const chunks = [];
      let loaded = 0;
      res.on('data', (c) => {
        chunks.push(c);
        loaded += c.length;
        if (this.onprogress) this.onprogress({ loaded, lengthComputable: false });
      });
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        this.status = res.statusCode;
        this.responseHeaders = res.headers;
        if (this.responseType === 'arraybuffer') {
          this.response = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length);
        } else if (this.responseType === 'json') {
          try {
            this.response = buf.length ? JSON.parse(buf.toString('utf8')) : null;
          } catch (e) {
            this.response = null;
          }
        } else {
          this.response = buf.toString('utf8');
        }
        this.responseText = typeof this.response === 'string' ? this.response : undefined;
        this.readyState = 4;
        if (this.onreadystatechange) this.onreadystatechange();
        if (this.onload) this.onload();
        if (this.onloadend) this.onloadend();
      });
    });
    req.on('error', (e) => {
      this.status = 0;
      this.readyState = 4;
      this.error = e;
      if (this.onreadystatechange) this.onreadystatechange();
      if (this.onerror) this.onerror(e);
    });
    if (body) req.write(body);
    req.end();
  }
}

// One kept connection, as a browser would use.
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
globalThis.XMLHttpRequest = NodeXMLHttpRequest;

const [baseUrl, planPath, outDir] = process.argv.slice(2);
const plan = JSON.parse(fs.readFileSync(planPath, 'utf8'));
let failed = 0;
let passed = 0;

function check(ok, what, detail = '') {
  if (ok) {
    passed++;
    console.log(`ok    ${what}`);
  } else {
    failed++;
    console.log(`FAIL  ${what}${detail ? ': ' + detail : ''}`);
  }
}

function value(attr, tag) {
  const a = attr[tag];
  return a && a.Value ? a.Value : undefined;
}

function save(name, data) {
  const file = path.join(outDir, name);
  if (data instanceof ArrayBuffer) fs.writeFileSync(file, Buffer.from(data));
  else if (ArrayBuffer.isView(data)) fs.writeFileSync(file, bytesOf(data));
  else fs.writeFileSync(file, JSON.stringify(data));
}

async function step(what, fn) {
  try {
    await fn();
  } catch (e) {
    check(false, what, `${e.message}${e.status ? ' (HTTP ' + e.status + ')' : ''}`);
  }
}

// The server's accounts: an API key as a Bearer token (plan.headers), as a script would.
const client = new dwc.api.DICOMwebClient({ url: baseUrl, headers: plan.headers || {} });

await step('searchForStudies', async () => {
  const studies = await client.searchForStudies();
  const uids = studies.map((s) => value(s, '0020000D')[0]).sort();
  check(JSON.stringify(uids) === JSON.stringify(Object.keys(plan.studies).sort()),
    `searchForStudies: the ${uids.length} studies`, JSON.stringify(uids));
  save('studies.json', studies);
  const name = plan.search.patientName;
  const some = await client.searchForStudies({ queryParams: { PatientName: name } });
  const prefix = name.replace('*', '').toLowerCase();
  check(some.length === plan.search.count && some.every((s) =>
    value(s, '00100010')[0].Alphabetic.toLowerCase().startsWith(prefix)),
  `searchForStudies({PatientName: '${name}'}): ${plan.search.count} studies`,
  JSON.stringify(some.length));
  const paged = [];
  for (let offset = 0; offset < uids.length; offset += 2) {
    const page = await client.searchForStudies({ queryParams: { limit: 2, offset } });
    paged.push(...page.map((s) => value(s, '0020000D')[0]));
  }
  check(JSON.stringify(paged.sort()) === JSON.stringify(uids),
    'searchForStudies with limit=2 and offset: every study once', JSON.stringify(paged));
});

for (const [study, info] of Object.entries(plan.studies)) {
  await step(`searchForSeries ${study}`, async () => {
    const series = await client.searchForSeries({ studyInstanceUID: study });
    const uids = series.map((s) => value(s, '0020000E')[0]).sort();
    check(JSON.stringify(uids) === JSON.stringify(Object.keys(info.series).sort()),
      `searchForSeries(${study.slice(0, 20)}…): ${uids.length} series`, JSON.stringify(uids));
  });
  await step(`searchForInstances ${study}`, async () => {
    const all = await client.searchForInstances({ studyInstanceUID: study });
    const want = Object.values(info.series).flat().sort();
    const got = all.map((s) => value(s, '00080018')[0]).sort();
    check(JSON.stringify(got) === JSON.stringify(want),
      `searchForInstances(study): ${want.length} instances`, JSON.stringify(got.length));
    for (const [series, sops] of Object.entries(info.series)) {
      const some = await client.searchForInstances({ studyInstanceUID: study,
        seriesInstanceUID: series });
      const g = some.map((s) => value(s, '00080018')[0]).sort();
      check(JSON.stringify(g) === JSON.stringify([...sops].sort()),
        `searchForInstances(study, series ${series.slice(-8)}): ${sops.length} instances`);
    }
  });
  await step(`retrieveStudyMetadata ${study}`, async () => {
    const meta = await client.retrieveStudyMetadata({ studyInstanceUID: study });
    const want = Object.values(info.series).flat().sort();
    check(JSON.stringify(meta.map((m) => value(m, '00080018')[0]).sort()) === JSON.stringify(want),
      `retrieveStudyMetadata(${study.slice(0, 20)}…): ${want.length} instances`);
    save(`metadata-${study}.json`, meta);
  });
}

const [study, series] = [plan.frames.study, plan.frames.series];
await step('retrieveSeriesMetadata', async () => {
  const meta = await client.retrieveSeriesMetadata({ studyInstanceUID: study,
    seriesInstanceUID: series });
  check(meta.length === plan.studies[study].series[series].length &&
    meta.every((m) => m['7FE00010'] && m['7FE00010'].BulkDataURI),
  `retrieveSeriesMetadata: ${meta.length} instances, PixelData as BulkDataURI`);
});

await step('retrieveInstanceFrames', async () => {
  for (const f of plan.frames.instances) {
    const opts = { studyInstanceUID: f.study, seriesInstanceUID: f.series, sopInstanceUID: f.sop,
      frameNumbers: f.frames };
    if (f.mediaTypes) opts.mediaTypes = f.mediaTypes;
    const frames = await client.retrieveInstanceFrames(opts);
    check(Array.isArray(frames) && frames.length === f.frames.length,
      `retrieveInstanceFrames(${f.what}, frames ${f.frames}): ${frames.length} frames`);
    frames.forEach((fr, i) => save(`frame-${f.sop}-${f.frames[i]}.bin`, fr));
  }
});

await step('retrieveInstanceRendered', async () => {
  const r = plan.rendered;
  const jpeg = await client.retrieveInstanceRendered({ studyInstanceUID: r.study,
    seriesInstanceUID: r.series, sopInstanceUID: r.sop });
  const j = new Uint8Array(jpeg instanceof ArrayBuffer ? jpeg : jpeg[0]);
  check(j[0] === 0xff && j[1] === 0xd8, 'retrieveInstanceRendered: a JPEG by default');
  const png = await client.retrieveInstanceRendered({ studyInstanceUID: r.study,
    seriesInstanceUID: r.series, sopInstanceUID: r.sop, mediaTypes: [{ mediaType: 'image/png' }],
    queryParams: { viewport: '32,32' } });
  const p = new Uint8Array(png instanceof ArrayBuffer ? png : png[0]);
  check(p[0] === 0x89 && p[1] === 0x50,
    'retrieveInstanceRendered(image/png, viewport=32,32): a PNG');
  save('rendered.png', p);
});

await step('storeInstances', async () => {
  const bytes = fs.readFileSync(plan.store.file);
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
  const resp = await client.storeInstances({ datasets: [ab] });
  const text = typeof resp === 'string' ? resp : JSON.stringify(resp);
  const j = typeof resp === 'string' && resp ? JSON.parse(resp) : resp;
  const refs = j && j['00081199'] ? j['00081199'].Value : [];
  check(refs.length === 1 && value(refs[0], '00081155')[0] === plan.store.sop,
    'storeInstances: stored, ReferencedSOPSequence names the instance', text.slice(0, 300));
  const back = await client.retrieveInstance({ studyInstanceUID: plan.store.study,
    seriesInstanceUID: plan.store.series, sopInstanceUID: plan.store.sop });
  const b = new Uint8Array(back);
  check(b.length > 132 && String.fromCharCode(...b.slice(128, 132)) === 'DICM',
    `retrieveInstance of the stored instance: a Part 10 file of ${b.length} bytes`);
  save('retrieved.dcm', b);
});

agent.destroy();
console.log(`dicomweb-client: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
