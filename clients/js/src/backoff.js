// Reconnect delays: capped exponential backoff with full jitter, so that clients which lost
// their node at the same moment spread their reconnects instead of arriving together.

/** Longest server-given retry hint obeyed, so a bad hint cannot park a client for hours. */
const MAX_HINT_MS = 300_000;

export class Backoff {
  /** @param {{baseMs?: number, capMs?: number}} [options] */
  constructor({ baseMs = 500, capMs = 30_000 } = {}) {
    if (!(baseMs >= 0) || !(capMs >= 0)) throw new RangeError('backoff baseMs and capMs must be >= 0');
    this.baseMs = baseMs;
    this.capMs = capMs;
  }

  /** The upper bound before attempt `attempt` (0-based): `min(cap, base * 2^attempt)`. */
  ceiling(attempt) {
    return Math.min(this.capMs, this.baseMs * 2 ** Math.min(attempt, 52));
  }

  /** A delay drawn uniformly from `[0, ceiling(attempt)]` ("full jitter"). */
  delay(attempt, random = Math.random) {
    return Math.round(random() * this.ceiling(attempt));
  }
}

/**
 * The `retry after Ns` hint of a 1013 close reason (e.g. `node is at capacity; retry after
 * 5s`) in milliseconds, or 0 without one.
 */
export function retryHintMs(reason) {
  const match = /retry after (\d+(?:\.\d+)?)\s*s\b/i.exec(reason ?? '');
  return match ? Math.min(Number(match[1]) * 1000, MAX_HINT_MS) : 0;
}
