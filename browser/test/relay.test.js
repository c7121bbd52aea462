import { test } from 'node:test';
import assert from 'node:assert/strict';

import { childrenFor, decideRelay } from '../src/relay.js';

/** @type {import('../src/relay.js').RelayFacts} */
const desktop = {
  mobile: false,
  charging: null,
  batteryLevel: null,
  connectionType: null,
  saveData: null,
  uplinkKbps: 20000,
  streamKbps: 2500,
  optOut: false,
};

test('a desktop with a good uplink relays', () => {
  const d = decideRelay(desktop);
  assert.equal(d.relay, true);
  assert.equal(d.children, 4);
});

test('each reason to stay a leaf', () => {
  /** @type {[Partial<import('../src/relay.js').RelayFacts>, string][]} */
  const cases = [
    [{ optOut: true }, 'relaying switched off by the user'],
    [{ mobile: true }, 'mobile device'],
    [{ charging: false, batteryLevel: 0.9 }, 'on battery'],
    [{ connectionType: 'cellular' }, 'cellular link'],
    [{ saveData: true }, 'data saver is on'],
    [{ uplinkKbps: null }, 'upload not measured'],
    [{ uplinkKbps: 2000 }, 'upload 2000 kbit/s is too little'],
  ];
  for (const [change, reason] of cases) {
    const d = decideRelay({ ...desktop, ...change });
    assert.deepEqual(d, { relay: false, children: 0, reason }, JSON.stringify(change));
  }
});

test('a laptop on its charger relays', () => {
  assert.equal(decideRelay({ ...desktop, charging: true, batteryLevel: 0.3 }).relay, true);
});

test('children follow the upload with a fifth in reserve', () => {
  assert.equal(childrenFor(10000, 2000), 4);
  assert.equal(childrenFor(5000, 2000), 2);
  assert.equal(childrenFor(2000, 2000), 0);
  assert.equal(childrenFor(1, 0), 4);
  assert.equal(decideRelay({ ...desktop, uplinkKbps: 7000 }).children, 2);
});
