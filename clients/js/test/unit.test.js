// Unit tests without a gateway: frames against the shared protocol examples, backoff bounds,
// and the cursor's resume/dedup rules (the same cases as clients/rust/src/cursor.rs).

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { Backoff, Cursor, protocol, retryHintMs } from '../src/index.js';
import { refreshInMs, refreshRetryMs } from '../src/token.js';
import { repoRoot } from './support.js';

const examples = JSON.parse(readFileSync(join(repoRoot, 'docs/protocol-examples.json'), 'utf8'));

function encode(frame) {
  switch (frame.op) {
    case 'subscribe':
      return protocol.encodeSubscribe(frame.channel, frame.since, frame.id);
    case 'unsubscribe':
      return protocol.encodeUnsubscribe(frame.channel, frame.id);
    case 'publish':
      return protocol.encodePublish(frame.channel, frame.data, frame.id, frame.idempotency_key);
    case 'send':
      return protocol.encodeSend(frame.to, frame.data, frame.id);
    case 'refresh':
      return protocol.encodeRefresh(frame.token, frame.id);
    default:
      throw new Error(`no encoder for ${frame.op}`);
  }
}

test('client frames are encoded exactly as the shared examples', () => {
  assert.ok(examples.client.length >= 5);
  for (const { frame, text } of examples.client) assert.equal(encode(frame), text);
});

test('server frames decode as the shared examples, and malformed ones are rejected', () => {
  for (const example of examples.server) {
    if (example.invalid) {
      assert.throws(() => protocol.decodeServerFrame(example.text), Error, example.invalid);
      continue;
    }
    const frame = protocol.decodeServerFrame(example.text);
    for (const [key, value] of Object.entries(example.expect)) assert.deepEqual(frame[key], value, example.text);
  }
});

test('channel names follow the protocol', () => {
  for (const good of ['a', 'room:42', 'a/b.c_d-e:f', 'x'.repeat(200)]) assert.ok(protocol.validChannel(good), good);
  for (const bad of ['', 'x'.repeat(201), 'room 1', 'ümlaut', 'a*', null, 42]) assert.ok(!protocol.validChannel(bad), String(bad));
});

test('backoff ceilings double then cap, and delays use the whole jitter range', () => {
  const b = new Backoff({ baseMs: 100, capMs: 10_000 });
  assert.deepEqual([0, 1, 6, 7, 1000].map((a) => b.ceiling(a)), [100, 200, 6400, 10_000, 10_000]);
  for (const attempt of [0, 3, 40]) {
    const ceiling = b.ceiling(attempt);
    const delays = Array.from({ length: 2000 }, () => b.delay(attempt));
    assert.ok(delays.every((d) => d >= 0 && d <= ceiling), `attempt ${attempt}`);
    // Full jitter: draws reach both the bottom and the top tenth of the range.
    assert.ok(delays.some((d) => d < ceiling / 10), `attempt ${attempt} low`);
    assert.ok(delays.some((d) => d > (ceiling * 9) / 10), `attempt ${attempt} high`);
  }
  assert.equal(new Backoff({ baseMs: 0, capMs: 1000 }).delay(5), 0);
  assert.throws(() => new Backoff({ baseMs: -1 }), RangeError);
});

test('a 1013 reason\'s retry hint is a floor, bounded', () => {
  assert.equal(retryHintMs('node is at capacity; retry after 5s'), 5000);
  assert.equal(retryHintMs('Retry after 1.5 s'), 1500);
  assert.equal(retryHintMs('retry after 99999s'), 300_000);
  assert.equal(retryHintMs('go away'), 0);
  assert.equal(retryHintMs(undefined), 0);
});

test('cursor: first subscribe starts after the acked offset', () => {
  const c = new Cursor();
  assert.equal(c.since(), null);
  assert.equal(c.onAck(10, 'e1', undefined), 'started');
  assert.deepEqual(c.since(), { offset: 10, epoch: 'e1' });
  assert.ok(!c.accept(10));
  assert.ok(c.accept(11));
  assert.deepEqual(c.since(), { offset: 11, epoch: 'e1' });
});

test('cursor: messages racing ahead of the ack are kept', () => {
  const c = new Cursor();
  assert.ok(c.accept(11));
  assert.equal(c.onAck(10, 'e1', undefined), 'started');
  assert.equal(c.last, 11);
  assert.ok(!c.accept(11));
  assert.ok(c.accept(12));
});

test('cursor: a replay after resume drops duplicates and keeps order', () => {
  const c = new Cursor();
  c.onAck(0, 'e1', undefined);
  for (let offset = 1; offset <= 5; offset++) assert.ok(c.accept(offset));
  assert.equal(c.onAck(8, 'e1', true), 'recovered');
  assert.deepEqual([4, 5, 6, 3, 7, 8, 8].filter((o) => c.accept(o)), [6, 7, 8]);
});

test('cursor: trimmed history is reported and delivery goes on; jumps count as missed', () => {
  const c = new Cursor();
  c.onAck(0, 'e1', undefined);
  assert.ok(c.accept(1));
  assert.equal(c.onAck(500, 'e1', false), 'recovery_failed');
  assert.equal(c.missedBefore(501), 499);
  assert.equal(c.missedBefore(1), 0, 'an old offset is a duplicate, not a gap');
  assert.ok(c.accept(501));
});

test('cursor: a new epoch restarts offsets', () => {
  const c = new Cursor();
  c.onAck(0, 'e1', undefined);
  for (let offset = 1; offset <= 100; offset++) c.accept(offset);
  assert.equal(c.onAck(2, 'e2', false), 'recovery_failed');
  assert.deepEqual(c.since(), { offset: 2, epoch: 'e2' });
  assert.ok(!c.accept(2));
  assert.ok(c.accept(3));
});

test('a token is refreshed when min(30 s, half its lifetime) is left', () => {
  const now = 1_700_000_000_000;
  const cases = [
    // [lifetime left, refresh after]
    [3_600_000, 3_570_000],
    [60_000, 30_000],
    [59_000, 29_500],
    [3000, 1500],
    [2, 1],
    [0, 0],
    [-5000, 0], // already expired: at once
  ];
  for (const [left, after] of cases) assert.equal(refreshInMs(now, now + left), after, `${left} ms left`);
});

test('a failed refresh is retried with backoff, never past the expiry', () => {
  const now = 1_700_000_000_000;
  const cases = [
    // [drawn delay, lifetime left, retry after]
    [200, 10_000, 200],
    [5000, 2000, 2000],
    [0, 1, 0],
    [200, 0, null],
    [200, -1000, null],
  ];
  for (const [delay, left, after] of cases) assert.equal(refreshRetryMs(delay, now, now + left), after, `${left} ms left`);
  assert.equal(protocol.encodeRefresh('t.k.n', 'r4'), '{"op":"refresh","token":"t.k.n","id":"r4"}');
});
