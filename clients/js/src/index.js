// wsfleet client for browsers and Node >= 18: one live WebSocket to a fleet of gateway nodes
// that follows drains and survives node failures, with subscriptions that resume without
// loss or duplicates. The wire protocol is docs/protocol.md.

import { Client } from './client.js';

export { Client, Subscription } from './client.js';
export { WsfleetError, SERVER_CODES } from './errors.js';
export { Backoff, retryHintMs } from './backoff.js';
export { Cursor } from './cursor.js';
export * as protocol from './protocol.js';

/**
 * Starts connecting to `urls` (tried round-robin) and returns the client at once; await
 * `client.ready` for the first session.
 */
export function connect(options) {
  return new Client(options);
}
