// Reads a JWT's claims without verifying it: the library only needs `exp` to refresh in time (the
// server verifies every token it is given).

/**
 * @param {string} token
 * @returns {{ sub?: string, exp?: number } | null}
 */
export function tokenClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const json = atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '='));
    const claims = JSON.parse(json);
    return claims !== null && typeof claims === 'object' ? claims : null;
  } catch {
    return null;
  }
}
