// The overlay `/overlay/{room}` for a streaming tool's browser source: one
// alert at a time from a queue. `?min=5.00` hides gifts below an amount,
// `?duration=6` sets the seconds per alert (bigger tiers stay a little
// longer), `?demo=1` plays a sample alert (the studio's test button). It
// watches the public room feed, so it needs no token and never sees a split.

import { h } from './api.js';
import { RoomFeed } from './feed.js';
import { toMinor, fromMinor, decimalsOf, compare, show } from './money.js';
import { emoji, tier } from './stickers.js';

const roomId = decodeURIComponent(location.pathname.split('/')[2] || '');
const q = new URLSearchParams(location.search);
const minAmount = /^\d+(\.\d+)?$/.test(q.get('min') || '') ? q.get('min') : '0';
const durationS = Math.min(60, Math.max(1, Number.parseInt(q.get('duration') || '6', 10) || 6));
const currency = q.get('currency') || 'USD';
const QUEUE_MAX = 300; // beyond this, same-sender same-sticker alerts merge harder

const queue = [];
let showing = false;
let gifts = 0; // gift events received (shown or below ?min=)
let shown = 0;
let stickers = new Map();

/** Adds a gift to the queue; a queued alert of the same sender and sticker grows instead. */
function enqueue(g) {
  gifts += 1;
  if (compare(g.amount, minAmount) < 0) return;
  const d = Math.max(decimalsOf(g.amount), 2);
  const last = queue.length ? queue[queue.length - 1] : null;
  const same = (a) => a && a.senderId === g.sender.id && a.stickerId === g.sticker_id;
  const target = same(last) ? last : queue.length >= QUEUE_MAX ? queue.find(same) : null;
  if (target) {
    target.quantity += g.quantity;
    target.total += toMinor(g.amount, d) ?? 0n;
    if (g.message) target.message = g.message;
  } else {
    queue.push({ senderId: g.sender.id, name: g.sender.name || g.sender.id, stickerId: g.sticker_id, quantity: g.quantity, total: toMinor(g.amount, d) ?? 0n, d, message: g.message });
  }
  if (!showing) next();
}

function next() {
  const a = queue.shift();
  if (!a) { showing = false; return; }
  showing = true;
  shown += 1;
  const amount = fromMinor(a.total, a.d);
  const t = tier(amount);
  const st = stickers.get(a.stickerId);
  const el = h(`div.alert.tier-${t}`,
    h('div.sticker', { 'aria-hidden': 'true' }, emoji(a.stickerId, st?.animation)),
    h('div.title', h('span.name', a.name), ' sent ', `${st?.name || a.stickerId}${a.quantity > 1 ? ' ×' + a.quantity : ''}`),
    h('div.amount', show(amount, currency)),
    a.message ? h('div.msg', a.message) : null,
  );
  const stage = document.getElementById('stage');
  stage.replaceChildren(el);
  // Bigger gifts stay up longer (up to twice the base duration).
  const ms = durationS * 1000 * (1 + (t - 1) / 6);
  setTimeout(() => {
    el.classList.add('leaving');
    setTimeout(() => { el.remove(); next(); }, 400);
  }, ms);
}

async function main() {
  try {
    const r = await fetch('/v1/stickers');
    if (r.ok) {
      const cat = await r.json();
      stickers = new Map(cat.stickers.map((s) => [s.id, s]));
    }
  } catch { /* the alerts still show with the sticker id */ }
  if (q.get('demo') === '1') {
    enqueue({ sender: { id: 'demo', name: 'Test alert' }, sticker_id: 'rocket', quantity: 1, amount: '99.99', message: 'This is what your viewers\u2019 gifts look like!' });
  }
  const conn = document.getElementById('conn');
  const feed = new RoomFeed(roomId, {
    onEvent: (e) => { if (e.type === 'gift') enqueue(e); },
    onStatus: (s) => { conn.hidden = s !== 'reconnecting'; conn.dataset.state = s; },
  });
  window.applause = { feed, queued: () => queue.length, gifts: () => gifts, shown: () => shown };
}

main();
