// End to end in real headless Chromium: a native broadcaster (looped clip) -> a native relay
// -> five Chromium viewers placed by a real treecast-signal that is a gossip peer of the
// native nodes; at least one viewer relays to another. A second signal server's viewer joins
// the same tree. Then the native relay is SIGKILLed and every viewer must play again. Prints
// the measured times as JSON.
//
//   node test/e2e/tree.mjs            (from browser/; builds the binaries when missing)
//
// Env: TREECAST_BIN, TREECAST_SIGNAL_BIN (default ../target/debug/...), CHROMIUM
//      (default /usr/bin/chromium), E2E_VIEWERS (default 5), E2E_RECOVERY_MS (default 3000).
import {
  cleanup, frames, launchChromium, log, nodeBin, overlay, prerequisites, signalBin, sleep, start,
  until, WAIT_MS,
} from './lib.mjs';

const VIEWERS = Number(process.env.E2E_VIEWERS ?? 5);
const RECOVERY_MS = Number(process.env.E2E_RECOVERY_MS ?? 3000);
/** No new video frame for this long (at 30 fps) is an interruption. */
const STALL_MS = 250;
const STREAM = 'e2e';

prerequisites();

try {
  const clip = ['--video', 'examples/media/test.ivf', '--audio', 'examples/media/test.ogg'];
  // The broadcaster feeds one child (the native relay); the relay feeds four; the fifth
  // viewer must then be fed by a browser.
  const caster = await start('broadcaster', nodeBin,
    ['broadcast', '--stream', STREAM, ...clip, '--http', '127.0.0.1:0', '--max-children', '1', ...overlay],
    [/p2p listening on (\S+)/]);
  const boot = caster.found[0];
  log(`broadcaster at ${boot}`);
  const relay = await start('relay', nodeBin,
    ['relay', '--stream', STREAM, '--bootstrap', boot, '--http', '127.0.0.1:0', ...overlay],
    [/http listening on (\S+)/]);
  const signal = await start('signal', signalBin,
    ['--http', '127.0.0.1:0', '--bootstrap', boot, '--ice-server', 'none', '--stream', STREAM, ...overlay],
    [/treecast-signal listening addr=(\S+)/]);
  const base = `http://${signal.found[0]}`;
  log(`signal at ${base}, relay http ${relay.found[0]}`);

  // The relay is in the tree and receiving before the browsers come.
  await until('the relay receives', async () => {
    const s = await (await fetch(`http://${relay.found[0]}/api/status`)).json();
    return s.receiving === true;
  });

  const browser = await launchChromium();
  const ctx = await browser.newContext();
  /** @type {{page: import('playwright-core').Page, joinedAt: number, firstFrameMs: number | null}[]} */
  const viewers = [];
  for (let i = 0; i < VIEWERS; i++) {
    const page = await ctx.newPage();
    page.on('console', (m) => m.type() === 'error' && log(`viewer ${i} console: ${m.text()}`));
    const joinedAt = Date.now();
    await page.goto(`${base}/watch/${STREAM}`);
    viewers.push({ page, joinedAt, firstFrameMs: null });
    // One at a time, so the tree is filled in order (relay first, then a browser).
    await until(`viewer ${i} plays`, async () => (await frames(page)) > 0);
    viewers[i].firstFrameMs = Date.now() - joinedAt;
    log(`viewer ${i} plays after ${viewers[i].firstFrameMs} ms`);
  }

  // Every viewer's decoded frame count keeps rising.
  const before = await Promise.all(viewers.map((v) => frames(v.page)));
  await sleep(2000);
  const after = await Promise.all(viewers.map((v) => frames(v.page)));
  viewers.forEach((_, i) => {
    if (!(after[i] > before[i] + 10)) throw new Error(`viewer ${i} stalled: ${before[i]} -> ${after[i]} frames`);
  });

  // The tree as the signal server sees it: browsers included, one fed by a browser.
  const tree = await (await fetch(`${base}/api/streams/${STREAM}/tree`)).json();
  /** @type {Map<string, any>} */
  const byId = new Map(tree.nodes.map((/** @type {any} */ n) => [n.id, n]));
  const browsers = tree.nodes.filter((/** @type {any} */ n) => n.platform === 'browser');
  if (browsers.length !== VIEWERS) throw new Error(`tree lists ${browsers.length} browsers: ${JSON.stringify(tree)}`);
  const fedByBrowser = browsers.filter((/** @type {any} */ n) => byId.get(n.parent)?.platform === 'browser');
  if (fedByBrowser.length === 0) throw new Error(`no browser relays to another: ${JSON.stringify(tree)}`);
  for (const n of tree.nodes) {
    if ((n.children?.length ?? 0) > 4) throw new Error(`more than four children: ${JSON.stringify(n)}`);
  }
  log(`tree: ${browsers.length} browsers, ${fedByBrowser.length} fed by a browser`);

  // A second signal server serves the same stream: its viewer joins the same tree, and both
  // servers list every browser.
  const signal2 = await start('signal 2', signalBin,
    ['--http', '127.0.0.1:0', '--bootstrap', boot, '--ice-server', 'none', '--stream', STREAM, ...overlay],
    [/treecast-signal listening addr=(\S+)/]);
  const base2 = `http://${signal2.found[0]}`;
  const extra = await ctx.newPage();
  const extraAt = Date.now();
  await extra.goto(`${base2}/watch/${STREAM}`);
  await until('the second server\'s viewer plays', async () => (await frames(extra)) > 0);
  viewers.push({ page: extra, joinedAt: extraAt, firstFrameMs: Date.now() - extraAt });
  for (const b of [base, base2]) {
    await until(`${b} lists ${VIEWERS + 1} browsers`, async () => {
      const t = await (await fetch(`${b}/api/streams/${STREAM}/tree`)).json();
      return t.nodes.filter((/** @type {any} */ n) => n.platform === 'browser').length === VIEWERS + 1;
    });
  }
  log('a second signal server placed its viewer in the same tree; both list every browser');

  // Kill the native relay: every viewer plays again.
  const counts = await Promise.all(viewers.map((v) => frames(v.page)));
  const killedAt = Date.now();
  relay.proc.kill('SIGKILL');
  log('relay killed');
  const recovery = await Promise.all(viewers.map(async (v, i) => {
    // Stalled: no new frame for STALL_MS after the kill. Playing again: a new frame after that.
    let last = counts[i];
    let changedAt = killedAt;
    let stalled = false;
    const deadline = killedAt + WAIT_MS;
    while (Date.now() < deadline) {
      const f = await frames(v.page);
      const now = Date.now();
      if (f > last) {
        if (stalled) return { viewer: i, ms: now - killedAt, stalled };
        changedAt = now;
        last = f;
      } else if (now - changedAt >= STALL_MS) {
        stalled = true;
      }
      // A viewer not fed through the relay may never stall: it counts as not interrupted.
      if (!stalled && now - killedAt > 5000) return { viewer: i, ms: 0, stalled: false };
      await sleep(20);
    }
    throw new Error(`viewer ${i} did not play again within ${WAIT_MS} ms`);
  }));
  for (const r of recovery) log(`viewer ${r.viewer}: ${r.stalled ? `plays again after ${r.ms} ms` : 'never interrupted'}`);
  const interrupted = recovery.filter((r) => r.stalled);
  if (interrupted.length === 0) throw new Error('no viewer was interrupted: the relay fed nobody?');
  // And keeps playing.
  const c1 = await Promise.all(viewers.map((v) => frames(v.page)));
  await sleep(2000);
  const c2 = await Promise.all(viewers.map((v) => frames(v.page)));
  viewers.forEach((_, i) => {
    if (!(c2[i] > c1[i] + 10)) throw new Error(`viewer ${i} stalled after the repair: ${c1[i]} -> ${c2[i]}`);
  });
  const slow = interrupted.filter((r) => r.ms > RECOVERY_MS);
  const report = {
    viewers: viewers.length,
    first_frame_ms: viewers.map((v) => v.firstFrameMs),
    recovery_ms: interrupted.map((r) => r.ms),
    fed_by_browser: fedByBrowser.length,
  };
  console.log(JSON.stringify(report));
  if (slow.length > 0) throw new Error(`viewers played again only after ${slow.map((r) => r.ms).join(', ')} ms (limit ${RECOVERY_MS})`);
  log('passed');
} catch (e) {
  console.error(e);
  await cleanup();
  process.exit(1);
}
await cleanup();
