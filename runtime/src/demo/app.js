// The presence demo client: sign in, subscribe to contacts over the WebSocket, show their state live.
// Plain JavaScript, no dependencies. Protocol: docs/PROTOCOL.md (JSON frames, section 2;
// subscriptions, section 6). Page behaviour: docs/DEMO.md.
'use strict';

(() => {
  const USER_RE = /^[A-Za-z0-9_.@+\-:]{1,128}$/;
  const MAX_USERS_PER_FRAME = 256;
  const BACKOFF_FIRST_MS = 500;
  const BACKOFF_MAX_MS = 5000;
  const PING_EVERY_MS = 20000;
  const PONG_TIMEOUT_MS = 10000;
  const RETRY_SUBSCRIBE_MS = 2000;
  // A connection's token is replaced this long before its `exp` (the server closes with 4001 once
  // it expires); never sooner than REFRESH_MIN_MS from now, so a short-lived token cannot spin.
  const REFRESH_BEFORE_EXP_MS = 60000;
  const REFRESH_MIN_MS = 5000;

  const devTokens = document.querySelector('meta[name="presence-dev-tokens"]')?.content === 'true';
  const $ = (id) => document.getElementById(id);

  const state = {
    me: null,
    token: null,
    tokenFromDev: false, // a dev token can be fetched again (the server's dev secret changes per start)
    gen: 0, // bumped on sign-out: callbacks of an older session do nothing
    ws: null,
    attempt: 0,
    reconnectTimer: null,
    pingTimer: null,
    pongDeadline: null,
    refreshTimer: null,
    nextId: 1,
    pending: new Map(), // request id -> { kind: 'add' | 'sync', users }
    contacts: new Map(), // user -> { online, lastSeen (ms or null), status: 'pending'|'known'|'unknown'|'refused' }
  };

  // ---- last seen, as chat apps show it (viewer's local time, minute granularity) ----

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
  const dateFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short' });
  const dateYearFmt = new Intl.DateTimeFormat(undefined, { day: 'numeric', month: 'short', year: 'numeric' });

  function startOfDay(y, m, d) {
    return new Date(y, m, d).getTime(); // local midnight; Date handles month ends and DST
  }

  function lastSeenText(ms, now = new Date()) {
    const seen = new Date(ms);
    const time = timeFmt.format(seen);
    const today = startOfDay(now.getFullYear(), now.getMonth(), now.getDate());
    const yesterday = startOfDay(now.getFullYear(), now.getMonth(), now.getDate() - 1);
    const day = startOfDay(seen.getFullYear(), seen.getMonth(), seen.getDate());
    // A value slightly ahead of this clock (another machine's clock) still reads as today.
    if (day >= today) return `last seen today at ${time}`;
    if (day === yesterday) return `last seen yesterday at ${time}`;
    const date = (seen.getFullYear() === now.getFullYear() ? dateFmt : dateYearFmt).format(seen);
    return `last seen ${date} at ${time}`;
  }

  // ---- rendering ----

  function showError(text) {
    $('error-text').textContent = text;
    $('error').hidden = false;
  }

  function fieldError(id, text) {
    const el = $(id);
    el.textContent = text || '';
    el.hidden = !text;
    const input = document.querySelector(`[aria-describedby~="${id}"]`);
    if (input) input.setAttribute('aria-invalid', text ? 'true' : 'false');
  }

  const CONN_LABELS = { connecting: 'Connecting…', open: 'Connected', reconnecting: 'Reconnecting…' };

  function setConn(conn, detail = '') {
    $('conn').dataset.conn = conn;
    $('app').dataset.conn = conn;
    $('conn-label').textContent = CONN_LABELS[conn];
    $('conn-detail').textContent = detail;
  }

  function contactState(c) {
    if (c.status === 'pending') return ['pending', 'checking…'];
    if (c.status === 'unknown') return ['unknown', 'unknown (server busy, retrying)'];
    if (c.status === 'refused') return ['error', `not watched: ${c.refusal}`];
    if (c.online) return ['online', 'online'];
    return ['offline', c.lastSeen === null ? 'never seen' : lastSeenText(c.lastSeen)];
  }

  function renderContact(user) {
    const c = state.contacts.get(user);
    let li = document.querySelector(`#contacts li[data-user="${CSS.escape(user)}"]`);
    if (!c) {
      li?.remove();
      $('no-contacts').hidden = state.contacts.size > 0;
      return;
    }
    if (!li) {
      li = document.createElement('li');
      li.dataset.user = user;
      const avatar = document.createElement('span');
      avatar.className = 'avatar';
      avatar.setAttribute('aria-hidden', 'true');
      avatar.textContent = user.slice(0, 1).toUpperCase();
      const name = document.createElement('span');
      name.className = 'name';
      name.textContent = user;
      const text = document.createElement('span');
      text.className = 'state';
      const remove = document.createElement('button');
      remove.type = 'button';
      remove.className = 'quiet remove';
      remove.setAttribute('aria-label', `Remove ${user}`);
      remove.textContent = '×';
      remove.addEventListener('click', () => removeContact(user));
      const who = document.createElement('span');
      who.className = 'who';
      who.append(name, text);
      li.append(avatar, who, remove);
      $('contacts').append(li);
    }
    const [dataState, text] = contactState(c);
    // Touch the DOM only on change, so aria-live announces changes and nothing else.
    if (li.dataset.state !== dataState) li.dataset.state = dataState;
    const lastSeen = c.lastSeen === null ? '' : new Date(c.lastSeen).toISOString();
    if (li.dataset.lastSeen !== lastSeen) li.dataset.lastSeen = lastSeen;
    const span = li.querySelector('.state');
    if (span.textContent !== text) span.textContent = text;
    if (c.lastSeen !== null) span.title = new Date(c.lastSeen).toLocaleString();
    $('no-contacts').hidden = state.contacts.size > 0;
  }

  function renderAll() {
    for (const user of state.contacts.keys()) renderContact(user);
  }

  // ---- contacts, remembered per signed-in user ----

  const contactsKey = () => `presence-demo.contacts.${state.me}`;

  function loadContacts() {
    let users = [];
    try {
      users = JSON.parse(localStorage.getItem(contactsKey()) || '[]');
    } catch {
      users = [];
    }
    state.contacts.clear();
    $('contacts').replaceChildren();
    for (const u of Array.isArray(users) ? users : []) {
      if (typeof u === 'string' && USER_RE.test(u)) state.contacts.set(u, newContact());
    }
    renderAll();
    $('no-contacts').hidden = state.contacts.size > 0;
  }

  function saveContacts() {
    try {
      localStorage.setItem(contactsKey(), JSON.stringify([...state.contacts.keys()]));
    } catch {
      // Storage full or disabled: contacts are then only kept for this page's life.
    }
  }

  const newContact = () => ({ online: false, lastSeen: null, status: 'pending' });

  function addContact(user) {
    state.contacts.set(user, newContact());
    saveContacts();
    renderContact(user);
    if (isOpen()) subscribe([user], 'add');
  }

  function removeContact(user) {
    state.contacts.delete(user);
    saveContacts();
    renderContact(user);
    if (isOpen()) send({ type: 'unsubscribe', users: [user] });
  }

  // ---- the WebSocket ----

  const isOpen = () => state.ws !== null && state.ws.readyState === WebSocket.OPEN;

  function send(frame) {
    if (isOpen()) state.ws.send(JSON.stringify(frame));
  }

  function subscribe(users, kind) {
    for (let i = 0; i < users.length; i += MAX_USERS_PER_FRAME) {
      const chunk = users.slice(i, i + MAX_USERS_PER_FRAME);
      const id = state.nextId++;
      state.pending.set(id, { kind, users: chunk });
      send({ type: 'subscribe', id, users: chunk });
    }
  }

  class Retryable extends Error {}
  class Fatal extends Error {}

  async function fetchDevToken(user) {
    let resp;
    try {
      resp = await fetch('/v1/dev/token', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ user }),
      });
    } catch {
      throw new Retryable('server unreachable');
    }
    const body = await resp.json().catch(() => ({}));
    if (resp.ok && typeof body.token === 'string') return body.token;
    if (resp.status === 404) throw new Fatal('this server is not in dev mode: it does not hand out tokens');
    if (resp.status >= 500) throw new Retryable(`server error ${resp.status}`);
    throw new Fatal(body.message ? `${body.message} (${body.code})` : `token refused (HTTP ${resp.status})`);
  }

  // Checks the token before a (re)connect: a browser cannot see why a WebSocket upgrade failed, but
  // this request answers 401 for a token the server refuses (a dev-mode server restarted with a new
  // secret, an expired token) and fails outright while the server is down.
  async function checkToken() {
    let resp;
    try {
      resp = await fetch('/v1/presence?users=', { headers: { Authorization: `Bearer ${state.token}` } });
    } catch {
      throw new Retryable('server unreachable');
    }
    if (resp.ok) return;
    if (resp.status === 401) {
      if (state.tokenFromDev) {
        state.token = await fetchDevToken(state.me);
        return;
      }
      const body = await resp.json().catch(() => ({}));
      throw new Fatal(`token refused: ${body.message || 'unauthorized'}`);
    }
    throw new Retryable(`server answered HTTP ${resp.status}`);
  }

  async function connect(gen, tokenIsFresh) {
    clearTimeout(state.reconnectTimer);
    setConn(state.attempt === 0 ? 'connecting' : 'reconnecting', state.attempt === 0 ? '' : 'trying now');
    try {
      if (!tokenIsFresh) await checkToken();
    } catch (e) {
      if (gen !== state.gen) return;
      if (e instanceof Fatal) {
        signOut();
        showError(`Signed out: ${e.message}`);
        return;
      }
      scheduleReconnect(gen, e.message);
      return;
    }
    if (gen !== state.gen || state.ws !== null) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${scheme}//${location.host}/v1/ws?access_token=${encodeURIComponent(state.token)}`);
    state.ws = ws;
    ws.onopen = () => {
      if (state.ws !== ws) return;
      state.attempt = 0;
      setConn('open');
      startPings(ws);
      scheduleRefresh(ws);
      const users = [...state.contacts.keys()];
      if (users.length > 0) subscribe(users, 'sync');
    };
    ws.onmessage = (ev) => {
      if (state.ws === ws) onFrame(ev.data);
    };
    ws.onclose = (ev) => {
      if (state.ws !== ws) return;
      dropSocket();
      if (ev.code === 4001 && !state.tokenFromDev) {
        // The pasted token expired: only a new one helps.
        signOut();
        showError('Signed out: your token expired. Paste a fresh one to sign in again.');
        return;
      }
      scheduleReconnect(gen, closeReason(ev));
    };
  }

  // Replaces the connection's token before it expires: a dev token is fetched again and sent in
  // an `auth` frame; a pasted token cannot be renewed by the page, so the user is asked for a new
  // one when the server closes the connection at expiry (4001, see ws.onclose).
  function scheduleRefresh(ws) {
    clearTimeout(state.refreshTimer);
    const exp = tokenExp(state.token);
    if (exp === null || !state.tokenFromDev) return;
    const delay = Math.max(REFRESH_MIN_MS, exp * 1000 - Date.now() - REFRESH_BEFORE_EXP_MS);
    state.refreshTimer = setTimeout(async () => {
      if (state.ws !== ws) return;
      try {
        const token = await fetchDevToken(state.me);
        if (state.ws !== ws) return;
        state.token = token;
        send({ type: 'auth', token });
        scheduleRefresh(ws);
      } catch (e) {
        showError(`Could not renew the session's token: ${e.message}`);
      }
    }, delay);
  }

  function closeReason(ev) {
    if (ev.code === 1006) return 'connection lost';
    return ev.reason ? `closed by the server: ${ev.reason} (${ev.code})` : `closed (${ev.code})`;
  }

  function dropSocket() {
    const ws = state.ws;
    state.ws = null;
    state.pending.clear();
    clearInterval(state.pingTimer);
    clearTimeout(state.pongDeadline);
    clearTimeout(state.refreshTimer);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) ws.close(1000);
    }
  }

  function scheduleReconnect(gen, reason) {
    if (gen !== state.gen) return;
    state.attempt += 1;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (state.attempt - 1));
    const delay = Math.round(base * (0.8 + 0.4 * Math.random()));
    setConn('reconnecting', `${reason}; retrying in ${Math.max(1, Math.round(delay / 1000))} s`);
    state.reconnectTimer = setTimeout(() => connect(gen, false), delay);
  }

  // Application pings find a dead connection the browser has not noticed (a sleeping laptop, a
  // dropped network); the server's own WebSocket pings are answered by the browser itself.
  function startPings(ws) {
    let seq = 0;
    state.pingTimer = setInterval(() => {
      if (state.ws !== ws) return;
      send({ type: 'ping', seq: ++seq });
      clearTimeout(state.pongDeadline);
      state.pongDeadline = setTimeout(() => {
        if (state.ws !== ws) return;
        const gen = state.gen;
        dropSocket();
        scheduleReconnect(gen, 'no answer from the server');
      }, PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  function onFrame(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      showError('The server sent a frame this page cannot read.');
      return;
    }
    const request = frame.id !== undefined && frame.id !== null ? state.pending.get(frame.id) : undefined;
    if (request) state.pending.delete(frame.id);
    switch (frame.type) {
      case 'presence':
        for (const entry of Array.isArray(frame.users) ? frame.users : []) applyEntry(entry);
        break;
      case 'error':
        onErrorFrame(frame, request);
        break;
      case 'pong':
        clearTimeout(state.pongDeadline);
        break;
      default:
        break;
    }
  }

  function applyEntry(entry) {
    const c = state.contacts.get(entry?.user);
    if (!c) return; // removed meanwhile
    const lastSeen = typeof entry.last_seen === 'string' ? Date.parse(entry.last_seen) : NaN;
    c.online = entry.online === true;
    c.lastSeen = Number.isNaN(lastSeen) ? null : lastSeen;
    c.status = 'known';
    renderContact(entry.user);
  }

  function onErrorFrame(frame, request) {
    const code = typeof frame.code === 'string' ? frame.code : 'error';
    const message = typeof frame.message === 'string' ? frame.message : '';
    const detail = message ? `${message} (${code})` : code;
    if (request && (code === 'unavailable' || code === 'rate_limited')) {
      // The subscription holds these users but pushes nothing until a subscribe of them succeeds.
      for (const u of request.users) {
        const c = state.contacts.get(u);
        if (c) {
          c.status = 'unknown';
          renderContact(u);
        }
      }
      showError(`Could not read ${request.users.join(', ')}: ${detail}. Retrying.`);
      const ws = state.ws;
      setTimeout(() => {
        if (state.ws !== ws) return; // reconnected meanwhile: that subscribed everyone again
        const users = request.users.filter((u) => state.contacts.has(u));
        if (users.length > 0) subscribe(users, request.kind);
      }, RETRY_SUBSCRIBE_MS);
      return;
    }
    if (request && request.kind === 'add') {
      // Refused outright (e.g. too_many_users): nothing is watched, so the contact is not kept.
      for (const u of request.users) state.contacts.delete(u);
      saveContacts();
      for (const u of request.users) renderContact(u);
      showError(`Could not add ${request.users.join(', ')}: ${detail}`);
      return;
    }
    for (const u of request ? request.users : []) {
      const c = state.contacts.get(u);
      if (c) {
        c.status = 'refused';
        c.refusal = code;
        renderContact(u);
      }
    }
    showError(`Server error: ${detail}`);
  }

  // ---- sign in and out ----

  function enterApp(user, token, fromDev) {
    state.gen += 1;
    state.me = user;
    state.token = token;
    state.tokenFromDev = fromDev;
    state.attempt = 0;
    $('me').textContent = user;
    $('signin').hidden = true;
    $('app').hidden = false;
    $('error').hidden = true;
    try {
      if (fromDev) sessionStorage.setItem('presence-demo.user', user);
    } catch {
      // No session storage: a reload signs out.
    }
    loadContacts();
    $('contact').focus();
    // A pasted token is checked first, so a refused one is reported as such.
    connect(state.gen, fromDev);
  }

  function signOut() {
    state.gen += 1;
    clearTimeout(state.reconnectTimer);
    dropSocket();
    state.me = null;
    state.token = null;
    state.contacts.clear();
    $('contacts').replaceChildren();
    $('app').hidden = true;
    $('signin').hidden = false;
    try {
      sessionStorage.removeItem('presence-demo.user');
    } catch {
      // Nothing stored.
    }
  }

  async function signInByName(user) {
    fieldError('user-name-error', '');
    if (!USER_RE.test(user)) {
      fieldError('user-name-error', 'Use 1 to 128 letters, digits or _ . @ + - :');
      return;
    }
    try {
      enterApp(user, await fetchDevToken(user), true);
    } catch (e) {
      fieldError('user-name-error', `Cannot sign in: ${e.message}`);
    }
  }

  // The user a token names (its `sub` claim), for display only: the server checks the token.
  function tokenUser(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
      return typeof claims.sub === 'string' && USER_RE.test(claims.sub) ? claims.sub : null;
    } catch {
      return null;
    }
  }

  // The token's `exp` claim (Unix seconds), or null: only to schedule its renewal.
  function tokenExp(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
      return typeof claims.exp === 'number' ? claims.exp : null;
    } catch {
      return null;
    }
  }

  // ---- wiring ----

  $('name-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    signInByName($('user-name').value.trim());
  });

  $('token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('token').value.trim();
    const user = tokenUser(token);
    if (!user) {
      fieldError('token-error', 'This is not a presence token (a JWT whose subject is a user id).');
      return;
    }
    fieldError('token-error', '');
    $('token').value = '';
    enterApp(user, token, false);
  });

  $('add-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const user = $('contact').value.trim();
    if (!USER_RE.test(user)) {
      fieldError('contact-error', 'Use 1 to 128 letters, digits or _ . @ + - :');
      return;
    }
    if (state.contacts.has(user)) {
      fieldError('contact-error', `${user} is already in your contacts.`);
      return;
    }
    fieldError('contact-error', '');
    $('contact').value = '';
    addContact(user);
  });

  $('sign-out').addEventListener('click', signOut);
  $('error-close').addEventListener('click', () => {
    $('error').hidden = true;
  });

  // Closing the tab ends the session at once (the server records last seen at the close). A page
  // kept in the back/forward cache connects again when shown.
  window.addEventListener('pagehide', () => {
    clearTimeout(state.reconnectTimer);
    dropSocket();
  });
  window.addEventListener('pageshow', (ev) => {
    if (ev.persisted && state.me !== null && state.ws === null) connect(state.gen, false);
  });
  window.addEventListener('online', () => {
    if (state.me !== null && state.ws === null) connect(state.gen, false);
  });
  // "today" becomes "yesterday" at midnight.
  setInterval(renderAll, 30000);

  if (!devTokens) {
    $('name-form').hidden = true;
    $('no-dev').hidden = false;
  }
  let remembered = null;
  try {
    remembered = sessionStorage.getItem('presence-demo.user');
  } catch {
    remembered = null;
  }
  if (devTokens && remembered && USER_RE.test(remembered)) {
    signInByName(remembered);
  } else {
    (devTokens ? $('user-name') : $('token')).focus();
  }
})();
