// End to end, publishing: a Chromium tab publishes its fake camera over WHIP through a real
// treecast-signal (handed to the native broadcaster with --origin); two Chromium viewers and a
// native `treecast view --record` receive it. A wrong token is refused, and a flood of bogus
// WebSocket messages leaves the viewers playing. After the tab stops, aiortc publishes over WHIP
// through the signal server to the same stream: the viewers, still attached, play it, and so
// does a standard WHEP player (aiortc) at the signal server.
//
//   node test/e2e/whip.mjs            (from browser/; builds the binaries when missing)
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import {
  cleanup, frames, launchChromium, log, nodeBin, overlay, prerequisites, root, signalBin, sleep,
  start, tempDir, until,
} from './lib.mjs';

const STREAM = 'pub';
const TOKEN = 'e2e-secret';
const VIEWERS = 2;

prerequisites();

try {
  const caster = await start('broadcaster', nodeBin,
    ['broadcast', '--stream', STREAM, '--whip-token', TOKEN, '--http', '127.0.0.1:0', ...overlay],
    [/p2p listening on (\S+)/, /http listening on (\S+)/]);
  const [boot, casterHttp] = caster.found;
  const signal = await start('signal', signalBin,
    ['--http', '127.0.0.1:0', '--bootstrap', boot, '--origin', `http://${casterHttp}`,
      '--ice-server', 'none', '--stream', STREAM, ...overlay],
    [/treecast-signal listening addr=(\S+)/]);
  const base = `http://${signal.found[0]}`;
  log(`broadcaster http ${casterHttp}, signal ${base}`);

  // A wrong or missing token is refused (by the broadcaster, through the signal server), and
  // changes nothing.
  for (const auth of ['Bearer wrong', '']) {
    const r = await fetch(`${base}/whip/${STREAM}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', ...(auth ? { Authorization: auth } : {}) },
      body: 'v=0\r\n',
    });
    if (r.status !== 401) throw new Error(`token ${JSON.stringify(auth)}: ${r.status} ${await r.text()}`);
  }
  log('wrong and missing tokens: 401');

  // The publisher: the /publish page with the fake camera.
  const camera = await launchChromium({ camera: true });
  const pub = await (await camera.newContext()).newPage();
  await pub.goto(`${base}/publish/${STREAM}`);
  await pub.fill('#token', TOKEN);
  await pub.click('#camera');
  await until('the broadcaster receives the tab', async () => {
    const s = await (await fetch(`http://${casterHttp}/api/status`)).json();
    return s.receiving === true;
  });
  log(`publishing: ${await pub.textContent('#status')}`);

  // Chromium viewers through the tree, and a native viewer that records.
  const viewer = await launchChromium();
  const ctx = await viewer.newContext();
  /** @type {import('playwright-core').Page[]} */
  const pages = [];
  for (let i = 0; i < VIEWERS; i++) {
    const page = await ctx.newPage();
    await page.goto(`${base}/watch/${STREAM}`);
    pages.push(page);
  }
  for (const [i, page] of pages.entries()) {
    await until(`viewer ${i} plays`, async () => (await frames(page)) > 0);
  }
  log('Chromium viewers play the tab');
  const dir = tempDir();
  const file = join(dir, 'tab.ivf');
  const rec = spawnSync(nodeBin,
    ['view', '--stream', STREAM, '--bootstrap', boot, '--record', file, '--frames', '60', ...overlay],
    { cwd: root, timeout: 60_000, encoding: 'utf8' });
  if (rec.status !== 0 || !existsSync(file)) {
    throw new Error(`treecast view --record failed (${rec.status}):\n${rec.stdout}\n${rec.stderr}`);
  }
  if (!/recorded 60 video frames/.test(rec.stdout)) throw new Error(`view said: ${rec.stdout}`);
  log(`native viewer recorded 60 frames (${statSync(file).size} bytes)`);

  // A flood of bogus WebSocket messages from another tab leaves the viewers playing.
  const flooder = await ctx.newPage();
  await flooder.goto(`${base}/`);
  const before = await Promise.all(pages.map(frames));
  const flood = await flooder.evaluate(async ({ url }) => {
    const ws = new WebSocket(url);
    let errors = 0;
    ws.onmessage = (m) => {
      if (String(m.data).includes('"error"')) errors++;
    };
    await new Promise((r) => { ws.onopen = r; });
    const junk = ['{', 'null', '{"type":"nope"}', '{"type":"offer","to":"zz","sdp":5}', 'x'.repeat(70000), '[]'];
    for (let i = 0; i < 3000; i++) ws.send(junk[i % junk.length]);
    ws.send(new Uint8Array([1, 2, 3]));
    await new Promise((r) => setTimeout(r, 1500));
    const open = ws.readyState === WebSocket.OPEN;
    ws.close();
    return { errors, open };
  }, { url: `${base.replace('http', 'ws')}/ws/${STREAM}` });
  if (flood.errors === 0) throw new Error('the flood got no error replies');
  await sleep(1000);
  const after = await Promise.all(pages.map(frames));
  pages.forEach((_, i) => {
    if (!(after[i] > before[i] + 20)) throw new Error(`viewer ${i} stalled during the flood: ${before[i]} -> ${after[i]}`);
  });
  log(`flood of 3001 bogus messages: ${flood.errors} error replies, viewers kept playing`);

  // aiortc publishes over WHIP through the signal server too (after the tab stops).
  await pub.click('#stop');
  // The tab's DELETE (through the signal server) ends its session at the broadcaster.
  await until('the broadcaster drops the tab', async () => {
    const s = await (await fetch(`http://${casterHttp}/api/status`)).json();
    return s.receiving === false;
  });
  log('the tab stopped (DELETE through the signal server)');
  const python = join(root, '.venv/bin/python');
  if (!existsSync(python)) throw new Error('no .venv with aiortc (scripts/install-test-deps makes it)');
  const ai = await start('aiortc', python,
    [join(root, 'node/tests/assets/aiortc_whip.py'), `${base}/whip/${STREAM}`, TOKEN,
      join(root, 'examples/media/test.ivf'), '15'],
    [/(created 201)/, /publishing (\S+)/]);
  // The viewers stay attached: the new publisher continues the same feeds.
  await until('viewers play aiortc', async () => {
    const a = await Promise.all(pages.map(frames));
    await sleep(1000);
    const b = await Promise.all(pages.map(frames));
    return a.every((f, i) => b[i] > f + 10);
  });
  // A standard WHEP player at the signal server (handed to the broadcaster) plays it too.
  const whep = spawnSync(python,
    [join(root, 'node/tests/assets/aiortc_whep.py'), `${base}/whep/${STREAM}`, '30', '20'],
    { cwd: root, timeout: 40_000, encoding: 'utf8' });
  if (whep.status !== 0 || !/decoded 30 frames/.test(whep.stdout)) {
    throw new Error(`aiortc over WHEP at the signal server failed (${whep.status}):\n${whep.stdout}\n${whep.stderr}`);
  }
  log(`a WHEP player at the signal server: ${whep.stdout.trim()}`);
  await new Promise((resolve) => ai.proc.once('exit', resolve));
  if (ai.proc.exitCode !== 0) throw new Error(`aiortc over WHIP failed (${ai.proc.exitCode}):\n${ai.out()}`);
  log('aiortc published over WHIP through the signal server; the same viewers played it');
  log('passed');
} catch (e) {
  console.error(e);
  await cleanup();
  process.exit(1);
}
await cleanup();
