// The client library against two real presence-server processes on one Redis and dynalite:
// query, subscribe across servers, and a server restart that loses no change.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PresenceClient } from '../../index.js';
import { Stack, eventually, token } from './harness.js';

let stack;
let a;
let b;
const clients = [];

before(async () => {
  stack = await Stack.start('session');
  [a, b] = await Promise.all([stack.server('a'), stack.server('b')]);
});

after(async () => {
  await Promise.allSettled(clients.map((c) => c.bye()));
  stack?.stop();
});

function client(server, user, extra = {}) {
  const c = new PresenceClient({ url: server.url, getToken: () => token(user), backoffFirstMs: 50, backoffMaxMs: 300, ...extra });
  clients.push(c);
  return c;
}

/** Bob's entry as server `s` answers it over HTTP (no session), for what the stores recorded. */
async function httpEntry(s, user) {
  const r = await fetch(`${s.url}/v1/presence?users=${user}`, { headers: { Authorization: `Bearer ${token('probe')}` } });
  assert.equal(r.status, 200);
  return (await r.json()).users[0];
}

test('query: entries in the order asked, online and then last seen', async () => {
  const bob = client(a, 'bob1');
  const alice = client(b, 'alice1');
  assert.deepEqual(await alice.query(['bob1', 'nobody1', 'bob1']), [
    { user: 'bob1', online: false, last_seen: null },
    { user: 'nobody1', online: false, last_seen: null },
    { user: 'bob1', online: false, last_seen: null },
  ]);
  bob.connect();
  await eventually('bob1 online through server b', async () => (await alice.query(['bob1']))[0].online);
  const t0 = Date.now();
  await bob.bye();
  const afterBye = Date.now();
  const [entry] = await eventually('bob1 offline', async () => {
    const e = await alice.query(['bob1']);
    return e[0].online ? null : e;
  });
  assert.equal(entry.online, false);
  const seen = Date.parse(entry.last_seen);
  assert.ok(seen >= t0 - 5 && seen <= afterBye + 5, `last_seen ${entry.last_seen} is the bye (${t0}..${afterBye})`);
  // Past the protocol's 256 users per frame, the client splits the query.
  const many = Array.from({ length: 300 }, (_, i) => `u${i}`);
  const answer = await alice.query(many);
  assert.deepEqual(answer.map((e) => e.user), many);
});

test('subscribe across servers: snapshot, then online, then offline with the close time', async () => {
  const alice = client(b, 'alice2');
  const seen = [];
  const snapshot = await alice.subscribe(['bob2'], (e) => seen.push(e));
  assert.deepEqual(snapshot, [{ user: 'bob2', online: false, last_seen: null }]);
  const bob = client(a, 'bob2');
  bob.connect();
  await eventually('the online push', () => seen.length >= 2);
  await bob.bye();
  const last = await eventually('the offline push', () => seen[2]);
  assert.deepEqual(seen.slice(0, 2), [
    { user: 'bob2', online: false, last_seen: null },
    { user: 'bob2', online: true, last_seen: null },
  ]);
  assert.equal(last.online, false);
  assert.equal(last.last_seen, (await httpEntry(a, 'bob2')).last_seen);
  assert.equal(seen.length, 3);
});

test('a server restart: the client reconnects, subscribes again and delivers only what changed', async () => {
  const alice = client(b, 'alice3');
  const seen = [];
  const closes = [];
  let opens = 0;
  alice.on('close', (c) => closes.push(c.code));
  alice.on('open', () => (opens += 1));
  await alice.subscribe(['bob3', 'carol3'], (e) => seen.push(e));
  const bob = client(a, 'bob3');
  const carol = client(a, 'carol3');
  bob.connect();
  carol.connect();
  await eventually('both online', () => seen.filter((e) => e.online).length === 2);
  await b.kill('SIGKILL');
  await eventually('the close seen by the client', () => closes.length >= 1);
  // Meanwhile bob leaves; carol stays.
  await bob.bye();
  const recorded = await eventually('bob3 recorded offline on a', async () => {
    const e = await httpEntry(a, 'bob3');
    return e.online ? null : e;
  });
  await b.start();
  const last = await eventually('the offline push after the reconnect', () => seen.find((e) => e.user === 'bob3' && !e.online && e.last_seen)).catch((e) => {
    throw new Error(`${e.message}; opens ${opens}, closes ${JSON.stringify(closes)}, seen ${JSON.stringify(seen)}\n${b.log()}`);
  });
  assert.deepEqual(last, recorded);
  assert.ok(opens >= 2, `opened ${opens} times`);
  // Never seen, online, offline for bob; never seen, online for carol: carol's unchanged entry is
  // not delivered again after the resubscribe.
  const byUser = (u) => seen.filter((e) => e.user === u).map((e) => (e.online ? 'online' : e.last_seen ? 'offline' : 'never'));
  assert.deepEqual(byUser('bob3'), ['never', 'online', 'offline']);
  assert.deepEqual(byUser('carol3'), ['never', 'online']);
});
