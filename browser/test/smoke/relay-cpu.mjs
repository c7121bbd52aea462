// Measures what relaying costs a browser: Chromium instance X holds a fake-camera source and
// viewer A (peer.js); instance Y holds viewer B. CPU of X's whole process tree is sampled
// while A only watches, then while A also relays to B. The difference is the relay's cost
// (A re-encodes for B and sends). Not part of test.sh: a measurement, printed as JSON.
//
//   node test/smoke/relay-cpu.mjs [SECONDS_PER_PHASE=15]
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const bin = process.env.TREECAST_SIGNAL_BIN ?? `${root}target/debug/treecast-signal`;
const secs = Number(process.argv[2] ?? 15);
const args = [
  '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream', '--autoplay-policy=no-user-gesture-required',
];

const server = spawn(bin, ['--http', '127.0.0.1:0', '--ice-server', 'none'], {
  env: { ...process.env, NO_COLOR: '1' },
  stdio: ['ignore', 'pipe', 'inherit'],
});
/** @type {string} */
const addr = await new Promise((resolve) => {
  let out = '';
  server.stdout.on('data', (/** @type {Buffer} */ d) => {
    out += d;
    const m = out.replace(/\x1b\[[0-9;]*m/g, '').match(/listening addr=(\S+)/);
    if (m) resolve(m[1]);
  });
});
const base = `http://${addr}/assets`;

/** CPU seconds (user + system) of `pid` and all its descendants. */
function treeCpu(/** @type {number} */ pid) {
  /** @type {Map<number, {ppid: number, cpu: number}>} */
  const procs = new Map();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      procs.set(Number(d), { ppid: Number(f[1]), cpu: (Number(f[11]) + Number(f[12])) / 100 });
    } catch {
      // gone
    }
  }
  let total = 0;
  const todo = [pid];
  const seen = new Set();
  while (todo.length) {
    const p = /** @type {number} */ (todo.pop());
    if (seen.has(p)) continue;
    seen.add(p);
    total += procs.get(p)?.cpu ?? 0;
    for (const [c, v] of procs) if (v.ppid === p) todo.push(c);
  }
  return total;
}

// X through a browser server, so its process id is known.
const xServer = await chromium.launchServer({ executablePath: '/usr/bin/chromium', headless: true, args });
const xPid = /** @type {number} */ (xServer.process().pid);
const x = await chromium.connect(xServer.wsEndpoint());
const y = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args });
const px = await x.newPage();
const py = await y.newPage();
await px.goto(`http://${addr}/`);
await py.goto(`http://${addr}/`);
// Signalling between the two instances goes through this script.
await px.exposeFunction('toY', (/** @type {any} */ m) => py.evaluate((m) => /** @type {any} */ (window).inbox(m), m));
await py.exposeFunction('toX', (/** @type {any} */ m) => px.evaluate((m) => /** @type {any} */ (window).inbox(m), m));

await px.evaluate(async (base) => {
  const w = /** @type {any} */ (window);
  const { Peers } = await import(`${base}/peer.js`);
  const camera = await navigator.mediaDevices.getUserMedia({ video: { width: 1280, height: 720 }, audio: false });
  /** @type {RTCPeerConnection | null} */
  let src = null;
  const toRoot = async (/** @type {any} */ msg) => {
    if (msg.type === 'offer') {
      src = new RTCPeerConnection();
      await src.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      for (const t of src.getTransceivers()) {
        if (t.receiver.track.kind === 'video') {
          t.direction = 'sendonly';
          await t.sender.replaceTrack(camera.getVideoTracks()[0]);
        }
      }
      const answer = await src.createAnswer();
      await src.setLocalDescription(answer);
      await new Promise((r) => setTimeout(r, 500)); // non-trickle: let candidates gather
      w.a.signal({ type: 'answer', from: 'root', sdp: src.localDescription?.sdp });
    } else if (msg.type === 'candidate' && msg.candidate.candidate) {
      await src?.addIceCandidate({ candidate: msg.candidate.candidate, sdpMid: msg.candidate.sdp_mid, sdpMLineIndex: msg.candidate.sdp_m_line_index }).catch(() => {});
    }
  };
  const session = {
    send(/** @type {any} */ msg) {
      const { to, ...rest } = msg;
      if (to === 'root') setTimeout(() => toRoot({ ...rest, from: 'A' }), 0);
      else w.toY({ ...rest, from: 'A' });
      return true;
    },
    parentLost() {},
  };
  w.a = new Peers(session, () => {});
  w.inbox = (/** @type {any} */ m) => w.a.signal(m);
  await w.a.attach('root');
}, base);

await py.evaluate(async (base) => {
  const w = /** @type {any} */ (window);
  const { Peers } = await import(`${base}/peer.js`);
  const session = {
    send(/** @type {any} */ msg) {
      const { to, ...rest } = msg;
      w.toX({ ...rest, from: 'B' });
      return true;
    },
    parentLost() {},
  };
  w.b = new Peers(session, () => {});
  w.inbox = (/** @type {any} */ m) => w.b.signal(m);
}, base);

/** @param {import('playwright-core').Page} p @param {string} who */
const sample = (p, who) => p.evaluate((who) => /** @type {any} */ (window)[who].sample(performance.now()), who);
const sleep = (/** @type {number} */ ms) => new Promise((r) => setTimeout(r, ms));

/** Samples X's CPU over `secs`, and the viewers' stats at the end. */
async function phase(/** @type {boolean} */ withB) {
  for (let i = 0; i < 4; i++) {
    await sample(px, 'a');
    if (withB) await sample(py, 'b');
    await sleep(500);
  }
  const c0 = treeCpu(xPid);
  const t0 = Date.now();
  let a;
  let b = null;
  while (Date.now() - t0 < secs * 1000) {
    await sleep(1000);
    a = await sample(px, 'a');
    if (withB) b = await sample(py, 'b');
  }
  const cpu = (treeCpu(xPid) - c0) / ((Date.now() - t0) / 1000);
  return { cpuCores: Math.round(cpu * 1000) / 1000, a, b };
}

// Let the source's bandwidth estimate and resolution settle first.
await sleep(12000);
const watching = await phase(false);
await py.evaluate(() => /** @type {any} */ (window).b.attach('A'));
await sleep(3000);
const relaying = await phase(true);
console.log(JSON.stringify({
  seconds: secs,
  source: '1280x720 fake camera, Chromium VP8 defaults',
  watchingOnly: watching,
  relayingToOne: relaying,
  relayCostCores: Math.round((relaying.cpuCores - watching.cpuCores) * 1000) / 1000,
}, null, 1));
await x.close();
await xServer.close();
await y.close();
server.kill('SIGTERM');
