// PresenceClient: one WebSocket session with a presence deployment (docs/PROTOCOL.md), kept alive
// across server restarts and network loss, plus the HTTP privacy routes.
//
// What it does for the app (docs/CLIENTS.md):
// - connects lazily, reconnects with exponential backoff and jitter, and detects a silent server
//   with its own application pings;
// - re-sends queries that were in flight when a connection dropped, subscribes again after every
//   reconnect, and calls `onChange` only for entries that differ from the last one delivered;
// - fetches a token (`getToken`) before each connect and again before the token's `exp`, and hands
//   the fresh one to the open connection in an `auth` frame, so the session is never cut;
// - retries `rate_limited` after the server's hint; every other refusal is a typed PresenceError.

import { PresenceError } from './errors.js';
import { tokenClaims } from './token.js';

/** @typedef {import('../index.js').PresenceEntry} PresenceEntry */
/** @typedef {import('../index.js').PresenceClientOptions} PresenceClientOptions */

const USER_RE = /^[A-Za-z0-9_.@+\-:]{1,128}$/;
/** The protocol's limit on users per frame (docs/PROTOCOL.md, section 4). */
export const MAX_USERS_PER_FRAME = 256;
const WS_OPEN = 1;
/** Close code of an expired token (docs/PROTOCOL.md, section 5). */
const CLOSE_TOKEN_EXPIRED = 4001;

const DEFAULTS = {
  pingIntervalMs: 20_000,
  pongTimeoutMs: 10_000,
  backoffFirstMs: 500,
  backoffMaxMs: 5_000,
  retryFirstMs: 1_000,
  retryMaxMs: 30_000,
  refreshMarginMs: 30_000,
};

/** @param {string} url */
function endpoints(url) {
  const u = new URL(url);
  if (!['ws:', 'wss:', 'http:', 'https:'].includes(u.protocol)) {
    throw new TypeError(`PresenceClient: url must be ws(s):// or http(s)://, not ${u.protocol}`);
  }
  const secure = u.protocol === 'wss:' || u.protocol === 'https:';
  const base = u.pathname.replace(/\/v1\/ws\/?$/, '').replace(/\/$/, '');
  return {
    ws: `${secure ? 'wss' : 'ws'}://${u.host}${base}/v1/ws`,
    http: `${secure ? 'https' : 'http'}://${u.host}${base}`,
  };
}

/** The protocol's frames hold at most 256 users: `users` in frame-sized pieces. @param {string[]} users */
function frames(users) {
  const out = [];
  for (let i = 0; i < users.length; i += MAX_USERS_PER_FRAME) out.push(users.slice(i, i + MAX_USERS_PER_FRAME));
  return out;
}

/** @param {PresenceEntry | undefined} a @param {PresenceEntry} b */
function sameEntry(a, b) {
  return a !== undefined && a.online === b.online && a.last_seen === b.last_seen && a.last_seen_approx === b.last_seen_approx;
}

/** @param {unknown} e @returns {PresenceEntry | null} */
function readEntry(e) {
  if (e === null || typeof e !== 'object') return null;
  const o = /** @type {Record<string, unknown>} */ (e);
  if (typeof o.user !== 'string' || typeof o.online !== 'boolean') return null;
  /** @type {PresenceEntry} */
  const entry = { user: o.user, online: o.online, last_seen: typeof o.last_seen === 'string' ? o.last_seen : null };
  if (typeof o.last_seen_approx === 'string') entry.last_seen_approx = /** @type {any} */ (o.last_seen_approx);
  return entry;
}

/** @param {unknown} users */
function checkUsers(users) {
  if (!Array.isArray(users)) throw new TypeError('users must be an array of user ids');
  for (const u of users) {
    if (typeof u !== 'string' || !USER_RE.test(u)) {
      throw new PresenceError('invalid_user', `not a user id: ${JSON.stringify(u)} (1 to 128 of A-Z a-z 0-9 _ . @ + - :)`);
    }
  }
  return /** @type {string[]} */ (users);
}

export class PresenceClient {
  /** @param {PresenceClientOptions} options */
  constructor(options) {
    if (!options || typeof options.url !== 'string') throw new TypeError('PresenceClient: options.url is required');
    if (typeof options.token !== 'string' && typeof options.getToken !== 'function') {
      throw new TypeError('PresenceClient: give options.token or options.getToken');
    }
    this._urls = endpoints(options.url);
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this._staticToken = options.token ?? null;
    this._getToken = options.getToken ?? null;
    this._random = options.random ?? Math.random;
    this._opt = { ...DEFAULTS };
    for (const k of Object.keys(DEFAULTS)) {
      const v = /** @type {any} */ (options)[k];
      if (v !== undefined) /** @type {any} */ (this._opt)[k] = v;
    }
    /** @type {string | null} */
    this._token = this._staticToken;
    this._ws = null;
    /** 'idle' before the first use, 'connecting', 'open', 'waiting' (backoff), 'ended' after bye(). */
    this._state = 'idle';
    this._attempt = 0;
    this._nextId = 1;
    this._seq = 0;
    /** Requests not yet answered, by frame id (only while a socket is open). */
    this._inflight = new Map();
    /** Requests waiting for a connection (or for their retry time), sent on open. */
    this._queue = [];
    /** Watched users: user -> Map(listener -> the last entry delivered to it, or undefined). */
    this._watched = new Map();
    this._listeners = { open: new Set(), close: new Set(), error: new Set() };
    this._timers = { reconnect: null, connect: null, ping: null, pong: null, refresh: null };
    /** @type {Set<ReturnType<typeof setTimeout>>} */
    this._retryTimers = new Set();
    /** @type {((v?: unknown) => void) | null} */
    this._byeDone = null;
  }

  // ---------------------------------------------------------------- public API

  /** Starts connecting (query and subscribe do it themselves). */
  connect() {
    if (this._state === 'idle') this._open();
  }

  /**
   * Listens to `open`, `close` ({ code, reason }) or `error` (a PresenceError).
   * @param {'open' | 'close' | 'error'} type
   * @param {(arg?: any) => void} listener
   * @returns {() => void} removes the listener
   */
  on(type, listener) {
    this._listeners[type].add(listener);
    return () => this.off(type, listener);
  }

  /** @param {'open' | 'close' | 'error'} type @param {(arg?: any) => void} listener */
  off(type, listener) {
    this._listeners[type].delete(listener);
  }

  /**
   * Presence of users now, in the order asked (one entry per id, repeats included).
   * @param {string[]} users
   * @returns {Promise<PresenceEntry[]>}
   */
  async query(users) {
    checkUsers(users);
    this._ensureUsable();
    const answers = await Promise.all(frames(users).map((chunk) => this._request('query', chunk)));
    return answers.flat();
  }

  /**
   * Watches users: `onChange` gets each one's current entry, then every change, for as long as
   * they are watched (across reconnects, and never twice the same entry in a row).
   * @param {string[]} users
   * @param {(entry: PresenceEntry) => void} onChange
   * @returns {Promise<PresenceEntry[]>} the snapshot
   */
  async subscribe(users, onChange) {
    checkUsers(users);
    if (typeof onChange !== 'function') throw new TypeError('subscribe: onChange must be a function');
    this._ensureUsable();
    for (const u of users) {
      let listeners = this._watched.get(u);
      if (!listeners) {
        listeners = new Map();
        this._watched.set(u, listeners);
      }
      // A listener added again starts afresh: it gets the snapshot, whatever others saw.
      listeners.set(onChange, undefined);
    }
    try {
      const answers = await Promise.all(frames(users).map((chunk) => this._request('subscribe', chunk)));
      return answers.flat();
    } catch (e) {
      for (const u of users) {
        const listeners = this._watched.get(u);
        listeners?.delete(onChange);
        if (listeners && listeners.size === 0) this._watched.delete(u);
      }
      throw e;
    }
  }

  /**
   * Stops watching users (all of their listeners).
   * @param {string[]} users
   */
  unsubscribe(users) {
    checkUsers(users);
    const gone = users.filter((u) => this._watched.delete(u));
    for (const chunk of frames(gone)) this._send({ type: 'unsubscribe', users: chunk });
  }

  /**
   * Ends the session gracefully (the server records last_seen now) and stops reconnecting.
   * Unanswered requests are rejected with code `closed`.
   * @returns {Promise<void>}
   */
  async bye() {
    if (this._state === 'ended') return;
    const ws = this._ws;
    this._state = 'ended';
    this._clearTimers();
    this._failAll(new PresenceError('closed', 'the client said bye'));
    if (ws && ws.readyState === WS_OPEN) {
      const closed = new Promise((resolve) => {
        this._byeDone = resolve;
      });
      ws.send(JSON.stringify({ type: 'bye' }));
      // The server closes with 1000 after a bye; close ourselves if it does not in time.
      const force = setTimeout(() => ws.close(1000), 2_000);
      await closed;
      clearTimeout(force);
    } else if (ws) {
      this._dropSocket();
    }
  }

  // ---------------------------------------------------------------- privacy routes (HTTP)

  /** @returns {Promise<import('../index.js').PrivacySettings>} */
  getPrivacy() {
    return this._http('GET', '/v1/me/privacy');
  }

  /** @param {Partial<import('../index.js').PrivacySettings>} settings */
  setPrivacy(settings) {
    return this._http('PUT', '/v1/me/privacy', settings);
  }

  /** @returns {Promise<string[]>} */
  async getContacts() {
    return (await this._http('GET', '/v1/me/contacts')).contacts;
  }

  /** @param {string[]} contacts @returns {Promise<string[]>} */
  async setContacts(contacts) {
    return (await this._http('PUT', '/v1/me/contacts', { contacts: checkUsers(contacts) })).contacts;
  }

  /** @param {{ add?: string[], remove?: string[] }} change @returns {Promise<string[]>} */
  async updateContacts({ add = [], remove = [] }) {
    const body = { add: checkUsers(add), remove: checkUsers(remove) };
    return (await this._http('PATCH', '/v1/me/contacts', body)).contacts;
  }

  // ---------------------------------------------------------------- requests

  _ensureUsable() {
    if (this._state === 'ended') throw new PresenceError('closed', 'the client said bye');
    this.connect();
  }

  /** @param {'query' | 'subscribe'} type @param {string[]} users @returns {Promise<PresenceEntry[]>} */
  _request(type, users) {
    return new Promise((resolve, reject) => {
      this._submit({ type, users, resolve, reject, tries: 0 });
    });
  }

  _submit(req) {
    if (this._state === 'ended') {
      req.reject(new PresenceError('closed', 'the client said bye'));
      return;
    }
    if (this._state !== 'open') {
      this._queue.push(req);
      return;
    }
    const id = this._nextId++;
    this._inflight.set(id, req);
    this._send({ type: req.type, id, users: req.users });
  }

  /** Retries a refused request after `delayMs`, unless the client ends meanwhile. */
  _retryLater(req, delayMs) {
    req.tries += 1;
    const t = setTimeout(() => {
      this._retryTimers.delete(t);
      this._submit(req);
    }, delayMs);
    this._retryTimers.add(t);
  }

  _retryDelay(req, frame) {
    // The server's hint: a `retry_after_ms` member, or the "retry in N ms" of its message.
    const said = typeof frame.message === 'string' ? /retry in (\d+) ms/.exec(frame.message) : null;
    const hint = typeof frame.retry_after_ms === 'number' && frame.retry_after_ms >= 0
      ? frame.retry_after_ms
      : said ? Number(said[1]) : null;
    if (hint !== null) return hint + Math.round(this._random() * 100);
    const base = Math.min(this._opt.retryMaxMs, this._opt.retryFirstMs * 2 ** req.tries);
    return Math.round(base * (0.8 + 0.4 * this._random()));
  }

  _onAnswer(req, frame) {
    const entries = [];
    for (const raw of Array.isArray(frame.users) ? frame.users : []) {
      const entry = readEntry(raw);
      if (!entry) continue;
      entries.push(entry);
      if (req.type === 'subscribe') this._deliver(entry);
    }
    req.resolve(entries);
  }

  _onRefused(req, frame) {
    const code = typeof frame.code === 'string' ? frame.code : 'error';
    const message = typeof frame.message === 'string' ? frame.message : '';
    // A subscription that could not be read yet still holds its users; it is asked again, as a
    // query would be if the app retried it.
    if (code === 'rate_limited' || (code === 'unavailable' && req.type === 'subscribe')) {
      this._retryLater(req, this._retryDelay(req, frame));
      return;
    }
    req.reject(new PresenceError(code, message, { users: req.users }));
  }

  /** Calls each listener of the entry's user whose last delivered entry differs. @param {PresenceEntry} entry */
  _deliver(entry) {
    const listeners = this._watched.get(entry.user);
    if (!listeners) return;
    for (const [listener, last] of [...listeners]) {
      if (sameEntry(last, entry) || !listeners.has(listener)) continue;
      listeners.set(listener, entry);
      try {
        listener(entry);
      } catch (e) {
        this._emit('error', e);
      }
    }
  }

  _failAll(err) {
    for (const req of this._inflight.values()) req.reject(err);
    this._inflight.clear();
    for (const req of this._queue) req.reject(err);
    this._queue = [];
    for (const t of this._retryTimers) clearTimeout(t);
    this._retryTimers.clear();
  }

  // ---------------------------------------------------------------- the connection

  async _open() {
    this._state = 'connecting';
    let token;
    try {
      token = this._getToken ? await this._getToken() : this._staticToken;
      if (typeof token !== 'string' || token === '') throw new PresenceError('bad_token', 'getToken gave no token');
    } catch (e) {
      if (this._state !== 'connecting') return;
      this._emit('error', e instanceof PresenceError ? e : new PresenceError('bad_token', String(e?.message ?? e)));
      this._scheduleReconnect();
      return;
    }
    if (this._state !== 'connecting') return;
    if (!this._WebSocket) {
      this._state = 'ended';
      const err = new PresenceError('closed', 'no WebSocket implementation: pass options.WebSocket (Node < 22)');
      this._failAll(err);
      this._emit('error', err);
      return;
    }
    this._token = token;
    const ws = new this._WebSocket(`${this._urls.ws}?access_token=${encodeURIComponent(token)}`);
    this._ws = ws;
    ws.onopen = () => {
      if (this._ws !== ws) return;
      clearTimeout(this._timers.connect);
      this._state = 'open';
      this._attempt = 0;
      this._startPings(ws);
      this._scheduleRefresh();
      this._emit('open');
      this._resync();
    };
    ws.onmessage = (ev) => {
      if (this._ws === ws) this._onMessage(ev.data);
    };
    ws.onclose = (ev) => this._socketGone(ws, ev.code, ev.reason);
    // Node 20's WebSocket reports a refused connection with an error and no close event; a
    // browser sends both (the second is then ignored).
    ws.onerror = () => {
      if (ws.readyState !== WS_OPEN) this._socketGone(ws, 1006, 'connection failed');
    };
    // A connect that neither opens nor fails (a black-holed address) is given up and retried.
    clearTimeout(this._timers.connect);
    this._timers.connect = setTimeout(() => {
      if (this._ws === ws && ws.readyState !== WS_OPEN) this._socketGone(ws, 1006, 'connect timed out');
    }, this._opt.pongTimeoutMs);
  }

  /** The end of a socket, whichever event reports it first. */
  _socketGone(ws, code, reason) {
    if (this._ws !== ws) return;
    this._dropSocket();
    this._emit('close', { code, reason });
    if (this._state === 'ended') {
      this._byeDone?.();
      this._byeDone = null;
      return;
    }
    if (code === CLOSE_TOKEN_EXPIRED && !this._getToken) {
      // A fixed token that expired cannot be renewed: reconnecting would be refused.
      this._state = 'ended';
      const err = new PresenceError('token_expired', 'the token expired and no getToken was given');
      this._failAll(err);
      this._emit('error', err);
      return;
    }
    // An expired token's session ends at once; a fresh token starts the next without backoff.
    if (code === CLOSE_TOKEN_EXPIRED) this._attempt = 0;
    this._scheduleReconnect();
  }

  /** After an open: requests that were in flight go again, then every watched user. */
  _resync() {
    const again = [...this._inflight.values(), ...this._queue];
    this._inflight.clear();
    this._queue = [];
    const requested = new Set();
    for (const req of again) {
      if (req.type === 'subscribe') for (const u of req.users) requested.add(u);
      this._submit(req);
    }
    const rest = [...this._watched.keys()].filter((u) => !requested.has(u));
    for (const chunk of frames(rest)) {
      this._submit({ type: 'subscribe', users: chunk, resolve: () => {}, reject: (e) => this._emit('error', e), tries: 0 });
    }
  }

  _onMessage(data) {
    clearTimeout(this._timers.pong); // any frame is proof the server is alive
    this._timers.pong = null;
    if (typeof data !== 'string') return; // this client speaks JSON only
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      this._emit('error', new PresenceError('bad_frame', 'the server sent a frame that is not JSON'));
      return;
    }
    if (frame === null || typeof frame !== 'object') return;
    const req = typeof frame.id === 'number' ? this._inflight.get(frame.id) : undefined;
    if (req) this._inflight.delete(frame.id);
    if (frame.type === 'presence') {
      if (req) this._onAnswer(req, frame);
      else for (const raw of Array.isArray(frame.users) ? frame.users : []) {
        const entry = readEntry(raw);
        if (entry) this._deliver(entry);
      }
    } else if (frame.type === 'error') {
      if (req) this._onRefused(req, frame);
      else this._emit('error', new PresenceError(String(frame.code), typeof frame.message === 'string' ? frame.message : ''));
    }
  }

  _send(frame) {
    if (this._ws && this._ws.readyState === WS_OPEN) this._ws.send(JSON.stringify(frame));
  }

  _startPings(ws) {
    clearInterval(this._timers.ping);
    this._timers.ping = setInterval(() => {
      if (this._ws !== ws) return;
      this._send({ type: 'ping', seq: ++this._seq });
      if (this._timers.pong === null) {
        this._timers.pong = setTimeout(() => {
          if (this._ws !== ws) return;
          this._socketGone(ws, 4000, 'no answer from the server');
        }, this._opt.pongTimeoutMs);
      }
    }, this._opt.pingIntervalMs);
  }

  /** Fetches a fresh token before the current one's `exp` and hands it to the open connection. */
  _scheduleRefresh() {
    clearTimeout(this._timers.refresh);
    this._timers.refresh = null;
    if (!this._getToken) return;
    const exp = tokenClaims(this._token ?? '')?.exp;
    if (typeof exp !== 'number') return;
    const left = exp * 1000 - Date.now();
    const wait = Math.max(0, left - Math.min(this._opt.refreshMarginMs, left / 2));
    this._timers.refresh = setTimeout(() => this._refresh(), wait);
  }

  async _refresh() {
    const ws = this._ws;
    let token;
    try {
      token = await this._getToken();
    } catch (e) {
      this._emit('error', new PresenceError('bad_token', `getToken failed: ${e?.message ?? e}`));
    }
    if (this._ws !== ws || this._state !== 'open') return;
    if (typeof token === 'string' && token !== '') {
      this._token = token;
      this._send({ type: 'auth', token });
    }
    // On failure, try again halfway to the expiry (or at it, when the server ends the session).
    this._scheduleRefresh();
  }

  _scheduleReconnect() {
    if (this._state === 'ended') return;
    this._state = 'waiting';
    this._attempt += 1;
    // The first retry at once, then backoffFirstMs doubling up to backoffMaxMs, with jitter.
    const base = Math.min(this._opt.backoffMaxMs, this._opt.backoffFirstMs * 2 ** (this._attempt - 2));
    const delay = this._attempt === 1 ? 0 : Math.round(base * (0.5 + this._random()));
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = setTimeout(() => this._open(), delay);
  }

  _dropSocket() {
    const ws = this._ws;
    this._ws = null;
    clearInterval(this._timers.ping);
    clearTimeout(this._timers.pong);
    clearTimeout(this._timers.refresh);
    clearTimeout(this._timers.connect);
    this._timers.ping = this._timers.pong = this._timers.refresh = this._timers.connect = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        if (ws.readyState <= WS_OPEN) ws.close(1000);
      } catch {
        // Already failed: nothing to close.
      }
    }
  }

  _clearTimers() {
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = null;
    clearTimeout(this._timers.refresh);
    this._timers.refresh = null;
  }

  _emit(type, arg) {
    for (const listener of [...this._listeners[type]]) {
      try {
        listener(arg);
      } catch {
        // A listener's own failure must not break the connection.
      }
    }
  }

  // ---------------------------------------------------------------- HTTP

  async _http(method, path, body) {
    if (!this._fetch) throw new PresenceError('closed', 'no fetch implementation: pass options.fetch');
    const token = this._getToken ? await this._getToken() : this._staticToken;
    const headers = { Authorization: `Bearer ${token}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const resp = await this._fetch(`${this._urls.http}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = await resp.json().catch(() => null);
    if (!resp.ok) {
      const code = json && typeof json.code === 'string' ? json.code : 'http_error';
      const message = json && typeof json.message === 'string' ? json.message : `HTTP ${resp.status}`;
      throw new PresenceError(code, message, { status: resp.status });
    }
    return json;
  }
}
