// tether's browser test: the browser client (browser/index.html + driver.js + the wasm) in
// headless Chromium, driven by Playwright, against examples/browser_server.rs.
//
// It starts the built server, opens the page it serves, waits (60 s at most) for the page's
// window.tetherReport.done, waits for the server's final line, and checks both sides:
//
// - the page saw exactly one fresh session and at least one resumption, which the server
//   saw too, of the same session (a reconnection that came back as a new session fails);
// - the server did kill the socket (the page saw the session go down);
// - the page's journal equals the server's, key for key, ALL entries, none missing;
// - every entry was applied at most once on each side (a duplicate fails), and the page
//   applied every server entry it holds;
// - no error on either side: no refused input, no page error, no console error.
//
// Exits 0 if all of that held, 1 otherwise (printing why).
//
// Usage: node browser/test.mjs [path/to/browser_server]
// (default: $TETHER_BROWSER_SERVER, else $CARGO_TARGET_DIR or target/, debug/examples/).
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..');
const server = process.argv[2] || process.env.TETHER_BROWSER_SERVER ||
  path.join(process.env.CARGO_TARGET_DIR || path.join(root, 'target'), 'debug/examples/browser_server');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const PAGE_TIMEOUT_MS = 60000;
const FINAL_LINE_TIMEOUT_MS = 15000;
// The scenario's numbers (examples/browser_server.rs, browser/index.html).
const BEFORE_CUT = 3;
const WHILE_DOWN = 2;
const PER_SIDE = BEFORE_CUT + WHILE_DOWN;
const ALL = 2 * PER_SIDE;

const started = Date.now();
const log = (line) => console.log(`test: ${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s  ${line}`);

// --- the server -------------------------------------------------------------------------
const child = spawn(server, [], { stdio: ['ignore', 'pipe', 'pipe'] });
const serverLines = [];
let serverExit = null;
const waiters = [];
child.on('exit', (code, signal) => {
  serverExit = { code, signal };
  waiters.splice(0).forEach((w) => w());
});
child.on('error', (e) => {
  serverExit = { error: String(e) };
  waiters.splice(0).forEach((w) => w());
});
createInterface({ input: child.stdout }).on('line', (line) => {
  serverLines.push(line);
  waiters.splice(0).forEach((w) => w());
});
const serverStderr = [];
createInterface({ input: child.stderr }).on('line', (line) => {
  serverStderr.push(line);
  console.log(`  server: ${line}`);
});

/** The first JSON line of the server's stdout that `pred` accepts, or null after `ms`. */
function serverLine(pred, ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(null), ms);
    const look = () => {
      for (const line of serverLines) {
        try {
          const value = JSON.parse(line);
          if (pred(value)) {
            clearTimeout(timer);
            resolve(value);
            return;
          }
        } catch (e) {
          // not JSON: ignore
        }
      }
      if (serverExit) {
        clearTimeout(timer);
        resolve(null);
        return;
      }
      waiters.push(look);
    };
    look();
  });
}

const failures = [];
const check = (ok, what) => {
  if (!ok) failures.push(what);
  log(`${ok ? 'ok  ' : 'FAIL'} ${what}`);
};
let browser = null;

try {
  const hello = await serverLine((v) => typeof v.page === 'string', 10000);
  if (!hello) throw new Error(`the server (${server}) printed no address line: ${JSON.stringify(serverExit)}`);
  log(`server up: ${hello.page}`);

  // --- the browser ----------------------------------------------------------------------
  // chromium.launch gives every run a fresh temporary user-data-dir (and removes it).
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run', '--disable-quic', '--disable-sync'],
  });
  log(`chromium ${browser.version()}`);
  const page = await browser.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`);
  });
  await page.goto(hello.page);
  try {
    await page.waitForFunction(() => window.tetherReport && window.tetherReport.done, null,
      { timeout: PAGE_TIMEOUT_MS, polling: 100 });
  } catch (e) {
    failures.push(`the page did not finish in ${PAGE_TIMEOUT_MS / 1000} s`);
  }
  const report = await page.evaluate(() => window.tetherReport);
  const logText = await page.evaluate(() => document.getElementById('log').textContent);
  log(`page log:\n${logText.split('\n').map((l) => `    ${l}`).join('\n')}`);
  const final = await serverLine((v) => v.final === true, FINAL_LINE_TIMEOUT_MS);
  log(`page report: ${JSON.stringify({ ...report, journal: report.journal.length })}`);
  log(`server final: ${final ? JSON.stringify({ ...final, journal: final.journal.length }) : 'none'}`);

  // --- the checks -----------------------------------------------------------------------
  check(report.done, 'the page finished');
  check(report.errors.length === 0, `no error on the page (${JSON.stringify(report.errors)})`);
  check(pageErrors.length === 0, `no page or console error (${JSON.stringify(pageErrors)})`);
  check(report.fresh === 1, `the page saw one fresh session (saw ${report.fresh})`);
  check(report.down >= 1, `the page saw the socket killed (down ${report.down})`);
  check(report.resumed >= 1, `the page resumed the session (resumed ${report.resumed})`);
  check(report.duplicates.length === 0, `no entry applied twice on the page (${JSON.stringify(report.duplicates)})`);
  check(report.appended === PER_SIDE, `the page appended its ${PER_SIDE} entries (${report.appended})`);
  check(final !== null, 'the server printed its final line');
  if (final) {
    check(final.ok === true, 'the server saw its side of the scenario complete');
    check(final.fresh === 1 && final.resumed >= 1 && final.same_session === true,
      `the server saw one session, fresh then resumed (fresh ${final.fresh}, resumed ${final.resumed}, same ${final.same_session})`);
    check(final.duplicates.length === 0 && final.applied_from_client === PER_SIDE,
      `the server applied each page entry exactly once (${final.applied_from_client}, duplicates ${JSON.stringify(final.duplicates)})`);
    const key = ([a, r]) => `${a}/${r}`;
    const mine = report.journal.map(key).sort();
    const theirs = final.journal.map(key).sort();
    check(new Set(mine).size === mine.length, 'the page journal holds each key once');
    check(mine.length === ALL && theirs.length === ALL,
      `both journals hold ${ALL} entries (page ${mine.length}, server ${theirs.length})`);
    check(JSON.stringify(mine) === JSON.stringify(theirs),
      `the page journal equals the server journal (page-only ${JSON.stringify(mine.filter((k) => !theirs.includes(k)))}, server-only ${JSON.stringify(theirs.filter((k) => !mine.includes(k)))})`);
    const serverOwn = theirs.filter((k) => k.startsWith('server/')).length;
    check(report.applied === serverOwn,
      `the page applied each server entry once (${report.applied} of ${serverOwn})`);
  }
} catch (e) {
  failures.push(String(e && e.stack || e));
} finally {
  if (browser) await browser.close().catch(() => {});
  if (!serverExit) child.kill('SIGTERM');
}

if (failures.length) {
  console.error(`browser test: FAIL (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  for (const f of failures) console.error(`  - ${f}`);
  process.exit(1);
}
console.log(`browser test: a tether client in headless Chromium connected, was cut, resumed and synced: ok (${((Date.now() - started) / 1000).toFixed(1)} s)`);
process.exit(0);
