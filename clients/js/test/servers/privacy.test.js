// Privacy through the client library, against two real servers on one Redis and dynalite: the
// settings and contacts round trip (get, set, update), a contact sees the exact time while a
// stranger sees "last seen recently", and a change on one server reaches a subscription on the
// other (onChange with the hidden entry, then the full one).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PresenceClient, lastSeenText } from '../../index.js';
import { Stack, eventually, token } from './harness.js';

let stack;
let a;
let b;
const clients = [];

before(async () => {
  stack = await Stack.start('privacy');
  [a, b] = await Promise.all([stack.server('a'), stack.server('b')]);
});

after(async () => {
  await Promise.allSettled(clients.map((c) => c.bye()));
  stack?.stop();
});

function client(server, user) {
  const c = new PresenceClient({ url: server.url, getToken: () => token(user), backoffFirstMs: 50, backoffMaxMs: 300 });
  clients.push(c);
  return c;
}

test('settings and contacts round trip', async () => {
  const bob = client(a, 'bob-p1');
  assert.deepEqual(await bob.getPrivacy(), { last_seen: 'everyone', online: 'same_as_last_seen', except: [] });
  assert.deepEqual(await bob.setPrivacy({ last_seen: 'contacts', except: ['eve-p1'] }), {
    last_seen: 'contacts',
    online: 'same_as_last_seen',
    except: ['eve-p1'],
  });
  assert.deepEqual(await bob.setContacts(['zoe-p1', 'alice-p1']), ['alice-p1', 'zoe-p1']);
  assert.deepEqual(await bob.updateContacts({ add: ['carl-p1'], remove: ['zoe-p1'] }), ['alice-p1', 'carl-p1']);
  // Read back through the other server: the settings are in the durable store.
  const bobOnB = client(b, 'bob-p1');
  assert.deepEqual(await bobOnB.getContacts(), ['alice-p1', 'carl-p1']);
  assert.equal((await bobOnB.getPrivacy()).last_seen, 'contacts');
});

test('a contact sees the exact time, a stranger "last seen recently", and a change reaches a subscription', async () => {
  const bob = client(a, 'bob-p2');
  await bob.setPrivacy({ last_seen: 'contacts' });
  await bob.setContacts(['alice-p2']);
  bob.connect();
  const alice = client(b, 'alice-p2');
  await eventually('bob-p2 online for alice', async () => (await alice.query(['bob-p2']))[0].online);
  await bob.bye();
  const [seen] = await eventually('bob-p2 offline for alice', async () => {
    const e = await alice.query(['bob-p2']);
    return e[0].online ? null : e;
  });
  assert.ok(seen.last_seen, 'a contact sees the exact time');
  assert.equal(seen.last_seen_approx, undefined);

  const eve = client(b, 'eve-p2');
  const [hidden] = await eve.query(['bob-p2']);
  assert.deepEqual(hidden, { user: 'bob-p2', online: false, last_seen: null, last_seen_approx: 'recently' });
  assert.equal(lastSeenText(hidden, new Date(), 'en'), 'last seen recently');

  const changes = [];
  const snapshot = await alice.subscribe(['bob-p2'], (e) => changes.push(e));
  assert.deepEqual(snapshot, [seen]);
  // onChange gets the snapshot first.
  await eventually('the snapshot delivered to onChange', async () => changes.length >= 1, 2_000);
  assert.deepEqual(changes, [seen]);
  const bobAgain = client(a, 'bob-p2');
  await bobAgain.setPrivacy({ last_seen: 'nobody' });
  await eventually('the hidden entry pushed to alice', async () => changes.length >= 2, 2_000);
  assert.deepEqual(changes[1], { user: 'bob-p2', online: false, last_seen: null, last_seen_approx: 'recently' });
  await bobAgain.setPrivacy({ last_seen: 'contacts' });
  await eventually('the full entry pushed to alice', async () => changes.length >= 3, 2_000);
  assert.deepEqual(changes[2], seen);
});
