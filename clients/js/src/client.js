// The application's handle on a fleet: one WebSocket at a time, a reconnect loop that obeys
// the gateway's `reconnect` hints and close codes (otherwise capped exponential backoff with
// full jitter over the URLs, round-robin), and subscriptions that resume from their last
// delivered offset on every new session. With a `getToken` callback, every attempt gets a
// fresh token and a live session refreshes its token ahead of the expiry (timing rules in
// token.js). Mirrors the rules of clients/rust (driver.rs).

import { Backoff, retryHintMs } from './backoff.js';
import { Cursor, Outcome } from './cursor.js';
import { WsfleetError } from './errors.js';
import {
  decodeServerFrame,
  encodePublish,
  encodeRefresh,
  encodeSend,
  encodeSubscribe,
  encodeUnsubscribe,
  validChannel,
} from './protocol.js';
import { refreshInMs, refreshRetryMs } from './token.js';

/** Close codes with a meaning for reconnecting: a drain, and "try again later". */
const SERVICE_RESTART = 1012;
const TRY_AGAIN_LATER = 1013;
/** The gateway's close when the token expired without a refresh: reconnect with a fresh one. */
const TOKEN_EXPIRED = 4001;
/** What a WebSocket reports when the connection ended without a close frame. */
const NO_STATUS = 1005;
const ABNORMAL = 1006;
/** Browsers only let a page close with 1000 or 3000..4999. */
const NORMAL = 1000;
/** Error codes that mean "not now" (e.g. the node's backplane is down), not "never". */
const TRANSIENT_ERRORS = new Set(['internal', 'rate_limited']);

const EVENTS = [
  'connect',
  'disconnect',
  'reconnecting',
  'draining',
  'recoveryfailed',
  'gap',
  'subscriptionlost',
  'direct',
  'tokenrefresh',
  'tokenrefreshfailed',
  'error',
];

/** A promise with its resolve/reject, marked handled so an unobserved failure is no crash. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  return { promise, resolve, reject };
}

/** The fields of an ack an application cares about (everything but `op` and `id`). */
function ackResult(frame) {
  const { op: _op, id: _id, ...rest } = frame;
  return rest;
}

/** One channel's subscription, as handed to the application. */
export class Subscription {
  #client;
  #state;

  constructor(client, channel, state) {
    this.#client = client;
    this.#state = state;
    this.channel = channel;
    /** Resolves with the first `ack` ({offset, epoch}); rejects with the gateway's error. */
    this.ready = state.waiting.promise;
  }

  /** The last offset delivered (or the channel's offset at subscribe time), null before. */
  get offset() {
    return this.#state.cursor.last;
  }

  /** The history epoch the offsets belong to, null before the first ack. */
  get epoch() {
    return this.#state.cursor.epoch;
  }

  /** Stops deliveries; resolves with the gateway's ack (at once when offline). */
  unsubscribe() {
    return this.#client.unsubscribe(this.channel);
  }
}

export class Client {
  #WebSocket;
  #urls;
  #token;
  #getToken;
  #backoff;
  #connectTimeoutMs;
  #requestTimeoutMs;
  #listeners = new Map(EVENTS.map((name) => [name, new Set()]));
  #ready = deferred();

  #socket = null;
  #session = null;
  #closed = false;
  #attempt = 0;
  /** Failed attempts before the current session, restored if it turns out unusable. */
  #attemptBeforeSession = 0;
  #nextUrl = 0;
  #nextRequest = 0;
  #connectTimer = null;
  #reconnectTimer = null;
  /** The attempt whose token is being fetched or whose socket is opening; a stale one is ignored. */
  #attempting = null;
  /** The next refresh (or retry) of the session's token, and failed refreshes since the last success. */
  #refreshTimer = null;
  #refreshFailures = 0;
  /** When the gateway asked us to move (epoch ms), and the timer that moves us then. */
  #hintAt = null;
  #hintTimer = null;
  /** channel -> {cursor, onMessage, waiting, acked, subscribing, wireLast (last offset on this connection)} */
  #subscriptions = new Map();
  /** request id -> {channel, state} for subscribes, {resolve, reject, timer} otherwise */
  #inFlight = new Map();

  /**
   * @param {object} options see index.d.ts (ConnectOptions)
   */
  constructor(options = {}) {
    const urls = typeof options.urls === 'string' ? [options.urls] : options.urls;
    if (!Array.isArray(urls) || urls.length === 0) {
      throw new TypeError('connect: `urls` must be a non-empty list of ws:// or wss:// URLs');
    }
    this.#urls = urls.map((url) => {
      const parsed = new URL(url);
      if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
        throw new TypeError(`connect: ${url} is not a ws:// or wss:// URL`);
      }
      return parsed;
    });
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError(
        'connect: no WebSocket implementation; pass one as `WebSocket` (e.g. from the ws package on Node < 22)',
      );
    }
    this.#token = options.token ?? null;
    this.#getToken = options.getToken ?? null;
    if (this.#getToken !== null && typeof this.#getToken !== 'function') {
      throw new TypeError('connect: `getToken` must be a function returning a promise of a JWT');
    }
    this.#backoff = new Backoff(options.backoff);
    this.#connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.#open();
  }

  /** Resolves with the first session ({clientId, node, heartbeatMs}); rejects if closed first. */
  get ready() {
    return this.#ready.promise;
  }

  /** The current session, or null while not connected. */
  get session() {
    return this.#session;
  }

  get connected() {
    return this.#session !== null;
  }

  /** Adds a listener; returns a function that removes it. */
  on(event, listener) {
    const set = this.#listeners.get(event);
    if (!set) throw new TypeError(`unknown event ${JSON.stringify(event)}; one of ${EVENTS.join(', ')}`);
    set.add(listener);
    return () => set.delete(listener);
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  /**
   * Subscribes `channel`; `onMessage({channel, offset, data})` gets each message once, in
   * offset order, across reconnects. Throws a WsfleetError for a bad name or a channel already
   * subscribed.
   */
  subscribe(channel, onMessage) {
    this.#checkOpen();
    if (!validChannel(channel)) {
      throw new WsfleetError(
        'invalid_channel',
        `invalid channel name ${JSON.stringify(channel)}: 1..=200 characters of A-Z a-z 0-9 : . _ - /`,
      );
    }
    if (typeof onMessage !== 'function') throw new TypeError('subscribe: onMessage must be a function');
    if (this.#subscriptions.has(channel)) {
      throw new WsfleetError('already_subscribed', `already subscribed to ${JSON.stringify(channel)}`);
    }
    const state = { cursor: new Cursor(), onMessage, waiting: deferred(), acked: false, subscribing: false, wireLast: null };
    this.#subscriptions.set(channel, state);
    if (this.#session) this.#subscribeOn(channel, state);
    return new Subscription(this, channel, state);
  }

  /** Stops deliveries of `channel`; resolves with the ack (at once when offline). */
  unsubscribe(channel) {
    const state = this.#subscriptions.get(channel);
    this.#subscriptions.delete(channel);
    state?.waiting.reject(new WsfleetError('unsubscribed', `unsubscribed from ${channel}`));
    if (this.#closed || !this.#session) return Promise.resolve({});
    const id = this.#requestId();
    return this.#request(id, encodeUnsubscribe(channel, id));
  }

  /**
   * Publishes `data` (any JSON value); resolves with `{offset, epoch}` of the message. With
   * `{idempotencyKey}` it publishes at most once per key (and channel) within the gateway's
   * window (default 5 minutes): after a publish that timed out or was cut off, retrying with
   * the same key is safe, and a repeat resolves with the first offset and `duplicate: true`.
   */
  publish(channel, data, { idempotencyKey } = {}) {
    if (!validChannel(channel)) {
      return Promise.reject(new WsfleetError('invalid_channel', `invalid channel name ${JSON.stringify(channel)}`));
    }
    if (idempotencyKey !== undefined && (typeof idempotencyKey !== 'string' || idempotencyKey.length === 0 || idempotencyKey.length > 128)) {
      return Promise.reject(new WsfleetError('bad_request', 'idempotencyKey must be a string of 1 to 128 characters'));
    }
    return this.#requestWithData(data, (id) => encodePublish(channel, data, id, idempotencyKey));
  }

  /** Sends `data` to every connection of client `to`; rejects with `not_found` if it has none. */
  send(to, data) {
    if (typeof to !== 'string' || to.length === 0) {
      return Promise.reject(new WsfleetError('bad_request', 'send: `to` must be a non-empty client id'));
    }
    return this.#requestWithData(data, (id) => encodeSend(to, data, id));
  }

  /** Closes the connection for good: no reconnects; pending requests fail with `closed`. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#reconnectTimer);
    this.#clearSessionTimers();
    this.#drop(this.#socket, 'client closed');
    this.#socket = null;
    this.#session = null;
    this.#failInFlight('closed', 'client closed');
    for (const state of this.#subscriptions.values()) {
      state.waiting.reject(new WsfleetError('closed', 'client closed'));
    }
    this.#subscriptions.clear();
    this.#ready.reject(new WsfleetError('closed', 'client closed before connecting'));
  }

  // --- connection lifecycle -------------------------------------------------------------

  #open() {
    if (this.#closed) return;
    const url = new URL(this.#urls[this.#nextUrl % this.#urls.length]);
    this.#nextUrl += 1;
    const attempt = Symbol(url.host);
    this.#attempting = attempt;
    this.#connectTimer = setTimeout(() => {
      this.#attempting = null;
      this.#drop(this.#socket, 'connect timeout');
      this.#socket = null;
      this.#afterFailedAttempt(undefined, `no welcome from ${url.host} within ${this.#connectTimeoutMs} ms`);
    }, this.#connectTimeoutMs);
    if (this.#getToken === null) {
      this.#dial(url, this.#token);
      return;
    }
    // A fresh token for every attempt, so a reconnect after an outage or a 4001 is not
    // refused for the token it had. The connect timeout covers the callback too.
    this.#fetchToken().then(
      (token) => {
        if (this.#attempting === attempt && !this.#closed) this.#dial(url, token);
      },
      (error) => {
        if (this.#attempting !== attempt || this.#closed) return;
        this.#attempting = null;
        this.#afterFailedAttempt(undefined, error.message);
      },
    );
  }

  /** The application's token, checked; rejects with the callback's error. */
  async #fetchToken() {
    let token;
    try {
      token = await this.#getToken();
    } catch (error) {
      throw new Error(`token callback failed: ${error?.message ?? error}`);
    }
    if (typeof token !== 'string' || token.length === 0) {
      throw new Error('token callback failed: getToken must resolve to a non-empty string');
    }
    return token;
  }

  #dial(url, token) {
    // Browsers cannot set headers on a WebSocket: the token goes in the query.
    if (token !== null) url.searchParams.set('token', token);
    let socket;
    try {
      socket = new this.#WebSocket(url.href);
    } catch (error) {
      this.#afterFailedAttempt(undefined, `cannot open ${url.origin}: ${error.message}`);
      return;
    }
    this.#socket = socket;
    socket.onmessage = (event) => {
      if (socket === this.#socket) this.#onText(event.data);
    };
    socket.onclose = (event) => {
      if (socket === this.#socket) this.#onClose(event.code, event.reason);
    };
    // An error is always followed by a close, which does the work.
    socket.onerror = () => {};
  }

  #onText(data) {
    if (typeof data !== 'string') return; // the protocol has no binary server frames
    let frame;
    try {
      frame = decodeServerFrame(data);
    } catch (error) {
      this.#emit('error', new WsfleetError('protocol', `ignored a malformed frame from the gateway: ${error.message}`));
      return;
    }
    if (!this.#session) {
      if (frame.op === 'welcome') {
        this.#onWelcome(frame);
      } else {
        this.#drop(this.#socket, 'expected welcome');
        this.#socket = null;
        this.#afterFailedAttempt(undefined, `expected welcome, got ${frame.op}`);
      }
      return;
    }
    switch (frame.op) {
      case 'message':
        return this.#deliver(frame);
      case 'ack':
        return this.#onAck(frame);
      case 'error':
        return this.#onError(frame);
      case 'direct':
        return this.#emit('direct', { from: frame.from, data: frame.data ?? null });
      case 'reconnect':
        return this.#onReconnectHint(frame);
      default:
        return undefined; // a second welcome: nothing to do
    }
  }

  #onWelcome(frame) {
    clearTimeout(this.#connectTimer);
    this.#attemptBeforeSession = this.#attempt;
    this.#attempt = 0;
    this.#session = {
      clientId: frame.client_id,
      node: frame.node,
      heartbeatMs: frame.heartbeat_ms ?? null,
      expiresAtMs: frame.expires_at_ms ?? null,
    };
    this.#scheduleRefresh(this.#session.expiresAtMs);
    // Resume before telling the application, so a subscribe from a `connect` listener is sent once.
    for (const [channel, state] of this.#subscriptions) {
      state.wireLast = null;
      this.#subscribeOn(channel, state);
    }
    this.#emit('connect', { ...this.#session });
    this.#ready.resolve({ ...this.#session });
  }

  /**
   * A token that expires at `expiresAtMs` is now the session's: its refresh is scheduled (with
   * `getToken` to get the next one; a static token cannot be refreshed).
   */
  #scheduleRefresh(expiresAtMs) {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    this.#refreshFailures = 0;
    if (this.#getToken === null || expiresAtMs === null) return;
    this.#refreshTimer = setTimeout(() => this.#refresh(), refreshInMs(Date.now(), expiresAtMs));
  }

  /** Sends the session a fresh token; its ack carries the new expiry. */
  async #refresh() {
    this.#refreshTimer = null;
    const session = this.#session;
    let ack;
    try {
      const token = await this.#fetchToken();
      if (this.#session !== session) return;
      const id = this.#requestId();
      ack = await this.#request(id, encodeRefresh(token, id));
    } catch (error) {
      // A session that ended meanwhile is not this refresh's failure.
      if (this.#session === session) this.#refreshFailed(error);
      return;
    }
    if (this.#session !== session) return;
    session.expiresAtMs = ack.expires_at_ms ?? null;
    this.#scheduleRefresh(session.expiresAtMs);
    if (session.expiresAtMs !== null) this.#emit('tokenrefresh', { expiresAtMs: session.expiresAtMs });
  }

  /**
   * A refresh failed (the callback, or the gateway refused the token): retry with backoff
   * until the token expires; after that the gateway closes with 4001 and the reconnect
   * fetches a fresh token.
   */
  #refreshFailed(error) {
    const delayMs = this.#backoff.delay(this.#refreshFailures);
    this.#refreshFailures += 1;
    const retryInMs = refreshRetryMs(delayMs, Date.now(), this.#session.expiresAtMs);
    if (retryInMs !== null) this.#refreshTimer = setTimeout(() => this.#refresh(), retryInMs);
    this.#emit('tokenrefreshfailed', { error, retryInMs });
  }

  /** The node drains: keep reading until `after_ms`, then move to the next URL. */
  #onReconnectHint(frame) {
    this.#hintAt = Date.now() + frame.after_ms;
    clearTimeout(this.#hintTimer);
    this.#hintTimer = setTimeout(() => this.#moveOn(), frame.after_ms);
    this.#emit('draining', { afterMs: frame.after_ms, reason: frame.reason ?? '' });
  }

  /** The hinted time has come: leave without waiting for the node's 1012. */
  #moveOn() {
    const reason = 'moving on gateway request';
    this.#drop(this.#socket, reason);
    this.#socket = null;
    this.#endSession(NORMAL, reason, 0);
  }

  /**
   * A resume this node cannot serve now: keep the subscription, reconnect with backoff (to
   * the next URL) and resume from the same offset. The backoff keeps growing, or nodes that
   * cannot serve would be retried at the base delay forever.
   */
  #resumeRefused(reason) {
    this.#drop(this.#socket, 'resuming elsewhere');
    this.#socket = null;
    this.#attempt = this.#attemptBeforeSession;
    this.#endSession(undefined, reason, this.#delayAfterLoss(undefined, reason));
  }

  #onClose(code, reason) {
    this.#socket = null;
    if (!this.#session) {
      this.#afterFailedAttempt(code, reason || 'connection closed before welcome');
      return;
    }
    const lostWithHint =
      this.#hintAt !== null && [SERVICE_RESTART, NO_STATUS, ABNORMAL, undefined].includes(code);
    const delay = lostWithHint ? Math.max(0, this.#hintAt - Date.now()) : this.#delayAfterLoss(code, reason);
    this.#endSession(code, reason, delay);
  }

  #endSession(code, reason, delayMs) {
    this.#session = null;
    this.#clearSessionTimers();
    this.#failInFlight('disconnected', 'connection lost before the gateway answered');
    this.#emit('disconnect', { code, reason });
    this.#scheduleReconnect(delayMs);
  }

  #afterFailedAttempt(code, reason) {
    clearTimeout(this.#connectTimer);
    this.#emit('disconnect', { code, reason });
    this.#scheduleReconnect(this.#delayAfterLoss(code, reason));
  }

  /** The delay before the next attempt after a loss that came without a reconnect hint. */
  #delayAfterLoss(code, reason) {
    let delay;
    if (code === SERVICE_RESTART || code === TOKEN_EXPIRED) {
      // A drain whose hint we did not get, or a token that expired (`getToken` gives a fresh
      // one): move promptly, spread over the first backoff step.
      delay = this.#backoff.delay(0);
    } else if (code === TRY_AGAIN_LATER) {
      // The node is full or overloaded: never retry at once; its `retry after Ns` is a floor.
      delay = retryHintMs(reason) + this.#backoff.delay(Math.max(this.#attempt, 1));
    } else {
      delay = this.#backoff.delay(this.#attempt);
    }
    this.#attempt += 1;
    return delay;
  }

  #scheduleReconnect(delayMs) {
    if (this.#closed) return;
    this.#emit('reconnecting', { delayMs, attempt: this.#attempt });
    this.#reconnectTimer = setTimeout(() => this.#open(), delayMs);
  }

  #clearSessionTimers() {
    clearTimeout(this.#connectTimer);
    clearTimeout(this.#hintTimer);
    this.#hintTimer = null;
    this.#hintAt = null;
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
  }

  /** Detaches a socket's handlers and closes it; later events of it are ignored. */
  #drop(socket, reason) {
    if (!socket) return;
    socket.onmessage = null;
    socket.onclose = null;
    socket.onerror = () => {};
    try {
      socket.close(NORMAL, reason);
    } catch {
      // Already closing.
    }
  }

  // --- frames -------------------------------------------------------------------------------

  #subscribeOn(channel, state) {
    state.subscribing = true;
    const id = this.#requestId();
    this.#inFlight.set(id, { channel, state });
    this.#write(encodeSubscribe(channel, state.cursor.since(), id));
  }

  #deliver(frame) {
    const state = this.#subscriptions.get(frame.channel);
    if (!state) return;
    // Within a connection the gateway sends a channel's offsets in increasing order (replays
    // included). One lower than the previous means the channel's history was lost and a new
    // epoch restarted its offsets (docs/protocol.md, "Known limit"): resubscribing with
    // `since` learns the new position from the ack, which reports the failed recovery.
    const backwards = state.wireLast !== null && frame.offset < state.wireLast;
    state.wireLast = frame.offset;
    if (backwards && !state.subscribing) this.#subscribeOn(frame.channel, state);
    const missed = state.cursor.missedBefore(frame.offset);
    if (!state.cursor.accept(frame.offset)) return;
    try {
      state.onMessage({ channel: frame.channel, offset: frame.offset, data: frame.data ?? null });
    } catch (error) {
      this.#emit('error', error);
    }
    if (missed > 0) this.#emit('gap', { channel: frame.channel, missed });
  }

  #onAck(frame) {
    const entry = this.#inFlight.get(frame.id);
    if (!entry) return;
    this.#inFlight.delete(frame.id);
    if (!entry.state) {
      clearTimeout(entry.timer);
      entry.resolve(ackResult(frame));
      return;
    }
    // Ignore acks for a subscription that was dropped (or replaced) since.
    entry.state.subscribing = false;
    if (this.#subscriptions.get(entry.channel) !== entry.state) return;
    const outcome = entry.state.cursor.onAck(frame.offset, frame.epoch, frame.recovered);
    entry.state.acked = true;
    entry.state.waiting.resolve(ackResult(frame));
    if (outcome === Outcome.RECOVERY_FAILED) this.#emit('recoveryfailed', { channel: entry.channel });
  }

  #onError(frame) {
    const error = new WsfleetError(frame.code, frame.message ?? '');
    const entry = frame.id === undefined ? undefined : this.#inFlight.get(frame.id);
    if (!entry) {
      this.#emit('error', error);
      return;
    }
    this.#inFlight.delete(frame.id);
    if (!entry.state) {
      clearTimeout(entry.timer);
      entry.reject(error);
      return;
    }
    entry.state.subscribing = false;
    if (this.#subscriptions.get(entry.channel) !== entry.state) return;
    if (entry.state.acked && TRANSIENT_ERRORS.has(frame.code)) {
      this.#resumeRefused(`the gateway could not resume ${entry.channel}: ${frame.code}: ${frame.message ?? ''}`);
      return;
    }
    this.#subscriptions.delete(entry.channel);
    // Before the first ack the application's `ready` hears of it; later (a refused resume) an event.
    if (entry.state.acked) this.#emit('subscriptionlost', { channel: entry.channel, error });
    else entry.state.waiting.reject(error);
  }

  // --- requests ----------------------------------------------------------------------------

  #requestWithData(data, encode) {
    if (this.#closed) return Promise.reject(new WsfleetError('closed', 'client closed'));
    if (data === undefined) return Promise.reject(new WsfleetError('invalid_data', '`data` must be a JSON value'));
    const id = this.#requestId();
    let text;
    try {
      text = encode(id);
    } catch (error) {
      return Promise.reject(new WsfleetError('invalid_data', `\`data\` is not JSON-serializable: ${error.message}`));
    }
    return this.#request(id, text);
  }

  /** Sends a frame carrying request `id`; resolves with its ack, rejects with its error. */
  #request(id, text) {
    if (this.#closed) return Promise.reject(new WsfleetError('closed', 'client closed'));
    if (!this.#session) return Promise.reject(new WsfleetError('not_connected', 'not connected to any gateway'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#inFlight.delete(id);
        reject(new WsfleetError('timeout', `no answer from the gateway within ${this.#requestTimeoutMs} ms`));
      }, this.#requestTimeoutMs);
      this.#inFlight.set(id, { resolve, reject, timer });
      this.#write(text);
    });
  }

  #requestId() {
    this.#nextRequest += 1;
    return `r${this.#nextRequest}`;
  }

  #write(text) {
    try {
      this.#socket?.send(text);
    } catch (error) {
      // The socket is closing; its close event ends the session and fails the request.
      this.#emit('error', new WsfleetError('disconnected', `send failed: ${error.message}`));
    }
  }

  /** Requests sent on a lost connection get no answer: fail them now. Subscriptions stay. */
  #failInFlight(code, message) {
    for (const entry of this.#inFlight.values()) {
      if (entry.state) {
        entry.state.subscribing = false;
      } else {
        clearTimeout(entry.timer);
        entry.reject(new WsfleetError(code, message));
      }
    }
    this.#inFlight.clear();
  }

  #checkOpen() {
    if (this.#closed) throw new WsfleetError('closed', 'client closed');
  }

  #emit(event, payload) {
    for (const listener of this.#listeners.get(event)) {
      try {
        listener(payload);
      } catch (error) {
        if (event !== 'error') this.#emit('error', error);
      }
    }
  }
}
