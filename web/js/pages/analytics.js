// analytics.js - turnaround p50/p90 by priority, site and modality; SLA compliance; volumes
// over time by modality; reader productivity (reads and RVUs per active hour). From the
// aggregate endpoint GET /api/v1/analytics (computed by the server over every read); each
// chart has its numbers as a table and a CSV export.
import * as api from '../api.js';
import { h, put, clear, field, input, select, explain, download, csv, fmtTime, showError } from '../ui.js';
import { loadChartJs, draw } from '../charts.js';

function isoDate(d) {
  return d.toISOString().slice(0, 10);
}

export async function render({ main, me }) {
  const admin = me.role === 'admin';
  const now = new Date();
  const from = input({ type: 'date', value: isoDate(new Date(now.getTime() - 6 * 86400000)) });
  const to = input({ type: 'date', value: isoDate(now) });
  const bucket = select([['', 'Automatic'], ['hour', 'Hour'], ['day', 'Day']]);
  const site = admin ? select([['', 'All sites']]) : null;
  const form = h('form.filters', { 'aria-label': 'Period' },
    field('From', from, { field: 'from' }), field('To (inclusive)', to, { field: 'to' }), field('Volumes per', bucket, { field: 'bucket' }),
    site ? field('Site', site, { field: 'site' }) : null,
    h('div.field', h('button.btn.btn-primary', { type: 'submit' }, 'Show')));
  const cards = h('div.stat-cards', { 'aria-live': 'polite' });
  const grid = h('div.charts');
  const note = h('div');
  put(main, h('div.page-head', h('h1', 'Analytics')),
    h('p.muted', admin ? 'Every site, or one. Turnaround is from the study\'s arrival to the final report; a read met its SLA when the final report was signed by its due time.'
      : `Your site's numbers (${me.site}). Turnaround is from the study's arrival to the final report.`),
    form, note, cards, grid);
  if (site) {
    try {
      for (const s of await api.get('sites')) site.append(h('option', { value: s.id }, `${s.name} (${s.id})`));
    } catch { /* "All sites" only */ }
  }

  let charts = [];
  const Chart = await loadChartJs();
  if (!Chart) {
    put(note, h('div.banner.banner-warn', 'The charting library is not installed here (scripts/web.sh copies it from npm chart.js): the numbers are shown as tables.'));
  }

  function figure(id, title, rows, header, chartSpec) {
    const canvas = h('canvas', { role: 'img', 'aria-label': `${title} (chart; the numbers are in the table below)` });
    const tbl = h('table.data', h('caption.visually-hidden', title),
      h('thead', h('tr', header.map(c => h('th', { scope: 'col' }, c)))),
      h('tbody', rows.map(r => h('tr', r.map(c => h('td', c === null || c === undefined ? '—' : String(c)))))));
    const fig = h('figure.chart.panel', { id, 'aria-labelledby': `${id}-t` },
      h('figcaption', h('span', { id: `${id}-t` }, title),
        h('button.btn.btn-small', { type: 'button', 'aria-label': `Export ${title} as CSV`, on: { click: () => download(`telerad-${id}-${from.value}-${to.value}.csv`, csv([header, ...rows])) } }, 'Export CSV')),
      Chart && rows.length ? h('div.chart-box', canvas) : null,
      rows.length ? h('details.data-table', { open: !Chart }, h('summary', 'Show the numbers'), h('div.table-wrap', tbl)) : h('p.empty', 'No data in this period.'));
    put(grid, fig);
    if (Chart && rows.length) charts.push(draw(Chart, canvas, chartSpec));
  }

  function turnaround(id, title, groups) {
    const rows = groups.filter(g => g.reads).map(g => [g.key, g.reads, g.p50_minutes, g.p90_minutes]);
    figure(id, title, rows, ['group', 'final reports', 'p50 minutes', 'p90 minutes'], {
      labels: rows.map(r => r[0]), yTitle: 'minutes',
      datasets: [{ label: 'p50', data: rows.map(r => r[2]) }, { label: 'p90', data: rows.map(r => r[3]) }],
    });
  }

  function sla(id, title, groups) {
    const rows = groups.filter(g => g.met + g.breached).map(g => [g.key, g.met, g.breached, g.compliance === null ? null : +(g.compliance * 100).toFixed(1)]);
    figure(id, title, rows, ['group', 'met', 'breached', 'compliance %'], {
      labels: rows.map(r => r[0]), yTitle: '% in time', percent: true,
      datasets: [{ label: 'SLA met', data: rows.map(r => r[3]) }],
    });
  }

  async function load() {
    charts.forEach(c => c.destroy());
    charts = [];
    clear(grid);
    clear(cards);
    form.querySelectorAll('.field-error').forEach(e => e.remove());
    const end = new Date(`${to.value}T00:00:00Z`);
    end.setUTCDate(end.getUTCDate() + 1);
    let a;
    try {
      a = await api.get('analytics' + api.query({ from: from.value, to: isoDate(end), bucket: bucket.value, site: site ? site.value : '' }));
    } catch (err) {
      if (err.field) {
        showError(form, err);
      } else {
        put(grid, h('div.banner.banner-error', { role: 'alert' }, explain(err)));
      }
      return;
    }
    const s = a.sla;
    const stat = (label, value) => h('div.stat', h('b', String(value)), label);
    put(cards, 
      stat('studies received', a.volume.received),
      stat('final reports', s.met + s.breached),
      stat('SLA compliance', s.compliance === null ? '—' : `${(s.compliance * 100).toFixed(1)} %`),
      stat('open reads now', s.open),
      stat('open and overdue now', s.open_overdue));
    if (a.truncated) put(note, h('div.banner.banner-warn', 'Too many reads in this period: the numbers cover the first million. Choose a shorter period.'));

    turnaround('tat-priority', 'Turnaround by priority', a.turnaround.by_priority);
    turnaround('tat-site', 'Turnaround by site', a.turnaround.by_site);
    turnaround('tat-modality', 'Turnaround by modality', a.turnaround.by_modality);
    sla('sla-priority', 'SLA compliance by priority', s.by_priority);
    sla('sla-site', 'SLA compliance by site', s.by_site);

    const hourly = a.bucket === 'hour';
    const labels = a.volume.buckets.map(b => hourly ? fmtTime(b) : b.slice(0, 10));
    const mods = a.volume.by_modality;
    const volRows = a.volume.buckets.map((b, i) => [b, ...mods.map(m => m.counts[i])]);
    figure('volume', `Studies received per ${a.bucket} by modality`, mods.length ? volRows : [], ['bucket start (UTC)', ...mods.map(m => m.key)], {
      labels, stacked: true, yTitle: 'studies',
      datasets: mods.map(m => ({ label: m.key, data: m.counts })),
    });

    if (a.readers) {
      const rows = a.readers.map(r => [r.reader, r.reads, +r.rvu.toFixed(2), r.active_hours, +r.reads_per_hour.toFixed(2), +r.rvu_per_hour.toFixed(2)]);
      figure('productivity', 'Reader productivity (per active hour)', rows, ['reader', 'final reports', 'RVUs', 'active hours', 'reads per hour', 'RVUs per hour'], {
        labels: rows.map(r => r[0]), yTitle: 'per hour',
        datasets: [{ label: 'reads per hour', data: rows.map(r => r[4]) }, { label: 'RVUs per hour', data: rows.map(r => r[5]) }],
      });
    }
    grid.setAttribute('data-loaded', a.generated_at);
  }

  form.addEventListener('submit', e => { e.preventDefault(); load(); });
  await load();
  return () => charts.forEach(c => c.destroy());
}
