// The tree as an SVG picture, from GET /api/streams/{stream}/tree. Pure (no DOM): layout and
// rendering to an SVG string, unit-tested in node; tree.js puts it on the page.

/**
 * @typedef {object} TreeNode
 * @property {string} id
 * @property {string | null} parent
 * @property {string[]} children
 * @property {number | null} depth
 * @property {number} capacity
 * @property {boolean} receiving
 * @property {'broadcaster' | 'relay' | 'viewer'} role
 * @property {'native' | 'browser'} platform
 * @property {string | null} via
 * @property {number} uptime_s
 * @property {{kbps: number, loss_permille: number, rtt_ms: number}} link
 */

/**
 * @typedef {object} TreeSnapshot
 * @property {string} stream
 * @property {boolean} live
 * @property {string | null} root
 * @property {TreeNode[]} nodes
 * @property {TreeNode[]} detached
 */

/**
 * @typedef {{node: TreeNode, x: number, y: number}} Placed
 * @typedef {{layout: Placed[], width: number, height: number}} Layout
 */

export const COL = 90;
export const ROW = 110;
const MARGIN = 50;

/**
 * Leaves side by side in breadth-first order, each parent centred over its children. Loops
 * only, with a depth cap, as everywhere a gossiped graph is walked.
 * @param {TreeSnapshot} tree
 * @returns {Layout}
 */
export function layout(tree) {
  /** @type {Map<string, TreeNode>} */
  const byId = new Map(tree.nodes.map((n) => [n.id, n]));
  if (!tree.root || !byId.has(tree.root)) return { layout: [], width: 2 * MARGIN, height: 2 * MARGIN };
  // Breadth-first order from the root (each node once).
  /** @type {string[]} */
  const order = [tree.root];
  /** @type {Set<string>} */
  const seen = new Set(order);
  for (let i = 0; i < order.length && i < 100_000; i++) {
    for (const c of byId.get(order[i])?.children ?? []) {
      if (byId.has(c) && !seen.has(c)) {
        seen.add(c);
        order.push(c);
      }
    }
  }
  /** @type {Map<string, number>} */
  const depth = new Map([[tree.root, 0]]);
  for (const id of order) {
    for (const c of byId.get(id)?.children ?? []) if (seen.has(c) && !depth.has(c)) depth.set(c, (depth.get(id) ?? 0) + 1);
  }
  // Leaves left to right in a depth-first order, built with an explicit stack.
  /** @type {Map<string, number>} */
  const x = new Map();
  let next = 0;
  /** @type {string[]} */
  const stack = [tree.root];
  /** @type {string[]} */
  const post = [];
  /** @type {Set<string>} */
  const visited = new Set();
  while (stack.length) {
    const id = /** @type {string} */ (stack.pop());
    if (visited.has(id)) continue;
    visited.add(id);
    post.push(id);
    const kids = (byId.get(id)?.children ?? []).filter((c) => seen.has(c) && depth.get(c) === (depth.get(id) ?? 0) + 1);
    if (kids.length === 0) x.set(id, next++);
    for (let i = kids.length - 1; i >= 0; i--) stack.push(kids[i]);
  }
  // Parents over the middle of their children, deepest first.
  for (let i = post.length - 1; i >= 0; i--) {
    const id = post[i];
    if (x.has(id)) continue;
    const xs = (byId.get(id)?.children ?? []).map((c) => x.get(c)).filter((v) => v !== undefined);
    x.set(id, xs.length ? (Math.min(...xs) + Math.max(...xs)) / 2 : next++);
  }
  const maxDepth = Math.max(0, ...depth.values());
  return {
    layout: order.map((id) => ({
      node: /** @type {TreeNode} */ (byId.get(id)),
      x: MARGIN + (x.get(id) ?? 0) * COL,
      y: MARGIN + (depth.get(id) ?? 0) * ROW,
    })),
    width: 2 * MARGIN + Math.max(0, next - 1) * COL,
    height: 2 * MARGIN + maxDepth * ROW,
  };
}

/**
 * The whole picture as SVG text. Every text from the API is escaped.
 * @param {TreeSnapshot} tree
 * @returns {string}
 */
export function renderSvg(tree) {
  const { layout: placed, width, height } = layout(tree);
  /** @type {Map<string, Placed>} */
  const at = new Map(placed.map((p) => [p.node.id, p]));
  const edges = [];
  const nodes = [];
  for (const p of placed) {
    const parent = p.node.parent ? at.get(p.node.parent) : undefined;
    if (parent) {
      const { kbps, loss_permille: loss } = p.node.link;
      const cls = !p.node.receiving ? 'dead' : loss > 50 ? 'lossy' : 'ok';
      const mx = (parent.x + p.x) / 2;
      const my = (parent.y + p.y) / 2;
      edges.push(
        `<g class="link ${cls}" data-child="${esc(p.node.id)}">` +
          `<line x1="${parent.x}" y1="${parent.y}" x2="${p.x}" y2="${p.y}"/>` +
          `<text x="${mx + 4}" y="${my}">${kbps} kb/s</text>` +
          `<text x="${mx + 4}" y="${my + 12}">${(loss / 10).toFixed(1)}% loss</text></g>`,
      );
    }
    const shape =
      p.node.platform === 'native'
        ? `<rect x="${p.x - 14}" y="${p.y - 14}" width="28" height="28" rx="4"/>`
        : `<circle cx="${p.x}" cy="${p.y}" r="14"/>`;
    nodes.push(
      `<g class="node ${esc(p.node.role)} ${esc(p.node.platform)}${p.node.receiving ? '' : ' silent'}" data-id="${esc(p.node.id)}">` +
        `<title>${esc(p.node.id)} · ${esc(p.node.role)} · ${esc(p.node.platform)} · ${p.node.children.length}/${p.node.capacity} children · up ${p.node.uptime_s} s</title>` +
        shape +
        `<text x="${p.x}" y="${p.y + 30}" text-anchor="middle">${esc(p.node.id.slice(-4))}</text></g>`,
    );
  }
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${width} ${height}" width="${width}" height="${height}">` +
    edges.join('') +
    nodes.join('') +
    '</svg>'
  );
}

/** @param {string} s */
export function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
