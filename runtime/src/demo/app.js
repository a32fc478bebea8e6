// The presence demo client: sign in, subscribe to contacts, show their state live. An ES module
// built on the client library (clients/js, served at /demo/client/), which does the protocol,
// reconnects, resubscribes and refreshes tokens; this file is only the page. Page behaviour:
// docs/DEMO.md.
import { PresenceClient, PresenceError, lastSeenText } from './client/index.js';

const USER_RE = /^[A-Za-z0-9_.@+\-:]{1,128}$/;

const devTokens = document.querySelector('meta[name="presence-dev-tokens"]')?.content === 'true';
const $ = (id) => document.getElementById(id);

const state = {
  me: null,
  token: null, // a pasted token (dev tokens are fetched afresh for every connect)
  tokenFromDev: false,
  client: null,
  contacts: new Map(), // user -> { entry: presence entry or null, status: 'pending'|'known'|'refused', refusal }
};

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
  if (c.status === 'pending' || !c.entry) return ['pending', 'checking…'];
  if (c.status === 'refused') return ['error', `not watched: ${c.refusal}`];
  // The library's wording, in the viewer's locale and time zone (docs/CLIENTS.md).
  return [c.entry.online ? 'online' : 'offline', lastSeenText(c.entry)];
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
  const lastSeen = c.entry?.last_seen ?? '';
  if (li.dataset.lastSeen !== lastSeen) li.dataset.lastSeen = lastSeen;
  const span = li.querySelector('.state');
  if (span.textContent !== text) span.textContent = text;
  if (lastSeen) span.title = new Date(lastSeen).toLocaleString();
  $('no-contacts').hidden = state.contacts.size > 0;
}

function renderAll() {
  for (const user of state.contacts.keys()) renderContact(user);
}

// ---- contacts, remembered per signed-in user ----

const contactsKey = () => `presence-demo.contacts.${state.me}`;
const newContact = () => ({ entry: null, status: 'pending', refusal: '' });

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

function onEntry(entry) {
  const c = state.contacts.get(entry.user);
  if (!c) return; // removed meanwhile
  c.entry = entry;
  c.status = 'known';
  renderContact(entry.user);
}

// Subscribes; `adding`: a refusal drops the new contacts again (nothing is watched for them).
function watch(users, adding) {
  const client = state.client;
  client.subscribe(users, onEntry).catch((e) => {
    if (state.client !== client || (e instanceof PresenceError && e.code === 'closed')) return;
    const detail = e instanceof PresenceError ? `${e.message} (${e.code})` : String(e);
    if (adding) {
      for (const u of users) state.contacts.delete(u);
      saveContacts();
      for (const u of users) renderContact(u);
      showError(`Could not add ${users.join(', ')}: ${detail}`);
      return;
    }
    for (const u of users) {
      const c = state.contacts.get(u);
      if (c) {
        c.status = 'refused';
        c.refusal = e.code ?? 'error';
        renderContact(u);
      }
    }
    showError(`Server error: ${detail}`);
  });
}

function addContact(user) {
  state.contacts.set(user, newContact());
  saveContacts();
  renderContact(user);
  watch([user], true);
}

function removeContact(user) {
  state.contacts.delete(user);
  saveContacts();
  renderContact(user);
  state.client?.unsubscribe([user]);
}

// ---- tokens ----

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
    throw new Error('server unreachable');
  }
  const body = await resp.json().catch(() => ({}));
  if (resp.ok && typeof body.token === 'string') return body.token;
  if (resp.status === 404) throw new Fatal('this server is not in dev mode: it does not hand out tokens');
  if (resp.status >= 500) throw new Error(`server error ${resp.status}`);
  throw new Fatal(body.message ? `${body.message} (${body.code})` : `token refused (HTTP ${resp.status})`);
}

// A browser cannot see why a WebSocket upgrade failed, so a pasted token is checked over HTTP
// first: 401 for a token the server refuses (forged, expired), a network error while it is down.
async function checkedToken(token) {
  let resp;
  try {
    resp = await fetch('/v1/presence?users=', { headers: { Authorization: `Bearer ${token}` } });
  } catch {
    throw new Error('server unreachable');
  }
  if (resp.ok) return token;
  if (resp.status === 401) {
    const body = await resp.json().catch(() => ({}));
    throw new Fatal(`token refused: ${body.message || 'unauthorized'}`);
  }
  throw new Error(`server answered HTTP ${resp.status}`);
}

// ---- the session ----

function startClient() {
  const { me, token, tokenFromDev } = state;
  // Called by the library before every connect and before the token expires.
  const getToken = async () => {
    try {
      return tokenFromDev ? await fetchDevToken(me) : await checkedToken(token);
    } catch (e) {
      if (e instanceof Fatal && state.client === client) {
        signOut();
        showError(`Signed out: ${e.message}`);
      }
      throw e;
    }
  };
  const client = new PresenceClient({ url: location.origin, getToken });
  state.client = client;
  client.on('open', () => {
    if (state.client === client) setConn('open');
  });
  client.on('close', ({ code, reason }) => {
    if (state.client !== client) return;
    const why = code === 1006 ? 'connection lost' : reason ? `closed by the server: ${reason} (${code})` : `closed (${code})`;
    setConn('reconnecting', `${why}; retrying`);
  });
  setConn('connecting');
  client.connect();
  const users = [...state.contacts.keys()];
  if (users.length > 0) watch(users, false);
}

function stopClient() {
  const client = state.client;
  state.client = null;
  client?.bye(); // a graceful end: the server records last seen now
}

// ---- sign in and out ----

function enterApp(user, token, fromDev) {
  state.me = user;
  state.token = token;
  state.tokenFromDev = fromDev;
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
  startClient();
  loadPrivacy();
}

function signOut() {
  stopClient();
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
    await fetchDevToken(user); // reports a server that is down or not in dev mode at once
    enterApp(user, null, true);
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

// ---- privacy (docs/PRIVACY.md): the two settings, the except list, and the contact list ----

async function loadPrivacy() {
  const client = state.client;
  if (!client) return;
  try {
    const p = await client.getPrivacy();
    $('privacy-last-seen').value = p.last_seen;
    $('privacy-online').value = p.online;
    $('privacy-except').value = p.except.join(', ');
  } catch (e) {
    fieldError('privacy-error', `Cannot read your settings: ${e.message}`);
  }
}

$('privacy-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  fieldError('privacy-error', '');
  $('privacy-saved').textContent = '';
  const except = $('privacy-except').value.split(',').map((u) => u.trim()).filter(Boolean);
  const bad = except.find((u) => !USER_RE.test(u));
  if (bad) {
    fieldError('privacy-error', `${bad} is not a user name.`);
    return;
  }
  try {
    await state.client.setContacts([...state.contacts.keys()]);
    await state.client.setPrivacy({ last_seen: $('privacy-last-seen').value, online: $('privacy-online').value, except });
    $('privacy-saved').textContent = 'Saved.';
  } catch (e) {
    fieldError('privacy-error', `Not saved: ${e.message}`);
  }
});

$('sign-out').addEventListener('click', signOut);
$('error-close').addEventListener('click', () => {
  $('error').hidden = true;
});

// Closing the tab ends the session at once (the server records last seen at the close). A page
// kept in the back/forward cache starts a new session when shown.
window.addEventListener('pagehide', () => stopClient());
window.addEventListener('pageshow', (ev) => {
  if (ev.persisted && state.me !== null && state.client === null) startClient();
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
