// Test kit for the JS client's tests: starts real wsfleet-gateway and redis-server processes
// on loopback (killed when the test process exits), a TCP proxy that can cut connections,
// HS256 tokens, the admin API, and deadline-bounded waiting.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { WebSocket } from 'ws';

import { connect } from '../src/index.js';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '../../..');

/** Generous: the machine is shared with Rust builds. */
export const START_TIMEOUT_MS = 30_000;
export const WAIT_TIMEOUT_MS = 20_000;

/** The gateway binary: $WSFLEET_GATEWAY_BIN, else the debug build in cargo's target directory. */
export function gatewayBin() {
  const target = process.env.CARGO_TARGET_DIR ? resolve(repoRoot, process.env.CARGO_TARGET_DIR) : join(repoRoot, 'target');
  const bin = process.env.WSFLEET_GATEWAY_BIN ?? join(target, 'debug/wsfleet-gateway');
  if (!existsSync(bin)) {
    throw new Error(`no gateway binary at ${bin}: run \`cargo build -p wsfleet-gateway\` or set WSFLEET_GATEWAY_BIN`);
  }
  return bin;
}

const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** Polls `check` every 25 ms until it returns a truthy value; throws after `timeoutMs`. */
export async function waitFor(what, check, timeoutMs = WAIT_TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A loopback port that was free a moment ago. */
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** A running wsfleet-gateway process. */
export class Gateway {
  /**
   * Starts a gateway on ephemeral ports (or `listen`), with extra flags and environment, and
   * waits for its `wsfleet-gateway listening ws=<addr> admin=<addr> api=<addr|off>` line.
   */
  static async start({ args = ['--anonymous'], env = {}, listen = '127.0.0.1:0' } = {}) {
    const cleanEnv = Object.fromEntries(
      Object.entries(process.env).filter(([k]) => !k.startsWith('WSFLEET_') && k !== 'NODE_ID'),
    );
    const child = spawn(gatewayBin(), ['--listen', listen, '--admin-listen', '127.0.0.1:0', '--api-listen', '127.0.0.1:0', ...args], {
      env: { ...cleanEnv, RUST_LOG: process.env.WSFLEET_TEST_LOG ?? 'warn', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    child.once('exit', () => children.delete(child));
    let log = '';
    child.stderr.on('data', (chunk) => {
      log = (log + chunk).slice(-20_000);
      if (process.env.WSFLEET_TEST_LOG) process.stderr.write(chunk);
    });
    const line = await new Promise((resolveLine, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`gateway did not report its listeners; log:\n${log}`)), START_TIMEOUT_MS);
      child.stdout.on('data', (chunk) => {
        out += chunk;
        const found = out.split('\n').find((l) => l.startsWith('wsfleet-gateway listening'));
        if (found) {
          clearTimeout(timer);
          resolveLine(found);
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`gateway exited with ${code} before listening; log:\n${log}`));
      });
    });
    const addr = (key) => line.split(/\s+/).find((w) => w.startsWith(key))?.slice(key.length);
    return new Gateway(child, addr('ws='), addr('admin='), addr('api='));
  }

  constructor(child, wsAddr, adminAddr, apiAddr) {
    this.child = child;
    this.wsAddr = wsAddr;
    this.adminAddr = adminAddr;
    this.apiAddr = apiAddr;
    this.url = `ws://${wsAddr}/ws`;
  }

  get port() {
    return Number(this.wsAddr.split(':').pop());
  }

  /** An admin-port request; returns {status, body (parsed JSON when it is)}. */
  admin(method, path, options) {
    return request(this.adminAddr, method, path, options);
  }

  /** A publish-API request (the node needs WSFLEET_PUBLISH_TOKEN); as `admin`. */
  api(method, path, options) {
    if (this.apiAddr === 'off') throw new Error('the node has no publish token: its API port is closed');
    return request(this.apiAddr, method, path, options);
  }

  /** SIGKILLs the process and waits for it to exit. */
  async kill() {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await exited;
  }
}

/** An HTTP request to a node's port; returns {status, body (parsed JSON when it is)}. */
async function request(addr, method, path, { token, body } = {}) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`http://${addr}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // Plain text (e.g. /metrics).
  }
  return { status: response.status, body: parsed };
}

/** A redis-server without persistence on a free port; killed on exit. */
export class Redis {
  static async start(port) {
    port ??= await freePort();
    const dir = mkdtempSync(join(tmpdir(), 'wsfleet-js-redis-'));
    const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
      stdio: 'ignore',
    });
    children.add(child);
    child.once('exit', () => {
      children.delete(child);
      rmSync(dir, { recursive: true, force: true });
    });
    await waitFor('redis-server to accept connections', () => canConnect(port), START_TIMEOUT_MS);
    return Object.assign(new Redis(), { child, port, url: `redis://127.0.0.1:${port}` });
  }

  kill() {
    this.child.kill('SIGKILL');
  }

  /** Kills the server and starts an empty one on the same port (its data is gone). */
  async restart() {
    const exited = new Promise((r) => this.child.once('exit', r));
    this.kill();
    await exited;
    const restarted = await Redis.start(this.port);
    this.child = restarted.child;
  }
}

function canConnect(port) {
  return new Promise((r) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      r(true);
    });
    socket.once('error', () => r(false));
  });
}

/**
 * A TCP proxy in front of a gateway: `cut()` destroys every open connection (the client sees
 * a connection lost without a close frame, code 1006) while new connections still pass,
 * unless `refuse` is set.
 */
export class Proxy {
  static async start(targetPort) {
    const sockets = new Set();
    const proxy = new Proxy();
    const server = net.createServer((inbound) => {
      if (proxy.refuse) {
        inbound.destroy();
        return;
      }
      const outbound = net.connect(targetPort, '127.0.0.1');
      for (const s of [inbound, outbound]) {
        sockets.add(s);
        s.once('close', () => sockets.delete(s));
        s.on('error', () => {});
      }
      inbound.pipe(outbound).pipe(inbound);
    });
    await new Promise((r) => server.listen(0, '127.0.0.1', r));
    proxy.server = server;
    proxy.sockets = sockets;
    proxy.url = `ws://127.0.0.1:${server.address().port}/ws`;
    return proxy;
  }

  cut() {
    for (const s of this.sockets) s.destroy();
  }

  close() {
    this.cut();
    this.server.close();
  }
}

/** An HS256 JWT for the gateway. */
export function hs256Token(secret, claims) {
  const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  const signature = createHmac('sha256', secret).update(body).digest('base64url');
  return `${body}.${signature}`;
}

/** A scratch file, removed on exit. */
export function tempFile(name, contents) {
  const dir = mkdtempSync(join(tmpdir(), 'wsfleet-js-'));
  const path = join(dir, name);
  writeFileSync(path, contents);
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return path;
}

/**
 * A client on Node 20 (the `ws` package as its WebSocket), with every event and its time
 * recorded in `events` for assertions. Closed by the caller (`t.after`).
 */
export function recordedClient(options) {
  const client = connect({ WebSocket, backoff: { baseMs: 50, capMs: 1000 }, ...options });
  const events = [];
  for (const name of ['connect', 'disconnect', 'reconnecting', 'draining', 'recoveryfailed', 'gap', 'subscriptionlost', 'direct', 'tokenrefresh', 'tokenrefreshfailed', 'error']) {
    client.on(name, (payload) => events.push({ name, payload, at: Date.now() }));
  }
  return { client, events };
}
