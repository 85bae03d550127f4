// Errors the client reports: refusals from the gateway (its `error` frames, typed by their
// protocol code) and local failures (not connected, connection lost, timeouts, bad input).

/** Codes the gateway sends in `error` frames (docs/protocol.md). */
export const SERVER_CODES = Object.freeze([
  'bad_request',
  'unknown_op',
  'unauthorized',
  'forbidden',
  'too_large',
  'rate_limited',
  'not_found',
  'internal',
]);

/** Why a client operation failed. `code` is a server code or one of the local ones below. */
export class WsfleetError extends Error {
  /**
   * @param {string} code a server code, or `invalid_channel`, `invalid_data`,
   *   `already_subscribed`, `not_connected`, `disconnected`, `timeout`, `closed`, `protocol`
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = 'WsfleetError';
    this.code = code;
  }

  /** True when the gateway itself refused the request (as opposed to a local failure). */
  get fromServer() {
    return SERVER_CODES.includes(this.code);
  }
}
