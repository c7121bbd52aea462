// The signalling wire between a browser and the signal server (docs/protocol.md,
// "Signalling (browser <-> signal server)"): JSON text frames over a WebSocket at /ws/{stream},
// tagged by `type`. Mirrors signal/src/protocol.rs; both are checked against the same fixtures
// in signal/fixtures/. No DOM here: this module runs in node for the tests.

/** The largest message either side sends, in bytes (the server's limit). */
export const MAX_MESSAGE_BYTES = 64 * 1024;

/**
 * Node ids are 16 hex digits in a string: a u64 does not survive a JavaScript number.
 * @typedef {string} NodeId
 */

/**
 * @typedef {{relay: boolean, uplink_kbps: number, encoded_transform: boolean}} Capabilities
 * @typedef {{candidate: string, sdp_mid: string | null, sdp_m_line_index: number | null}} IceCandidate
 * @typedef {{kbps: number, loss_permille: number, rtt_ms: number, receiving: boolean, frames_decoded: number}} Stats
 * @typedef {{max_message_bytes: number, messages_per_second: number, burst: number}} Limits
 * @typedef {{urls: string[]}} IceServer
 */

/**
 * What a browser sends.
 * @typedef {{type: 'join', stream: string, capabilities: Capabilities}
 *   | {type: 'leave'}
 *   | {type: 'child_accepted', child: NodeId}
 *   | {type: 'child_refused', child: NodeId}
 *   | {type: 'offer', to: NodeId, sdp: string}
 *   | {type: 'answer', to: NodeId, sdp: string}
 *   | {type: 'candidate', to: NodeId, candidate: IceCandidate}
 *   | ({type: 'stats'} & Stats)
 *   | {type: 'parent_lost'}
 *   | {type: 'child_lost', child: NodeId}
 *   | {type: 'ping', nonce: number}
 *   | {type: 'pong', nonce: number}} ClientMessage
 */

/**
 * What the server sends.
 * @typedef {{type: 'welcome', node_id: NodeId, stream: string, live: boolean, limits: Limits, ice_servers: IceServer[]}
 *   | {type: 'status', live: boolean}
 *   | {type: 'placed', node_id: NodeId, parent: NodeId, parent_platform: 'native' | 'browser', depth: number}
 *   | {type: 'unplaced', reason: 'not_live' | 'no_slot'}
 *   | {type: 'child_request', child: NodeId}
 *   | {type: 'child_added', child: NodeId}
 *   | {type: 'child_removed', child: NodeId}
 *   | {type: 'offer', from: NodeId, sdp: string}
 *   | {type: 'answer', from: NodeId, sdp: string}
 *   | {type: 'candidate', from: NodeId, candidate: IceCandidate}
 *   | {type: 'parent_lost', parent: NodeId}
 *   | {type: 'error', code: ErrorCode, message: string}
 *   | {type: 'ping', nonce: number}
 *   | {type: 'pong', nonce: number}} ServerMessage
 */

/**
 * @typedef {'bad_message' | 'binary' | 'too_large' | 'rate_limited' | 'wrong_stream'
 *   | 'already_joined' | 'not_joined' | 'too_many_joins' | 'too_many_connections'
 *   | 'not_your_peer' | 'unreachable' | 'unavailable'} ErrorCode
 */

// ---- schemas ---------------------------------------------------------------------------------
// A field is a type name: 'id', 'stream', 'string', 'bool', 'u16', 'u32', 'u64', 'enum:a|b',
// 'string[]'; '?' at the end: may be missing (then `null`, or the default after '='); or a
// nested schema object, or [schema] for an array of objects.

/** @typedef {string | {[field: string]: any} | any[]} Field */

const CAPABILITIES = { relay: 'bool', uplink_kbps: 'u32', encoded_transform: 'bool=false' };
const CANDIDATE = { candidate: 'string', sdp_mid: 'string?', sdp_m_line_index: 'u16?' };
const STATS = {
  kbps: 'u32',
  loss_permille: 'u16',
  rtt_ms: 'u16',
  receiving: 'bool',
  frames_decoded: 'u64=0',
};

/** @type {Record<string, Record<string, Field>>} */
export const CLIENT_SCHEMA = {
  join: { stream: 'stream', capabilities: CAPABILITIES },
  leave: {},
  child_accepted: { child: 'id' },
  child_refused: { child: 'id' },
  offer: { to: 'id', sdp: 'string' },
  answer: { to: 'id', sdp: 'string' },
  candidate: { to: 'id', candidate: CANDIDATE },
  stats: STATS,
  parent_lost: {},
  child_lost: { child: 'id' },
  ping: { nonce: 'u32' },
  pong: { nonce: 'u32' },
};

const ERROR_CODES =
  'bad_message|binary|too_large|rate_limited|wrong_stream|already_joined|not_joined|' +
  'too_many_joins|too_many_connections|not_your_peer|unreachable|unavailable';

/** @type {Record<string, Record<string, Field>>} */
export const SERVER_SCHEMA = {
  welcome: {
    node_id: 'id',
    stream: 'stream',
    live: 'bool',
    limits: { max_message_bytes: 'u32', messages_per_second: 'u32', burst: 'u32' },
    ice_servers: [{ urls: 'string[]' }],
  },
  status: { live: 'bool' },
  placed: { node_id: 'id', parent: 'id', parent_platform: 'enum:native|browser', depth: 'u16' },
  unplaced: { reason: 'enum:not_live|no_slot' },
  child_request: { child: 'id' },
  child_added: { child: 'id' },
  child_removed: { child: 'id' },
  offer: { from: 'id', sdp: 'string' },
  answer: { from: 'id', sdp: 'string' },
  candidate: { from: 'id', candidate: CANDIDATE },
  parent_lost: { parent: 'id' },
  error: { code: `enum:${ERROR_CODES}`, message: 'string' },
  ping: { nonce: 'u32' },
  pong: { nonce: 'u32' },
};

/** A message that does not follow the protocol. */
export class ProtocolError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/**
 * Parses and checks a frame from the server.
 * @param {string} text
 * @returns {ServerMessage}
 */
export function decodeServer(text) {
  return /** @type {ServerMessage} */ (decode(text, SERVER_SCHEMA));
}

/**
 * Parses and checks a frame from a browser (the server's view; used by the tests).
 * @param {string} text
 * @returns {ClientMessage}
 */
export function decodeClient(text) {
  return /** @type {ClientMessage} */ (decode(text, CLIENT_SCHEMA));
}

/**
 * Checks and serializes a message for the server.
 * @param {ClientMessage} msg
 * @returns {string}
 */
export function encodeClient(msg) {
  const checked = check(msg, CLIENT_SCHEMA);
  const text = JSON.stringify(checked);
  if (text.length > MAX_MESSAGE_BYTES) throw new ProtocolError('message too large');
  return text;
}

/**
 * Checks an already parsed message against a schema table; returns it with defaults filled in
 * and fields in schema order.
 * @param {unknown} value
 * @param {Record<string, Record<string, Field>>} table
 * @returns {{type: string, [k: string]: unknown}}
 */
export function check(value, table) {
  if (!isObject(value)) throw new ProtocolError('expected an object');
  const type = value.type;
  if (typeof type !== 'string' || !Object.hasOwn(table, type)) {
    throw new ProtocolError(`unknown message type ${JSON.stringify(type)}`);
  }
  const { type: _t, ...rest } = value;
  return { type, ...checkObject(rest, table[type], type) };
}

/**
 * @param {string} text
 * @param {Record<string, Record<string, Field>>} table
 */
function decode(text, table) {
  if (text.length > MAX_MESSAGE_BYTES) throw new ProtocolError('message too large');
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ProtocolError('not JSON');
  }
  return check(value, table);
}

/**
 * @param {Record<string, unknown>} obj
 * @param {Record<string, Field>} schema
 * @param {string} path
 * @returns {Record<string, unknown>}
 */
function checkObject(obj, schema, path) {
  for (const k of Object.keys(obj)) {
    if (!Object.hasOwn(schema, k)) throw new ProtocolError(`${path}: unknown field ${k}`);
  }
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const [k, field] of Object.entries(schema)) {
    out[k] = checkField(obj[k], field, `${path}.${k}`);
  }
  return out;
}

/**
 * @param {unknown} v
 * @param {Field} field
 * @param {string} path
 * @returns {unknown}
 */
function checkField(v, field, path) {
  if (Array.isArray(field)) {
    if (!Array.isArray(v)) throw new ProtocolError(`${path}: expected an array`);
    return v.map((x, i) => checkField(x, field[0], `${path}[${i}]`));
  }
  if (typeof field === 'object') {
    if (!isObject(v)) throw new ProtocolError(`${path}: expected an object`);
    return checkObject(v, field, path);
  }
  let kind = field;
  /** @type {{value: unknown} | null} */
  let fallback = null;
  if (kind.endsWith('?')) {
    kind = kind.slice(0, -1);
    fallback = { value: null };
  } else if (kind.includes('=')) {
    const [k, d] = kind.split('=');
    kind = k;
    fallback = { value: JSON.parse(d) };
  }
  if (v === undefined || (v === null && fallback?.value === null)) {
    if (fallback) return fallback.value;
    throw new ProtocolError(`${path}: missing`);
  }
  if (!fits(v, kind)) throw new ProtocolError(`${path}: expected ${kind}`);
  return v;
}

/**
 * @param {unknown} v
 * @param {string} kind
 */
function fits(v, kind) {
  switch (kind) {
    case 'id':
      return typeof v === 'string' && /^[0-9a-fA-F]{1,16}$/.test(v);
    case 'stream':
      return typeof v === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(v);
    case 'string':
      return typeof v === 'string';
    case 'string[]':
      return Array.isArray(v) && v.every((x) => typeof x === 'string');
    case 'bool':
      return typeof v === 'boolean';
    case 'u16':
      return Number.isInteger(v) && /** @type {number} */ (v) >= 0 && /** @type {number} */ (v) <= 0xffff;
    case 'u32':
      return Number.isInteger(v) && /** @type {number} */ (v) >= 0 && /** @type {number} */ (v) <= 0xffffffff;
    case 'u64':
      return Number.isSafeInteger(v) && /** @type {number} */ (v) >= 0;
    default:
      if (kind.startsWith('enum:')) return typeof v === 'string' && kind.slice(5).split('|').includes(v);
      return false;
  }
}

/**
 * @param {unknown} v
 * @returns {v is Record<string, unknown>}
 */
function isObject(v) {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
