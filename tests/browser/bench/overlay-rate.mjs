// Benchmark (not part of the test run): 100 gifts/s into one room for 20 s
// while the overlay and a viewer page are open in headless chromium.
// Reports, per page: gifts received vs bought (missing / duplicated seqs),
// frame times from requestAnimationFrame, commit-to-page latency, and the
// page's total transfer size with any third-party request.
//
//   CARGO_TARGET_DIR=… node tests/browser/bench/overlay-rate.mjs [rate] [seconds]

import { randomUUID } from 'node:crypto';
import { startServer, token, api, launch } from '../lib/harness.mjs';

const RATE = Number(process.argv[2] || 100);
const SECONDS = Number(process.argv[3] || 20);
const SENDERS = 20;

const server = await startServer({ extraArgs: ['--gift-rate-per-s', '100000', '--gift-burst', '100000'] });
const browser = await launch();
try {
  const admin = token('admin', 'admin', 'Admin');
  const star = token('star', 'broadcaster', 'Star');
  const room = (await api(server.base, 'POST', '/v1/rooms', { tok: star, body: { title: 'Bench' } })).body.room_id;
  const senders = [];
  for (let i = 0; i < SENDERS; i++) {
    const id = `fan${i}`;
    senders.push(token(id, 'viewer', `Fan ${i}`));
    await api(server.base, 'POST', '/v1/topups', { tok: admin, body: { user_id: id, channel: ['apple', 'google', 'web'][i % 3], amount: '100000.00', receipt_id: `bench-${id}` } });
  }

  // Transfer size of each page, on a cold load in a fresh context.
  const sizes = {};
  for (const [name, path] of [['viewer', `/watch/${room}`], ['overlay', `/overlay/${room}`], ['studio', '/studio'], ['finance', '/finance']]) {
    const ctx = await browser.newContext();
    const page = await ctx.newPage();
    let bytes = 0, requests = 0;
    const foreign = [];
    const pending = [];
    page.on('response', (r) => {
      if (!r.url().startsWith(server.base)) foreign.push(r.url());
      if (r.url().includes('/v1/')) return; // API data, not the page
      requests++;
      pending.push(r.body().then((b) => { bytes += b.length; }, () => {}));
    });
    page.on('request', (r) => { if (!r.url().startsWith(server.base) && !r.url().startsWith('ws://' + server.base.slice(7))) foreign.push(r.url()); });
    await page.goto(server.base + path, { waitUntil: 'networkidle' });
    await Promise.all(pending);
    sizes[name] = { bytes, requests, thirdParty: foreign.length };
    await ctx.close();
  }

  // The two pages under load.
  const pages = {};
  for (const [name, path] of [['overlay', `/overlay/${room}?duration=1`], ['viewer', `/watch/${room}`]]) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto(server.base + path);
    await page.waitForFunction(() => window.applause?.feed?.status === 'live');
    await page.evaluate(() => {
      const f = window.applause.feed;
      const orig = f.opts.onEvent;
      window.__seqs = [];
      window.__lat = [];
      f.opts.onEvent = (e) => {
        if (e.type === 'gift') { window.__seqs.push(e.seq); window.__lat.push(Date.now() - Date.parse(e.created_at)); }
        orig(e);
      };
      window.__frames = [];
      let last = performance.now();
      const tick = (t) => { window.__frames.push(t - last); last = t; requestAnimationFrame(tick); };
      requestAnimationFrame(tick);
    });
    pages[name] = { page, ctx, errors };
  }

  const bought = [];
  const failed = [];
  const interval = 1000 / RATE;
  const t0 = performance.now();
  const inflight = [];
  for (let i = 0; i < RATE * SECONDS; i++) {
    const due = t0 + i * interval;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const stickers = ['clap', 'heart', 'rose', 'coffee', 'star', 'cake', 'fireworks', 'rocket'];
    inflight.push(api(server.base, 'POST', `/v1/rooms/${room}/gifts`, {
      tok: senders[i % SENDERS], key: randomUUID(), body: { sticker_id: stickers[i % stickers.length], quantity: 1, message: i % 10 === 0 ? `message ${i}` : undefined },
    }).then((r) => (r.status === 201 ? bought.push(r.body.seq) : failed.push(r.status)), (e) => failed.push(String(e))));
  }
  await Promise.all(inflight);
  const sendSeconds = (performance.now() - t0) / 1000;

  const pct = (xs, p) => { const s = xs.slice().sort((a, b) => a - b); return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN; };
  const report = { rate: RATE, seconds: SECONDS, sendSeconds: +sendSeconds.toFixed(1), bought: bought.length, failed: failed.length, pages: {}, sizes };
  const want = new Set(bought);
  for (const [name, { page, errors }] of Object.entries(pages)) {
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline && (await page.evaluate(() => window.__seqs.length)) < bought.length) await new Promise((r) => setTimeout(r, 200));
    const { seqs, frames, lat, extra } = await page.evaluate(() => ({
      seqs: window.__seqs, frames: window.__frames.slice(5), lat: window.__lat,
      extra: { cards: document.querySelectorAll('#feed .card').length, queued: window.applause.queued?.() },
    }));
    const got = new Set(seqs);
    report.pages[name] = {
      received: seqs.length,
      missing: [...want].filter((s) => !got.has(s)).length,
      duplicated: seqs.length - got.size,
      frame_ms: { p50: +pct(frames, 50).toFixed(1), p95: +pct(frames, 95).toFixed(1), p99: +pct(frames, 99).toFixed(1), max: +Math.max(...frames).toFixed(1), over_50ms: frames.filter((f) => f > 50).length, frames: frames.length },
      latency_ms: { p50: pct(lat, 50), p99: pct(lat, 99), max: Math.max(...lat) },
      ...extra,
      errors: errors.length,
    };
  }
  console.log(JSON.stringify(report, null, 2));
} finally {
  await browser.close();
  await server.stop();
}
