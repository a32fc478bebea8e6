// The one error type the library rejects with and emits, carrying the server's code.

/**
 * A request the server refused, or a failure of the connection. `message` is the server's
 * human-readable detail (its wording is not part of the contract); `code` is the contract.
 *
 * `code` is one of the protocol's error codes (`invalid_user`, `too_many_users`, `rate_limited`,
 * `unavailable`, `bad_frame`, `bad_token`, `token_expired`, docs/PROTOCOL.md) or, for the HTTP
 * routes, the `code` of the JSON error body; the library's own are `closed` (the client was
 * ended with `bye()` before an answer came) and `http_error` (an HTTP answer without a JSON body).
 */
export class PresenceError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{ status?: number, users?: string[] }} [detail]
   */
  constructor(code, message, detail = {}) {
    super(message || code);
    this.name = 'PresenceError';
    /** @type {string} */
    this.code = code;
    /** @type {number | undefined} HTTP status, for the HTTP routes */
    this.status = detail.status;
    /** @type {string[] | undefined} the users of the refused request */
    this.users = detail.users;
  }
}
