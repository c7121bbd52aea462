// Every fixture in signal/fixtures/ round-trips through the JS protocol code, as it does
// through the Rust code (signal/tests/fixtures.rs), and every message type has one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

import {
  CLIENT_SCHEMA,
  ProtocolError,
  SERVER_SCHEMA,
  decodeClient,
  decodeServer,
  encodeClient,
} from '../src/protocol.js';

const dir = fileURLToPath(new URL('../../signal/fixtures/', import.meta.url));
const files = readdirSync(dir).filter((f) => f.endsWith('.json')).sort();

test('every fixture round-trips', () => {
  const seen = { client: new Set(), server: new Set() };
  for (const f of files) {
    const text = readFileSync(dir + f, 'utf8');
    const expected = JSON.parse(text);
    if (f.startsWith('client.')) {
      const m = decodeClient(text);
      assert.deepEqual(JSON.parse(encodeClient(m)), expected, f);
      seen.client.add(m.type);
    } else if (f.startsWith('server.')) {
      const m = decodeServer(text);
      assert.deepEqual(JSON.parse(JSON.stringify(m)), expected, f);
      seen.server.add(m.type);
    } else {
      assert.fail(`${f}: fixture names start with client. or server.`);
    }
  }
  assert.deepEqual([...seen.client].sort(), Object.keys(CLIENT_SCHEMA).sort());
  assert.deepEqual([...seen.server].sort(), Object.keys(SERVER_SCHEMA).sort());
});

test('garbage is refused with a ProtocolError', () => {
  for (const text of [
    '',
    '{',
    'null',
    '[]',
    '{"type":"nope"}',
    '{"type":"placed"}',
    '{"type":"pong","nonce":-1}',
    '{"type":"status","live":true,"extra":1}',
    '{"type":"child_added","child":"xyz"}',
    '{"type":"child_added","child":17}',
    '{"type":"unplaced","reason":"bored"}',
    'x'.repeat(70000),
  ]) {
    assert.throws(() => decodeServer(text), ProtocolError, text.slice(0, 40));
  }
});

test('optional fields get their defaults', () => {
  const m = decodeClient('{"type":"join","stream":"s","capabilities":{"relay":false,"uplink_kbps":0}}');
  assert.deepEqual(m, {
    type: 'join',
    stream: 's',
    capabilities: { relay: false, uplink_kbps: 0, encoded_transform: false },
  });
});

test('encodeClient refuses what the server would refuse', () => {
  assert.throws(
    () => encodeClient(/** @type {any} */ ({ type: 'offer', to: 'not hex', sdp: '' })),
    ProtocolError,
  );
  assert.throws(
    () => encodeClient({ type: 'offer', to: 'a1', sdp: 'v'.repeat(70000) }),
    ProtocolError,
  );
});
