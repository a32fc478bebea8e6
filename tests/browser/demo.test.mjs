// The demo page in a real browser: headless Chromium (Debian's `chromium`) driven by playwright-core,
// against real presence-server processes. Run by scripts/test, or alone:
//
//   scripts/browser-test                      # installs chromium and playwright-core, builds, runs this
//   node tests/browser/demo.test.mjs          # after `npm ci --prefix tests/browser`
//
// Environment:
//   PRESENCE_SERVER_BIN  the server binary (default $CARGO_TARGET_DIR/debug/presence-server,
//                        CARGO_TARGET_DIR defaulting to ~/.cache/presence/target)
//   CHROMIUM_PATH        the browser (default /usr/bin/chromium)
//   BROWSER_ARTIFACTS    where screenshots go (default tests/artifacts/browser; not committed)
//
// What it checks, with exact values (docs/TESTING.md, "Browser test"):
//   1. Alice signs in (dev token), adds bob: "never seen". Adding carol past --max-watched-users 1
//      shows the server's too_many_users error and does not keep carol.
//   2. Bob signs in in a second tab: Alice sees "online". Bob's tab closes: within offline grace
//      (2 s) + 2 s Alice sees exactly "last seen today at H:MM", the minute of the close in the
//      browser's pinned time zone; the recorded last_seen lies between the instants taken right
//      before and right after the close. Screenshot.
//   3. The server is killed: "Reconnecting…" appears and stays while it is down. Restarted on the
//      same port and data dir (a new dev secret, so the old token gets 401): the page fetches a new
//      token, reconnects, subscribes again, and sees bob come online again.
//   3b. Bob sets "Who sees my last seen: Nobody" in the Privacy panel: Alice's row turns to exactly
//      "last seen recently" (offline, no exact time) while Bob is still online.
//   4. A server with --jwt-secret (no dev mode): the page says sign-in by name needs dev mode,
//      refuses a forged token with a clear error and signs in with a valid pasted token.
// Every process it starts is killed on the way out, on failure too.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TARGET = process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache', 'presence', 'target');
const SERVER_BIN = process.env.PRESENCE_SERVER_BIN || path.join(TARGET, 'debug', 'presence-server');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = process.env.BROWSER_ARTIFACTS || path.join(ROOT, 'tests', 'artifacts', 'browser');

// Pinned, and far from UTC with a half-hour offset, so a page showing UTC (or the wrong minute)
// cannot pass by accident.
const TIME_ZONE = 'Asia/Kolkata';
const LOCALE = 'en-GB';
const GRACE_MS = 2000;
// How long after page.close() returns the server may still stamp the close (it reads the close
// frame a moment later).
const CLOSE_SLACK_MS = 500;
const WATCHDOG_MS = 180_000;

const t0 = Date.now();
const log = (msg) => console.log(`[browser-test +${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);

// ---------------------------------------------------------------- processes

const children = new Set();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'presence-browser-'));

function killAll() {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
}
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    killAll();
    fs.rmSync(tmp, { recursive: true, force: true });
    process.exit(130); // playwright closes the browser on exit
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Server {
  constructor(name, port, extraArgs) {
    this.name = name;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.dataDir = path.join(tmp, `${name}-data`);
    this.logPath = path.join(tmp, `${name}.log`);
    this.args = [
      '--listen', `127.0.0.1:${port}`,
      '--data-dir', this.dataDir,
      '--offline-grace', `${GRACE_MS}ms`,
      '--ping-interval', '500ms',
      '--heartbeat-timeout', '2s',
      '--shutdown-timeout', '2s',
      ...extraArgs,
    ];
    this.proc = null;
  }

  async start() {
    const out = fs.openSync(this.logPath, 'a');
    this.proc = spawn(SERVER_BIN, this.args, { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    children.add(this.proc);
    const proc = this.proc;
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`${this.name} exited at start (${proc.exitCode ?? proc.signalCode}); log:\n${this.logTail()}`);
      }
      try {
        const r = await fetch(`${this.url}/healthz`);
        if (r.status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    throw new Error(`${this.name} did not answer /healthz within 20 s; log:\n${this.logTail()}`);
  }

  async kill(signal) {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill(signal);
    await exited;
    children.delete(proc);
  }

  logTail() {
    try {
      return fs.readFileSync(this.logPath, 'utf8').split('\n').slice(-30).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

// ---------------------------------------------------------------- expected texts, computed here

const zoned = new Intl.DateTimeFormat('en-US', {
  timeZone: TIME_ZONE, hourCycle: 'h23', year: 'numeric', month: '2-digit', day: '2-digit',
  hour: '2-digit', minute: '2-digit',
});
function zonedParts(ms) {
  const p = Object.fromEntries(zoned.formatToParts(new Date(ms)).map((x) => [x.type, x.value]));
  return { day: `${p.year}-${p.month}-${p.day}`, hour: Number(p.hour), minute: p.minute };
}
// en-GB: 24-hour clock, hour without a leading zero ("last seen today at 9:42").
function expectedLastSeen(ms, nowMs) {
  const seen = zonedParts(ms);
  const today = zonedParts(nowMs).day;
  const yesterday = zonedParts(nowMs - 24 * 3600 * 1000).day; // noon-safe enough for a 2 s window
  assert.ok(seen.day === today || seen.day === yesterday, `close at ${new Date(ms).toISOString()} is not today or yesterday`);
  return `last seen ${seen.day === today ? 'today' : 'yesterday'} at ${seen.hour}:${seen.minute}`;
}

// HS256 JWT, independent of the server's code.
function jwt(secret, claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

// ---------------------------------------------------------------- page helpers

const row = (page, user) => page.locator(`#contacts li[data-user="${user}"]`);
const rowText = (page, user) => row(page, user).locator('.state').textContent();

async function signIn(page, url, user) {
  await page.goto(url);
  assert.equal(await page.title(), 'Presence demo');
  await page.getByLabel('Your user name').fill(user);
  await page.getByRole('button', { name: 'Sign in' }).first().click();
  await page.locator('#conn[data-conn="open"]').waitFor({ timeout: 5000 });
  assert.equal(await page.locator('#me').textContent(), user);
  assert.equal(await page.locator('#conn-label').textContent(), 'Connected');
}

async function addContact(page, user) {
  await page.getByLabel('Add a contact').fill(user);
  await page.getByRole('button', { name: 'Add' }).click();
}

async function waitState(page, user, state, timeout) {
  await page.locator(`#contacts li[data-user="${user}"][data-state="${state}"]`).waitFor({ timeout });
}

// ---------------------------------------------------------------- the test

async function main() {
  for (const [what, p] of [['presence-server (PRESENCE_SERVER_BIN)', SERVER_BIN], ['chromium (CHROMIUM_PATH)', CHROMIUM]]) {
    if (!fs.existsSync(p)) throw new Error(`${what} not found at ${p}`);
  }
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  log(`server ${SERVER_BIN}, browser ${CHROMIUM}, time zone ${TIME_ZONE}, locale ${LOCALE}, temp ${tmp}`);

  const server = new Server('dev', await freePort(), ['--max-watched-users', '1']);
  await server.start();
  log(`dev-mode server on ${server.url}`);

  const browser = await chromium.launch({ executablePath: CHROMIUM });
  const pageErrors = [];
  try {
    log(`chromium ${browser.version()}`);
    // One context: two tabs of one browser, sharing localStorage like a real one.
    const context = await browser.newContext({ timezoneId: TIME_ZONE, locale: LOCALE, viewport: { width: 900, height: 640 } });
    context.on('weberror', (e) => pageErrors.push(String(e.error())));

    // 1. Alice signs in and adds bob; carol is past the server's watch limit.
    const alice = await context.newPage();
    await signIn(alice, server.url, 'alice');
    await addContact(alice, 'bob');
    await waitState(alice, 'bob', 'offline', 5000);
    assert.equal(await rowText(alice, 'bob'), 'never seen');
    assert.equal(await row(alice, 'bob').getAttribute('data-last-seen'), '');
    await addContact(alice, 'carol');
    await alice.getByRole('alert').waitFor({ timeout: 5000 });
    assert.equal(
      await alice.locator('#error-text').textContent(),
      'Could not add carol: a connection may watch at most 1 users (1 already) (too_many_users)',
    );
    assert.equal(await row(alice, 'carol').count(), 0);
    assert.equal(await alice.evaluate(() => localStorage.getItem('presence-demo.contacts.alice')), '["bob"]');
    await alice.getByRole('button', { name: 'Dismiss error' }).click();
    log('alice signed in; bob: "never seen"; carol refused with too_many_users');

    // 2. Bob signs in in a second tab, then closes it.
    const bob = await context.newPage();
    await signIn(bob, server.url, 'bob');
    const bobOpened = Date.now();
    await waitState(alice, 'bob', 'online', 2000);
    assert.equal(await rowText(alice, 'bob'), 'online');
    log(`alice sees bob "online" ${Date.now() - bobOpened} ms after his page connected`);

    const before = Date.now();
    await bob.close();
    const after = Date.now();
    await waitState(alice, 'bob', 'offline', GRACE_MS + 2000);
    const seenAfter = Date.now() - after;
    const text = await rowText(alice, 'bob');
    const lastSeenIso = await row(alice, 'bob').getAttribute('data-last-seen');
    const lastSeen = Date.parse(lastSeenIso);
    const candidates = [...new Set([expectedLastSeen(before, Date.now()), expectedLastSeen(after + CLOSE_SLACK_MS, Date.now())])];
    log(`bob's page closed between ${new Date(before).toISOString()} and ${new Date(after).toISOString()}; ` +
      `alice saw him offline ${seenAfter} ms later (grace ${GRACE_MS} ms): "${text}" (last_seen ${lastSeenIso})`);
    assert.ok(lastSeen >= before && lastSeen <= after + CLOSE_SLACK_MS,
      `last_seen ${lastSeenIso} outside the close window [${new Date(before).toISOString()}, ${new Date(after + CLOSE_SLACK_MS).toISOString()}]`);
    assert.ok(candidates.includes(text), `"${text}" is none of ${JSON.stringify(candidates)}`);
    assert.equal(text, expectedLastSeen(lastSeen, Date.now()));
    const shot = path.join(ARTIFACTS, 'demo-last-seen.png');
    await alice.screenshot({ path: shot });
    log(`screenshot: ${shot}`);

    // 3. The server dies: reconnecting; it comes back with a new dev secret: new token, subscribed again.
    await server.kill('SIGKILL');
    const killed = Date.now();
    await alice.locator('#conn[data-conn="reconnecting"]').waitFor({ timeout: 3000 });
    assert.equal(await alice.locator('#conn-label').textContent(), 'Reconnecting…');
    assert.ok(await alice.locator('#conn-label').isVisible());
    log(`"Reconnecting…" shown ${Date.now() - killed} ms after the kill`);
    await sleep(1500);
    assert.equal(await alice.locator('#conn').getAttribute('data-conn'), 'reconnecting');
    const shot2 = path.join(ARTIFACTS, 'demo-reconnecting.png');
    await alice.screenshot({ path: shot2 });
    log(`still reconnecting while the server is down; screenshot: ${shot2}`);
    await server.start();
    const restarted = Date.now();
    await alice.locator('#conn[data-conn="open"]').waitFor({ timeout: 10_000 });
    assert.equal(await alice.locator('#conn-label').textContent(), 'Connected');
    log(`server restarted (same port and data dir): alice reconnected ${Date.now() - restarted} ms later`);
    assert.equal(await rowText(alice, 'bob'), text);
    const bob2 = await context.newPage();
    await signIn(bob2, server.url, 'bob');
    await waitState(alice, 'bob', 'online', 2000);
    assert.equal(await rowText(alice, 'bob'), 'online');
    log('after the reconnect alice is subscribed again: bob\'s return is pushed ("online")');

    // 3b. Bob hides his last seen (and with it his online state) from everyone in the Privacy
    // panel: alice is pushed the hidden entry at once, "last seen recently", with no exact time.
    await bob2.locator('#privacy summary').click();
    await bob2.getByLabel('Who sees my last seen').selectOption('nobody');
    await bob2.getByRole('button', { name: 'Save' }).click();
    await bob2.locator('#privacy-saved', { hasText: 'Saved.' }).waitFor({ timeout: 3000 });
    await waitState(alice, 'bob', 'offline', 2000);
    assert.equal(await rowText(alice, 'bob'), 'last seen recently');
    assert.equal(await row(alice, 'bob').getAttribute('data-last-seen'), '');
    log('bob chose "Nobody": alice sees "last seen recently" while he is still online');
    await bob2.close();
    await alice.close();
    await server.kill('SIGTERM');

    // 4. Without dev mode: the page asks for a token.
    const secret = 'browser-test-secret-of-32-bytes-min';
    const prod = new Server('prod', await freePort(), ['--jwt-secret', secret]);
    await prod.start();
    const carol = await context.newPage();
    await carol.goto(prod.url);
    assert.ok(await carol.locator('[data-no-dev-mode]').isVisible());
    assert.ok(!(await carol.getByLabel('Your user name').isVisible()));
    const exp = Math.floor(Date.now() / 1000) + 3600;
    await carol.getByLabel('Token').fill(jwt('not-the-secret', { sub: 'carol', exp }));
    await carol.getByRole('button', { name: 'Sign in' }).click();
    await carol.getByRole('alert').waitFor({ timeout: 5000 });
    assert.equal(await carol.locator('#error-text').textContent(), 'Signed out: token refused: invalid token: bad signature');
    assert.ok(await carol.getByLabel('Token').isVisible());
    await carol.getByLabel('Token').fill(jwt(secret, { sub: 'carol', exp }));
    await carol.getByRole('button', { name: 'Sign in' }).click();
    await carol.locator('#conn[data-conn="open"]').waitFor({ timeout: 5000 });
    assert.equal(await carol.locator('#me').textContent(), 'carol');
    log('without dev mode: the page says so, refuses a forged token, accepts a pasted valid one');
    await prod.kill('SIGTERM');

    assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
  } finally {
    await browser.close();
    killAll();
  }
}

const watchdog = setTimeout(() => {
  console.error(`[browser-test] FAILED: still running after ${WATCHDOG_MS / 1000} s`);
  killAll();
  process.exit(1);
}, WATCHDOG_MS);

try {
  await main();
  clearTimeout(watchdog);
  fs.rmSync(tmp, { recursive: true, force: true });
  log('passed');
} catch (e) {
  clearTimeout(watchdog);
  console.error(`[browser-test] FAILED: ${e?.stack || e}`);
  for (const f of fs.readdirSync(tmp).filter((n) => n.endsWith('.log'))) {
    console.error(`--- ${f} (tail) ---\n${fs.readFileSync(path.join(tmp, f), 'utf8').split('\n').slice(-30).join('\n')}`);
  }
  console.error(`[browser-test] kept ${tmp}`);
  process.exitCode = 1;
}
