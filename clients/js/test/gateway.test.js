// The client against real wsfleet-gateway processes: publish/subscribe with acks, direct
// sends, typed errors, reconnects with backoff after a node restart, and resume with `since`
// after a lost connection.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { WebSocket } from 'ws';

import { Backoff, WsfleetError, retryHintMs } from '../src/index.js';
import { Gateway, Proxy, Redis, freePort, hs256Token, recordedClient, tempFile, waitFor } from './support.js';

const DRAIN_TOKEN = 'js-test-drain-token';
const PUBLISH_TOKEN = 'js-test-publish-token';

/** A WebSocket that records every frame sent and received, to check the resume exchange. */
function recordingWebSocket(sent, heard = []) {
  return class extends WebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (event) => heard.push(JSON.parse(event.data)));
    }

    send(data) {
      sent.push(JSON.parse(data));
      super.send(data);
    }
  };
}

/** A round trip on the client's connection: the gateway has handled the frames sent before. */
const afterResubscribe = (client) => client.publish('sync', null);

const named = (events, name) => events.filter((e) => e.name === name).map((e) => e.payload);

test('publish and subscribe are acknowledged and delivered once, in order', async (t) => {
  const gateway = await Gateway.start();
  t.after(() => gateway.kill());
  const { client: subscriber, events } = recordedClient({ urls: [gateway.url] });
  const { client: publisher } = recordedClient({ urls: gateway.url });
  t.after(() => subscriber.close());
  t.after(() => publisher.close());
  const session = await subscriber.ready;
  assert.match(session.clientId, /^anon-/);
  assert.equal(typeof session.node, 'string');
  assert.ok(session.heartbeatMs > 0);
  assert.deepEqual(named(events, 'connect'), [session]);

  const received = [];
  const sub = subscriber.subscribe('room:1', (m) => received.push(m));
  const ack = await sub.ready;
  assert.equal(ack.offset, 0);
  assert.equal(typeof ack.epoch, 'string');
  assert.equal(sub.epoch, ack.epoch);

  await publisher.ready;
  const acks = [];
  for (let i = 1; i <= 20; i++) acks.push(await publisher.publish('room:1', { n: i }));
  assert.deepEqual(acks.map((a) => a.offset), Array.from({ length: 20 }, (_, i) => i + 1));
  assert.ok(acks.every((a) => a.epoch === ack.epoch));

  await waitFor('20 messages', () => received.length >= 20);
  assert.deepEqual(received.map((m) => m.data.n), Array.from({ length: 20 }, (_, i) => i + 1));
  assert.deepEqual(received.map((m) => m.offset), acks.map((a) => a.offset));
  assert.ok(received.every((m) => m.channel === 'room:1'));
  assert.equal(sub.offset, 20);

  // Unsubscribed: later messages are not delivered.
  await sub.unsubscribe();
  await publisher.publish('room:1', { n: 21 });
  await subscriber.subscribe('room:2', () => {}).ready; // a round trip after the publish
  assert.equal(received.length, 20);
  assert.deepEqual(named(events, 'error'), []);
});

test('a publish repeated with its idempotency key is acked as a duplicate and delivered once', async (t) => {
  const gateway = await Gateway.start();
  t.after(() => gateway.kill());
  const { client } = recordedClient({ urls: [gateway.url] });
  t.after(() => client.close());
  await client.ready;
  const received = [];
  await client.subscribe('orders', (m) => received.push(m)).ready;
  const first = await client.publish('orders', { n: 17 }, { idempotencyKey: 'order-17' });
  const again = await client.publish('orders', { n: 17 }, { idempotencyKey: 'order-17' });
  assert.equal(first.duplicate, undefined);
  assert.deepEqual([again.offset, again.epoch, again.duplicate], [first.offset, first.epoch, true]);
  const other = await client.publish('orders', { n: 18 }, { idempotencyKey: 'order-18' });
  assert.equal(other.offset, first.offset + 1);
  await waitFor('2 messages', () => received.length >= 2);
  assert.deepEqual(received.map((m) => m.data.n), [17, 18]);
  await assert.rejects(client.publish('orders', 1, { idempotencyKey: '' }), (e) => e.code === 'bad_request');
});

test('send reaches a client by id; an unknown id is a not_found error', async (t) => {
  const gateway = await Gateway.start({ args: ['--anonymous'], env: { WSFLEET_DRAIN_TOKEN: DRAIN_TOKEN, WSFLEET_PUBLISH_TOKEN: PUBLISH_TOKEN } });
  t.after(() => gateway.kill());
  const { client: alice } = recordedClient({ urls: [gateway.url] });
  const { client: bob, events } = recordedClient({ urls: [gateway.url] });
  t.after(() => alice.close());
  t.after(() => bob.close());
  const [a, b] = await Promise.all([alice.ready, bob.ready]);

  assert.deepEqual(await alice.send(b.clientId, { text: 'psst' }), {});
  const viaApi = await gateway.api('POST', '/api/v1/send', { token: PUBLISH_TOKEN, body: { to: b.clientId, data: 'hi' } });
  assert.equal(viaApi.status, 200);
  await waitFor('two directs', () => named(events, 'direct').length >= 2);
  assert.deepEqual(named(events, 'direct'), [
    { from: a.clientId, data: { text: 'psst' } },
    { from: 'server', data: 'hi' },
  ]);

  const error = await alice.send('nobody-here', 1).then(
    () => assert.fail('send to an unknown id succeeded'),
    (e) => e,
  );
  assert.ok(error instanceof WsfleetError);
  assert.equal(error.code, 'not_found');
  assert.ok(error.fromServer);
});

test('errors are typed: forbidden channels from the token, and bad input refused locally', async (t) => {
  const secret = 'js-test-secret-0123456789abcdef';
  const keyFile = tempFile('jwt.key', secret);
  const gateway = await Gateway.start({ args: ['--jwt-algorithm', 'HS256', '--jwt-key-file', keyFile] });
  t.after(() => gateway.kill());
  const exp = Math.floor(Date.now() / 1000) + 3600;
  const token = hs256Token(secret, { sub: 'carol', exp, channels: ['room:*'] });
  const { client, events } = recordedClient({ urls: [gateway.url], token });
  t.after(() => client.close());
  assert.equal((await client.ready).clientId, 'carol', 'the token went in ?token=');

  await client.subscribe('room:7', () => {}).ready;
  const forbidden = await client.subscribe('secret', () => {}).ready.catch((e) => e);
  assert.equal(forbidden.code, 'forbidden');
  assert.match(forbidden.message, /secret/);
  assert.equal((await client.publish('secret', 1).catch((e) => e)).code, 'forbidden');
  // The refused subscription is gone: subscribing again is allowed (and refused again).
  assert.equal((await client.subscribe('secret', () => {}).ready.catch((e) => e)).code, 'forbidden');

  assert.throws(() => client.subscribe('bad name', () => {}), { code: 'invalid_channel' });
  assert.throws(() => client.subscribe('room:7', () => {}), { code: 'already_subscribed' });
  assert.equal((await client.publish('room:7', undefined).catch((e) => e)).code, 'invalid_data');
  const cyclic = {};
  cyclic.self = cyclic;
  assert.equal((await client.publish('room:7', cyclic).catch((e) => e)).code, 'invalid_data');
  assert.equal((await client.publish('', 1).catch((e) => e)).code, 'invalid_channel');
  assert.deepEqual(named(events, 'error'), []);

  client.close();
  assert.equal((await client.publish('room:7', 1).catch((e) => e)).code, 'closed');
  assert.throws(() => client.subscribe('room:8', () => {}), { code: 'closed' });
});

test('a refused token is retried with growing, fully jittered backoff', async (t) => {
  const keyFile = tempFile('jwt.key', 'another-secret-0123456789abcdef');
  const gateway = await Gateway.start({ args: ['--jwt-key-file', keyFile] });
  t.after(() => gateway.kill());
  const expired = hs256Token('another-secret-0123456789abcdef', { sub: 'dave', exp: 1000 });
  const backoff = { baseMs: 20, capMs: 400 };
  const { client, events } = recordedClient({ urls: [gateway.url], token: expired, backoff });
  t.after(() => client.close());
  await waitFor('four reconnect attempts', () => named(events, 'reconnecting').length >= 4);
  const reconnecting = named(events, 'reconnecting').slice(0, 4);
  assert.deepEqual(reconnecting.map((r) => r.attempt), [1, 2, 3, 4]);
  const bounds = new Backoff(backoff);
  for (const { delayMs, attempt } of reconnecting) {
    assert.ok(delayMs >= 0 && delayMs <= bounds.ceiling(attempt - 1), `${delayMs} ms at attempt ${attempt}`);
  }
  assert.equal(named(events, 'connect').length, 0);
  assert.ok(named(events, 'disconnect').every((d) => d.code === 1006 || d.code === undefined));
});

test('after a node restart the client reconnects with backoff and reports the lost history', async (t) => {
  const port = await freePort();
  const listen = `127.0.0.1:${port}`;
  let gateway = await Gateway.start({ listen });
  t.after(() => gateway.kill());
  const { client, events } = recordedClient({ urls: [`ws://${listen}/ws`], backoff: { baseMs: 50, capMs: 400 } });
  t.after(() => client.close());
  await client.ready;
  const received = [];
  const first = await client.subscribe('news', (m) => received.push(m)).ready;
  await client.publish('news', 'before');
  await waitFor('the first message', () => received.length === 1);

  await gateway.kill();
  await waitFor('three failed reconnects', () => named(events, 'reconnecting').length >= 3);
  assert.equal(named(events, 'disconnect')[0].code, 1006);
  assert.deepEqual(named(events, 'reconnecting').slice(0, 3).map((r) => r.attempt), [1, 2, 3]);
  assert.equal(client.connected, false);
  assert.equal((await client.publish('news', 'offline').catch((e) => e)).code, 'not_connected');

  gateway = await Gateway.start({ listen });
  await waitFor('a second session', () => named(events, 'connect').length === 2);
  // A new process is a new history epoch: the client says that messages may be missing.
  await waitFor('recoveryfailed', () => named(events, 'recoveryfailed').length === 1);
  assert.deepEqual(named(events, 'recoveryfailed'), [{ channel: 'news' }]);

  const after = await client.publish('news', 'after');
  assert.notEqual(after.epoch, first.epoch);
  await waitFor('the message after the restart', () => received.length === 2);
  assert.deepEqual(received.map((m) => m.data), ['before', 'after']);
});

test('a lost connection resumes each subscription with since; a gap is replayed or reported, never hidden', async (t) => {
  const gateway = await Gateway.start();
  t.after(() => gateway.kill());
  const proxy = await Proxy.start(gateway.port);
  t.after(() => proxy.close());
  const sent = [];
  const heard = [];
  const { client, events } = recordedClient({ urls: [proxy.url], WebSocket: recordingWebSocket(sent, heard) });
  const { client: publisher } = recordedClient({ urls: [gateway.url] });
  t.after(() => client.close());
  t.after(() => publisher.close());
  await Promise.all([client.ready, publisher.ready]);
  const received = [];
  const sub = client.subscribe('feed', (m) => received.push(m.offset));
  const { epoch } = await sub.ready;
  for (let i = 0; i < 3; i++) await publisher.publish('feed', i);
  await waitFor('3 messages', () => received.length === 3);

  // Cut the TCP connection: nothing was missed, so the gateway can resume it.
  proxy.cut();
  await waitFor('a second session', () => named(events, 'connect').length === 2);
  await waitFor('the resubscribe', () => sent.filter((f) => f.op === 'subscribe').length === 2);
  const resubscribe = sent.filter((f) => f.op === 'subscribe')[1];
  assert.deepEqual(resubscribe.since, { offset: 3, epoch });
  await afterResubscribe(client);
  await publisher.publish('feed', 3);
  await waitFor('4 messages', () => received.length === 4);
  assert.deepEqual(named(events, 'recoveryfailed'), []);

  // Cut again and publish while the client is away. A gateway that keeps history replays the
  // two missed messages; one that cannot answers recovered:false, and the client must say so
  // and show the jump in offsets as a gap.
  proxy.refuse = true;
  proxy.cut();
  await waitFor('the disconnect', () => named(events, 'disconnect').length >= 2);
  await publisher.publish('feed', 4);
  await publisher.publish('feed', 5);
  proxy.refuse = false;
  await waitFor('a third session', () => named(events, 'connect').length === 3);
  const third = sent.filter((f) => f.op === 'subscribe')[2];
  assert.deepEqual(third.since, { offset: 4, epoch });
  await afterResubscribe(client);
  const answer = heard.find((f) => f.op === 'ack' && f.id === third.id);
  assert.equal(typeof answer.recovered, 'boolean', JSON.stringify(answer));
  await publisher.publish('feed', 6);
  if (answer.recovered) {
    await waitFor('the replay and the next message', () => received.length === 7);
    assert.deepEqual(received, [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(named(events, 'recoveryfailed'), []);
    assert.deepEqual(named(events, 'gap'), []);
  } else {
    await waitFor('the message after the gap', () => received.length === 5);
    assert.deepEqual(received, [1, 2, 3, 4, 7]);
    assert.deepEqual(named(events, 'recoveryfailed'), [{ channel: 'feed' }]);
    assert.deepEqual(named(events, 'gap'), [{ channel: 'feed', missed: 2 }]);
  }
});

test('a drain moves the client to the next URL at the hinted time and resumes there', async (t) => {
  const env = { WSFLEET_DRAIN_TOKEN: DRAIN_TOKEN, WSFLEET_PUBLISH_TOKEN: PUBLISH_TOKEN };
  const [a, b] = await Promise.all([
    Gateway.start({ args: ['--anonymous', '--node-id', 'gw-a'], env }),
    Gateway.start({ args: ['--anonymous', '--node-id', 'gw-b'], env }),
  ]);
  t.after(() => a.kill());
  t.after(() => b.kill());
  const sent = [];
  const { client, events } = recordedClient({ urls: [a.url, b.url], WebSocket: recordingWebSocket(sent) });
  t.after(() => client.close());
  assert.equal((await client.ready).node, 'gw-a');
  const received = [];
  const { epoch } = await client.subscribe('news', (m) => received.push(m.data)).ready;
  await client.publish('news', 'on a');
  await waitFor('the message on gw-a', () => received.length === 1);

  const drain = await a.admin('POST', '/drain', { token: DRAIN_TOKEN, body: { window_seconds: 2, deadline_seconds: 20, reason: 'js test' } });
  assert.equal(drain.status, 202, JSON.stringify(drain.body));
  await waitFor('the hint', () => named(events, 'draining').length === 1);
  const [{ afterMs, reason }] = named(events, 'draining');
  assert.ok(afterMs >= 0 && afterMs <= 2000, `after_ms ${afterMs}`);
  assert.equal(reason, 'js test');
  await waitFor('a session on gw-b', () => client.session?.node === 'gw-b', 30_000);
  // Not before the hinted time, counted from when the hint arrived (timers round to the ms).
  const hintedAt = events.find((e) => e.name === 'draining').at;
  const movedAt = events.find((e) => e.name === 'connect' && e.payload.node === 'gw-b').at;
  assert.ok(movedAt - hintedAt >= afterMs - 2, `moved after ${movedAt - hintedAt} ms, hint ${afterMs} ms`);
  const resubscribe = sent.filter((f) => f.op === 'subscribe').at(-1);
  assert.deepEqual(resubscribe.since, { offset: 1, epoch });
  // No backoff after a hinted move: the reconnect waited only for the hint.
  assert.ok(named(events, 'reconnecting').every((r) => r.delayMs <= afterMs), JSON.stringify(named(events, 'reconnecting')));
  await client.publish('news', 'on b');
  await waitFor('the message on gw-b', () => received.at(-1) === 'on b');
});

test('a 1013 refusal backs off at least the close reason\'s retry hint', async (t) => {
  const gateway = await Gateway.start({ args: ['--anonymous', '--max-connections', '1', '--refusal-mode', 'close-1013'] });
  t.after(() => gateway.kill());
  const { client: holder } = recordedClient({ urls: [gateway.url] });
  t.after(() => holder.close());
  await holder.ready;
  const backoff = { baseMs: 50, capMs: 400 };
  const { client, events } = recordedClient({ urls: [gateway.url], backoff });
  t.after(() => client.close());
  await waitFor('the refusal', () => named(events, 'reconnecting').length >= 1);
  const [refused] = named(events, 'disconnect');
  assert.equal(refused.code, 1013);
  const hint = retryHintMs(refused.reason);
  assert.ok(hint >= 1000, `a retry hint in ${JSON.stringify(refused.reason)}`);
  const [{ delayMs, attempt }] = named(events, 'reconnecting');
  assert.equal(attempt, 1);
  // The hint is a floor; on top of it, at least one jittered backoff step (never an instant retry).
  assert.ok(delayMs >= hint && delayMs <= hint + new Backoff(backoff).ceiling(1), `${delayMs} ms after a ${hint} ms hint`);
  // Once the slot is free, the client gets in.
  holder.close();
  await waitFor('a session after the hint', () => client.connected, hint + 20_000);
});

test('offsets going backwards on a live connection (Redis lost its data) resync the subscription', async (t) => {
  const redis = await Redis.start();
  t.after(() => redis.kill());
  const env = { WSFLEET_DRAIN_TOKEN: DRAIN_TOKEN, WSFLEET_PUBLISH_TOKEN: PUBLISH_TOKEN };
  const gateway = await Gateway.start({ args: ['--anonymous', '--redis-url', redis.url], env });
  t.after(() => gateway.kill());
  const sent = [];
  const { client, events } = recordedClient({ urls: [gateway.url], WebSocket: recordingWebSocket(sent) });
  t.after(() => client.close());
  await client.ready;
  const received = [];
  const sub = client.subscribe('live', (m) => received.push(m.data));
  const { epoch } = await sub.ready;
  const publish = (data) => gateway.api('POST', '/api/v1/publish', { token: PUBLISH_TOKEN, body: { channel: 'live', data } });
  for (const n of [1, 2, 3]) assert.equal((await publish(n)).status, 200);
  await waitFor('3 messages', () => received.length === 3);

  await redis.restart();
  // Publish until the gateway is back on the empty Redis: the new epoch restarts at offset 1.
  let next = 100;
  await waitFor('a resync', async () => {
    await publish(next++);
    return named(events, 'recoveryfailed').length === 1;
  }, 60_000);
  assert.equal(named(events, 'connect').length, 1, 'the connection stayed up');
  const resync = sent.filter((f) => f.op === 'subscribe').at(-1);
  assert.deepEqual(resync.since, { offset: 3, epoch });
  await waitFor('the new epoch', () => sub.epoch !== epoch);
  // From the resync on, new messages are delivered again.
  assert.equal((await publish('after')).status, 200);
  await waitFor('the message after the resync', () => received.at(-1) === 'after');
  assert.deepEqual(received.slice(0, 3), [1, 2, 3]);
});

test('a resume the node cannot serve yet (backplane down) is retried with backoff, not dropped', async (t) => {
  const redis = await Redis.start();
  t.after(() => redis.kill());
  const env = { WSFLEET_DRAIN_TOKEN: DRAIN_TOKEN, WSFLEET_PUBLISH_TOKEN: PUBLISH_TOKEN };
  const start = (id) => Gateway.start({ args: ['--anonymous', '--node-id', id, '--redis-url', redis.url], env });
  const [a, b] = await Promise.all([start('a'), start('b')]);
  t.after(() => a.kill());
  t.after(() => b.kill());
  const { client, events } = recordedClient({ urls: [a.url, b.url], backoff: { baseMs: 50, capMs: 400 } });
  t.after(() => client.close());
  await client.ready;
  const received = [];
  await client.subscribe('held', (m) => received.push(m.data)).ready;

  redis.kill();
  await a.kill();
  // B is up without a backplane: it answers the resume with `internal`, more than once.
  const refused = () => named(events, 'disconnect').filter((d) => d.reason.includes('could not resume held'));
  await waitFor('two refused resumes', () => refused().length >= 2);
  const redisAgain = await Redis.start(redis.port);
  t.after(() => redisAgain.kill());
  await waitFor('the resume once Redis is back', () => named(events, 'recoveryfailed').length === 1);
  assert.deepEqual(named(events, 'subscriptionlost'), []);
  const publish = (data) => b.api('POST', '/api/v1/publish', { token: PUBLISH_TOKEN, body: { channel: 'held', data } });
  assert.equal((await publish('after')).status, 200);
  await waitFor('the message after the outage', () => received.at(-1) === 'after');
});
