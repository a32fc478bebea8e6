// @presence/client: the presence service's client library, for browsers and Node 20+.
// No runtime dependencies. Protocol: docs/PROTOCOL.md; guarantees: docs/CLIENTS.md.
export { PresenceClient, MAX_USERS_PER_FRAME } from './src/client.js';
export { PresenceError } from './src/errors.js';
export { lastSeenText } from './src/lastseen.js';
