// The shared harness of the client library's tests against real processes: one redis-server, one
// dynalite and presence-server processes wired to them, all killed on the way out (on failure too).
//
// Environment (set by scripts/client-test, which scripts/test runs):
//   PRESENCE_SERVER_BIN   the server binary
//   PRESENCE_TEST_REDIS_SERVER, PRESENCE_TEST_DYNALITE   redis-server and dynalite's cli.js
// A missing one fails the test at once: nothing is skipped.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/** Shared by every server of a test; 32 bytes or more (RFC 7518 3.2). */
export const SECRET = 'presence-client-library-test-secret-0123456789';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function need(name) {
  const v = process.env[name];
  if (!v || !fs.existsSync(v)) throw new Error(`${name} must name an existing file (got ${JSON.stringify(v)}); run scripts/client-test`);
  return v;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitTcp(port, what, proc, logPath, limitMs = 30_000) {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`${what} exited at start (${proc.exitCode}): ${tail(logPath)}`);
    const ok = await new Promise((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => { c.destroy(); resolve(true); });
      c.on('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(50);
  }
  throw new Error(`${what} did not listen on ${port} within ${limitMs} ms: ${tail(logPath)}`);
}

function tail(p) {
  try {
    return fs.readFileSync(p, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '(no log)';
  }
}

/** HS256 JWT signed here, independently of the server's code. */
export function token(sub, { ttlSeconds = 3600, secret = SECRET } = {}) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const now = Math.floor(Date.now() / 1000);
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub, iat: now, exp: now + ttlSeconds })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/** One test's processes. `await Stack.start(name)`, then `stack.server(id, args)`, `stack.stop()`. */
export class Stack {
  static async start(name) {
    const s = new Stack(name);
    await s._stores();
    return s;
  }

  constructor(name) {
    this.name = name;
    this.bin = need('PRESENCE_SERVER_BIN');
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), `presence-client-${name}-`));
    this.children = new Set();
    this.table = `presence-client-${name}`;
  }

  _spawn(cmd, args, logName) {
    const logPath = path.join(this.dir, logName);
    const out = fs.openSync(logPath, 'a');
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PRESENCE_') && !k.startsWith('AWS_')));
    const proc = spawn(cmd, args, { stdio: ['ignore', out, out], env: { ...env, RUST_LOG: 'info' } });
    fs.closeSync(out);
    this.children.add(proc);
    proc.once('exit', () => this.children.delete(proc));
    return { proc, logPath };
  }

  async _stores() {
    const redisPort = await freePort();
    const r = this._spawn(need('PRESENCE_TEST_REDIS_SERVER'), ['--port', `${redisPort}`, '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', this.dir], 'redis.log');
    const dynPort = await freePort();
    const d = this._spawn(process.execPath, [need('PRESENCE_TEST_DYNALITE'), '--host', '127.0.0.1', '--port', `${dynPort}`], 'dynalite.log');
    await Promise.all([waitTcp(redisPort, 'redis-server', r.proc, r.logPath), waitTcp(dynPort, 'dynalite', d.proc, d.logPath, 60_000)]);
    this.redisUrl = `redis://127.0.0.1:${redisPort}`;
    this.dynamoEndpoint = `http://127.0.0.1:${dynPort}`;
  }

  /** A presence-server wired to the stack's stores, with short test timeouts; `extra` overrides. */
  async server(id, extra = []) {
    const port = await freePort();
    const srv = new Server(this, id, port, [
      '--listen', `127.0.0.1:${port}`,
      '--server-id', id,
      '--jwt-secret', SECRET,
      '--data-dir', path.join(this.dir, `${id}-data`),
      '--redis-url', this.redisUrl,
      '--dynamodb-endpoint', this.dynamoEndpoint,
      '--dynamodb-table', this.table,
      '--create-table',
      '--ping-interval', '200ms',
      '--heartbeat-timeout', '1s',
      '--lease-ttl', '2s',
      '--lease-renew-interval', '500ms',
      '--offline-grace', '0s',
      '--shutdown-timeout', '2s',
      ...extra,
    ]);
    await srv.start();
    return srv;
  }

  stop() {
    for (const c of this.children) c.kill('SIGKILL');
    this.children.clear();
  }
}

export class Server {
  constructor(stack, id, port, args) {
    this.stack = stack;
    this.id = id;
    this.port = port;
    this.args = args;
    this.url = `http://127.0.0.1:${port}`;
    this.proc = null;
  }

  async start() {
    const { proc, logPath } = this.stack._spawn(this.stack.bin, this.args, `${this.id}.log`);
    this.proc = proc;
    this.logPath = logPath;
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null) throw new Error(`${this.id} exited at start (${proc.exitCode}): ${tail(logPath)}`);
      try {
        if ((await fetch(`${this.url}/healthz`)).status === 200) return;
      } catch {
        // not listening yet
      }
      await sleep(50);
    }
    throw new Error(`${this.id} did not answer /healthz within 30 s: ${tail(logPath)}`);
  }

  async kill(signal = 'SIGKILL') {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill(signal);
    await exited;
  }

  log() {
    return tail(this.logPath);
  }
}

/** Resolves once `check()` is truthy (polled every 20 ms), or rejects after `ms` with `what`. */
export async function eventually(what, check, ms = 10_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = await check();
    if (v) return v;
    await sleep(20);
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what}`);
}
