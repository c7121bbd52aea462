// Runs inside a Chromium page (see chromium.mjs): a source peer connection with the fake
// camera stands in for the media a parent sends; browser A attaches to it with peer.js and
// relays to browser B (also peer.js). Signalling is routed in memory, so this exercises
// peer.js's WebRTC paths (offer/answer, trickle, relaying by re-sending tracks, replaceTrack on
// a new parent, getStats) in real Chromium, without a tree or a server session.

/** @param {string} assetBase */
export async function relayChain(assetBase) {
  const { Peers } = await import(`${assetBase}/peer.js`);
  const camera = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  const t0 = performance.now();
  /** @type {Map<string, (msg: any) => void>} */
  const inbox = new Map();
  /** Source side: answers each offer with the camera track. */
  const sources = new Map();
  inbox.set('root', async (msg) => {
    if (msg.type === 'offer') {
      const pc = new RTCPeerConnection();
      sources.set(msg.from, pc);
      pc.onicecandidate = (ev) =>
        deliver(msg.from, {
          type: 'candidate',
          from: 'root',
          candidate: ev.candidate
            ? { candidate: ev.candidate.candidate, sdp_mid: ev.candidate.sdpMid, sdp_m_line_index: ev.candidate.sdpMLineIndex }
            : { candidate: '', sdp_mid: null, sdp_m_line_index: null },
        });
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      for (const t of pc.getTransceivers()) {
        if (t.receiver.track.kind === 'video') {
          t.direction = 'sendonly';
          await t.sender.replaceTrack(camera.getVideoTracks()[0]);
        }
      }
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      deliver(msg.from, { type: 'answer', from: 'root', sdp: answer.sdp });
    } else if (msg.type === 'candidate' && msg.candidate.candidate) {
      await sources.get(msg.from)?.addIceCandidate({ candidate: msg.candidate.candidate, sdpMid: msg.candidate.sdp_mid, sdpMLineIndex: msg.candidate.sdp_m_line_index }).catch(() => {});
    }
  });
  /** @param {string} to @param {any} msg */
  function deliver(to, msg) {
    setTimeout(() => inbox.get(to)?.(msg), 0);
  }
  /** A fake Session for peer.js: `send` routes by `to`, rewriting it to `from`. */
  function session(/** @type {string} */ me) {
    return {
      lost: 0,
      send(/** @type {any} */ msg) {
        const { to, ...rest } = msg;
        if (to) deliver(to, { ...rest, from: me });
        return true;
      },
      parentLost() {
        this.lost++;
      },
    };
  }
  const sa = session('A');
  const sb = session('B');
  const events = { A: 0, B: 0 };
  const a = new Peers(sa, (/** @type {any} */ ev) => ev.type === 'media' && events.A++);
  const b = new Peers(sb, (/** @type {any} */ ev) => ev.type === 'media' && events.B++);
  inbox.set('A', (msg) => a.signal(msg));
  inbox.set('B', (msg) => b.signal(msg));
  await a.attach('root');
  /** Samples both every 250 ms until `until` holds or `ms` pass. */
  async function wait(/** @type {(sa: any, sb: any) => boolean} */ until, /** @type {number} */ ms) {
    const end = performance.now() + ms;
    for (;;) {
      const [x, y] = [await a.sample(performance.now()), await b.sample(performance.now())];
      if (until(x, y)) return [x, y];
      if (performance.now() > end) throw new Error(`timeout: A ${JSON.stringify(x)} B ${JSON.stringify(y)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  await wait((x) => x && x.framesDecoded > 0, 10000);
  const aFirstFrameMs = Math.round(performance.now() - t0);
  await b.attach('A');
  const tb = performance.now();
  const [, b1] = await wait((_x, y) => y && y.framesDecoded > 0 && y.frameWidth > 0, 10000);
  const bFirstFrameMs = Math.round(performance.now() - tb);
  // A gets a new parent link (as after a repair): B keeps its connection and keeps decoding.
  await a.attach('root');
  const [, b2] = await wait((_x, y) => y && y.framesDecoded > b1.framesDecoded + 30, 10000);
  return {
    aFirstFrameMs,
    bFirstFrameMs,
    bFramesBefore: b1.framesDecoded,
    bFramesAfterReattach: b2.framesDecoded,
    bWidth: b2.frameWidth,
    lost: { A: sa.lost, B: sb.lost },
    mediaEvents: events,
  };
}
