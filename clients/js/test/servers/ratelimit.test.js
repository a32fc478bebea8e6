// rate_limited through the client library: a query refused for the user's lookup budget is sent
// again after the server's hint and then answered; the app sees only the answers.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PresenceClient } from '../../index.js';
import { Stack, token } from './harness.js';

let stack;
let a;

before(async () => {
  stack = await Stack.start('ratelimit');
  a = await stack.server('a', ['--lookup-rate', '10', '--lookup-burst', '20']);
});

after(() => stack?.stop());

test('a query over the lookup budget is retried after the hint, and answered', async () => {
  const frames = [];
  // The platform WebSocket, recording what the server sends.
  class Recording extends globalThis.WebSocket {
    set onmessage(fn) {
      super.onmessage = fn && ((ev) => {
        frames.push(JSON.parse(ev.data));
        fn(ev);
      });
    }

    get onmessage() {
      return super.onmessage;
    }
  }
  const c = new PresenceClient({ url: a.url, getToken: () => token('alice-r'), WebSocket: Recording });
  try {
    const users = (k) => Array.from({ length: 15 }, (_, i) => `r${k}-${i}`);
    // Burst 20: the first 15 pass, the next 15 are over it until the bucket refills (10/s).
    const answers = await Promise.all([c.query(users(1)), c.query(users(2)), c.query(users(3))]);
    for (const [k, answer] of answers.entries()) {
      assert.deepEqual(answer, users(k + 1).map((user) => ({ user, online: false, last_seen: null })));
    }
    const refused = frames.filter((f) => f.type === 'error');
    assert.ok(refused.length >= 1, 'the server refused at least once');
    for (const f of refused) assert.equal(f.code, 'rate_limited');
    assert.equal(frames.filter((f) => f.type === 'presence').length, 3);
  } finally {
    await c.bye();
  }
});
