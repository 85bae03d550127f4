// The wire protocol as the client sees it (docs/protocol.md): the JSON text of the frames the
// client sends, and validation of the frames it receives. Keys are written in the order the
// spec shows them, so encoded frames compare equal to the spec's examples.

/** Channel names: 1..=200 characters of `[A-Za-z0-9:._\-/]`. */
const CHANNEL = /^[A-Za-z0-9:._\-/]{1,200}$/;

export function validChannel(channel) {
  return typeof channel === 'string' && CHANNEL.test(channel);
}

/** `{"op":"subscribe","channel":..,"since":{"offset":..,"epoch":..}?,"id":..?}` */
export function encodeSubscribe(channel, since, id) {
  const frame = { op: 'subscribe', channel };
  if (since) frame.since = { offset: since.offset, epoch: since.epoch };
  if (id !== undefined) frame.id = id;
  return JSON.stringify(frame);
}

export function encodeUnsubscribe(channel, id) {
  const frame = { op: 'unsubscribe', channel };
  if (id !== undefined) frame.id = id;
  return JSON.stringify(frame);
}

/** `data` must be a JSON value; JSON.stringify throws on cycles and BigInt. */
export function encodePublish(channel, data, id, idempotencyKey) {
  const frame = { op: 'publish', channel, data };
  if (idempotencyKey !== undefined) frame.idempotency_key = idempotencyKey;
  if (id !== undefined) frame.id = id;
  return JSON.stringify(frame);
}

export function encodeSend(to, data, id) {
  const frame = { op: 'send', to, data };
  if (id !== undefined) frame.id = id;
  return JSON.stringify(frame);
}

/** `{"op":"refresh","token":..,"id":..?}`: a fresh token before the current one expires. */
export function encodeRefresh(token, id) {
  const frame = { op: 'refresh', token };
  if (id !== undefined) frame.id = id;
  return JSON.stringify(frame);
}

const isString = (v) => typeof v === 'string';
const isOffset = (v) => Number.isSafeInteger(v) && v >= 0;
const optional = (check) => (v) => v === undefined || check(v);

/** Required fields of each server op and how to check them; other fields are ignored. */
const SERVER_OPS = {
  welcome: { client_id: isString, node: isString, heartbeat_ms: optional(isOffset), expires_at_ms: optional(isOffset) },
  ack: {
    id: optional(isString),
    offset: optional(isOffset),
    epoch: optional(isString),
    recovered: optional((v) => typeof v === 'boolean'),
    expires_at_ms: optional(isOffset),
  },
  error: { code: isString, message: optional(isString), id: optional(isString) },
  message: { channel: isString, offset: isOffset },
  direct: { from: isString },
  reconnect: { after_ms: isOffset, reason: optional(isString) },
};

/**
 * Parses one text frame from the gateway. Returns the frame object; throws an Error naming
 * what is wrong for malformed JSON, an unknown `op` or a field of the wrong type.
 */
export function decodeServerFrame(text) {
  const frame = JSON.parse(text);
  if (frame === null || typeof frame !== 'object' || Array.isArray(frame)) {
    throw new Error('frame is not a JSON object');
  }
  const fields = SERVER_OPS[frame.op];
  if (!fields) throw new Error(`unknown op ${JSON.stringify(frame.op)}`);
  for (const [name, check] of Object.entries(fields)) {
    if (!check(frame[name])) throw new Error(`${frame.op}: bad or missing field \`${name}\``);
  }
  return frame;
}
