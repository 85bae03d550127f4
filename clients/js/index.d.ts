// Type declarations for the wsfleet client (src/index.js). Protocol: docs/protocol.md.

/** A WebSocket constructor: the browser's, Node >= 22's global, or the `ws` package's. */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface WebSocketLike {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

export interface ConnectOptions {
  /** Gateway WebSocket URLs (`wss://host/ws`), tried round-robin on each (re)connect. */
  urls: string | string[];
  /** A JWT, sent as `?token=` (browsers cannot set headers on a WebSocket). */
  token?: string;
  /**
   * Fresh JWTs from the application; replaces `token`. Called before every connection attempt
   * and to refresh a live session ahead of its expiry (when min(30 s, half the lifetime) is left).
   */
  getToken?: () => Promise<string> | string;
  /** Defaults to `globalThis.WebSocket`; required on Node < 22 (e.g. `import { WebSocket } from 'ws'`). */
  WebSocket?: WebSocketConstructor;
  /** Capped exponential backoff with full jitter: delay = random(0, min(capMs, baseMs * 2^attempt)). Defaults 500 / 30000. */
  backoff?: { baseMs?: number; capMs?: number };
  /** Longest wait for the `welcome` of one attempt. Default 10000. */
  connectTimeoutMs?: number;
  /** Longest wait for an `ack` before a request fails with `timeout`. Default 10000. */
  requestTimeoutMs?: number;
}

export interface Session {
  clientId: string;
  node: string;
  heartbeatMs: number | null;
  /** When the session's token expires (ms since the Unix epoch); moves on with each refresh. */
  expiresAtMs: number | null;
}

export interface Message<T = unknown> {
  channel: string;
  offset: number;
  data: T;
}

/** Extra fields of an `ack`: a subscribe's or publish's `offset` and `epoch`, `recovered` on resume. */
export interface Ack {
  offset?: number;
  epoch?: string;
  recovered?: boolean;
  /** A publish whose idempotency key had already published: the first offset, nothing new delivered. */
  duplicate?: boolean;
  [field: string]: unknown;
}

export type ErrorCode =
  | 'bad_request'
  | 'unknown_op'
  | 'unauthorized'
  | 'forbidden'
  | 'too_large'
  | 'rate_limited'
  | 'not_found'
  | 'internal'
  | 'invalid_channel'
  | 'invalid_data'
  | 'already_subscribed'
  | 'unsubscribed'
  | 'not_connected'
  | 'disconnected'
  | 'timeout'
  | 'closed'
  | 'protocol'
  | (string & {});

export class WsfleetError extends Error {
  constructor(code: ErrorCode, message: string);
  readonly name: 'WsfleetError';
  readonly code: ErrorCode;
  /** True when the gateway refused the request (an `error` frame), false for local failures. */
  readonly fromServer: boolean;
}

export const SERVER_CODES: readonly string[];

export interface ClientEvents {
  connect: Session;
  /** `code` is undefined when an attempt failed without a close (timeout, bad URL). */
  disconnect: { code: number | undefined; reason: string };
  reconnecting: { delayMs: number; attempt: number };
  /** The node drains: the client moves to the next URL in `afterMs`. */
  draining: { afterMs: number; reason: string };
  /** A resume could not replay what was missed (`recovered: false` or a new epoch): reload state. */
  recoveryfailed: { channel: string };
  /** Offsets jumped by `missed` (messages dropped for a slow consumer, or trimmed). */
  gap: { channel: string; missed: number };
  /** The gateway refused to resume a subscription for good (e.g. `forbidden`); it has been removed.
   *  A refusal for now (`internal`, `rate_limited`) keeps it: the client reconnects with backoff. */
  subscriptionlost: { channel: string; error: WsfleetError };
  direct: { from: string; data: unknown };
  /** The gateway took a fresh token from `getToken`; the session now expires at `expiresAtMs`. */
  tokenrefresh: { expiresAtMs: number };
  /** A refresh failed (`getToken` threw, or the gateway refused the token); retried in `retryInMs`,
   *  or null once the token has expired: the gateway then closes with 4001 and the client reconnects. */
  tokenrefreshfailed: { error: Error; retryInMs: number | null };
  error: Error;
}

export class Subscription<T = unknown> {
  readonly channel: string;
  /** The first `ack`; rejects with the gateway's error (e.g. `forbidden`). */
  readonly ready: Promise<Ack>;
  /** Last offset delivered (or the channel's offset at subscribe time); null before. */
  readonly offset: number | null;
  readonly epoch: string | null;
  unsubscribe(): Promise<Ack>;
}

export class Client {
  constructor(options: ConnectOptions);
  /** Resolves with the first session; rejects with `closed` if closed before. */
  readonly ready: Promise<Session>;
  readonly session: Session | null;
  readonly connected: boolean;
  on<E extends keyof ClientEvents>(event: E, listener: (payload: ClientEvents[E]) => void): () => void;
  off<E extends keyof ClientEvents>(event: E, listener: (payload: ClientEvents[E]) => void): void;
  /** Throws WsfleetError `invalid_channel` / `already_subscribed` / `closed`. */
  subscribe<T = unknown>(channel: string, onMessage: (message: Message<T>) => void): Subscription<T>;
  unsubscribe(channel: string): Promise<Ack>;
  /** Resolves with `{offset, epoch}`; rejects with a WsfleetError (not retried after a loss). */
  publish(channel: string, data: unknown, options?: { idempotencyKey?: string }): Promise<Ack>;
  send(to: string, data: unknown): Promise<Ack>;
  close(): void;
}

export function connect(options: ConnectOptions): Client;

export class Backoff {
  constructor(options?: { baseMs?: number; capMs?: number });
  readonly baseMs: number;
  readonly capMs: number;
  ceiling(attempt: number): number;
  delay(attempt: number, random?: () => number): number;
}

/** Milliseconds of a 1013 close reason's `retry after Ns`, 0 without one. */
export function retryHintMs(reason: string | undefined): number;

export class Cursor {
  epoch: string | null;
  last: number | null;
  since(): { offset: number; epoch: string } | null;
  onAck(offset?: number, epoch?: string, recovered?: boolean): 'started' | 'recovered' | 'recovery_failed';
  missedBefore(offset: number): number;
  accept(offset: number): boolean;
}

export namespace protocol {
  function validChannel(channel: unknown): boolean;
  function encodeSubscribe(channel: string, since?: { offset: number; epoch: string } | null, id?: string): string;
  function encodeUnsubscribe(channel: string, id?: string): string;
  function encodePublish(channel: string, data: unknown, id?: string): string;
  function encodeSend(to: string, data: unknown, id?: string): string;
  function encodeRefresh(token: string, id?: string): string;
  function decodeServerFrame(text: string): { op: string; [field: string]: unknown };
}
