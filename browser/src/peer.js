// The WebRTC side of a watching browser: one link up to its parent (recvonly; this browser
// offers, as a WHEP player does) and one link down to each child (the child offers; this
// browser answers and sends what it receives). Signalling goes through the Session.
//
// Relaying re-sends the received tracks: the browser decodes and re-encodes them (about 30% of
// a laptop core per child; docs/protocol.md). When the parent changes, children keep their
// connections: the new tracks are swapped in with replaceTrack, no renegotiation.

/**
 * @typedef {import('./session.js').Session} Session
 * @typedef {import('./protocol.js').IceServer} IceServer
 * @typedef {import('./protocol.js').ServerMessage} ServerMessage
 */

/**
 * What the page learns from the links.
 * @typedef {{type: 'media', stream: MediaStream}
 *   | {type: 'connected'}
 *   | {type: 'failed', everConnected: boolean, answered: boolean}
 *   | {type: 'stats', stats: LinkStats}} PeerEvent
 */

/**
 * @typedef {object} LinkStats
 * @property {number} kbps
 * @property {number} lossPermille
 * @property {number} rttMs
 * @property {number} framesDecoded
 * @property {number} frameWidth
 * @property {boolean} receiving
 */

/** No packet for this long after media flowed: the parent is taken for lost. Audio alone
 * sends 50 packets a second, so a live parent is never this quiet. */
export const SILENCE_MS = 1000;

/** How often the parent link is sampled (stats overlay, silence detection). */
export const SAMPLE_MS = 250;

/** How long to wait for ICE gathering before offering to a native parent, which takes no
 * trickled candidates. Host candidates on a LAN take a few milliseconds. */
export const GATHER_TIMEOUT_MS = 2000;

/** No connection to a new parent within this long: it is taken for lost (no answer arrived,
 * or ICE found no path). */
export const CONNECT_TIMEOUT_MS = 8000;

export class Peers {
  /**
   * @param {Session} session
   * @param {(ev: PeerEvent) => void} onEvent
   */
  constructor(session, onEvent) {
    this.session = session;
    this.onEvent = onEvent;
    /** @type {RTCIceServer[]} */
    this.iceServers = [];
    /** @type {string | null} */
    this.parentId = null;
    /** @type {RTCPeerConnection | null} */
    this.up = null;
    /** @type {Map<string, RTCPeerConnection>} */
    this.down = new Map();
    /** @type {MediaStream} */
    this.media = new MediaStream();
    this.everConnected = false;
    /** @type {{at: number, bytes: number, frames: number, packets: number, heardAt: number} | null} */
    this.last = null;
    /** Per-peer chains, so a candidate is never applied before its description. */
    /** @type {Map<string, Promise<void>>} */
    this.chains = new Map();
  }

  /**
   * Signalling from the parent or a child, applied in order per peer.
   * @param {Extract<ServerMessage, {type: 'offer' | 'answer' | 'candidate'}>} msg
   */
  signal(msg) {
    const prev = this.chains.get(msg.from) ?? Promise.resolve();
    const next = prev.then(() => this.apply(msg)).catch(() => {});
    this.chains.set(msg.from, next);
    return next;
  }

  /** @param {IceServer[]} servers */
  setIceServers(servers) {
    this.iceServers = servers.map((s) => ({ urls: s.urls }));
  }

  /**
   * Opens the link to a (new) parent. A native parent takes no trickled candidates: the offer
   * waits for ICE gathering and carries them all, as a WHEP player's does.
   * @param {string} parent
   * @param {'native' | 'browser'} [platform]
   */
  async attach(parent, platform = 'browser') {
    const trickle = platform !== 'native';
    this.closeUp();
    this.parentId = parent;
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.up = pc;
    this.last = null;
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    pc.ontrack = (ev) => {
      if (pc !== this.up) return;
      for (const old of this.media.getTracks().filter((t) => t.kind === ev.track.kind)) {
        this.media.removeTrack(old);
      }
      this.media.addTrack(ev.track);
      this.feedChildren();
      this.onEvent({ type: 'media', stream: this.media });
    };
    pc.onicecandidate = (ev) => {
      if (pc !== this.up || !trickle) return;
      this.session.send({ type: 'candidate', to: parent, candidate: candidateInit(ev.candidate) });
    };
    const fail = () => {
      if (pc !== this.up) return;
      this.onEvent({ type: 'failed', everConnected: this.everConnected, answered: pc.remoteDescription !== null });
      this.lostParent();
    };
    const timer = setTimeout(() => pc.connectionState !== 'connected' && fail(), CONNECT_TIMEOUT_MS);
    pc.onconnectionstatechange = () => {
      if (pc !== this.up) return;
      if (pc.connectionState === 'connected') {
        clearTimeout(timer);
        this.everConnected = true;
        this.onEvent({ type: 'connected' });
      } else if (pc.connectionState === 'failed') {
        clearTimeout(timer);
        fail();
      }
    };
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    if (!trickle) await gathered(pc, GATHER_TIMEOUT_MS);
    if (pc !== this.up) return;
    this.session.send({ type: 'offer', to: parent, sdp: pc.localDescription?.sdp ?? offer.sdp ?? '' });
  }

  /** @param {Extract<ServerMessage, {type: 'offer' | 'answer' | 'candidate'}>} msg */
  async apply(msg) {
    if (msg.from === this.parentId && this.up) {
      if (msg.type === 'answer') {
        await this.up.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
      } else if (msg.type === 'candidate') {
        await addCandidate(this.up, msg.candidate);
      }
      return;
    }
    if (msg.type === 'offer') {
      await this.answerChild(msg.from, msg.sdp);
    } else if (msg.type === 'candidate') {
      const pc = this.down.get(msg.from);
      if (pc) await addCandidate(pc, msg.candidate);
    }
  }

  /** @param {string} child */
  removeChild(child) {
    this.down.get(child)?.close();
    this.down.delete(child);
    this.chains.delete(child);
  }

  /** How many children this browser feeds. */
  children() {
    return this.down.size;
  }

  /** The parent went away (told by the server): close the link, keep the children. */
  parentGone() {
    this.closeUp();
  }

  /** Everything closes (page unload). */
  close() {
    this.closeUp();
    for (const id of [...this.down.keys()]) this.removeChild(id);
  }

  /**
   * Measures the parent link; reports media silence as a lost parent.
   * @param {number} now  ms
   * @returns {Promise<LinkStats | null>}
   */
  async sample(now) {
    const pc = this.up;
    if (!pc) return null;
    const report = await pc.getStats();
    let bytes = 0;
    let lost = 0;
    let received = 0;
    let frames = 0;
    let width = 0;
    let rtt = 0;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp') {
        bytes += s.bytesReceived ?? 0;
        lost += Math.max(0, s.packetsLost ?? 0);
        received += s.packetsReceived ?? 0;
        if (s.kind === 'video') {
          frames = s.framesDecoded ?? 0;
          width = s.frameWidth ?? 0;
        }
      } else if (s.type === 'candidate-pair' && s.nominated && s.currentRoundTripTime !== undefined) {
        rtt = s.currentRoundTripTime * 1000;
      }
    });
    const prev = this.last;
    const kbps = prev && now > prev.at ? ((bytes - prev.bytes) * 8) / (now - prev.at) : 0;
    const heardAt = !prev || received > prev.packets ? now : prev.heardAt;
    this.last = { at: now, bytes, frames, packets: received, heardAt };
    const receiving = now - heardAt < SILENCE_MS && frames > 0;
    /** @type {LinkStats} */
    const stats = {
      kbps: Math.max(0, Math.round(kbps)),
      lossPermille: received + lost > 0 ? Math.round((lost * 1000) / (received + lost)) : 0,
      rttMs: Math.round(rtt),
      framesDecoded: frames,
      frameWidth: width,
      receiving,
    };
    this.onEvent({ type: 'stats', stats });
    // Media flowed and then stopped: the parent (or the path to it) is gone.
    if (received > 0 && now - heardAt >= SILENCE_MS) this.lostParent();
    return stats;
  }

  // ---- internals ----------------------------------------------------------------------------

  lostParent() {
    this.closeUp();
    this.session.parentLost();
  }

  closeUp() {
    this.up?.close();
    this.up = null;
    this.parentId = null;
    this.last = null;
  }

  /**
   * @param {string} child
   * @param {string} sdp
   */
  async answerChild(child, sdp) {
    this.removeChild(child);
    const pc = new RTCPeerConnection({ iceServers: this.iceServers });
    this.down.set(child, pc);
    pc.onicecandidate = (ev) => {
      if (this.down.get(child) !== pc) return;
      this.session.send({ type: 'candidate', to: child, candidate: candidateInit(ev.candidate) });
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed' && this.down.get(child) === pc) {
        this.removeChild(child);
        this.session.send({ type: 'child_lost', child });
      }
    };
    await pc.setRemoteDescription({ type: 'offer', sdp });
    for (const t of pc.getTransceivers()) {
      t.direction = 'sendonly';
    }
    this.feed(pc);
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    this.session.send({ type: 'answer', to: child, sdp: answer.sdp ?? '' });
  }

  feedChildren() {
    for (const pc of this.down.values()) this.feed(pc);
  }

  /** @param {RTCPeerConnection} pc */
  feed(pc) {
    for (const t of pc.getTransceivers()) {
      const kind = t.receiver.track.kind;
      const track = this.media.getTracks().find((x) => x.kind === kind) ?? null;
      if (t.sender.track !== track) t.sender.replaceTrack(track).catch(() => {});
    }
  }
}

/**
 * Resolves when `pc` has gathered its candidates, or after `ms`.
 * @param {RTCPeerConnection} pc
 * @param {number} ms
 * @returns {Promise<void>}
 */
function gathered(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== 'complete') return;
      clearTimeout(t);
      pc.removeEventListener('icegatheringstatechange', done);
      resolve();
    };
    const t = setTimeout(() => {
      pc.removeEventListener('icegatheringstatechange', done);
      resolve();
    }, ms);
    pc.addEventListener('icegatheringstatechange', done);
  });
}

/**
 * @param {RTCIceCandidate | null} c
 * @returns {import('./protocol.js').IceCandidate}
 */
function candidateInit(c) {
  if (!c) return { candidate: '', sdp_mid: null, sdp_m_line_index: null };
  return { candidate: c.candidate, sdp_mid: c.sdpMid, sdp_m_line_index: c.sdpMLineIndex };
}

/**
 * @param {RTCPeerConnection} pc
 * @param {import('./protocol.js').IceCandidate} c
 */
async function addCandidate(pc, c) {
  try {
    if (c.candidate === '') {
      await pc.addIceCandidate({ candidate: '' });
    } else {
      await pc.addIceCandidate({ candidate: c.candidate, sdpMid: c.sdp_mid, sdpMLineIndex: c.sdp_m_line_index });
    }
  } catch {
    // A candidate for a description not set yet, or after close: nothing to do.
  }
}
