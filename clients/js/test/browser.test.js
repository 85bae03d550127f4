// End-to-end in headless Chromium (Debian's `chromium`, driven by playwright-core): a page
// served from localhost uses the client (the ES module as shipped, no bundling) to subscribe
// through real gateway nodes while a publisher sends at a steady rate; the page must show every
// message exactly once, in order. The two-node case drains the page's node and checks that the
// page moves to the other node at the hinted time and resumes without loss.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { mkdirSync, existsSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

import { Gateway, Redis, sleep, waitFor } from './support.js';

const here = dirname(fileURLToPath(import.meta.url));
const OUT = join(here, 'out');
const CHROMIUM = process.env.WSFLEET_CHROMIUM ?? '/usr/bin/chromium';
const DRAIN_TOKEN = 'js-e2e-drain-token';
const PUBLISH_TOKEN = 'js-e2e-publish-token';
/** Publisher rate: one message every 40 ms (25/s). */
const PUBLISH_EVERY_MS = 40;

/** Serves the e2e page and the client's modules on a loopback port. */
async function servePage() {
  const server = createServer(async (request, response) => {
    const path = new URL(request.url, 'http://x').pathname;
    const file = path === '/' ? join(here, 'e2e/page.html') : /^\/src\/[a-z]+\.js$/.test(path) ? join(here, '..', path) : null;
    if (!file) {
      response.writeHead(404).end();
      return;
    }
    const body = await readFile(file);
    const type = file.endsWith('.html') ? 'text/html; charset=utf-8' : 'text/javascript; charset=utf-8';
    response.writeHead(200, { 'content-type': type, 'cache-control': 'no-store' }).end(body);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, origin: `http://127.0.0.1:${server.address().port}` };
}

async function launchBrowser(t) {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: apt-get install -y chromium`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
  });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  return { page, pageErrors };
}

/** Publishes {seq} at a steady rate through a node's publish API until stopped. */
function startPublisher(gateway, channel) {
  const state = { published: 0, failures: [], stopped: false };
  state.done = (async () => {
    // Bounded: at most 10 minutes' worth even if nobody stops it.
    for (let seq = 1; !state.stopped && seq <= 15_000; seq++) {
      const next = Date.now() + PUBLISH_EVERY_MS;
      const reply = await gateway
        .api('POST', '/api/v1/publish', { token: PUBLISH_TOKEN, body: { channel, data: { seq } } })
        .catch((error) => ({ status: 0, body: error.message }));
      if (reply.status !== 200) {
        state.failures.push({ seq, status: reply.status, body: reply.body });
        break;
      }
      state.published = seq;
      await sleep(Math.max(0, next - Date.now()));
    }
  })();
  state.stop = async () => {
    state.stopped = true;
    await state.done;
  };
  return state;
}

const pageState = (page) => page.evaluate(() => ({ received: window.received, events: window.events }));

async function screenshot(page, name) {
  mkdirSync(OUT, { recursive: true });
  await page.screenshot({ path: join(OUT, name), fullPage: true });
}

function assertExactlyOnceInOrder(received, published) {
  assert.equal(received.length, published, 'the page received as many messages as were published');
  assert.deepEqual(received.map((m) => m.seq), Array.from({ length: published }, (_, i) => i + 1));
  for (let i = 1; i < received.length; i++) {
    assert.equal(received[i].offset, received[i - 1].offset + 1, `offset after ${received[i - 1].offset}`);
  }
}

test('a page receives a steady stream through one node exactly once, in order', { timeout: 120_000 }, async (t) => {
  const gateway = await Gateway.start({ args: ['--anonymous', '--node-id', 'gw-solo'], env: { WSFLEET_DRAIN_TOKEN: DRAIN_TOKEN, WSFLEET_PUBLISH_TOKEN: PUBLISH_TOKEN } });
  t.after(() => gateway.kill());
  const { server, origin } = await servePage();
  t.after(() => server.close());
  const { page, pageErrors } = await launchBrowser(t);
  await page.goto(`${origin}/?channel=ticks&urls=${encodeURIComponent(gateway.url)}`);
  await page.waitForFunction(() => window.subscribed, null, { timeout: 30_000 });

  const publisher = startPublisher(gateway, 'ticks');
  await waitFor('50 published', () => publisher.published >= 50, 60_000);
  await publisher.stop();
  assert.deepEqual(publisher.failures, []);
  await waitFor('the page to catch up', async () => (await pageState(page)).received.length >= publisher.published);
  await screenshot(page, 'browser-single-node.png');

  const { received, events } = await pageState(page);
  assertExactlyOnceInOrder(received, publisher.published);
  assert.deepEqual(events.map((e) => e.name), ['connect']);
  assert.equal(events[0].payload.node, 'gw-solo');
  assert.deepEqual(pageErrors, []);
});

test('a drained node hands the page to the other node at the hinted time, without loss', { timeout: 180_000 }, async (t) => {
  const redis = await Redis.start();
  t.after(() => redis.kill());
  const node = (id) =>
    Gateway.start({ args: ['--anonymous', '--node-id', id, '--redis-url', redis.url], env: { WSFLEET_DRAIN_TOKEN: DRAIN_TOKEN, WSFLEET_PUBLISH_TOKEN: PUBLISH_TOKEN } });
  const [a, b] = await Promise.all([node('gw-a'), node('gw-b')]);
  t.after(() => a.kill());
  t.after(() => b.kill());
  const { server, origin } = await servePage();
  t.after(() => server.close());
  const { page, pageErrors } = await launchBrowser(t);
  // The page tries the URLs round-robin from the first: it starts on gw-a.
  await page.goto(`${origin}/?channel=ticks&urls=${encodeURIComponent(`${a.url},${b.url}`)}`);
  await page.waitForFunction(() => window.subscribed, null, { timeout: 30_000 });
  assert.equal((await pageState(page)).events[0].payload.node, 'gw-a');

  // The publisher goes through the node that stays, before, during and after the drain.
  const publisher = startPublisher(b, 'ticks');
  t.after(() => publisher.stop());
  await waitFor('25 messages on the page', async () => (await pageState(page)).received.length >= 25, 60_000);

  const drain = await a.admin('POST', '/drain', {
    token: DRAIN_TOKEN,
    body: { window_seconds: 3, deadline_seconds: 20, reason: 'browser e2e drain' },
  });
  assert.equal(drain.status, 202, JSON.stringify(drain.body));
  await waitFor('the page on gw-b', async () => (await pageState(page)).events.some((e) => e.name === 'connect' && e.payload.node === 'gw-b'), 60_000);
  const movedAt = publisher.published;
  await waitFor('50 more messages', () => publisher.published >= movedAt + 50, 60_000);
  await publisher.stop();
  assert.deepEqual(publisher.failures, []);
  await waitFor('the page to catch up', async () => (await pageState(page)).received.length >= publisher.published);
  await screenshot(page, 'browser-drain.png');

  const { received, events } = await pageState(page);
  assertExactlyOnceInOrder(received, publisher.published);
  assert.ok(received.some((m) => m.node === 'gw-a') && received.some((m) => m.node === 'gw-b'), 'both nodes delivered');
  const draining = events.find((e) => e.name === 'draining');
  assert.ok(draining, 'the page got the reconnect hint');
  assert.ok(draining.payload.afterMs <= 3000, `after_ms ${draining.payload.afterMs} is within the 3 s window`);
  const moved = events.find((e) => e.name === 'connect' && e.payload.node === 'gw-b');
  // Timers never fire early; 50 ms covers rounding of the page's clock.
  assert.ok(moved.at >= draining.at + draining.payload.afterMs - 50, `moved at ${moved.at} ms, hint ${JSON.stringify(draining)}`);
  assert.deepEqual(events.filter((e) => ['recoveryfailed', 'gap', 'error', 'subscriptionlost'].includes(e.name)), []);
  assert.deepEqual(pageErrors, []);
});
