// Token lifetime through the client library, against real servers with a zero leeway: a refresh
// before exp keeps the session (a watcher sees no offline), and an expired token's close 4001
// leads to a fresh token and a new session.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PresenceClient } from '../../index.js';
import { Stack, eventually, sleep, token } from './harness.js';

let stack;
let a;
let b;
const clients = [];

before(async () => {
  stack = await Stack.start('tokens');
  [a, b] = await Promise.all([stack.server('a', ['--jwt-leeway', '0s']), stack.server('b', ['--jwt-leeway', '0s'])]);
});

after(async () => {
  await Promise.allSettled(clients.map((c) => c.bye()));
  stack?.stop();
});

function client(server, getToken, extra = {}) {
  const c = new PresenceClient({ url: server.url, getToken, backoffFirstMs: 50, backoffMaxMs: 300, ...extra });
  clients.push(c);
  return c;
}

test('a refresh before exp keeps the session: no reconnect, no offline pushed', async () => {
  const alice = client(b, () => token('alice-t1'));
  const seen = [];
  await alice.subscribe(['bob-t1'], (e) => seen.push(e));
  let calls = 0;
  // 3 s tokens, refreshed 1.5 s before exp: four lifetimes pass in the test.
  const bob = client(a, () => {
    calls += 1;
    return token('bob-t1', { ttlSeconds: 3 });
  }, { refreshMarginMs: 1500 });
  let opens = 0;
  const closes = [];
  const errors = [];
  bob.on('open', () => (opens += 1));
  bob.on('close', (c) => closes.push(c.code));
  bob.on('error', (e) => errors.push(e.code));
  bob.connect();
  await eventually('bob-t1 online', () => seen.some((e) => e.online));
  await sleep(12_000);
  assert.deepEqual(closes, []);
  assert.deepEqual(errors, []);
  assert.equal(opens, 1);
  assert.ok(calls >= 5, `getToken called ${calls} times`);
  assert.deepEqual(seen.map((e) => e.online), [false, true]);
  assert.equal((await alice.query(['bob-t1']))[0].online, true);
});

test('an expired token: error token_expired, close 4001, then a fresh token and a new session', async () => {
  const alice = client(b, () => token('alice-t2'));
  let calls = 0;
  // First a 2 s token; the refresh before its exp is one the server refuses (another secret),
  // so the connection keeps the old token and expires; the reconnect gets a good one.
  const bob = client(a, () => {
    calls += 1;
    if (calls === 1) return token('bob-t2', { ttlSeconds: 2 });
    if (calls === 2) return token('bob-t2', { ttlSeconds: 3600, secret: 'not-the-deployment-secret-0123456789abcdef' });
    return token('bob-t2', { ttlSeconds: 3600 });
  }, { refreshMarginMs: 1000 });
  const closes = [];
  const errors = [];
  let opens = 0;
  bob.on('open', () => (opens += 1));
  bob.on('close', (c) => closes.push(c.code));
  bob.on('error', (e) => errors.push(e.code));
  bob.connect();
  await eventually('bob-t2 online', async () => (await alice.query(['bob-t2']))[0].online);
  const closed = await eventually('the 4001 close', () => (closes.includes(4001) ? Date.now() : null), 10_000);
  await eventually('the second session', () => opens === 2, 10_000);
  assert.deepEqual(errors, ['bad_token', 'token_expired']);
  assert.deepEqual(closes, [4001]);
  assert.equal(calls, 3);
  assert.equal((await alice.query(['bob-t2']))[0].online, true);
  // The 4001 close ended the first session as a graceful close: it was recorded at that moment.
  await bob.bye();
  const entry = await eventually('bob-t2 offline', async () => {
    const [e] = await alice.query(['bob-t2']);
    return e.online ? null : e;
  });
  assert.ok(Date.parse(entry.last_seen) > closed, 'the later bye is the last seen now');
});
