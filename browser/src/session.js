// The join/reconnect state machine of one browser's signalling session. No DOM and no globals:
// the socket, the timers, the clock and the randomness come in as `deps`, so the tests drive it
// with a fake socket in virtual time (test/session.test.js).
//
//   idle --start--> connecting --welcome--> joined --placed--> placed
//     ^                 |                     |  ^-----------------'  (parent_lost: joined)
//     |                 '------ close -------'--> backoff --timer--> connecting
//   closed <--stop-- (any)
//
// Back-off after a lost connection: 0.5 s doubling to 10 s, each with jitter (half to full),
// reset once a connection is welcomed. A connection silent for `idleMs` (the server pings every
// 15 s) is taken for dead and replaced.

import { decodeServer, encodeClient, ProtocolError } from './protocol.js';

/**
 * @typedef {import('./protocol.js').ClientMessage} ClientMessage
 * @typedef {import('./protocol.js').ServerMessage} ServerMessage
 * @typedef {import('./protocol.js').Capabilities} Capabilities
 * @typedef {import('./protocol.js').IceServer} IceServer
 */

/**
 * The part of a WebSocket the session uses.
 * @typedef {object} SocketLike
 * @property {(text: string) => void} send
 * @property {() => void} close
 * @property {((ev: any) => void) | null} onopen
 * @property {((ev: any) => void) | null} onmessage
 * @property {((ev: any) => void) | null} onclose
 * @property {((ev: any) => void) | null} onerror
 */

/**
 * @typedef {object} SessionDeps
 * @property {(url: string) => SocketLike} connect
 * @property {(fn: () => void, ms: number) => unknown} setTimer
 * @property {(handle: unknown) => void} clearTimer
 * @property {() => number} random   uniform in [0, 1)
 */

/**
 * @typedef {'idle' | 'connecting' | 'joined' | 'placed' | 'backoff' | 'closed'} SessionState
 */

/**
 * What the session tells the page (and the WebRTC layer).
 * @typedef {{type: 'state', state: SessionState}
 *   | {type: 'welcome', nodeId: string, live: boolean, iceServers: IceServer[]}
 *   | {type: 'live', live: boolean}
 *   | {type: 'placed', parent: string, parentPlatform: 'native' | 'browser', depth: number}
 *   | {type: 'unplaced', reason: 'not_live' | 'no_slot'}
 *   | {type: 'parent_lost', parent: string}
 *   | {type: 'child_added', child: string}
 *   | {type: 'child_removed', child: string}
 *   | {type: 'signal', msg: Extract<ServerMessage, {type: 'offer' | 'answer' | 'candidate'}>}
 *   | {type: 'error', code: string, message: string}} SessionEvent
 */

/**
 * @typedef {object} SessionOptions
 * @property {string} url                 ws(s)://host/ws/{stream}
 * @property {string} stream
 * @property {() => Capabilities} capabilities   asked at every join
 * @property {(child: string) => boolean} acceptChild  asked for every child request
 * @property {(ev: SessionEvent) => void} onEvent
 * @property {SessionDeps} deps
 * @property {number} [idleMs]            default 45 000
 */

export const BACKOFF_FIRST_MS = 500;
export const BACKOFF_MAX_MS = 10_000;

export class Session {
  /** @param {SessionOptions} opts */
  constructor(opts) {
    this.opts = opts;
    /** @type {SessionState} */
    this.state = 'idle';
    /** @type {string | null} */
    this.nodeId = null;
    /** @type {boolean | null} */
    this.live = null;
    /** @type {string | null} */
    this.parent = null;
    /** @type {number | null} */
    this.depth = null;
    /** Connection attempts since the last welcome. */
    this.attempts = 0;
    /** @type {SocketLike | null} */
    this.socket = null;
    /** @type {unknown} */
    this.timer = null;
    /** @type {unknown} */
    this.watchdog = null;
  }

  /** Connects (once); reconnects by itself until `stop`. */
  start() {
    if (this.state === 'idle') this.connect();
  }

  /** Leaves the stream and closes for good. */
  stop() {
    if (this.state === 'closed') return;
    if (this.socket && (this.state === 'joined' || this.state === 'placed')) {
      this.trySend({ type: 'leave' });
    }
    this.clearTimers();
    const s = this.socket;
    this.socket = null;
    if (s) {
      s.onclose = null;
      s.close();
    }
    this.setState('closed');
  }

  /**
   * Sends a message (signalling, stats, losses). Returns false when not connected: the
   * caller's peer connections are torn down by the events that follow anyway.
   * @param {ClientMessage} msg
   */
  send(msg) {
    if (!this.socket || (this.state !== 'joined' && this.state !== 'placed')) return false;
    return this.trySend(msg);
  }

  /** The browser noticed its parent's media stopped: the server repairs. */
  parentLost() {
    if (this.state !== 'placed') return;
    this.send({ type: 'parent_lost' });
    this.parent = null;
    this.setState('joined');
  }

  // ---- internals ----------------------------------------------------------------------------

  connect() {
    this.setState('connecting');
    this.attempts += 1;
    let socket;
    try {
      socket = this.opts.deps.connect(this.opts.url);
    } catch {
      this.lost();
      return;
    }
    this.socket = socket;
    socket.onmessage = (ev) => this.onFrame(ev.data);
    socket.onclose = () => {
      if (this.socket === socket) this.lost();
    };
    socket.onerror = () => {};
    socket.onopen = () => this.armWatchdog();
  }

  /** @param {unknown} data */
  onFrame(data) {
    this.armWatchdog();
    if (typeof data !== 'string') return;
    /** @type {ServerMessage} */
    let m;
    try {
      m = decodeServer(data);
    } catch (e) {
      // A server we do not understand: say so, keep going (the next message may be fine).
      const message = e instanceof ProtocolError ? e.message : String(e);
      this.emit({ type: 'error', code: 'bad_message', message });
      return;
    }
    this.onMessage(m);
  }

  /** @param {ServerMessage} m */
  onMessage(m) {
    switch (m.type) {
      case 'welcome':
        this.attempts = 0;
        this.nodeId = m.node_id;
        this.live = m.live;
        this.emit({ type: 'welcome', nodeId: m.node_id, live: m.live, iceServers: m.ice_servers });
        this.trySend({ type: 'join', stream: this.opts.stream, capabilities: this.opts.capabilities() });
        this.setState('joined');
        break;
      case 'status':
        this.live = m.live;
        this.emit({ type: 'live', live: m.live });
        break;
      case 'placed':
        this.parent = m.parent;
        this.depth = m.depth;
        this.setState('placed');
        this.emit({ type: 'placed', parent: m.parent, parentPlatform: m.parent_platform, depth: m.depth });
        break;
      case 'unplaced':
        if (m.reason === 'not_live') this.live = false;
        this.emit({ type: 'unplaced', reason: m.reason });
        break;
      case 'parent_lost':
        this.parent = null;
        if (this.state === 'placed') this.setState('joined');
        this.emit({ type: 'parent_lost', parent: m.parent });
        break;
      case 'child_request': {
        const yes = this.opts.acceptChild(m.child);
        this.trySend({ type: yes ? 'child_accepted' : 'child_refused', child: m.child });
        break;
      }
      case 'child_added':
        this.emit({ type: 'child_added', child: m.child });
        break;
      case 'child_removed':
        this.emit({ type: 'child_removed', child: m.child });
        break;
      case 'offer':
      case 'answer':
      case 'candidate':
        this.emit({ type: 'signal', msg: m });
        break;
      case 'error':
        this.emit({ type: 'error', code: m.code, message: m.message });
        break;
      case 'ping':
        this.trySend({ type: 'pong', nonce: m.nonce });
        break;
      case 'pong':
        break;
    }
  }

  /** The connection is gone: back off, then connect again. */
  lost() {
    if (this.state === 'closed') return;
    this.clearTimers();
    const s = this.socket;
    this.socket = null;
    if (s) {
      s.onclose = null;
      try {
        s.close();
      } catch {
        // already closed
      }
    }
    this.parent = null;
    this.nodeId = null;
    this.setState('backoff');
    this.timer = this.opts.deps.setTimer(() => {
      this.timer = null;
      this.connect();
    }, backoffDelay(this.attempts, this.opts.deps.random()));
  }

  armWatchdog() {
    if (this.watchdog !== null) this.opts.deps.clearTimer(this.watchdog);
    this.watchdog = this.opts.deps.setTimer(() => {
      this.watchdog = null;
      this.lost();
    }, this.opts.idleMs ?? 45_000);
  }

  clearTimers() {
    if (this.timer !== null) this.opts.deps.clearTimer(this.timer);
    if (this.watchdog !== null) this.opts.deps.clearTimer(this.watchdog);
    this.timer = null;
    this.watchdog = null;
  }

  /** @param {ClientMessage} msg */
  trySend(msg) {
    if (!this.socket) return false;
    try {
      this.socket.send(encodeClient(msg));
      return true;
    } catch {
      return false;
    }
  }

  /** @param {SessionState} state */
  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.emit({ type: 'state', state });
  }

  /** @param {SessionEvent} ev */
  emit(ev) {
    this.opts.onEvent(ev);
  }
}

/**
 * The wait before connection attempt `attempts + 1`: 0.5 s doubling to 10 s, times a jitter
 * factor in [0.5, 1) so that many tabs that lost one server do not come back in step.
 * @param {number} attempts  failed attempts so far (at least 1)
 * @param {number} random    uniform in [0, 1)
 */
export function backoffDelay(attempts, random) {
  const exp = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.max(0, attempts - 1));
  return Math.round(exp * (0.5 + random / 2));
}
