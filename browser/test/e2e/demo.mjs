// The README's demo, as a new user runs it: `treecast demo --viewers 20` prints the watch URL
// on a line of its own; a Chromium tab opened there plays; the tree page draws every node (the
// broadcaster, the relays, the 20 headless viewers and the tab) and grows as they join;
// Ctrl-C (SIGINT) stops everything, the signal server included.
//
//   node test/e2e/demo.mjs            (from browser/; builds the binaries when missing)
import { createServer } from 'node:net';
import {
  cleanup, frames, launchChromium, log, nodeBin, prerequisites, sleep, start, until,
} from './lib.mjs';

const VIEWERS = 20;
// Raised by the demo to carry the viewers: max(4, ceil((viewers + 4) / 3)).
const RELAYS = Math.max(4, Math.ceil((VIEWERS + 4) / 3));

prerequisites();

/** A free TCP port on loopback. @returns {Promise<number>} */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

try {
  const port = await freePort();
  const demo = await start('demo', nodeBin,
    ['demo', '--viewers', String(VIEWERS), '--port', String(port)],
    [/^(http:\/\/\S+\/watch\/demo)$/m, /the live tree: (\S+)/]);
  const [watch, treePage] = demo.found;
  log(`demo prints ${watch} and ${treePage}`);
  const base = watch.replace(/\/watch\/demo$/, '');

  const browser = await launchChromium();
  const ctx = await browser.newContext();
  const tab = await ctx.newPage();
  await tab.goto(watch);
  await until('the tab plays', async () => (await frames(tab)) > 0);
  log('the watch page plays');

  // The tree page grows to every node as the viewers join.
  const treeTab = await ctx.newPage();
  await treeTab.goto(treePage);
  const seen = new Set();
  const expected = 1 + RELAYS + VIEWERS + 1;
  await until(`the tree page shows ${expected} nodes`, async () => {
    const n = await treeTab.locator('g.node').count();
    seen.add(n);
    return n >= expected;
  });
  log(`tree page node counts seen while joining: ${[...seen].sort((a, b) => a - b).join(', ')}`);
  if (seen.size < 2) throw new Error('the tree page never showed the tree growing');
  // And every node receives (the last viewers may still be connecting their media).
  await until('every node receives', async () => {
    const tree = await (await fetch(`${base}/api/streams/demo/tree`)).json();
    return tree.nodes.length >= expected && tree.nodes.every((/** @type {any} */ n) => n.receiving);
  });
  log('every node of the tree receives');
  const before = await frames(tab);
  await sleep(1000);
  if (!((await frames(tab)) > before + 10)) throw new Error('the tab stopped playing');

  // Ctrl-C stops everything.
  const exited = new Promise((resolve) => demo.proc.once('exit', (code, signal) => resolve({ code, signal })));
  demo.proc.kill('SIGINT');
  const how = await Promise.race([exited, sleep(10_000).then(() => null)]);
  if (!how) throw new Error('the demo did not stop within 10 s of Ctrl-C');
  log(`demo exited: ${JSON.stringify(how)}`);
  const gone = await fetch(`${base}/`).then(() => false, () => true);
  if (!gone) throw new Error('the signal server still serves after Ctrl-C');
  log('passed');
} catch (e) {
  console.error(e);
  await cleanup();
  process.exit(1);
}
await cleanup();
