// trace-screenshot.js: opens a GOROTRACE file in headless Chromium and saves
// a screenshot of it (docs/img/trace.png was made this way).
//
//   npm install --prefix /tmp/goro-shot playwright-core
//   GOROTRACE=/tmp/goro-trace.json ./build/examples/observe > /dev/null
//   NODE_PATH=/tmp/goro-shot/node_modules node tools/trace-screenshot.js \
//       /tmp/goro-trace.json docs/img/trace.png
//
// It needs Debian's chromium package (/usr/bin/chromium, or CHROMIUM=path)
// and no network. The trace is loaded through a file input, as a person
// would load it:
//  - in chrome://tracing, through its Load button, when the Chromium build
//    has that viewer;
//  - otherwise in the Performance panel of Chromium's own DevTools, which
//    draws the workers' run slices but not the "C" stack counters. Debian's
//    chromium 156 has no chrome://tracing viewer (the page fails with
//    ERR_FAILED), so this is the path that made docs/img/trace.png.
// NOTE: the chrome://tracing path has not run, because of that. The
// DevTools path clicks at fixed positions of a 1600x900 window, which
// another DevTools version may move.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { chromium } = require('playwright-core');

const WIDTH = 1600;
const HEIGHT = 900;

// Returns [start, end] in ms of the window of windowMs with the most
// run-slice time, so that the screenshot shows the workers busy.
function busiestWindow(events, windowMs) {
  const slices = events.filter((e) => e.ph === 'X').map((e) => [e.ts / 1000, (e.ts + e.dur) / 1000]);
  let best = [0, windowMs];
  let bestBusy = -1;
  for (const [start] of slices) {
    const from = Math.max(0, start - 1);
    const to = from + windowMs;
    let busy = 0;
    for (const [s, e] of slices) busy += Math.max(0, Math.min(e, to) - Math.max(s, from));
    if (busy > bestBusy) {
      bestBusy = busy;
      best = [from, to];
    }
  }
  return best;
}

async function tryChromeTracing(context, tracePath) {
  const page = await context.newPage();
  // chrome://tracing is one of the internal debugging pages, which recent
  // Chromium versions keep off until chrome://chrome-urls turns them on.
  await page.goto('chrome://chrome-urls');
  const enable = page.getByText('Enable internal debugging pages');
  if (await enable.count()) await enable.click();
  try {
    await page.goto('chrome://tracing');
  } catch (err) {
    console.log(`chrome://tracing is not available in this Chromium (${err.message.split('\n')[0]})`);
    await page.close();
    return null;
  }
  const [chooser] = await Promise.all([
    page.waitForEvent('filechooser'),
    page.getByRole('button', { name: 'Load' }).click(),
  ]);
  await chooser.setFiles(tracePath);
  await page.waitForTimeout(3000);
  return page;
}

async function openInDevTools(context, tracePath, trace) {
  const page = await context.newPage();
  await page.goto('devtools://devtools/bundled/devtools_app.html?panel=timeline');
  await page.waitForTimeout(2000);
  await page.locator('input[type=file]').first().setInputFiles(tracePath);

  // Once the trace is in, the panel shows its sidebar and a dialog of
  // keyboard shortcuts; both would cover the tracks.
  const hideSidebar = page.getByRole('button', { name: 'Hide sidebar' });
  await hideSidebar.waitFor({ state: 'visible', timeout: 30000 });
  await page.waitForTimeout(1000);
  const closeDialog = page.locator('button[aria-label="Close"]:visible');
  if (await closeDialog.count()) await closeDialog.first().click();
  await hideSidebar.click();
  await page.waitForTimeout(500);

  // The overview strip spans the trace plus about 5%; dragging across it
  // selects the window that the tracks below show.
  const events = trace.traceEvents;
  const endMs = Math.max(...events.filter((e) => e.ts !== undefined).map((e) => (e.ts + (e.dur || 0)) / 1000));
  const pxPerMs = WIDTH / (endMs * 1.05);
  const [from, to] = busiestWindow(events, 12);
  await page.mouse.move(from * pxPerMs, 80);
  await page.mouse.down();
  await page.mouse.move(to * pxPerMs, 80, { steps: 10 });
  await page.mouse.up();
  await page.waitForTimeout(500);

  // Expand the process, then both worker threads.
  await page.mouse.click(10, 129);
  await page.waitForTimeout(300);
  await page.mouse.click(20, 146);
  await page.waitForTimeout(300);
  await page.mouse.click(20, 183);
  await page.waitForTimeout(300);
  await page.mouse.move(WIDTH / 2, HEIGHT - 50);
  await page.waitForTimeout(500);
  console.log(`DevTools window: about ${from.toFixed(1)} to ${to.toFixed(1)} ms of ${endMs.toFixed(1)} ms`);
  return page;
}

async function main() {
  const [tracePath, outPath] = process.argv.slice(2);
  if (!tracePath || !outPath) {
    console.error('usage: node tools/trace-screenshot.js TRACE.json OUT.png');
    process.exit(2);
  }
  const trace = JSON.parse(fs.readFileSync(tracePath, 'utf8'));
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'goro-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
    viewport: { width: WIDTH, height: HEIGHT },
  });
  try {
    let page = await tryChromeTracing(context, tracePath);
    let clip = { x: 0, y: 0, width: WIDTH, height: HEIGHT };
    if (!page) {
      page = await openInDevTools(context, tracePath, trace);
      clip = { x: 0, y: 0, width: WIDTH, height: 240 };
    }
    await page.screenshot({ path: outPath, clip });
    console.log(`wrote ${outPath}`);
  } finally {
    await context.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
