// charts.js - Chart.js (npm chart.js, copied into the served folder by scripts/web.sh as
// /vendor/chart.umd.min.js; nothing is fetched from elsewhere). Loaded on first use; when it
// is missing, the pages show their data tables only.
let loading = null;

export function loadChartJs() {
  if (window.Chart) return Promise.resolve(window.Chart);
  if (!loading) {
    loading = new Promise(resolve => {
      const s = document.createElement('script');
      s.src = '/vendor/chart.umd.min.js';
      s.onload = () => resolve(window.Chart || null);
      s.onerror = () => resolve(null);
      document.head.append(s);
    });
  }
  return loading;
}

// Colours that stay apart for common colour-blindness (Okabe-Ito), darkened for contrast.
export const palette = ['#0072b2', '#d55e00', '#009e73', '#cc79a7', '#e69f00', '#56b4e9', '#7a6a00', '#333333'];

/** A bar or line chart; returns the Chart (call .destroy() when the page goes). */
export function draw(Chart, canvas, { type = 'bar', labels, datasets, stacked = false, yTitle = '', percent = false }) {
  return new Chart(canvas, {
    type,
    data: {
      labels,
      datasets: datasets.map((d, i) => ({
        backgroundColor: palette[i % palette.length],
        borderColor: palette[i % palette.length],
        borderWidth: type === 'line' ? 2 : 0,
        maxBarThickness: 56,
        ...d,
      })),
    },
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      plugins: {
        legend: { position: 'bottom' },
        tooltip: percent ? { callbacks: { label: c => `${c.dataset.label}: ${c.parsed.y === null ? '—' : c.parsed.y.toFixed(1) + ' %'}` } } : {},
      },
      scales: {
        x: { stacked },
        y: { stacked, beginAtZero: true, title: { display: Boolean(yTitle), text: yTitle }, ...(percent ? { max: 100 } : {}) },
      },
    },
  });
}
