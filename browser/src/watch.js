// The watch page: plays the stream in a <video>, shows a small stats overlay, re-attaches by
// itself, relays when it can afford it, and says plainly what is wrong when it cannot play.
// State for tests and the curious: document.body.dataset.state and window.treecast.

import { decideRelay } from './relay.js';
import { Session } from './session.js';
import { Peers, SAMPLE_MS } from './peer.js';

/** The bitrate relaying is sized for until the stream's own is measured, kbit/s. */
const ASSUMED_STREAM_KBPS = 2500;
const OPT_OUT_KEY = 'treecast.relay.optOut';

const stream = decodeURIComponent(location.pathname.split('/').filter(Boolean).at(-1) ?? '');
const video = /** @type {HTMLVideoElement} */ (document.getElementById('video'));
const statusEl = /** @type {HTMLElement} */ (document.getElementById('status'));
const overlay = /** @type {HTMLElement} */ (document.getElementById('stats'));
const optOut = /** @type {HTMLInputElement} */ (document.getElementById('relay-opt-out'));
document.title = `${stream} · treecast`;
/** @type {HTMLElement} */ (document.getElementById('stream-name')).textContent = stream;

/** What the overlay shows. */
const view = {
  nodeId: '',
  depth: /** @type {number | null} */ (null),
  parent: '',
  parentPlatform: '',
  kbps: 0,
  lossPermille: 0,
  rttMs: 0,
  relay: 'deciding…',
  children: 0,
};

/**
 * @param {string} state  a short machine-readable word (body[data-state])
 * @param {string} text   what the viewer reads
 */
function show(state, text) {
  document.body.dataset.state = state;
  statusEl.textContent = text;
  statusEl.hidden = state === 'playing';
}

function render() {
  const rows = [
    ['depth', view.depth ?? '–'],
    ['parent', view.parent ? `${view.parent.slice(-6)} (${view.parentPlatform})` : '–'],
    ['bitrate', `${view.kbps} kbit/s`],
    ['loss', `${(view.lossPermille / 10).toFixed(1)} %`],
    ['rtt', `${view.rttMs} ms`],
    ['relay', `${view.relay}${view.children ? `, feeding ${view.children}` : ''}`],
  ];
  overlay.replaceChildren(
    ...rows.map(([k, v]) => {
      const row = document.createElement('div');
      const key = document.createElement('span');
      key.textContent = String(k);
      const val = document.createElement('span');
      val.textContent = String(v);
      row.append(key, val);
      return row;
    }),
  );
}

async function main() {
  render();
  if (typeof RTCPeerConnection === 'undefined' || typeof WebSocket === 'undefined') {
    show('no-webrtc', 'This browser cannot play the stream: it has no WebRTC. Try a current Firefox, Chrome or Safari.');
    return;
  }
  optOut.checked = localStorage.getItem(OPT_OUT_KEY) === '1';
  optOut.onchange = () => localStorage.setItem(OPT_OUT_KEY, optOut.checked ? '1' : '0');
  show('connecting', 'Connecting…');
  const facts = await relayFacts();
  const decision = decideRelay(facts);
  view.relay = decision.relay ? `yes (${decision.reason})` : `no (${decision.reason})`;
  render();

  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  /** @type {Peers} */
  let peers;
  const session = new Session({
    url: `${scheme}//${location.host}/ws/${encodeURIComponent(stream)}`,
    stream,
    capabilities: () => ({
      relay: decision.relay,
      uplink_kbps: Math.round(facts.uplinkKbps ?? 0),
      encoded_transform: 'RTCRtpScriptTransform' in window,
    }),
    // Feed a child only with media to give and while relaying is still wanted.
    acceptChild: () => decision.relay && !optOut.checked && peers.media.getTracks().length > 0,
    deps: {
      connect: (url) => new WebSocket(url),
      setTimer: (fn, ms) => setTimeout(fn, ms),
      clearTimer: (h) => clearTimeout(/** @type {number} */ (h)),
      random: Math.random,
    },
    onEvent: (ev) => {
      switch (ev.type) {
        case 'welcome':
          view.nodeId = ev.nodeId;
          peers.setIceServers(ev.iceServers);
          if (!ev.live) notLive();
          else show('waiting', 'Finding a place in the tree…');
          break;
        case 'live':
          if (ev.live) show('waiting', 'The stream is live; finding a place in the tree…');
          else notLive();
          break;
        case 'unplaced':
          if (ev.reason === 'not_live') notLive();
          else show('waiting', 'Every slot in the tree is taken right now; retrying…');
          break;
        case 'placed':
          view.depth = ev.depth;
          view.parent = ev.parent;
          view.parentPlatform = ev.parentPlatform;
          render();
          if (document.body.dataset.state !== 'playing') show('attaching', `Connecting to the tree (depth ${ev.depth})…`);
          peers.attach(ev.parent, ev.parentPlatform).catch((e) => show('error', `Could not start WebRTC: ${e}`));
          break;
        case 'parent_lost':
          peers.parentGone();
          view.parent = '';
          render();
          break;
        case 'child_added':
          break;
        case 'child_removed':
          peers.removeChild(ev.child);
          break;
        case 'signal':
          peers.signal(ev.msg);
          break;
        case 'error':
          console.warn('treecast:', ev.code, ev.message);
          if (ev.code === 'too_many_connections' || ev.code === 'too_many_joins') {
            show('refused', 'The server refused this connection (too many from your address); retrying…');
          }
          break;
        case 'state':
          if (ev.state === 'backoff') {
            // A reconnected session is a new node: the old links belong to the old one.
            peers.close();
            view.parent = '';
            view.depth = null;
            render();
            show('reconnecting', 'Lost the connection to the server; reconnecting…');
          }
          break;
      }
    },
  });
  peers = new Peers(session, (ev) => {
    switch (ev.type) {
      case 'media':
        if (video.srcObject !== ev.stream) video.srcObject = ev.stream;
        video.play().catch(() => show('click', 'Click the video to start playback.'));
        break;
      case 'connected':
        break;
      case 'failed':
        if (!ev.answered) {
          show('attaching', 'The parent did not answer; finding another place in the tree…');
        } else if (!ev.everConnected) {
          show('blocked', 'Blocked by the network: no WebRTC connection could be made (a firewall, VPN or proxy may block UDP). Retrying…');
        }
        break;
      case 'stats':
        view.kbps = ev.stats.kbps;
        view.lossPermille = ev.stats.lossPermille;
        view.rttMs = ev.stats.rttMs;
        view.children = peers.children();
        render();
        if (ev.stats.receiving && video.videoWidth > 0) show('playing', '');
        // Sampled four times a second; the server hears once a second.
        if (performance.now() - statsSentAt < 1000) break;
        statsSentAt = performance.now();
        session.send({
          type: 'stats',
          kbps: ev.stats.kbps,
          loss_permille: Math.min(1000, ev.stats.lossPermille),
          rtt_ms: Math.min(65535, ev.stats.rttMs),
          receiving: ev.stats.receiving,
          frames_decoded: ev.stats.framesDecoded,
        });
        break;
    }
  });
  video.onclick = () => video.play().catch(() => {});
  let statsSentAt = 0;
  setInterval(() => peers.sample(performance.now()).catch(() => {}), SAMPLE_MS);
  addEventListener('pagehide', () => {
    session.stop();
    peers.close();
  });
  Object.assign(window, { treecast: { session, peers, view } });
  session.start();
}

function notLive() {
  show('not-live', `Stream not live: nobody is broadcasting “${stream}” right now. This page starts playing by itself when the broadcast begins.`);
}

/** @returns {Promise<import('./relay.js').RelayFacts>} */
async function relayFacts() {
  const nav = /** @type {any} */ (navigator);
  /** @type {boolean | null} */
  let charging = null;
  /** @type {number | null} */
  let batteryLevel = null;
  try {
    const b = await nav.getBattery?.();
    // Desktops without a battery report charging and a full level.
    if (b) ({ charging, level: batteryLevel } = b);
  } catch {
    // no Battery Status API
  }
  return {
    mobile: nav.userAgentData?.mobile ?? /Mobi|Android|iPhone|iPad/.test(navigator.userAgent),
    charging,
    batteryLevel,
    connectionType: nav.connection?.type ?? null,
    saveData: nav.connection?.saveData ?? null,
    uplinkKbps: await probeUplink(),
    streamKbps: ASSUMED_STREAM_KBPS,
    optOut: optOut.checked,
  };
}

/**
 * A rough upload measurement: time one 256 KiB POST to the server. Underestimates on fast
 * links (one request, TCP slow start), which errs toward not relaying.
 * @returns {Promise<number | null>}
 */
async function probeUplink() {
  const body = new Uint8Array(256 * 1024);
  const t0 = performance.now();
  try {
    const r = await fetch('/api/probe', { method: 'POST', body, cache: 'no-store' });
    if (!r.ok) return null;
  } catch {
    return null;
  }
  const seconds = Math.max(0.001, (performance.now() - t0) / 1000);
  return (body.length * 8) / 1000 / seconds;
}

main().catch((e) => show('error', `Something went wrong: ${e}`));
