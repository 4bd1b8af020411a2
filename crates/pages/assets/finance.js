// The finance page `/finance`: the summary with the ledger check, the
// revenue report for a period grouped by day, channel, broadcaster or
// sticker (totals row from the API; CSV download), broadcaster statements,
// and refunds with a reason and a confirmation. Every figure is the API's
// string: this page adds nothing up.

import { $, h, get, post, claims, describe, toast, mountSignIn, mountWaiting, utcDay, request, clock } from './api.js';
import { show } from './money.js';

let currency = 'USD';
const money = (a) => show(a, currency);
const COLS = [
  ['gifts', 'Gifts'], ['gross', 'Gross'], ['store_fees', 'Store fees'], ['broadcaster_earnings', 'Broadcasters'],
  ['platform_revenue', 'Platform'], ['refunds', 'Refunds'], ['net', 'Net'],
];

function signedIn() {
  const c = claims();
  const ok = !!c && (c.role === 'finance' || c.role === 'admin');
  $('#signed-out').hidden = ok;
  $('#books').hidden = !ok;
  if (c && !ok) $('#signed-out').textContent = 'This token may not read the books. Sign in with a finance or admin token.';
  if (ok) { loadSummary(); loadReport(); }
}

// ---------- summary ----------

async function loadSummary() {
  try {
    const s = await get('/v1/finance/summary');
    currency = s.currency;
    const stat = (k, v, cls = '') => h(`div.stat${cls}`, { dataset: { key: k } }, h('div.k', k), h('div.v', v));
    $('#summary').replaceChildren(
      stat('Top-ups', money(s.topups)),
      stat('Wallets outstanding', money(s.wallets_outstanding)),
      stat('Red-packet escrow', money(s.escrow_open)),
      stat('Gifts', String(s.gifts)),
      stat('Gross gifts', money(s.gross_gifts)),
      stat('Store fees', money(s.store_fees)),
      stat('Broadcaster payable', money(s.broadcaster_payable)),
      stat('Platform revenue', money(s.platform_revenue), '.good'),
      stat('Refunds', money(s.refunds)),
    );
    const c = s.ledger_check;
    $('#check').className = c.ok ? 'check-ok' : 'check-bad';
    $('#check').textContent = c.ok
      ? `✓ Ledger balanced · ${c.transactions} transactions · ${c.entries} entries`
      : `✗ Ledger check failed: ${c.unbalanced_transactions} unbalanced, ${c.mismatched_wallets} mismatched wallets, ${c.negative_wallets} negative, ${c.bad_splits} bad splits, ${c.mismatched_escrow} escrow`;
  } catch (e) {
    if (e.status !== 401) toast(describe(e), 'error');
  }
}

// ---------- revenue ----------

function period() {
  return { from: $('#from').value, to: $('#to').value, group_by: $('#group-by').value };
}

async function loadReport(ev) {
  ev?.preventDefault();
  const p = period();
  const err = $('#report-error');
  err.hidden = true;
  if (!p.from || !p.to || p.to <= p.from) { err.hidden = false; err.textContent = 'Choose a period: “to” must be after “from”.'; return; }
  try {
    const r = await get(`/v1/finance/revenue?${new URLSearchParams({ ...p, format: 'json' })}`);
    currency = r.currency;
    const key = r.group_by;
    const label = { day: 'Day', channel: 'Channel', broadcaster: 'Broadcaster', sticker: 'Sticker' }[key] || key;
    const t = $('#report');
    t.dataset.groupBy = key;
    t.tHead.replaceChildren(h('tr', h('th', label), ...COLS.map(([, l]) => h('th.num', l))));
    const cells = (row) => COLS.map(([k]) => h('td.num', { dataset: { col: k } }, k === 'gifts' ? String(row[k]) : money(row[k])));
    t.tBodies[0].replaceChildren(...r.rows.map((row) => h('tr', { dataset: { key: row[key] } }, h('td', { dataset: { col: 'key' } }, row[key]), ...cells(row))));
    if (!r.rows.length) t.tBodies[0].append(h('tr', h('td.empty', { colSpan: COLS.length + 1 }, 'No gifts in this period.')));
    t.tFoot.replaceChildren(h('tr', h('td', 'Total'), ...cells(r.totals)));
  } catch (e) {
    err.hidden = false;
    err.textContent = describe(e);
  }
}

let downloading = false;
async function downloadCsv() {
  if (downloading) return;
  const p = period();
  if (!p.from || !p.to || p.to <= p.from) return loadReport();
  downloading = true;
  $('#csv').disabled = true;
  try {
    // fetch (the token is a header, not a cookie), then hand the file to the browser.
    const resp = await request('GET', `/v1/finance/revenue?${new URLSearchParams({ ...p, format: 'csv' })}`, { raw: true });
    const blob = await resp.blob();
    const cd = resp.headers.get('Content-Disposition') || '';
    const name = /filename="([^"]+)"/.exec(cd)?.[1] || `revenue-${p.group_by}-${p.from}-${p.to}.csv`;
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: name, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (e) {
    toast(describe(e), 'error');
  } finally {
    downloading = false;
    $('#csv').disabled = false;
  }
}

// ---------- statements ----------

async function loadStatement(ev) {
  ev?.preventDefault();
  const id = $('#broadcaster').value.trim();
  const err = $('#statement-error');
  err.hidden = true;
  if (!id) return;
  const p = period();
  try {
    const s = await get(`/v1/finance/broadcasters/${encodeURIComponent(id)}/statement?${new URLSearchParams({ from: p.from, to: p.to })}`);
    const t = $('#statement');
    t.tHead.replaceChildren(h('tr', ...['Time', 'Gift', 'Sender', 'Sticker', 'Amount', 'Store', 'Broadcaster', 'Platform', 'Refund', ''].map((x, i) => h(i >= 4 && i <= 8 ? 'th.num' : 'th', x))));
    t.tBodies[0].replaceChildren(...s.gifts.map((g) => h(`tr${g.refunded_at ? '.refunded' : ''}`, { dataset: { gift: g.gift_id } },
      h('td', new Date(g.created_at).toISOString().slice(0, 10) + ' ' + clock(g.created_at)),
      h('td.keep', h('code', g.gift_id.slice(0, 12) + '…')),
      h('td', g.sender_id),
      h('td', `${g.sticker_id}${g.quantity > 1 ? ' ×' + g.quantity : ''}`),
      h('td.num', money(g.amount)), h('td.num', money(g.split.store)), h('td.num', money(g.split.broadcaster)), h('td.num', money(g.split.platform)),
      h('td.num.keep', money(g.refund)),
      h('td.keep', g.refunded_at ? h('span.muted', 'refunded') : h('button.refund', { type: 'button', onclick: () => askRefund(g.gift_id) }, 'Refund…')),
    )));
    if (!s.gifts.length) t.tBodies[0].append(h('tr', h('td.empty', { colSpan: 10 }, 'No gifts for this broadcaster in the period.')));
    const x = s.totals;
    t.tFoot.replaceChildren(h('tr', h('td', 'Total'), h('td', `${x.gifts} gifts`), h('td'), h('td'),
      h('td.num', money(x.gross)), h('td.num', money(x.store_fees)), h('td.num', money(x.broadcaster_earnings)), h('td.num', money(x.platform_revenue)),
      h('td.num', money(x.refunds)), h('td', `payout ${money(x.broadcaster_net)}`)));
  } catch (e) {
    err.hidden = false;
    err.textContent = describe(e);
  }
}

// ---------- refunds ----------

let refunding = null;
async function askRefund(giftId) {
  const err = $('#refund-error');
  err.hidden = true;
  try {
    const g = await get(`/v1/gifts/${encodeURIComponent(giftId)}`);
    if (g.refunded_at) { err.hidden = false; err.textContent = 'This gift was already refunded.'; return; }
    refunding = g;
    $('#refund-what').textContent = `${money(g.amount)} — ${g.sender_name || g.sender_id} sent ${g.sticker_id}${g.quantity > 1 ? ' ×' + g.quantity : ''} to ${g.broadcaster_id} on ${new Date(g.created_at).toISOString().slice(0, 10)}.`;
    $('#refund-reason').value = '';
    $('#refund-dialog-error').hidden = true;
    $('#refund-confirm').textContent = `Refund ${money(g.amount)}`;
    $('#refund-dialog').showModal();
  } catch (e) {
    err.hidden = false;
    err.textContent = e.status === 404 ? 'No gift with that id.' : describe(e);
  }
}

let confirming = false;
async function confirmRefund(ev) {
  ev.preventDefault();
  if (confirming || !refunding) return;
  const reason = $('#refund-reason').value.trim();
  const err = $('#refund-dialog-error');
  if (!reason) { err.hidden = false; err.textContent = 'A reason is required.'; return; }
  confirming = true;
  $('#refund-confirm').disabled = true;
  try {
    await post(`/v1/finance/gifts/${encodeURIComponent(refunding.gift_id)}/refund`, { reason });
    $('#refund-dialog').close();
    toast(`Refunded ${money(refunding.amount)} to ${refunding.sender_id}.`, 'ok');
    refunding = null;
    await Promise.all([loadSummary(), loadReport(), $('#broadcaster').value.trim() ? loadStatement() : null]);
  } catch (e) {
    err.hidden = false;
    err.textContent = describe(e);
  } finally {
    confirming = false;
    $('#refund-confirm').disabled = false;
  }
}

function main() {
  mountWaiting($('#waiting'));
  // The current month by default: [first of the month, tomorrow).
  $('#from').value = `${utcDay(0).slice(0, 8)}01`;
  $('#to').value = utcDay(1);
  $('#report-form').addEventListener('submit', loadReport);
  $('#group-by').addEventListener('change', () => loadReport());
  $('#csv').addEventListener('click', downloadCsv);
  $('#statement-form').addEventListener('submit', loadStatement);
  $('#refund-form').addEventListener('submit', (e) => { e.preventDefault(); const id = $('#refund-gift').value.trim(); if (id) askRefund(id); });
  $('#refund-confirm-form').addEventListener('submit', confirmRefund);
  $('#refund-cancel').addEventListener('click', () => { refunding = null; $('#refund-dialog').close(); });
  mountSignIn($('#signin'), { role: 'finance', onChange: signedIn });
  signedIn();
  window.applause = { ready: true };
}

main();
