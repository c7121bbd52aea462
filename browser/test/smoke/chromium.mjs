// Smoke test in real headless Chromium against a real treecast-signal (no broadcaster):
// the watch page loads, joins over its WebSocket and says "stream not live"; the tree page
// says the same; the publish page sends the fake camera over WHIP and reports the server's
// answer (501 until the media path lands).
//
// Env: TREECAST_SIGNAL_BIN (default ../target/debug/treecast-signal, built when missing),
//      CHROMIUM (default /usr/bin/chromium).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const bin = process.env.TREECAST_SIGNAL_BIN ?? `${root}target/debug/treecast-signal`;
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const TIMEOUT = 20_000;

function log(/** @type {string} */ msg) {
  console.log(`smoke: ${msg}`);
}

if (!process.env.TREECAST_SIGNAL_BIN) {
  log('cargo build -p treecast-signal');
  const b = spawnSync('cargo', ['build', '-q', '-p', 'treecast-signal'], { cwd: root, stdio: 'inherit' });
  if (b.status !== 0) process.exit(1);
}
if (!existsSync(bin)) throw new Error(`no server binary at ${bin}`);

/**
 * Starts treecast-signal on `listen` and resolves with the process and its address.
 * @param {string} listen
 * @returns {Promise<{proc: import('node:child_process').ChildProcessWithoutNullStreams | any, addr: string}>}
 */
function startServer(listen) {
  const proc = spawn(bin, ['--http', listen, '--ice-server', 'none', '--whip-token', 'smoke-token', '--no-mdns', '--p2p-listen', '/ip4/127.0.0.1/tcp/0'], {
    env: { ...process.env, RUST_LOG: 'info', NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`server did not start: ${out}`)), TIMEOUT);
    proc.stdout.on('data', (/** @type {Buffer} */ d) => {
      out += d;
      // Strip ANSI colours, then find `addr=127.0.0.1:PORT`.
      const m = out.replace(/\x1b\[[0-9;]*m/g, '').match(/treecast-signal listening addr=(\S+)/);
      if (m) {
        clearTimeout(t);
        resolve({ proc, addr: m[1] });
      }
    });
    proc.on('exit', (/** @type {number} */ code) => reject(new Error(`server exited with ${code}: ${out}`)));
  });
}

/** @param {any} proc */
async function stopServer(proc) {
  if (proc.exitCode !== null) return;
  const exited = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGTERM');
  await exited;
}

let { proc: server, addr } = await startServer('127.0.0.1:0');
log(`server at ${addr}`);

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--use-fake-device-for-media-stream',
    '--use-fake-ui-for-media-stream',
    '--autoplay-policy=no-user-gesture-required',
  ],
});
let failed = false;
try {
  const page = await browser.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') log(`page console: ${m.text()}`);
  });
  await page.goto(`http://${addr}/watch/demo`);
  await page.waitForFunction(() => document.body.dataset.state === 'not-live', null, { timeout: TIMEOUT });
  const status = await page.textContent('#status');
  if (!status?.includes('Stream not live')) throw new Error(`status says ${status}`);
  const session = await page.evaluate(() => {
    const s = /** @type {any} */ (window).treecast.session;
    return { state: s.state, nodeId: s.nodeId, live: s.live };
  });
  if (session.state !== 'joined' || !session.nodeId || session.live !== false) {
    throw new Error(`session is ${JSON.stringify(session)}`);
  }
  log(`watch page: "${status.slice(0, 60)}…", session ${JSON.stringify(session)}`);
  const hasVideo = await page.$('video#video');
  if (!hasVideo) throw new Error('no <video> element');

  const streams = await (await fetch(`http://${addr}/api/streams`)).json();
  if (streams[0]?.stream !== 'demo' || streams[0]?.browsers !== 1 || streams[0]?.live !== false) {
    throw new Error(`/api/streams says ${JSON.stringify(streams)}`);
  }
  log(`/api/streams: ${JSON.stringify(streams)}`);

  const tree = await browser.newPage();
  await tree.goto(`http://${addr}/tree/demo`);
  await tree.waitForFunction(() => document.body.dataset.state === 'not-live', null, { timeout: TIMEOUT });
  log(`tree page: "${await tree.textContent('#summary')}"`);

  const publish = await browser.newPage();
  await publish.goto(`http://${addr}/publish/demo`);
  await publish.fill('#token', 'smoke-token');
  await publish.click('#camera');
  await publish.waitForFunction(() => document.body.dataset.state === 'refused', null, { timeout: TIMEOUT });
  const said = (await publish.textContent('#status')) ?? '';
  if (!said.includes('cannot ingest WHIP yet')) throw new Error(`publish page says ${said}`);
  log(`publish page (fake camera, right token): "${said.slice(0, 80)}…"`);
  // peer.js in real WebRTC: a source -> browser A -> browser B relay chain in one page.
  const relay = await browser.newPage();
  await relay.goto(`http://${addr}/`);
  const code = readFileSync(new URL('./relay-page.js', import.meta.url), 'utf8');
  const result = await relay.evaluate(
    async ({ code, base }) => {
      const url = URL.createObjectURL(new Blob([code], { type: 'text/javascript' }));
      const mod = await import(url);
      return mod.relayChain(base);
    },
    { code, base: `http://${addr}/assets` },
  );
  log(`relay chain: ${JSON.stringify(result)}`);
  if (!(result.bFramesAfterReattach > result.bFramesBefore && result.bWidth > 0)) {
    throw new Error('the relayed viewer did not keep decoding');
  }
  // The server goes away: the watch page says so, reconnects by itself when it is back.
  await stopServer(server);
  await page.waitForFunction(() => document.body.dataset.state === 'reconnecting', null, { timeout: TIMEOUT });
  log(`watch page after server loss: "${await page.textContent('#status')}"`);
  ({ proc: server } = await startServer(addr));
  await page.waitForFunction(
    () => document.body.dataset.state === 'not-live' && /** @type {any} */ (window).treecast.session.state === 'joined',
    null,
    { timeout: TIMEOUT },
  );
  log('watch page reconnected to the restarted server and joined again');
  log('passed');
} catch (e) {
  failed = true;
  console.error(`smoke: FAILED: ${e}`);
} finally {
  await browser.close();
  await stopServer(server);
}
process.exit(failed ? 1 : 0);
