#!/usr/bin/env node
// viewer-test.js: drives the OHIF Viewer (served by serve.js) in Debian's chromium through puppeteer-core and checks
// what a radiologist would see of the node's results. Run by run.sh; environment:
//   CHROMIUM          browser binary (never downloaded)
//   VIEWER_URL        http://127.0.0.1:PORT of serve.js
//   STUDY_UID         Study Instance UID of the study the node processed
//   OUT_DIR           where screenshots (NN-name.png) and report.json go
//   USER_DATA_DIR     a fresh Chromium profile folder
//   HEADFUL=1         show the browser (for debugging on a desktop)
// Exit status 0 when every check passes; 1 with the failed checks listed otherwise.
'use strict';
const fs = require('fs');
const path = require('path');
const puppeteer = require('puppeteer-core');

const env = (k, d) => (process.env[k] !== undefined && process.env[k] !== '' ? process.env[k] : d);
const chromium = env('CHROMIUM', '/usr/bin/chromium');
const base = env('VIEWER_URL');
const studyUID = env('STUDY_UID');
const outDir = env('OUT_DIR');
const userDataDir = env('USER_DATA_DIR', fs.mkdtempSync(path.join(require('os').tmpdir(), 'nephra-chromium-')));
const SR_DESC = 'Nephra AI kidney findings';
const HEATMAP_DESC = 'Nephra AI heatmaps';
if (!base || !studyUID || !outDir) {
  console.error('viewer-test.js: VIEWER_URL, STUDY_UID and OUT_DIR must be set');
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const t0 = Date.now();
const log = (...a) => console.log(`[viewer ${((Date.now() - t0) / 1000).toFixed(1)}s]`, ...a);
const report = { ohif: null, chromium: null, studyUID, checks: [], console: [], screenshots: [] };
function check(name, ok, detail) {
  report.checks.push({ name, ok: !!ok, detail });
  log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ': ' + detail : ''}`);
  return ok;
}

// Console messages that are noise here, not failures: software WebGL, OHIF's own timing/debug output.
const benign = [/swiftshader/i, /software rasterizer/i, /GPU rendering may be slow/i, /^\[\]Automatic fallback/,
  /favicon/i, /service ?worker/i, /manifest/i, /DevTools/i];
// Console messages that mean the viewer broke.
const fatal = [/Error Boundary/i, /Something went wrong/i, /Uncaught/i, /ChunkLoadError/i, /Failed to fetch dynamically/i];

async function shot(page, name) {
  const file = path.join(outDir, name);
  await page.screenshot({ path: file });
  report.screenshots.push(name);
  log('screenshot', name);
}

async function newPage(browser, label) {
  const page = await browser.newPage();
  await page.setViewport({ width: 1600, height: 1000 });
  // The viewer's onboarding tour ("Scrolling Through Images") would cover the viewport: mark it as seen.
  await page.evaluateOnNewDocument(() => {
    try {
      localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']));
    } catch {
      /* error pages have no localStorage */
    }
  });
  const msgs = [];
  page.on('console', (m) => {
    const text = m.text();
    const entry = { page: label, type: m.type(), text: text.slice(0, 500) };
    if (benign.some((re) => re.test(text))) return;
    if (m.type() === 'error' || m.type() === 'warning' || fatal.some((re) => re.test(text))) {
      report.console.push(entry);
      msgs.push(entry);
    }
  });
  page.on('pageerror', (e) => {
    const entry = { page: label, type: 'pageerror', text: String(e && e.message).slice(0, 500) };
    report.console.push(entry);
    msgs.push(entry);
  });
  page.on('requestfailed', (r) => {
    const u = r.url();
    if (u.startsWith(base)) {
      const entry = { page: label, type: 'requestfailed', text: `${u} ${r.failure() && r.failure().errorText}` };
      report.console.push(entry);
      msgs.push(entry);
    }
  });
  page.on('response', (r) => {
    if (r.url().startsWith(base) && r.status() >= 400) {
      const entry = { page: label, type: 'http', text: `${r.status()} ${r.url()}` };
      report.console.push(entry);
      msgs.push(entry);
    }
  });
  return { page, msgs };
}
const fatalIn = (msgs) => msgs.filter((m) => m.type === 'pageerror' || fatal.some((re) => re.test(m.text)));

async function waitText(page, text, timeout = 30000) {
  try {
    await page.waitForFunction((t) => document.body && document.body.innerText.includes(t), { timeout, polling: 250 }, text);
    return true;
  } catch {
    return false;
  }
}

// Series panel entries of the viewer: [{series, modality, description}]
const seriesPanel = (page) =>
  page.$$eval('[data-series]', (els) =>
    els.map((e) => ({
      series: e.getAttribute('data-series'),
      modality: (e.querySelector('[data-cy=series-modality-label]') || {}).innerText || '',
      description: (e.querySelector('[data-cy=series-description-label]') || {}).innerText || '',
      thumbnail: e.getAttribute('data-cy'),
    })));

// What the main viewport shows: overlay text, and colour statistics of its canvas (cornerstone draws each viewport
// into a 2D canvas). colourFraction: share of sampled non-black pixels that are clearly not grey (the heatmap).
const viewportState = (page) =>
  page.evaluate(() => {
    const vp = document.querySelector('[data-cy=viewport-pane]') || document;
    const canvas = vp.querySelector('canvas');
    const out = { overlay: '', canvas: null, annotations: 0, labels: [] };
    out.overlay = ['top-left', 'top-right', 'bottom-left', 'bottom-right']
      .map((p) => (vp.querySelector(`[data-cy=viewport-overlay-${p}]`) || {}).innerText || '')
      .join(' | ')
      .replace(/\s+/g, ' ');
    const svg = vp.querySelector('svg.svg-layer');
    if (svg) {
      out.annotations = svg.querySelectorAll('[data-annotation-uid]').length;
      out.shapes = svg.querySelectorAll('ellipse, path, polyline, polygon, circle, line').length;
      out.labels = [...svg.querySelectorAll('text')].map((t) => t.textContent);
      // the region's outline: the largest drawn shape (the label's text and its link line are smaller or not shapes)
      const shapes = [...svg.querySelectorAll('path, polyline, polygon, ellipse')];
      const area = (e) => { const b = e.getBoundingClientRect(); return b.width * b.height; };
      const shape = shapes.sort((a, b) => area(b) - area(a))[0];
      if (shape && canvas) {
        const r = shape.getBoundingClientRect();
        const c = canvas.getBoundingClientRect();
        out.regionBox = { x: r.x - c.x, y: r.y - c.y, width: r.width, height: r.height, canvas: [c.width, c.height] };
        out.regionInside = r.width > 2 && r.height > 2 && r.left >= c.left && r.top >= c.top &&
          r.right <= c.right && r.bottom <= c.bottom;
      }
    }
    if (canvas) {
      try {
        const ctx = canvas.getContext('2d');
        const { width, height } = canvas;
        const d = ctx.getImageData(0, 0, width, height).data;
        let lit = 0;
        let colour = 0;
        let n = 0;
        for (let i = 0; i < d.length; i += 4 * 97) {
          n++;
          const [r, g, b] = [d[i], d[i + 1], d[i + 2]];
          if (r + g + b > 60) lit++;
          if (Math.max(r, g, b) - Math.min(r, g, b) > 60) colour++;
        }
        out.canvas = { width, height, litFraction: lit / n, colourFraction: lit ? colour / lit : 0 };
      } catch (e) {
        out.canvas = { error: String(e) };
      }
    }
    return out;
  });

async function openSeries(page, number) {
  const el = await page.waitForSelector(`[data-series="${number}"]`, { timeout: 20000 });
  await el.click({ count: 2 });
}

async function settle(page, ms = 2000) {
  try {
    await page.waitForNetworkIdle({ idleTime: 500, timeout: 20000 });
  } catch {
    /* keeps polling */
  }
  await sleep(ms);
}

async function main() {
  try {
    report.ohif = JSON.parse(fs.readFileSync(require.resolve('@ohif/app/package.json'), 'utf8')).version;
  } catch {
    /* not fatal */
  }
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: env('HEADFUL', '0') !== '1',
    userDataDir,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--disable-default-apps', '--disable-extensions',
      // WebGL through SwiftShader (software): cornerstone renders with WebGL, and without this flag Chromium
      // refuses the automatic software fallback.
      '--enable-unsafe-swiftshader', '--use-angle=swiftshader', '--window-size=1600,1000',
    ],
  });
  report.chromium = await browser.version();
  log('browser', report.chromium, 'OHIF', report.ohif);
  try {
    // 1. Study list
    {
      const { page, msgs } = await newPage(browser, 'study-list');
      await page.goto(`${base}/`, { waitUntil: 'networkidle2', timeout: 60000 });
      const listed = await waitText(page, 'Pancreas-CT-CB_001', 30000);
      await settle(page, 1000);
      const text = await page.evaluate(() => document.body.innerText);
      check('study list shows the study', listed, listed ? '' : text.slice(0, 300));
      check('study list shows modalities CT, OT/SC and SR', /CT\\(OT|SC)\\SR|SR/.test(text) && /\bSR\b/.test(text),
        (text.match(/[A-Z]{2}(\\[A-Z]{2})+/) || [''])[0]);
      await shot(page, '01-study-list.png');
      check('study list without fatal console errors', fatalIn(msgs).length === 0, fatalIn(msgs).map((m) => m.text).join('; '));
      await page.close();
    }

    // 2. Viewer: series panel and the CT
    const viewerUrl = `${base}/viewer?StudyInstanceUIDs=${studyUID}`;
    let srSeries = null;
    let heatSeries = null;
    {
      const { page, msgs } = await newPage(browser, 'viewer');
      await page.goto(viewerUrl, { waitUntil: 'networkidle2', timeout: 90000 });
      await page.waitForSelector('[data-series]', { timeout: 30000 }).catch(() => {});
      await settle(page, 2000);
      const panel = await seriesPanel(page);
      report.seriesPanel = panel;
      log('series panel:', panel.map((s) => `${s.modality} ${s.description} (S:${s.series})`).join('; '));
      srSeries = panel.find((s) => s.modality === 'SR' && s.description === SR_DESC);
      heatSeries = panel.find((s) => s.description === HEATMAP_DESC);
      check('series panel lists the CT', panel.some((s) => s.modality === 'CT'));
      check(`series panel lists the SR "${SR_DESC}"`, !!srSeries);
      check(`series panel lists the heatmap series "${HEATMAP_DESC}"`, !!heatSeries, heatSeries && `modality ${heatSeries.modality}`);
      const ct = await viewportState(page);
      report.ctViewport = ct;
      check('CT slice rendered in the viewport', ct.canvas && ct.canvas.litFraction > 0.05, JSON.stringify(ct.canvas));
      await shot(page, '02-viewer-ct.png');

      // 3. Heatmap series
      if (heatSeries) {
        await openSeries(page, heatSeries.series);
        await settle(page, 3000);
        const hm = await viewportState(page);
        report.heatmapViewport = hm;
        check('heatmap opened in the viewport', /\(1\/5\)|\/5\)/.test(hm.overlay) || hm.canvas, hm.overlay);
        check('heatmap shows colour (not a plain grey CT)', hm.canvas && hm.canvas.colourFraction > 0.02, JSON.stringify(hm.canvas));
        await shot(page, '03-heatmap-1.png');
        // next images of the series: scroll down in the viewport
        const box = await (await page.$('[data-cy=viewport-pane]')).boundingBox();
        await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
        for (let i = 0; i < 2; i++) {
          await page.mouse.wheel({ deltaY: 120 });
          await sleep(700);
        }
        await settle(page, 1500);
        report.heatmapViewport3 = await viewportState(page);
        await shot(page, '04-heatmap-3.png');
      }
      check('viewer without fatal console errors', fatalIn(msgs).length === 0, fatalIn(msgs).map((m) => m.text).join('; '));
      await page.close();
    }

    // 4. The node's SR, in a fresh page (an SR that broke the viewer must not spoil the other checks)
    const openSR = async (number, label, screenshot) => {
      const { page, msgs } = await newPage(browser, label);
      await page.goto(viewerUrl, { waitUntil: 'networkidle2', timeout: 90000 });
      await page.waitForSelector('[data-series]', { timeout: 30000 }).catch(() => {});
      await settle(page, 1500);
      await openSeries(page, number);
      await settle(page, 1000);
      // the SR viewport loads the referenced CT, then draws the SR's annotations: wait for them (or for a crash)
      const poll = async (tries) => {
        let state = await viewportState(page);
        for (let i = 0; i < tries && !state.annotations && !fatalIn(msgs).length; i++) {
          await sleep(500);
          state = await viewportState(page);
        }
        return state;
      };
      const drawnAtOnce = (await poll(10)).annotations > 0;
      // A reader opens the measurements panel beside the image. With Chromium 156.0.8078.114 headless, OHIF 3.13
      // draws the SR's regions only once the viewport is laid out again, which opening the panel does.
      const btn = await page.$('[data-cy=trackedMeasurements-btn]');
      if (btn) {
        await btn.click();
        await sleep(1500);
      }
      const vp = await poll(20);
      vp.drawnBeforePanelOpened = drawnAtOnce;
      const text = await page.evaluate(() => document.body.innerText);
      vp.measurementsPanel = (text.match(/Measurements \(\d+\)[^\n]*(\n[^\n]*){0,3}/) || [''])[0].replace(/\n/g, ' | ');
      vp.fatal = fatalIn(msgs).map((m) => m.text);
      vp.warnings = msgs.filter((m) => /SCOORD|skipping|not currently supported|rehydratable/i.test(m.text)).map((m) => m.text);
      await shot(page, screenshot);
      await page.close();
      return vp;
    };
    if (srSeries) {
      const sr = await openSR(srSeries.series, 'sr', '05-sr.png');
      report.srViewport = sr;
      log('SR viewport:', JSON.stringify({ overlay: sr.overlay, labels: sr.labels, fatal: sr.fatal, panel: sr.measurementsPanel,
        drawnBeforePanelOpened: sr.drawnBeforePanelOpened }));
      check('SR opens without breaking the viewer', sr.fatal.length === 0, sr.fatal.join('; '));
      check("SR finding's region drawn on the referenced CT image", sr.annotations > 0 && sr.shapes > 0,
        `${sr.annotations} annotations, ${sr.shapes} shapes`);
      check('the region lies on the image', sr.regionInside === true, JSON.stringify(sr.regionBox));
      check('SR finding labelled with its probability', sr.labels.some((l) => /Probability/.test(l)), sr.labels.join(' / '));
    }
  } finally {
    await browser.close();
  }
}

main()
  .catch((e) => check('viewer test ran to the end', false, e && e.stack))
  .finally(() => {
    report.seconds = (Date.now() - t0) / 1000;
    fs.writeFileSync(path.join(outDir, 'report.json'), JSON.stringify(report, null, 1));
    const failed = report.checks.filter((c) => !c.ok);
    if (failed.length) {
      console.error(`viewer-test.js: ${failed.length} check(s) failed:\n` + failed.map((c) => `  - ${c.name}: ${c.detail || ''}`).join('\n'));
      process.exit(1);
    }
    log(`all ${report.checks.length} checks passed`);
    process.exit(0);
  });
