// Compiled by `npm run typecheck` (tsc --noEmit): the README's example and every API call, typed.
import { PresenceClient, PresenceError, lastSeenText, type PresenceEntry } from '@presence/client';

const client = new PresenceClient({
  url: 'wss://presence.example.com',
  getToken: async () => 'jwt',
  pingIntervalMs: 20_000,
});
client.on('open', () => {});
client.on('close', ({ code, reason }) => console.log(code, reason.length));
client.on('error', (e: PresenceError) => console.log(e.code, e.status));
const entries: PresenceEntry[] = await client.query(['bob', 'carol']);
const text: string = lastSeenText(entries[0], new Date(), 'en-GB', { timeZone: 'Europe/Berlin' });
await client.subscribe(['bob'], (entry) => console.log(entry.user, entry.online, entry.last_seen_approx ?? text));
client.unsubscribe(['bob']);
const settings = await client.getPrivacy();
await client.setPrivacy({ last_seen: settings.last_seen === 'nobody' ? 'contacts' : 'nobody', except: ['eve'] });
const contacts: string[] = await client.updateContacts({ add: ['bob'], remove: ['eve'] });
await client.setContacts(contacts);
await client.bye();
// @ts-expect-error: a token or getToken, and a url, are required
new PresenceClient({});
