// The session state machine with a fake socket in virtual time.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { BACKOFF_MAX_MS, Session, backoffDelay } from '../src/session.js';

/** A fake WebSocket: records what was sent; the test plays the server. */
class FakeSocket {
  /** @param {string} url */
  constructor(url) {
    this.url = url;
    /** @type {any[]} */
    this.sent = [];
    this.closed = false;
    /** @type {((ev: any) => void) | null} */ this.onopen = null;
    /** @type {((ev: {data: any}) => void) | null} */ this.onmessage = null;
    /** @type {((ev: any) => void) | null} */ this.onclose = null;
    /** @type {((ev: any) => void) | null} */ this.onerror = null;
  }
  /** @param {string} text */
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.closed = true;
  }
  /** @param {object} msg */
  deliver(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  drop() {
    this.onclose?.({ code: 1006 });
  }
}

/** Virtual timers. */
class Clock {
  constructor() {
    this.now = 0;
    /** @type {Map<number, {at: number, fn: () => void}>} */
    this.timers = new Map();
    this.next = 1;
  }
  /** @param {() => void} fn @param {number} ms */
  set(fn, ms) {
    const id = this.next++;
    this.timers.set(id, { at: this.now + ms, fn });
    return id;
  }
  /** @param {unknown} id */
  clear(id) {
    this.timers.delete(/** @type {number} */ (id));
  }
  /** @param {number} ms */
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.now = due[1].at;
      due[1].fn();
    }
    this.now = end;
  }
}

const welcome = (id = '00000000000000b1', live = true) => ({
  type: 'welcome',
  node_id: id,
  stream: 'demo',
  live,
  limits: { max_message_bytes: 65536, messages_per_second: 20, burst: 60 },
  ice_servers: [],
});

function setup({ accept = true } = {}) {
  const clock = new Clock();
  /** @type {FakeSocket[]} */
  const sockets = [];
  /** @type {import('../src/session.js').SessionEvent[]} */
  const events = [];
  const session = new Session({
    url: 'ws://x/ws/demo',
    stream: 'demo',
    capabilities: () => ({ relay: true, uplink_kbps: 10000, encoded_transform: false }),
    acceptChild: () => accept,
    onEvent: (e) => events.push(e),
    deps: {
      connect: (url) => {
        const s = new FakeSocket(url);
        sockets.push(s);
        return s;
      },
      setTimer: (fn, ms) => clock.set(fn, ms),
      clearTimer: (h) => clock.clear(h),
      random: () => 0.5,
    },
  });
  return { clock, sockets, events, session };
}

test('welcome leads to join, placed to the placed state', () => {
  const { sockets, events, session } = setup();
  session.start();
  assert.equal(session.state, 'connecting');
  sockets[0].deliver(welcome());
  assert.equal(session.state, 'joined');
  assert.deepEqual(sockets[0].sent[0], {
    type: 'join',
    stream: 'demo',
    capabilities: { relay: true, uplink_kbps: 10000, encoded_transform: false },
  });
  sockets[0].deliver({ type: 'placed', node_id: '00000000000000b1', parent: 'a1', parent_platform: 'native', depth: 1 });
  assert.equal(session.state, 'placed');
  assert.equal(session.parent, 'a1');
  assert.ok(events.some((e) => e.type === 'placed' && e.depth === 1));
});

test('not live is reported and the session stays joined', () => {
  const { sockets, events, session } = setup();
  session.start();
  sockets[0].deliver(welcome('b1', false));
  sockets[0].deliver({ type: 'unplaced', reason: 'not_live' });
  assert.equal(session.live, false);
  assert.equal(session.state, 'joined');
  assert.ok(events.some((e) => e.type === 'unplaced' && e.reason === 'not_live'));
  sockets[0].deliver({ type: 'status', live: true });
  assert.equal(session.live, true);
});

test('a lost connection reconnects with growing back-off, reset by a welcome', () => {
  const { clock, sockets, session } = setup();
  session.start();
  sockets[0].drop();
  assert.equal(session.state, 'backoff');
  clock.advance(backoffDelay(1, 0.5) - 1);
  assert.equal(sockets.length, 1);
  clock.advance(1);
  assert.equal(sockets.length, 2, 'second attempt after the first delay');
  sockets[1].drop();
  clock.advance(backoffDelay(2, 0.5));
  assert.equal(sockets.length, 3);
  sockets[2].deliver(welcome());
  assert.equal(session.attempts, 0);
  sockets[2].drop();
  clock.advance(backoffDelay(1, 0.5));
  assert.equal(sockets.length, 4, 'back to the first delay after a welcome');
});

test('back-off doubles, is capped and jittered', () => {
  assert.equal(backoffDelay(1, 0), 250);
  assert.equal(backoffDelay(1, 0.999), 500);
  assert.equal(backoffDelay(2, 0), 500);
  const capped = backoffDelay(30, 0.999);
  assert.ok(capped <= BACKOFF_MAX_MS && capped > BACKOFF_MAX_MS * 0.99, String(capped));
});

test('a silent server is taken for dead', () => {
  const { clock, sockets, session } = setup();
  session.start();
  sockets[0].onopen?.({});
  sockets[0].deliver(welcome());
  clock.advance(44_000);
  sockets[0].deliver({ type: 'ping', nonce: 1 });
  assert.deepEqual(sockets[0].sent.at(-1), { type: 'pong', nonce: 1 });
  clock.advance(44_000);
  assert.equal(session.state, 'joined', 'the ping kept it alive');
  clock.advance(1_000);
  assert.equal(sockets[0].closed, true);
  assert.equal(session.state, 'backoff');
  clock.advance(1_000);
  assert.equal(sockets.length, 2, 'and replaced');
});

test('child requests are answered from the policy', () => {
  for (const accept of [true, false]) {
    const { sockets, session } = setup({ accept });
    session.start();
    sockets[0].deliver(welcome());
    sockets[0].deliver({ type: 'child_request', child: 'c2' });
    assert.deepEqual(sockets[0].sent.at(-1), { type: accept ? 'child_accepted' : 'child_refused', child: 'c2' });
  }
});

test('parent loss from either side returns to joined; signalling is passed on', () => {
  const { sockets, events, session } = setup();
  session.start();
  sockets[0].deliver(welcome());
  sockets[0].deliver({ type: 'placed', node_id: 'b1', parent: 'a1', parent_platform: 'browser', depth: 2 });
  sockets[0].deliver({ type: 'answer', from: 'a1', sdp: 'v=0' });
  assert.ok(events.some((e) => e.type === 'signal' && e.msg.type === 'answer'));
  session.parentLost();
  assert.deepEqual(sockets[0].sent.at(-1), { type: 'parent_lost' });
  assert.equal(session.state, 'joined');
  sockets[0].deliver({ type: 'placed', node_id: 'b1', parent: 'a2', parent_platform: 'browser', depth: 2 });
  sockets[0].deliver({ type: 'parent_lost', parent: 'a2' });
  assert.equal(session.state, 'joined');
});

test('garbage from the server is reported, not fatal', () => {
  const { sockets, events, session } = setup();
  session.start();
  sockets[0].onmessage?.({ data: '{nope' });
  sockets[0].deliver(welcome());
  assert.equal(session.state, 'joined');
  assert.ok(events.some((e) => e.type === 'error' && e.code === 'bad_message'));
});

test('stop leaves and closes for good', () => {
  const { clock, sockets, session } = setup();
  session.start();
  sockets[0].deliver(welcome());
  session.stop();
  assert.deepEqual(sockets[0].sent.at(-1), { type: 'leave' });
  assert.equal(sockets[0].closed, true);
  clock.advance(60_000);
  assert.equal(sockets.length, 1);
  assert.equal(session.state, 'closed');
});
