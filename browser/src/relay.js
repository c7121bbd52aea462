// Whether this browser offers to relay (feed children). A browser re-encodes what it relays
// (about 30% of a laptop core per relay, docs/protocol.md), so it offers only when it can
// afford it. Pure: the page gathers the facts (watch.js), this decides; unit-tested.

/**
 * What the page knows about the machine and the link. `null` means unknown.
 * @typedef {object} RelayFacts
 * @property {boolean} mobile        a phone or tablet (navigator.userAgentData.mobile, UA hints)
 * @property {boolean | null} charging  Battery Status API; null when unavailable (desktops)
 * @property {number | null} batteryLevel  0..1, null when unavailable
 * @property {string | null} connectionType  Network Information API `type` ('cellular', 'wifi', ...)
 * @property {boolean | null} saveData  the user asked to save data
 * @property {number | null} uplinkKbps  measured upload, kbit/s
 * @property {number} streamKbps     the stream's bitrate, kbit/s
 * @property {boolean} optOut        the user switched relaying off
 */

/**
 * @typedef {object} RelayDecision
 * @property {boolean} relay
 * @property {number} children  how many children it can feed (0 when not relaying)
 * @property {string} reason    why, in words for the stats overlay
 */

/** The most children any node feeds. */
export const MAX_CHILDREN = 4;

/**
 * Decides whether to relay and for how many children.
 * @param {RelayFacts} f
 * @returns {RelayDecision}
 */
export function decideRelay(f) {
  const no = (/** @type {string} */ reason) => ({ relay: false, children: 0, reason });
  if (f.optOut) return no('relaying switched off by the user');
  if (f.mobile) return no('mobile device');
  if (f.charging === false) return no('on battery');
  if (f.connectionType === 'cellular') return no('cellular link');
  if (f.saveData) return no('data saver is on');
  if (f.uplinkKbps === null || !(f.uplinkKbps > 0)) return no('upload not measured');
  const children = childrenFor(f.uplinkKbps, f.streamKbps);
  if (children === 0) return no(`upload ${Math.round(f.uplinkKbps)} kbit/s is too little`);
  return { relay: true, children, reason: `can feed ${children}` };
}

/**
 * Child slots an upload carries, keeping a fifth in reserve (as the tree core's capacity_for).
 * @param {number} uplinkKbps
 * @param {number} streamKbps
 */
export function childrenFor(uplinkKbps, streamKbps) {
  if (!(streamKbps > 0)) return MAX_CHILDREN;
  const usable = (uplinkKbps * 4) / 5;
  return Math.max(0, Math.min(MAX_CHILDREN, Math.floor(usable / streamKbps)));
}
