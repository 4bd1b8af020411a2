// The broadcaster studio `/studio`: open and end a stream, the live gifts
// with their split and one-click acknowledgements, this stream's and today's
// earnings (from the statement endpoint, added in integer minor units), the
// room's top gifters and the overlay link. The current room id is kept in
// localStorage per broadcaster (the API has no "my rooms" list).

import { $, h, get, post, claims, token, describe, toast, mountSignIn, mountWaiting, utcDay } from './api.js';
import { RoomFeed } from './feed.js';
import { toMinor, fromMinor, decimalsOf, show } from './money.js';
import { emoji, tier } from './stickers.js';

const QUICK = ['Thank you so much! 💖', 'You are amazing!', 'Welcome to the stream!'];
const state = { room: null, feed: null, rows: new Map(), stickers: new Map(), currency: 'USD', decimals: 2 };

const roomKey = () => `applause.studio.room:${claims()?.sub}`;

function setConn(s) {
  const el = $('#conn');
  el.hidden = false;
  el.dataset.state = s;
  el.textContent = { connecting: 'Connecting…', live: '● Receiving', reconnecting: 'Reconnecting…', ended: 'Stream ended' }[s] || s;
}

// ---------- gifts ----------

function onGift(g) {
  if (state.rows.has(g.gift_id)) return;
  const st = state.stickers.get(g.sticker_id);
  const row = { g, acked: null, busy: false, error: '' };
  row.el = h(`li.gift-row.tier-${tier(g.amount)}`, { dataset: { gift: g.gift_id } });
  state.rows.set(g.gift_id, row);
  renderRow(row, st);
  $('#gifts').prepend(row.el);
  $('#gifts-empty').hidden = true;
  while ($('#gifts').children.length > 300) {
    const last = $('#gifts').lastElementChild;
    state.rows.delete(last.dataset.gift);
    last.remove();
  }
  scheduleEarnings();
}

function renderRow(row, st = state.stickers.get(row.g.sticker_id)) {
  const g = row.g;
  const input = h('input', { name: 'ack', maxlength: '200', placeholder: 'Say thanks…', 'aria-label': 'Acknowledgement' });
  const send = (text) => acknowledge(row, text);
  const ackPart = row.acked != null
    ? h('div.acked', '✓ Acknowledged: ', h('span.ack-text', row.acked))
    : h('form.ack-box', { onsubmit: (e) => { e.preventDefault(); if (input.value.trim()) send(input.value.trim()); } },
      input,
      h('button.ack', { type: 'submit', disabled: row.busy }, 'Acknowledge'),
      ...QUICK.map((q) => h('button.quick', { type: 'button', disabled: row.busy, onclick: () => send(q) }, q)));
  row.el.replaceChildren(
    h('div.sticker', { 'aria-hidden': 'true' }, emoji(g.sticker_id, st?.animation)),
    h('div.body',
      h('div.line', h('strong', g.sender.name || g.sender.id), ' sent ', st?.name || g.sticker_id, g.quantity > 1 ? ` ×${g.quantity}` : ''),
      g.message ? h('div.msg', g.message) : null,
      g.split ? h('div.split',
        h('span.chip.you', 'You ', h('b', show(g.split.broadcaster, state.currency))),
        h('span.chip', 'Store ', h('b', show(g.split.store, state.currency))),
        h('span.chip', 'Platform ', h('b', show(g.split.platform, state.currency)))) : null,
      ackPart,
      row.error ? h('div.inline-error', { role: 'alert' }, row.error) : null,
    ),
    h('div.side', h('span.amount', show(g.amount, state.currency))),
  );
}

async function acknowledge(row, text) {
  if (row.busy) return;
  row.busy = true;
  row.error = '';
  renderRow(row);
  try {
    await post(`/v1/gifts/${encodeURIComponent(row.g.gift_id)}/ack`, { text });
    row.acked = text;
  } catch (e) {
    row.error = describe(e);
  } finally {
    row.busy = false;
    renderRow(row);
  }
}

function onAck(a) {
  const row = state.rows.get(a.gift_id);
  if (!row || row.acked != null) return;
  row.acked = a.text;
  renderRow(row);
}

// ---------- earnings ----------

let earnTimer = null;
function scheduleEarnings() {
  clearTimeout(earnTimer);
  earnTimer = setTimeout(loadEarnings, 400);
}

async function loadEarnings() {
  const r = state.room;
  const me = claims();
  if (!r || !me) return;
  try {
    const today = utcDay(0);
    const roomDay = (r.created_at || '').slice(0, 10) || today;
    const from = roomDay < today ? roomDay : today;
    const s = await get(`/v1/finance/broadcasters/${encodeURIComponent(me.sub)}/statement?from=${from}&to=${utcDay(1)}`);
    const d = state.decimals;
    let stream = 0n, gross = 0n, todayNet = 0n, n = 0;
    for (const g of s.gifts) {
      const refunded = g.refunded_at != null;
      const part = toMinor(g.split.broadcaster, d) ?? 0n;
      if (g.created_at.slice(0, 10) === today && !refunded) todayNet += part;
      if (g.room_id === r.room_id) {
        n += 1;
        gross += toMinor(g.amount, d) ?? 0n;
        if (!refunded) stream += part;
      }
    }
    // With a one-day statement its own total is the figure; it must agree.
    $('#earn-today').textContent = show(from === today ? s.totals.broadcaster_net : fromMinor(todayNet, d), state.currency);
    $('#earn-stream').textContent = show(fromMinor(stream, d), state.currency);
    $('#gifts-stream').textContent = String(n);
    $('#gross-stream').textContent = show(fromMinor(gross, d), state.currency);
  } catch (e) {
    if (e.status !== 401) toast(describe(e), 'error');
  }
}

// ---------- leaderboard ----------

function renderBoard(entries) {
  $('#board').replaceChildren(...entries.map((e) =>
    h('li', h('span.rank', `#${e.rank}`), h('span.name', e.name), h('span.amount', show(e.amount, state.currency)))));
  if (!entries.length) $('#board').append(h('li.empty', 'No gifts yet.'));
}

async function loadBoard() {
  try {
    const b = await get(`/v1/rooms/${encodeURIComponent(state.room.room_id)}/leaderboard?window=live&limit=10`, { auth: false });
    renderBoard(b.entries);
  } catch (e) { toast(describe(e), 'error'); }
}

// ---------- the room ----------

function showRoom(r) {
  state.room = r;
  $('#go-live').hidden = !!(r && r.live);
  $('#live').hidden = !(r && r.live);
  $('#room-title').textContent = r?.live ? r.title : 'Your stream';
  $('#room-state').textContent = r?.live ? 'Live' : 'Offline';
  $('#room-state').className = `badge ${r?.live ? 'live' : ''}`;
  state.feed?.close();
  state.feed = null;
  state.rows.clear();
  $('#gifts').replaceChildren();
  $('#gifts-empty').hidden = false;
  if (!r || !r.live) { $('#conn').hidden = true; return; }
  const overlay = `${location.origin}/overlay/${encodeURIComponent(r.room_id)}?min=0.00&duration=6`;
  $('#overlay-url').value = overlay;
  $('#test-alert').href = `/overlay/${encodeURIComponent(r.room_id)}?demo=1`;
  $('#viewer-link').href = `/watch/${encodeURIComponent(r.room_id)}`;
  state.feed = new RoomFeed(r.room_id, {
    token, backfill: 100, onStatus: setConn,
    onEvent: (e) => {
      if (e.type === 'gift') onGift(e);
      else if (e.type === 'ack') onAck(e);
      else if (e.type === 'leaderboard' && e.window === 'live') renderBoard(e.entries);
      else if (e.type === 'room_ended') { localStorage.removeItem(roomKey()); showRoom({ ...r, live: false }); }
    },
    onResync: () => { state.rows.clear(); $('#gifts').replaceChildren(); loadEarnings(); loadBoard(); },
  });
  window.applause = { feed: state.feed };
  loadBoard();
  loadEarnings();
}

async function restore() {
  const me = claims();
  $('#signed-out').hidden = !!me;
  if (!me) { $('#go-live').hidden = true; $('#live').hidden = true; state.feed?.close(); return; }
  if (me.role !== 'broadcaster') {
    $('#signed-out').hidden = false;
    $('#signed-out').textContent = 'This token is not a broadcaster’s. Sign in as the broadcaster to open a stream.';
    $('#go-live').hidden = true;
    return;
  }
  // `applause demo` links the studio to its room with `#room=`.
  const linked = new URLSearchParams(location.hash.slice(1)).get('room');
  if (linked) {
    localStorage.setItem(roomKey(), linked);
    history.replaceState(null, '', location.pathname + location.search);
  }
  const id = localStorage.getItem(roomKey());
  if (!id) return showRoom(null);
  try {
    const r = await get(`/v1/rooms/${encodeURIComponent(id)}`);
    if (!r.live || r.broadcaster_id !== me.sub) localStorage.removeItem(roomKey());
    showRoom(r.broadcaster_id === me.sub ? r : null);
  } catch {
    localStorage.removeItem(roomKey());
    showRoom(null);
  }
}

let opening = false;
async function openRoom(ev) {
  ev.preventDefault();
  if (opening) return;
  opening = true;
  $('#open').disabled = true;
  $('#open-error').hidden = true;
  try {
    const r = await post('/v1/rooms', { title: $('#title').value.trim() });
    localStorage.setItem(roomKey(), r.room_id);
    const full = await get(`/v1/rooms/${encodeURIComponent(r.room_id)}`);
    showRoom(full);
  } catch (e) {
    $('#open-error').hidden = false;
    $('#open-error').textContent = describe(e);
  } finally {
    opening = false;
    $('#open').disabled = false;
  }
}

async function endRoom() {
  const r = state.room;
  if (!r) return;
  try {
    await post(`/v1/rooms/${encodeURIComponent(r.room_id)}/end`, undefined);
    localStorage.removeItem(roomKey());
    toast('Stream ended. Thanks for streaming!', 'ok');
    showRoom({ ...r, live: false });
  } catch (e) {
    toast(describe(e), 'error');
  }
}

async function main() {
  mountWaiting($('#waiting'));
  mountSignIn($('#signin'), { role: 'broadcaster', onChange: restore });
  $('#open-form').addEventListener('submit', openRoom);
  $('#end').addEventListener('click', () => $('#end-dialog').showModal());
  $('#end-dialog').addEventListener('close', () => { if ($('#end-dialog').returnValue === 'end') endRoom(); });
  $('#copy').addEventListener('click', async () => {
    try { await navigator.clipboard.writeText($('#overlay-url').value); toast('Overlay URL copied.', 'ok'); } catch { $('#overlay-url').select(); }
  });
  try {
    const cat = await get('/v1/stickers', { auth: false });
    state.currency = cat.currency;
    state.decimals = cat.stickers.length ? decimalsOf(cat.stickers[0].price) : 2;
    for (const s of cat.stickers) state.stickers.set(s.id, s);
  } catch (e) { toast(describe(e), 'error'); }
  await restore();
}

main();
