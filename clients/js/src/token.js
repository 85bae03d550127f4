// When a live connection refreshes its token (socket-free, so the rules are table-tested):
// the refresh is due once the lifetime left falls to min(30 s, half of it), and a failed
// refresh is retried with backoff but never past the expiry. Mirrors clients/rust/src/token.rs.

/** A refresh is due once the token's lifetime left has fallen to this (or to half of it). */
export const REFRESH_MARGIN_MS = 30_000;

/**
 * Milliseconds from `nowMs` until refreshing a token that expires at `expiresAtMs` (both ms
 * since the Unix epoch): a one-hour token 30 s before its expiry, a 3 s token after 1.5 s, an
 * expired one at once.
 */
export function refreshInMs(nowMs, expiresAtMs) {
  const left = Math.max(0, expiresAtMs - nowMs);
  return left - Math.min(REFRESH_MARGIN_MS, left / 2);
}

/**
 * The wait before retrying a failed refresh, given the backoff's drawn `delayMs`: never past
 * the expiry (the last try lands on it, while the gateway's leeway still holds the
 * connection). `null` once the token has expired: the gateway will close with 4001 and the
 * client reconnects with a token from `getToken`.
 */
export function refreshRetryMs(delayMs, nowMs, expiresAtMs) {
  const left = expiresAtMs - nowMs;
  return left > 0 ? Math.min(delayMs, left) : null;
}
