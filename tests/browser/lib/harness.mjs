// The browser tests' harness: a real `applause serve` on a loopback port with
// a temporary data dir, tokens minted by `applause token`, top-ups through
// the admin API, and headless Debian chromium driven by playwright-core.
// Every page opened through `openPage` fails its test on a console error, an
// uncaught exception, a failed request, or an HTTP status >= 400 the test did
// not declare with `expect(status, pathPart)`.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const SCREENSHOTS = join(here, '..', 'screenshots');
const SECRET = 'browser-tests-secret-0123456789abcdef0123456789';

export function applauseBin() {
  if (process.env.APPLAUSE_BIN) return process.env.APPLAUSE_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(here, '..', '..', '..', 'target');
  return join(target, 'debug', 'applause');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Starts `applause serve`; resolves when it reports its address and /readyz is 200. */
export async function startServer({ extraArgs = [], dataDir, command = 'serve' } = {}) {
  const dir = dataDir || mkdtempSync(join(tmpdir(), 'applause-browser-'));
  const logPath = join(dir, 'serve.log');
  const log = openSync(logPath, 'a');
  const env = { ...process.env, APPLAUSE_JWT_SECRET: SECRET, RUST_LOG: process.env.RUST_LOG || 'info', NO_COLOR: '1' };
  const child = spawn(applauseBin(), [command, '--bind', '127.0.0.1:0', '--data-dir', dir, ...extraArgs], {
    env, stdio: ['ignore', log, log],
  });
  let exited = null;
  child.on('exit', (code, sig) => { exited = code ?? sig; });
  child.on('error', (e) => { exited = `${e.message} (set APPLAUSE_BIN or CARGO_TARGET_DIR)`; });
  const marker = 'applause is listening addr=';
  let addr = null;
  for (let i = 0; i < 600 && !addr; i++) {
    // The log may be coloured: strip the escapes before looking for the address.
    const text = readFileSync(logPath, 'utf8').replace(/\x1b\[[0-9;]*m/g, '');
    const at = text.lastIndexOf(marker);
    if (at >= 0) addr = /^[0-9.:]+/.exec(text.slice(at + marker.length))?.[0];
    if (!addr) {
      if (exited !== null) throw new Error(`applause exited (${exited}) while starting:\n${text}`);
      await sleep(50);
    }
  }
  if (!addr) throw new Error(`applause did not report its address:\n${readFileSync(logPath, 'utf8')}`);
  const base = `http://${addr}`;
  for (let i = 0; i < 300; i++) {
    try { if ((await fetch(`${base}/readyz`)).ok) break; } catch { /* not yet */ }
    await sleep(50);
  }
  const server = {
    base, dir, child, logPath,
    async stop({ keepDir = false } = {}) {
      if (exited === null) {
        const done = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await Promise.race([done, sleep(10000)]);
        if (exited === null) child.kill('SIGKILL');
      }
      if (!keepDir && !dataDir) rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}

/** A token minted by the binary itself (same secret as the server). */
export function token(sub, role, name) {
  const args = ['token', '--sub', sub, '--role', role, '--ttl', '2h'];
  if (name) args.push('--name', name);
  return execFileSync(applauseBin(), args, { env: { ...process.env, APPLAUSE_JWT_SECRET: SECRET }, encoding: 'utf8' }).trim();
}

/** A JSON call to the API; resolves to {status, body, headers}. */
export async function api(base, method, path, { tok, body, key } = {}) {
  const headers = {};
  if (tok) headers.Authorization = `Bearer ${tok}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (key) headers['Idempotency-Key'] = key;
  const r = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let parsed = text;
  try { parsed = JSON.parse(text); } catch { /* CSV or text */ }
  return { status: r.status, body: parsed, headers: r.headers };
}

/** A deployment with a live room, a broadcaster and funded viewers. */
export async function seed(server, viewers = [['alice', 'Alice', '500.00']]) {
  const admin = token('admin', 'admin', 'Admin');
  const star = token('star', 'broadcaster', 'Star');
  const room = await api(server.base, 'POST', '/v1/rooms', { tok: star, body: { title: 'Friday night stream' } });
  if (room.status !== 201) throw new Error(`room: ${room.status} ${JSON.stringify(room.body)}`);
  const tokens = { admin, star };
  for (const [id, name, amount] of viewers) {
    tokens[id] = token(id, 'viewer', name);
    const t = await api(server.base, 'POST', '/v1/topups', { tok: admin, body: { user_id: id, channel: 'web', amount, receipt_id: `seed-${id}` } });
    if (t.status !== 201 && t.status !== 200) throw new Error(`top-up: ${t.status} ${JSON.stringify(t.body)}`);
  }
  return { roomId: room.body.room_id, tokens };
}

/** Buys a gift through the API (not the page). */
export async function buy(server, tok, roomId, sticker = 'rose', quantity = 1, message) {
  const r = await api(server.base, 'POST', `/v1/rooms/${roomId}/gifts`, {
    tok, key: randomUUID(), body: { sticker_id: sticker, quantity, ...(message ? { message } : {}) },
  });
  if (r.status !== 201) throw new Error(`gift: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

export const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Headless Debian chromium (never a downloaded browser). */
export async function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS, headless: true });
}

/**
 * A page in a fresh context that records every problem. `problems()` lists
 * them; `expect(status, pathPart)` declares an error response as intended.
 */
export async function openPage(browser, { viewport = { width: 1280, height: 860 }, acceptDownloads = false } = {}) {
  const context = await browser.newContext({ viewport, acceptDownloads });
  context.setDefaultTimeout(10000);
  const page = await context.newPage();
  const problems = [];
  const expected = [];
  const isExpected = (status, url) => expected.some((e) => e.status === status && url.includes(e.part));
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    // Chromium reports every 4xx fetch as a console error; a declared one is intended.
    const s = /status of (\d{3})/.exec(m.text());
    if (s && isExpected(Number(s[1]), m.location()?.url || '')) return;
    if (s && expected.some((e) => e.status === Number(s[1]))) return;
    problems.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => {
    const why = r.failure()?.errorText || '';
    // A download or a navigation away aborts its request on purpose.
    if (why.includes('ERR_ABORTED') && (r.url().includes('format=csv') || r.resourceType() === 'document')) return;
    problems.push(`request failed: ${r.method()} ${r.url()} ${why}`);
  });
  page.on('response', (r) => {
    if (r.status() >= 400 && !isExpected(r.status(), r.url())) problems.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`);
  });
  return {
    page, context,
    problems: () => problems.slice(),
    expect: (status, part) => expected.push({ status, part }),
    async close() { await context.close(); },
  };
}

/** Writes a screenshot of the page into tests/browser/screenshots/. */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  // omitBackground keeps the overlay's transparency in the PNG.
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true, omitBackground: name.startsWith('overlay') });
}

/** Polls `f` until it returns a truthy value (or throws after `ms`). */
export async function eventually(f, ms = 5000, what = 'condition') {
  const until = Date.now() + ms;
  let last;
  for (;;) {
    try { last = await f(); if (last) return last; } catch (e) { last = e; }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}: ${last}`);
    await sleep(50);
  }
}
