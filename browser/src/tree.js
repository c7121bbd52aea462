// The tree page: polls /api/streams/{stream}/tree every second and redraws the SVG.

import { renderSvg } from './treeview.js';

const stream = decodeURIComponent(location.pathname.split('/').filter(Boolean).at(-1) ?? '');
const picture = /** @type {HTMLElement} */ (document.getElementById('picture'));
const summary = /** @type {HTMLElement} */ (document.getElementById('summary'));
document.title = `tree of ${stream} · treecast`;
/** @type {HTMLElement} */ (document.getElementById('stream-name')).textContent = stream;

let lastText = '';

async function poll() {
  try {
    const r = await fetch(`/api/streams/${encodeURIComponent(stream)}/tree`, { cache: 'no-store' });
    if (r.status === 404) {
      summary.textContent = 'Nobody has joined this stream yet, and no broadcaster is known.';
      picture.replaceChildren();
      document.body.dataset.state = 'unknown';
      return;
    }
    const text = await r.text();
    if (text === lastText) return;
    lastText = text;
    /** @type {import('./treeview.js').TreeSnapshot} */
    const tree = JSON.parse(text);
    const browsers = tree.nodes.filter((n) => n.platform === 'browser').length;
    const depth = Math.max(0, ...tree.nodes.map((n) => n.depth ?? 0));
    summary.textContent = tree.live
      ? `${tree.nodes.length} nodes in the tree (${browsers} browsers), depth ${depth}; ${tree.detached.length} joining or repairing.`
      : `Stream not live: no broadcaster is known. ${tree.detached.length} viewers waiting.`;
    // renderSvg escapes every string from the API.
    picture.innerHTML = renderSvg(tree);
    document.body.dataset.state = tree.live ? 'live' : 'not-live';
  } catch (e) {
    summary.textContent = `Cannot reach the server (${e}); retrying…`;
  }
}

poll();
setInterval(poll, 1000);
