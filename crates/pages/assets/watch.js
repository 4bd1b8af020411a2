// The viewer page `/watch/{room}`: the live gift feed with tiers, combos and
// acknowledgements, the send panel, red packets, the wallet and the room's
// top gifters.

import { $, h, get, post, claims, token, describe, toast, mountSignIn, mountWaiting, clock, ApiError } from './api.js';
import { RoomFeed } from './feed.js';
import { toMinor, fromMinor, decimalsOf, show } from './money.js';
import { emoji, tier } from './stickers.js';

const roomId = decodeURIComponent(location.pathname.split('/')[2] || '');
const COMBO_MS = 10000; // same sender + same sticker within this → one card
const MAX_CARDS = 200; // older cards leave the page (they stay in the ledger)

const state = {
  currency: 'USD',
  decimals: 2,
  stickers: new Map(),
  selected: null,
  room: null,
  cards: [], // feed cards, newest first
  byGift: new Map(), // gift_id → card
  combos: new Map(), // sender|sticker → newest card
  packets: new Map(), // packet_id → red packet card
  me: null,
};

function me() { return claims(); }

// ---------- feed ----------

function cardFor(g) {
  const key = `${g.sender.id}|${g.sticker_id}`;
  const at = Date.parse(g.created_at) || 0;
  const open = state.combos.get(key);
  if (open && Math.abs(at - open.lastAt) <= COMBO_MS && !open.removed) return open;
  const card = {
    kind: 'gift', key, seq: g.seq, lastAt: at, count: 0, total: 0n, gifts: [],
    sender: g.sender, stickerId: g.sticker_id, messages: [],
  };
  card.el = h('li.card.gift', { dataset: { sender: g.sender.id, sticker: g.sticker_id } });
  state.combos.set(key, card);
  return card;
}

function renderGift(card) {
  const st = state.stickers.get(card.stickerId);
  const amount = fromMinor(card.total, state.decimals);
  const t = tier(amount);
  const mine = me()?.sub === card.sender.id;
  const el = card.el;
  if (!card.ref) {
    // Built once; later updates touch only what changed, so running
    // animations (the sticker's wiggle) are not restarted by every combo step.
    const r = {
      msg: h('div.msg'), acks: h('ul.acks'),
      count: h('span.combo-count'), amount: h('span.amount'), at: h('time.at'),
    };
    el.append(
      h('div.sticker', { 'aria-hidden': 'true' }, emoji(card.stickerId, st?.animation)),
      h('div.body',
        h('div.line', h('strong.sender', card.sender.name || card.sender.id), ' sent ', h('span.sticker-name', st?.name || card.stickerId)),
        r.msg, r.acks),
      h('div.side', r.count, r.amount, r.at),
    );
    card.ref = r;
    card.shownAcks = 0;
  }
  const r = card.ref;
  el.className = `card gift tier-${t}${mine ? ' mine' : ''}${card.count > 1 ? ' combo' : ''} ${card.bump ? 'bump-a' : 'bump-b'}`;
  el.dataset.count = String(card.count);
  el.dataset.gifts = card.gifts.join(' ');
  el.dataset.amount = amount;
  const msg = card.messages.length ? card.messages[card.messages.length - 1] : '';
  if (r.msg.textContent !== msg) r.msg.textContent = msg;
  r.msg.hidden = !msg;
  const acks = card.acks || [];
  for (; card.shownAcks < acks.length; card.shownAcks++) {
    const a = acks[card.shownAcks];
    r.acks.append(h(`li.ack${a.mine ? '.ack-mine' : ''}`, h('span.ack-from', '🎙 Thanks from the streamer'), ' ', h('span.ack-text', a.text)));
  }
  r.acks.hidden = acks.length === 0;
  r.count.textContent = `×${card.count}`;
  r.count.setAttribute('aria-label', `${card.count} times`);
  r.amount.textContent = show(amount, state.currency);
  r.at.textContent = clock(new Date(card.lastAt).toISOString());
  // Restart the counter's pop on every addition: its animation name alternates
  // between two identical keyframes, so no forced layout is needed.
  if (card.shownCount !== card.count) {
    card.bump = !card.bump;
    el.classList.toggle('bump-a', card.bump);
    el.classList.toggle('bump-b', !card.bump);
    card.shownCount = card.count;
  }
}

// Events update the model at once; the DOM is updated once per frame, so a
// burst of gifts (100/s) costs one render per changed card per frame.
const dirty = new Set();
let flushing = false;
function markDirty(card) {
  dirty.add(card);
  if (!flushing) {
    flushing = true;
    requestAnimationFrame(flush);
  }
}
function flush() {
  flushing = false;
  for (const card of dirty) {
    if (card.removed) continue;
    if (card.kind === 'gift') renderGift(card); else renderPacket(card);
    // A growing combo keeps its place (its counter moves, not the card):
    // re-inserting it would restart its animations and repaint the feed.
    if (!card.placed) place(card);
  }
  dirty.clear();
}

function onGift(g) {
  const card = cardFor(g);
  card.count += g.quantity;
  card.total += toMinor(g.amount, state.decimals) ?? 0n;
  card.gifts.push(g.gift_id);
  if (g.message) card.messages.push(g.message);
  card.lastAt = Math.max(card.lastAt, Date.parse(g.created_at) || 0);
  state.byGift.set(g.gift_id, card);
  markDirty(card);
  // Bought on another device (or by a retry): the balance follows.
  if (g.sender.id === me()?.sub) scheduleWallet();
}

let walletTimer = null;
function scheduleWallet() {
  clearTimeout(walletTimer);
  walletTimer = setTimeout(loadWallet, 300);
}

function onAck(a) {
  const card = state.byGift.get(a.gift_id);
  if (!card) return;
  card.acks = card.acks || [];
  card.acks.push({ text: a.text, mine: me()?.sub === a.sender_id });
  markDirty(card);
}

/** Puts a new card at its place: newest (by its first seq) first. */
function place(card) {
  card.placed = true;
  const feed = $('#feed');
  const i = state.cards.indexOf(card);
  if (i >= 0) state.cards.splice(i, 1);
  let j = 0;
  while (j < state.cards.length && state.cards[j].seq > card.seq) j++;
  state.cards.splice(j, 0, card);
  const next = state.cards[j + 1];
  feed.insertBefore(card.el, next ? next.el : null);
  while (state.cards.length > MAX_CARDS) {
    const old = state.cards.pop();
    old.removed = true;
    old.el.remove();
    if (old.kind === 'gift') for (const id of old.gifts) state.byGift.delete(id);
    if (old.kind === 'packet') state.packets.delete(old.id);
  }
  $('#feed-empty').hidden = state.cards.length > 0;
}

// ---------- red packets ----------

function onPacket(p) {
  const card = { kind: 'packet', id: p.packet_id, seq: p.seq, left: p.count, p, status: '' };
  state.packets.set(p.packet_id, card);
  card.el = h('li.card.packet', { dataset: { packet: p.packet_id } });
  markDirty(card);
}

function renderPacket(card) {
  const p = card.p;
  const mineDrop = me()?.sub === p.sender.id;
  const btn = h('button.claim', { type: 'button', disabled: !me() || card.busy || !!card.status || card.left === 0 || card.gone, onclick: () => claim(card) }, card.busy ? 'Claiming…' : 'Claim');
  card.el.replaceChildren(
    h('div.sticker', { 'aria-hidden': 'true' }, '🧧'),
    h('div.body',
      h('div.line', h('strong.sender', p.sender.name || p.sender.id), ' dropped a red packet'),
      h('div.msg', `${show(p.total, state.currency)} in ${p.count} ${p.mode} share${p.count === 1 ? '' : 's'} · ${card.left} left`),
      card.status ? h('div.packet-status', { role: 'status' }, card.status) : null,
    ),
    h('div.side', mineDrop ? h('span.muted', 'Your packet') : card.claimed ? h('span.claimed', '✓ Claimed') : card.gone ? h('span.muted', 'Gone') : btn),
  );
}

async function claim(card) {
  if (card.busy) return;
  card.busy = true;
  renderPacket(card);
  try {
    const r = await post(`/v1/red-packets/${encodeURIComponent(card.id)}/claim`, undefined);
    card.status = `You got ${show(r.amount, state.currency)}!`;
    card.claimed = true;
    loadWallet();
  } catch (e) {
    if (e.code === 'already_claimed') { card.status = 'Already claimed'; card.claimed = true; }
    else if (e.code === 'red_packet_gone') { card.gone = true; card.status = 'All gone'; }
    else toast(describe(e), 'error');
  } finally {
    card.busy = false;
    renderPacket(card);
  }
}

function onPacketClaimed(c) {
  const card = state.packets.get(c.packet_id);
  if (!card) return;
  card.left = c.remaining_count;
  if (c.remaining_count === 0) card.gone = !card.status;
  renderPacket(card);
}

function onPacketExpired(x) {
  const card = state.packets.get(x.packet_id);
  if (!card) return;
  card.gone = true;
  card.status = card.status || 'Expired';
  renderPacket(card);
}

// ---------- leaderboard ----------

let rankTimer = null;

function renderBoard(entries) {
  const medal = ['🥇', '🥈', '🥉'];
  $('#podium').replaceChildren(...entries.slice(0, 3).map((e, i) =>
    h(`li.podium-${i + 1}${me()?.sub === e.user_id ? '.me' : ''}`, h('span.medal', medal[i]), h('span.name', e.name), h('span.amount', show(e.amount, state.currency)))));
  $('#board').replaceChildren(...entries.map((e) =>
    h(`li${me()?.sub === e.user_id ? '.me' : ''}`, h('span.rank', `#${e.rank}`), h('span.name', e.name), h('span.amount', show(e.amount, state.currency)))));
  if (!entries.length) $('#podium').append(h('li.empty', 'No gifts this stream yet.'));
  // On the board just shown: the rank is right here, with no request and no
  // moment of "not on the board" beside one's own highlighted line.
  const mine = me() && entries.find((e) => e.user_id === me().sub);
  if (mine) {
    clearTimeout(rankTimer);
    showMyRank(mine);
  } else {
    scheduleMyRank();
  }
}

function showMyRank(r) {
  const el = $('#my-rank');
  el.hidden = false;
  el.textContent = r.rank ? `Your rank: #${r.rank} · ${show(r.amount, state.currency)}` : 'You are not on the board yet — send a gift!';
}

function scheduleMyRank() {
  clearTimeout(rankTimer);
  rankTimer = setTimeout(loadMyRank, 300);
}

async function loadMyRank() {
  const el = $('#my-rank');
  if (!me()) { el.hidden = true; return; }
  try {
    showMyRank(await get(`/v1/rooms/${encodeURIComponent(roomId)}/leaderboard/me?window=live`));
  } catch {
    el.hidden = true;
  }
}

async function loadBoard() {
  try {
    const b = await get(`/v1/rooms/${encodeURIComponent(roomId)}/leaderboard?window=live&limit=10`, { auth: false });
    renderBoard(b.entries);
  } catch (e) {
    toast(describe(e), 'error');
  }
}

// ---------- wallet and sending ----------

async function loadWallet() {
  if (!me()) { $('#wallet').hidden = true; return; }
  try {
    const w = await get('/v1/wallet');
    $('#wallet').hidden = false;
    $('#balance').textContent = show(w.balance, w.currency);
    $('#balance').dataset.amount = w.balance;
    $('#by-channel').replaceChildren(...Object.entries(w.by_channel).map(([ch, a]) =>
      h('span.chip', { dataset: { channel: ch } }, h('span.ch', ch), ' ', show(a, w.currency))));
  } catch (e) {
    if (e.status !== 401) toast(describe(e), 'error');
  }
}

function renderStickers() {
  const grid = $('#stickers');
  grid.replaceChildren(...[...state.stickers.values()].map((s) => {
    const b = h(`button.sticker-btn.tier-${tier(s.price)}`, {
      type: 'button', role: 'radio', 'aria-checked': String(state.selected === s.id), dataset: { sticker: s.id },
      onclick: () => { state.selected = s.id; renderStickers(); updatePrice(); },
    }, h('span.emoji', emoji(s.id, s.animation)), h('span.name', s.name), h('span.price', show(s.price, state.currency)));
    return b;
  }));
}

function quantity() {
  const q = Number.parseInt($('#qty').value, 10);
  return Number.isInteger(q) && q >= 1 && q <= 9999 ? q : null;
}

function updatePrice() {
  const s = state.stickers.get(state.selected);
  const q = quantity();
  const el = $('#price');
  if (!s || !q) { el.textContent = q ? 'Pick a sticker' : 'Quantity 1–9999'; return; }
  const total = (toMinor(s.price, state.decimals) ?? 0n) * BigInt(q);
  el.textContent = `Total ${show(fromMinor(total, state.decimals), state.currency)}`;
}

let inFlight = false;
async function send(ev) {
  ev.preventDefault();
  if (inFlight) return; // a double click sends once
  const s = state.stickers.get(state.selected);
  const q = quantity();
  const err = $('#send-error');
  err.hidden = true;
  if (!s || !q) { err.hidden = false; err.textContent = !s ? 'Pick a sticker first.' : 'Quantity must be 1–9999.'; return; }
  const btn = $('#send');
  inFlight = true;
  btn.disabled = true;
  btn.textContent = 'Sending…';
  // One key per click: the retries inside `post` reuse it, so nothing is charged twice.
  const key = crypto.randomUUID();
  const message = $('#msg').value.trim();
  try {
    const r = await post(`/v1/rooms/${encodeURIComponent(roomId)}/gifts`, { sticker_id: s.id, quantity: q, ...(message ? { message } : {}) }, { key });
    $('#balance').textContent = show(r.balance, state.currency);
    $('#balance').dataset.amount = r.balance;
    $('#msg').value = '';
    loadWallet();
    scheduleMyRank();
  } catch (e) {
    err.hidden = false;
    err.replaceChildren(describe(e));
    if (e.code === 'insufficient_funds') err.append(' ', h('strong.topup', 'Top up in the app to continue.'));
  } finally {
    inFlight = false;
    btn.disabled = false;
    btn.textContent = 'Send';
  }
}

// ---------- page ----------

function setConn(s) {
  const el = $('#conn');
  el.dataset.state = s;
  el.textContent = { connecting: 'Connecting…', live: '● Live', reconnecting: 'Reconnecting…', ended: 'Stream ended' }[s] || s;
  document.body.dataset.conn = s;
}

function onEvent(e) {
  switch (e.type) {
    case 'gift': return onGift(e);
    case 'ack': return onAck(e);
    case 'leaderboard': if (e.window === 'live') renderBoard(e.entries); return;
    case 'red_packet': return onPacket(e);
    case 'red_packet_claimed': return onPacketClaimed(e);
    case 'red_packet_expired': return onPacketExpired(e);
    case 'room_ended': return roomEnded();
    default:
  }
}

function roomEnded() {
  $('#room-state').textContent = 'Ended';
  $('#room-state').className = 'badge ended';
  $('#send').disabled = true;
  setConn('ended');
}

function signedInChanged() {
  const signed = !!me();
  $('#send-form').hidden = !signed;
  $('#send-signed-out').hidden = signed;
  loadWallet();
  loadMyRank();
  for (const c of state.packets.values()) renderPacket(c);
}

function resync() {
  // Events were missed for good: start the feed over and reload the state.
  for (const c of state.cards) c.removed = true;
  dirty.clear();
  state.cards = [];
  state.byGift.clear();
  state.combos.clear();
  state.packets.clear();
  $('#feed').replaceChildren();
  $('#feed-empty').hidden = false;
  loadBoard();
  loadWallet();
  loadRoom();
}

async function loadRoom() {
  try {
    const r = await get(`/v1/rooms/${encodeURIComponent(roomId)}`, { auth: false });
    state.room = r;
    $('#room-title').textContent = r.title;
    document.title = `${r.title} — Applause`;
    $('#room-state').textContent = r.live ? 'Live' : 'Ended';
    $('#room-state').className = `badge ${r.live ? 'live' : 'ended'}`;
    return r;
  } catch (e) {
    $('#room-title').textContent = e.code === 'room_not_found' || e.status === 404 || e.status === 400 ? 'Room not found' : 'Room unavailable';
    $('#room-state').textContent = '';
    return null;
  }
}

async function main() {
  mountWaiting($('#waiting'));
  mountSignIn($('#signin'), { role: 'viewer', onChange: signedInChanged });
  $('#send-form').addEventListener('submit', send);
  $('#qty').addEventListener('input', updatePrice);
  try {
    const cat = await get('/v1/stickers', { auth: false });
    state.currency = cat.currency;
    state.decimals = cat.stickers.length ? decimalsOf(cat.stickers[0].price) : 2;
    for (const s of cat.stickers) state.stickers.set(s.id, s);
    state.selected = cat.stickers[0]?.id ?? null;
    renderStickers();
    updatePrice();
  } catch (e) {
    toast(describe(e), 'error');
  }
  signedInChanged();
  const room = await loadRoom();
  if (!room) { setConn('ended'); $('#conn').textContent = 'Offline'; return; }
  loadBoard();
  const feed = new RoomFeed(roomId, { token, backfill: 50, onEvent, onStatus: setConn, onResync: resync });
  // A read-only handle for tests and benchmarks: what this page received.
  window.applause = { feed, cards: () => state.cards.length };
  if (!room.live) roomEnded();
}

main();
