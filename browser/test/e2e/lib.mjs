// Shared by the end-to-end scripts: starting the real binaries, headless Chromium, polling.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const root = fileURLToPath(new URL('../../../', import.meta.url));
export const nodeBin = process.env.TREECAST_BIN ?? `${root}target/debug/treecast`;
export const signalBin = process.env.TREECAST_SIGNAL_BIN ?? `${root}target/debug/treecast-signal`;
const executablePath = process.env.CHROMIUM ?? '/usr/bin/chromium';
export const WAIT_MS = 60_000;
/** Overlay flags for every process: loopback only, no LAN discovery. */
export const overlay = ['--no-mdns', '--p2p-listen', '/ip4/127.0.0.1/tcp/0'];

const t0 = Date.now();
/** @param {string} msg */
export function log(msg) {
  console.log(`e2e ${((Date.now() - t0) / 1000).toFixed(1).padStart(6)}s: ${msg}`);
}

/** Builds the binaries when missing; fails when Chromium is missing. */
export function prerequisites() {
  for (const [bin, pkg] of [[nodeBin, 'treecast-node'], [signalBin, 'treecast-signal']]) {
    if (!existsSync(bin)) {
      log(`cargo build -p ${pkg}`);
      const b = spawnSync('cargo', ['build', '-q', '-p', pkg], { cwd: root, stdio: 'inherit' });
      if (b.status !== 0) process.exit(1);
    }
  }
  if (!existsSync(executablePath)) {
    console.error(`no Chromium at ${executablePath} (scripts/install-test-deps installs it)`);
    process.exit(1);
  }
}

/** @type {import('node:child_process').ChildProcess[]} */
const procs = [];
/** @type {import('playwright-core').Browser[]} */
const browsers = [];
/** @type {string[]} */
const dirs = [];

/** A temporary directory removed by `cleanup`. */
export function tempDir() {
  const d = mkdtempSync(join(tmpdir(), 'treecast-e2e-'));
  dirs.push(d);
  return d;
}

/**
 * Starts a process and resolves once its output matched every pattern.
 * @param {string} name
 * @param {string} bin
 * @param {string[]} args
 * @param {RegExp[]} patterns
 * @returns {Promise<{proc: import('node:child_process').ChildProcess, found: string[], out: () => string}>}
 */
export function start(name, bin, args, patterns) {
  const proc = spawn(bin, args, {
    cwd: root,
    env: { ...process.env, NO_COLOR: '1', RUST_LOG: process.env.RUST_LOG ?? 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  procs.push(proc);
  let out = '';
  const onData = (/** @type {Buffer} */ d) => {
    out += d.toString().replace(/\x1b\[[0-9;]*m/g, '');
    if (out.length > 1_000_000) out = out.slice(-500_000);
  };
  proc.stdout?.on('data', onData);
  proc.stderr?.on('data', onData);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not start:\n${out.slice(-3000)}`)), WAIT_MS);
    const check = () => {
      const found = patterns.map((p) => out.match(p)?.[1]);
      if (found.every((f) => f !== undefined)) {
        clearTimeout(timer);
        proc.stdout?.off('data', check);
        proc.stderr?.off('data', check);
        resolve({ proc, found: /** @type {string[]} */ (found), out: () => out });
      }
    };
    proc.stdout?.on('data', check);
    proc.stderr?.on('data', check);
    proc.on('exit', (code) => reject(new Error(`${name} exited with ${code}:\n${out.slice(-3000)}`)));
  });
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Headless Chromium; `camera` adds the fake camera and microphone.
 * @param {{camera?: boolean}} [opts]
 */
export async function launchChromium(opts = {}) {
  const b = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
      // Plain host candidates, so two tabs find each other without mDNS.
      '--disable-features=WebRtcHideLocalIpsWithMdns',
      ...(opts.camera ? ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream'] : []),
    ],
  });
  browsers.push(b);
  return b;
}

/** Kills every process, closes every browser, removes the temporary directories. */
export async function cleanup() {
  for (const b of browsers) await b.close().catch(() => {});
  // SIGTERM first: `treecast demo` then stops the signal server it started (a SIGKILL would
  // orphan it). Whatever is still running 3 s later is killed.
  const alive = () => procs.filter((p) => p.exitCode === null && p.signalCode === null);
  for (const p of alive()) p.kill('SIGTERM');
  for (let i = 0; i < 30 && alive().length > 0; i++) await sleep(100);
  for (const p of alive()) p.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

/**
 * Video frames the page has decoded.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<number>}
 */
export async function frames(page) {
  return page.evaluate(() => {
    const v = document.querySelector('video');
    return v ? v.getVideoPlaybackQuality().totalVideoFrames : 0;
  });
}

/**
 * Polls `check` until it holds, failing after WAIT_MS.
 * @param {string} what
 * @param {() => Promise<boolean>} check
 */
export async function until(what, check) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    try {
      if (await check()) return;
    } catch {
      // Not up yet.
    }
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await sleep(100);
  }
}
