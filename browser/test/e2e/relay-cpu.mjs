// Measures what relaying costs a browser, on the real stack: a native broadcaster with one
// slot (the bundled 640x480 VP8 clip), a signal server, Chromium instance X with viewer A (the
// broadcaster's only child), then Chromium instance Y with viewer B, which can only be placed
// under A. The CPU of X's whole process tree is sampled while A only watches, then while A
// also relays to B (decode, re-encode, send). Not part of test.sh: a measurement, printed as
// JSON.
//
//   node test/e2e/relay-cpu.mjs [SECONDS_PER_PHASE=15]
import { readdirSync, readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';
import {
  cleanup, frames, log, nodeBin, overlay, prerequisites, signalBin, sleep, start, until,
} from './lib.mjs';

const secs = Number(process.argv[2] ?? 15);
const STREAM = 'cpu';
const args = [
  '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
];

prerequisites();

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

/** Cores X used over `s` seconds. */
async function cores(/** @type {number} */ pid, /** @type {number} */ s) {
  const c0 = treeCpu(pid);
  const t0 = Date.now();
  await sleep(s * 1000);
  return (treeCpu(pid) - c0) / ((Date.now() - t0) / 1000);
}

/** @type {import('playwright-core').BrowserServer | null} */
let server = null;
try {
  const caster = await start('broadcaster', nodeBin,
    ['broadcast', '--stream', STREAM, '--video', 'examples/media/test.ivf', '--audio', 'examples/media/test.ogg',
      '--http', '127.0.0.1:0', '--max-children', '1', ...overlay],
    [/p2p listening on (\S+)/]);
  const signal = await start('signal', signalBin,
    ['--http', '127.0.0.1:0', '--bootstrap', caster.found[0], '--ice-server', 'none', '--stream', STREAM, ...overlay],
    [/treecast-signal listening addr=(\S+)/]);
  const watch = `http://${signal.found[0]}/watch/${STREAM}`;

  server = await chromium.launchServer({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args });
  const xPid = /** @type {number} */ (server.process().pid);
  const x = await chromium.connect(server.wsEndpoint());
  const a = await x.newPage();
  await a.goto(watch);
  await until('A plays', async () => (await frames(a)) > 0);
  await sleep(3000);
  const watching = await cores(xPid, secs);
  log(`A watching: ${watching.toFixed(2)} cores`);

  const y = await chromium.launch({ executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium', headless: true, args });
  const b = await y.newPage();
  await b.goto(watch);
  await until('B plays (through A)', async () => (await frames(b)) > 0);
  const bInfo = await b.evaluate(() => {
    const v = document.querySelector('video');
    return { width: v?.videoWidth ?? 0, height: v?.videoHeight ?? 0 };
  });
  await sleep(3000);
  const relaying = await cores(xPid, secs);
  log(`A watching and relaying to B: ${relaying.toFixed(2)} cores`);
  const bKbps = await b.evaluate(() => /** @type {any} */ (window).treecast?.view?.kbps ?? null);
  console.log(JSON.stringify({
    seconds_per_phase: secs,
    watching_cores: Number(watching.toFixed(3)),
    watching_and_relaying_cores: Number(relaying.toFixed(3)),
    relay_cost_cores: Number((relaying - watching).toFixed(3)),
    child_resolution: `${bInfo.width}x${bInfo.height}`,
    child_kbps: bKbps,
  }));
  await y.close();
  await x.close();
} catch (e) {
  console.error(e);
  await server?.close().catch(() => {});
  await cleanup();
  process.exit(1);
}
await server?.close().catch(() => {});
await cleanup();
