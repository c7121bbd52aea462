import { test } from 'node:test';
import assert from 'node:assert/strict';

import { COL, layout, renderSvg } from '../src/treeview.js';

/**
 * @param {string} id
 * @param {string | null} parent
 * @param {string[]} children
 * @param {number} depth
 * @returns {import('../src/treeview.js').TreeNode}
 */
function node(id, parent, children, depth) {
  return {
    id,
    parent,
    children,
    depth,
    capacity: 4,
    receiving: true,
    role: parent ? 'viewer' : 'broadcaster',
    platform: parent ? 'browser' : 'native',
    via: null,
    uptime_s: 1,
    link: { kbps: 2400, loss_permille: parent === 'b' ? 80 : 0, rtt_ms: 20 },
  };
}

/** @type {import('../src/treeview.js').TreeSnapshot} */
const tree = {
  stream: 'demo',
  live: true,
  root: 'r',
  nodes: [node('r', null, ['a', 'b'], 0), node('a', 'r', [], 1), node('b', 'r', ['c', 'd'], 1), node('c', 'b', [], 2), node('d', 'b', [], 2)],
  detached: [],
};

test('leaves side by side, parents centred over their children', () => {
  const { layout: l } = layout(tree);
  const x = Object.fromEntries(l.map((p) => [p.node.id, p.x]));
  const y = Object.fromEntries(l.map((p) => [p.node.id, p.y]));
  assert.equal(x.c - x.a, COL);
  assert.equal(x.d - x.c, COL);
  assert.equal(x.b, (x.c + x.d) / 2);
  assert.equal(x.r, (x.a + x.b) / 2);
  assert.ok(y.r < y.a && y.a === y.b && y.b < y.c);
});

test('the svg draws every node and link with bitrate and loss, escaped', () => {
  const evil = structuredClone(tree);
  evil.nodes[1].id = '<script>';
  evil.nodes[0].children = ['<script>', 'b'];
  evil.nodes[1].parent = 'r';
  const svg = renderSvg(evil);
  assert.ok(!svg.includes('<script>'));
  assert.equal((svg.match(/class="node /g) ?? []).length, 5);
  assert.equal((svg.match(/class="link /g) ?? []).length, 4);
  assert.ok(svg.includes('2400 kb/s'));
  assert.ok(svg.includes('class="link lossy"'), 'loss above 5% is marked');
});

test('a cyclic or rootless answer does not hang', () => {
  const cyclic = structuredClone(tree);
  cyclic.nodes[3].children = ['b'];
  assert.equal(layout(cyclic).layout.length, 5);
  assert.deepEqual(layout({ ...tree, root: null }).layout, []);
});
