// Compiled (never run) by types.test.js with `tsc --strict`: the declarations in index.d.ts
// must type the README's usage, and reject misuse.
import { connect, WsfleetError, type Message, type Session, type WebSocketConstructor } from '../index.js';

declare const WebSocket: WebSocketConstructor; // e.g. the ws package's, on Node < 22

const client = connect({ urls: ['ws://127.0.0.1:8080/ws'], token: 'jwt', WebSocket, backoff: { baseMs: 100, capMs: 5000 } });
const session: Promise<Session> = client.ready;
const sub = client.subscribe<{ text: string }>('room:42', (m: Message<{ text: string }>) => m.data.text.toUpperCase());
const offset: number | null = sub.offset;
void sub.ready.then((ack) => ack.epoch);
const off = client.on('reconnecting', ({ delayMs, attempt }) => delayMs + attempt);
client.on('disconnect', ({ code, reason }) => `${code ?? 'none'} ${reason}`);
client.on('recoveryfailed', ({ channel }) => channel.length);
client.on('error', (e) => e.message);
declare function fetchJwt(): Promise<string>;
const renewing = connect({ urls: 'wss://ws.example.com/ws', getToken: fetchJwt });
renewing.on('tokenrefresh', ({ expiresAtMs }) => expiresAtMs - Date.now());
renewing.on('tokenrefreshfailed', ({ error, retryInMs }) => `${error.message} ${retryInMs ?? 'at 4001'}`);
const expiresAt: number | null = renewing.session?.expiresAtMs ?? null;
void expiresAt;
off();
async function use(): Promise<number | undefined> {
  try {
    return (await client.publish('room:42', { text: 'hi' })).offset;
  } catch (e) {
    if (e instanceof WsfleetError && e.code === 'forbidden') return undefined;
    throw e;
  }
}
void use();
void session;
void offset;

// @ts-expect-error unknown event names are refused
client.on('connected', () => {});
// @ts-expect-error urls is required
connect({ token: 'x' });
// @ts-expect-error getToken returns a token, not an object
connect({ urls: 'ws://x/ws', getToken: async () => ({ token: 'x' }) });
