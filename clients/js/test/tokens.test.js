// Token refresh against real wsfleet-gateway processes that require HS256 tokens and close a
// connection (4001) one second after its token's `exp`: `getToken` keeps a session on
// 3-second tokens alive and subscribed, and when refreshing fails the client comes back after
// the 4001 with a fresh token from the callback.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Gateway, hs256Token, recordedClient, sleep, tempFile, waitFor } from './support.js';

const SECRET = 'js-test-refresh-secret-0123456789';
/** Short enough for several refreshes within a test, long enough for a loaded machine. */
const LIFETIME_S = 3;

const named = (events, name) => events.filter((e) => e.name === name).map((e) => e.payload);

/** An HS256 token for `sub` that expires `lifetimeS` seconds from now. */
const token = (sub, lifetimeS) => hs256Token(SECRET, { sub, exp: Math.floor(Date.now() / 1000) + lifetimeS });

/** A node requiring tokens signed with SECRET, closing 1 s after `exp`. */
async function jwtGateway(t) {
  const keyFile = tempFile('jwt.key', SECRET);
  const gateway = await Gateway.start({ args: ['--jwt-algorithm', 'HS256', '--jwt-key-file', keyFile, '--jwt-leeway-secs', '1'] });
  t.after(() => gateway.kill());
  return gateway;
}

/** A client whose `getToken` mints 3 s tokens, counts its calls and throws while `healthy.now` is false. */
function renewingClient(t, gateway, healthy) {
  const calls = { count: 0 };
  const getToken = async () => {
    calls.count += 1;
    if (!healthy.now) throw new Error('identity provider unavailable');
    return token('renewer', LIFETIME_S);
  };
  const recorded = recordedClient({ urls: [gateway.url], getToken });
  t.after(() => recorded.client.close());
  return { ...recorded, calls };
}

test('getToken keeps a session on short-lived tokens connected and subscribed', async (t) => {
  const gateway = await jwtGateway(t);
  const { client, events, calls } = renewingClient(t, gateway, { now: true });
  const { client: publisher } = recordedClient({ urls: [gateway.url], token: token('publisher', 600) });
  t.after(() => publisher.close());
  const session = await client.ready;
  const started = Date.now();
  assert.equal(session.clientId, 'renewer');
  assert.ok(session.expiresAtMs > started, 'the welcome carries the expiry');
  const received = [];
  await client.subscribe('ticks', (m) => received.push(m.data)).ready;
  await publisher.ready;

  // Past the first token's `exp` plus the leeway: without refreshes this session is gone.
  await sleep(started + 4500 - Date.now());
  await publisher.publish('ticks', 'after the first expiry');
  await waitFor('the message after the first expiry', () => received.includes('after the first expiry'));
  await sleep(started + 8000 - Date.now());
  await publisher.publish('ticks', 'at 8 s');
  await waitFor('the message at 8 s', () => received.includes('at 8 s'));

  assert.deepEqual(named(events, 'disconnect'), []);
  assert.deepEqual(named(events, 'tokenrefreshfailed'), []);
  assert.equal(named(events, 'connect').length, 1);
  const refreshed = named(events, 'tokenrefresh');
  // A refresh about every 1-1.5 s (half of a 2-3 s lifetime) over 8 s.
  assert.ok(refreshed.length >= 4, `only ${refreshed.length} refreshes in 8 s`);
  assert.equal(calls.count, refreshed.length + 1, 'one call for the upgrade, one per refresh');
  assert.equal(client.session.expiresAtMs, refreshed.at(-1).expiresAtMs);
  assert.ok(client.session.expiresAtMs > started + 8000);
});

test('a failed refresh ends in 4001, then a fresh token from getToken reconnects', async (t) => {
  const gateway = await jwtGateway(t);
  const healthy = { now: true };
  const { client, events, calls } = renewingClient(t, gateway, healthy);
  await client.ready;
  const received = [];
  await client.subscribe('alerts', (m) => received.push(m.data)).ready;

  healthy.now = false;
  let callsAtClose = null;
  client.on('disconnect', ({ code }) => {
    if (code !== 4001) return;
    // Listeners run before the reconnect is scheduled: the next attempt gets a good token.
    callsAtClose = calls.count;
    healthy.now = true;
  });
  await waitFor('the 4001 close', () => callsAtClose !== null);
  const [closed] = named(events, 'disconnect');
  assert.equal(closed.code, 4001);
  assert.match(closed.reason, /token expired/);
  const failures = named(events, 'tokenrefreshfailed');
  assert.ok(failures.length >= 2, `retried before the expiry: ${JSON.stringify(failures)}`);
  assert.match(failures[0].error.message, /identity provider unavailable/);
  assert.equal(failures.at(-1).retryInMs, null, 'the last failure at the expiry stops retrying');
  assert.deepEqual(named(events, 'tokenrefresh'), []);

  await waitFor('a second session', () => named(events, 'connect').length === 2);
  // The old token has expired: only a fresh one from getToken gets through the upgrade.
  assert.equal(calls.count, callsAtClose + 1);
  assert.equal(client.session.clientId, 'renewer');
  const { client: publisher } = recordedClient({ urls: [gateway.url], token: token('publisher', 600) });
  t.after(() => publisher.close());
  await publisher.ready;
  await publisher.publish('alerts', 'after the reconnect');
  await waitFor('the message after the reconnect', () => received.includes('after the reconnect'));
});
