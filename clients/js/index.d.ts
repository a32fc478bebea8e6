// Type declarations of @presence/client (checked by `npm run typecheck`, tsc --noEmit).

/** One user's presence as the viewer may see it (docs/PROTOCOL.md, `presence` entries). */
export interface PresenceEntry {
  user: string;
  /** false also when the user hides their online state from this viewer. */
  online: boolean;
  /** RFC 3339 UTC with milliseconds, or null: never seen, or hidden from this viewer. */
  last_seen: string | null;
  /** Present only when last_seen is hidden from this viewer and the user was seen. */
  last_seen_approx?: 'recently' | 'within_week' | 'within_month' | 'long_ago';
}

/** A user's privacy settings (docs/PRIVACY.md). */
export interface PrivacySettings {
  last_seen: 'everyone' | 'contacts' | 'nobody';
  online: 'everyone' | 'same_as_last_seen';
  except: string[];
}

/** The WebSocket constructor the client uses (the browser's, Node 22's, or e.g. the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface PresenceClientOptions {
  /** The server: ws(s)://host:port or http(s)://host:port (a trailing /v1/ws is accepted). */
  url: string;
  /** A fixed token (it cannot be renewed: once it expires the client ends). */
  token?: string;
  /** Called before each connect and before the token's exp; the new token is sent in an `auth` frame. */
  getToken?: () => string | Promise<string>;
  /** Default: globalThis.WebSocket (browsers, Node 22+). */
  WebSocket?: WebSocketConstructor;
  /** Default: globalThis.fetch (for the privacy routes). */
  fetch?: typeof fetch;
  /** Application ping period (default 20,000 ms). */
  pingIntervalMs?: number;
  /** A server silent this long after a ping is taken for dead (default 10,000 ms). */
  pongTimeoutMs?: number;
  /** Reconnect backoff: first and largest delay (defaults 500 and 5,000 ms), with jitter. */
  backoffFirstMs?: number;
  backoffMaxMs?: number;
  /** Retry of a refused request without the server's hint (defaults 1,000 and 30,000 ms). */
  retryFirstMs?: number;
  retryMaxMs?: number;
  /** Fetch a new token this long before exp, or halfway through a shorter lifetime (default 30,000 ms). */
  refreshMarginMs?: number;
  /** The source of jitter (default Math.random). */
  random?: () => number;
}

export type PresenceErrorCode =
  | 'invalid_user' | 'too_many_users' | 'rate_limited' | 'unavailable' | 'bad_frame'
  | 'bad_token' | 'token_expired' | 'closed' | 'http_error' | (string & {});

export class PresenceError extends Error {
  constructor(code: PresenceErrorCode, message: string, detail?: { status?: number; users?: string[] });
  readonly code: PresenceErrorCode;
  readonly status: number | undefined;
  readonly users: string[] | undefined;
}

export interface CloseInfo {
  code: number;
  reason: string;
}

export const MAX_USERS_PER_FRAME: 256;

export class PresenceClient {
  constructor(options: PresenceClientOptions);
  connect(): void;
  on(type: 'open', listener: () => void): () => void;
  on(type: 'close', listener: (info: CloseInfo) => void): () => void;
  on(type: 'error', listener: (error: PresenceError) => void): () => void;
  off(type: 'open' | 'close' | 'error', listener: (arg?: any) => void): void;
  query(users: string[]): Promise<PresenceEntry[]>;
  subscribe(users: string[], onChange: (entry: PresenceEntry) => void): Promise<PresenceEntry[]>;
  unsubscribe(users: string[]): void;
  bye(): Promise<void>;
  getPrivacy(): Promise<PrivacySettings>;
  setPrivacy(settings: Partial<PrivacySettings>): Promise<PrivacySettings>;
  getContacts(): Promise<string[]>;
  setContacts(contacts: string[]): Promise<string[]>;
  updateContacts(change: { add?: string[]; remove?: string[] }): Promise<string[]>;
}

/** "online", "last seen today at 9:42", "last seen yesterday at 21:05", "last seen Monday at 8:10",
 * "last seen 3 Nov at 9:42", "last seen recently", "last seen within a week", ... */
export function lastSeenText(
  entry: PresenceEntry,
  now?: Date | number,
  locale?: string | string[],
  options?: { timeZone?: string },
): string;
