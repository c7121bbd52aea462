#!/usr/bin/env bash
# The browser client's checks: type-check, unit tests, and a smoke test in real headless
# Chromium against a real treecast-signal.
#
# Usage: browser/test.sh            everything
#        browser/test.sh --quick    skip the Chromium smoke test
# Environment: TREECAST_SIGNAL_BIN  the server binary (default: target/debug/treecast-signal,
#                                   built with cargo when missing)
#              CHROMIUM             the browser (default: /usr/bin/chromium)
set -euo pipefail
cd "$(dirname "$0")"
quick=0
[ "${1:-}" = "--quick" ] && quick=1

step() { printf '\n==> browser: %s\n' "$*"; }

if [ ! -d node_modules ]; then
  step "npm ci"
  npm ci --no-audit --no-fund
fi

step "tsc --noEmit"
npx --no-install tsc --noEmit -p .

step "node --test"
node --test test/*.test.js

if [ "$quick" = 0 ]; then
  step "Chromium smoke test"
  node test/smoke/chromium.mjs
  step "end to end: native broadcaster -> native relay -> Chromium viewers, relay killed"
  node test/e2e/tree.mjs
  step "end to end: WHIP from a tab and aiortc through the signal server, wrong token, WebSocket flood"
  node test/e2e/whip.mjs
  step "end to end: the README's demo with 20 viewers, its tree page, Ctrl-C"
  node test/e2e/demo.mjs
fi
step "browser checks passed"
