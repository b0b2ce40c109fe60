// The status page in headless Chromium: usage node status-page-test.js URL SLICE.dcm JUNK OUT_DIR
'use strict';
const path = require('path');
const puppeteer = require('puppeteer-core');

const [url, slice, junk, out] = process.argv.slice(2);
const problems = [];
const check = (ok, what) => {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
  if (!ok) problems.push(what);
};

(async () => {
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || 'chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({width: 1280, height: 900});
    const errors = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()}`));

    const status = await (await fetch(new URL('status.json', url))).json();
    await page.goto(url, {waitUntil: 'networkidle0'});
    await page.waitForSelector('#rounds tr.round', {timeout: 15000});
    const health = await page.$eval('#health', (e) => e.textContent);
    check(health === 'ready', `readiness shown (${health})`);
    const row = await page.$eval('#rounds tr.round', (tr) => [...tr.cells].map((c) => c.textContent));
    check(status.rounds.length > 0 && row[0] === status.rounds[0].study, `the study's hashed key listed (${row[0]})`);
    check(row[1] === 'STORESCU' && /slices assessed/.test(row[5]), `its sender and findings shown (${row[5]})`);
    const text = await page.$eval('body', (b) => b.innerText);
    check(!/Pancreas-CT|1\.3\.6\.1\.4\.1\.14519/.test(text), 'no patient name or study UID on the page');
    await page.screenshot({path: path.join(out, 'status-page.png'), fullPage: true});

    const input = await page.$('#try-file');
    await input.uploadFile(slice);
    await page.click('#try-form button');
    await page.waitForSelector('#try-result h3', {timeout: 30000});
    const cls = await page.$eval('#try-result h3', (e) => e.textContent);
    check(['Normal', 'Cyst', 'Stone', 'Tumor'].includes(cls), `the try form classifies the fixture slice (${cls})`);
    check(await page.$('#try-result img') !== null, 'its heatmap is shown');
    await page.screenshot({path: path.join(out, 'try-slice.png'), fullPage: true});

    await input.uploadFile(junk);
    await page.click('#try-form button');
    await page.waitForSelector('#try-result p.error', {timeout: 30000});
    const message = await page.$eval('#try-result p.error', (e) => e.textContent);
    check(/cannot classify this file/.test(message), `a bad upload gets a clear message (${message})`);

    // the upload's 422 is the test's own doing; anything else in the console is a fault of the page
    const unexpected = errors.filter((e) => !/status of 422/.test(e));
    check(unexpected.length === 0, `no console error (${unexpected.join(' | ')})`);
  } finally {
    await browser.close();
  }
  process.exit(problems.length === 0 ? 0 : 1);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
