// The publish page: sends the camera or the screen over WHIP (RFC 9725): one POST of an SDP
// offer with a Bearer token, the answer in the response, DELETE on the Location to stop.
// Non-trickle: the offer waits (at most 2 s) for ICE gathering, so no PATCH is needed.
//
// The server side of WHIP comes with the native media path; until then the server checks the
// token and answers 501, and this page says so.

const stream = decodeURIComponent(location.pathname.split('/').filter(Boolean).at(-1) ?? '');
const preview = /** @type {HTMLVideoElement} */ (document.getElementById('preview'));
const statusEl = /** @type {HTMLElement} */ (document.getElementById('status'));
const tokenEl = /** @type {HTMLInputElement} */ (document.getElementById('token'));
const cameraBtn = /** @type {HTMLButtonElement} */ (document.getElementById('camera'));
const screenBtn = /** @type {HTMLButtonElement} */ (document.getElementById('screen'));
const stopBtn = /** @type {HTMLButtonElement} */ (document.getElementById('stop'));
document.title = `publish ${stream} · treecast`;
/** @type {HTMLElement} */ (document.getElementById('stream-name')).textContent = stream;
/** @type {HTMLAnchorElement} */ (document.getElementById('tree-link')).href = `/tree/${encodeURIComponent(stream)}`;

/** @type {RTCPeerConnection | null} */
let pc = null;
/** @type {string | null} */
let resource = null;
/** @type {MediaStream | null} */
let media = null;

/** @param {string} state @param {string} text */
function show(state, text) {
  document.body.dataset.state = state;
  statusEl.textContent = text;
}

/** @param {'camera' | 'screen'} source */
async function start(source) {
  await stop();
  if (typeof RTCPeerConnection === 'undefined') {
    show('no-webrtc', 'This browser has no WebRTC.');
    return;
  }
  try {
    media =
      source === 'camera'
        ? await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: true })
        : await navigator.mediaDevices.getDisplayMedia({ video: true, audio: true });
  } catch (e) {
    show('no-media', `No ${source}: ${e}. Pages that capture need https or localhost.`);
    return;
  }
  preview.srcObject = media;
  pc = new RTCPeerConnection();
  for (const track of media.getTracks()) pc.addTransceiver(track, { direction: 'sendonly' });
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  await gathered(pc, 2000);
  show('sending', 'Offering to the server…');
  const r = await fetch(`/whip/${encodeURIComponent(stream)}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${tokenEl.value}` },
    body: pc.localDescription?.sdp ?? '',
  });
  if (r.status === 201) {
    resource = r.headers.get('Location');
    await pc.setRemoteDescription({ type: 'answer', sdp: await r.text() });
    show('live', `Publishing “${stream}”. Watch at /watch/${stream}.`);
    return;
  }
  const detail = (await r.text()).slice(0, 300);
  const why = {
    401: 'Wrong or missing token.',
    403: 'This server does not accept WHIP (it was started without --origin, the broadcaster to hand it to).',
    415: 'The server did not accept the offer format.',
    501: 'This server cannot ingest WHIP yet: the media path that receives it is not part of this build.',
  }[r.status];
  show('refused', `${why ?? `The server said ${r.status}.`} ${detail}`);
  await stop(false);
}

/** @param {boolean} [clearStatus] */
async function stop(clearStatus = true) {
  if (resource) {
    fetch(new URL(resource, location.href), {
      method: 'DELETE',
      headers: { Authorization: `Bearer ${tokenEl.value}` },
    }).catch(() => {});
  }
  resource = null;
  pc?.close();
  pc = null;
  for (const t of media?.getTracks() ?? []) t.stop();
  media = null;
  preview.srcObject = null;
  if (clearStatus) show('idle', 'Not publishing.');
}

/**
 * @param {RTCPeerConnection} pc
 * @param {number} ms
 */
function gathered(pc, ms) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve(undefined);
    const t = setTimeout(resolve, ms);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') {
        clearTimeout(t);
        resolve(undefined);
      }
    });
  });
}

tokenEl.value = sessionStorage.getItem('treecast.whip.token') ?? '';
tokenEl.onchange = () => sessionStorage.setItem('treecast.whip.token', tokenEl.value);
cameraBtn.onclick = () => start('camera').catch((e) => show('error', String(e)));
screenBtn.onclick = () => start('screen').catch((e) => show('error', String(e)));
stopBtn.onclick = () => stop();
show('idle', 'Not publishing. The server side of WHIP arrives with the native media path.');
