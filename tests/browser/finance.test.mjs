// The finance page in a real browser: the report table equals the API's
// JSON for every grouping, the CSV downloads as an attachment, a refund
// with a reason and a confirmation moves the totals.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startServer, token, api, buy, seed, launch, openPage, screenshot } from './lib/harness.mjs';

let server, browser;
before(async () => {
  server = await startServer();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const usd = (a) => `$${a.replace(/\B(?=(\d{3})+(?!\d))/g, ',')}`;
const COLS = ['gifts', 'gross', 'store_fees', 'broadcaster_earnings', 'platform_revenue', 'refunds', 'net'];
const fmt = (row, k) => (k === 'gifts' ? String(row[k]) : usd(row[k]));

async function tableRows(page) {
  return page.$$eval('#report tbody tr[data-key]', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
}

test('finance: the table equals the API, the CSV downloads, a refund moves the totals', async () => {
  const { roomId, tokens } = await seed(server, [['mia', 'Mia', '300.00'], ['ned', 'Ned', '80.00']]);
  const admin = tokens.admin;
  await api(server.base, 'POST', '/v1/topups', { tok: admin, body: { user_id: 'mia', channel: 'apple', amount: '120.00', receipt_id: 'mia-apple' } });
  const gifts = [];
  gifts.push(await buy(server, tokens.mia, roomId, 'castle', 1));
  gifts.push(await buy(server, tokens.mia, roomId, 'rocket', 2));
  gifts.push(await buy(server, tokens.ned, roomId, 'cake', 3, 'yum'));
  gifts.push(await buy(server, tokens.ned, roomId, 'heart', 7));
  const fin = token('fred', 'finance', 'Fred');

  const f = await openPage(browser, { acceptDownloads: true });
  await f.page.goto(`${server.base}/finance#token=${fin}`);
  await f.page.waitForSelector('#report tfoot tr');
  await f.page.waitForSelector('#check.check-ok');
  const from = await f.page.inputValue('#from');
  const to = await f.page.inputValue('#to');

  for (const g of ['day', 'channel', 'broadcaster', 'sticker']) {
    await f.page.selectOption('#group-by', g);
    await f.page.waitForSelector(`#report[data-group-by="${g}"]`);
    const json = (await api(server.base, 'GET', `/v1/finance/revenue?from=${from}&to=${to}&group_by=${g}&format=json`, { tok: fin })).body;
    assert.deepEqual(await tableRows(f.page), json.rows.map((r) => [r[g], ...COLS.map((k) => fmt(r, k))]), g);
    const foot = await f.page.$$eval('#report tfoot td', (tds) => tds.map((td) => td.textContent));
    assert.deepEqual(foot, ['Total', ...COLS.map((k) => fmt(json.totals, k))], g);
  }

  // The CSV: a download with the server's file name and exactly the API's bytes.
  const csvResp = await api(server.base, 'GET', `/v1/finance/revenue?from=${from}&to=${to}&group_by=sticker&format=csv`, { tok: fin });
  assert.equal(csvResp.headers.get('content-disposition'), `attachment; filename="revenue-sticker-${from}-${to}.csv"`);
  const [download] = await Promise.all([f.page.waitForEvent('download'), f.page.click('#csv')]);
  assert.equal(download.suggestedFilename(), `revenue-sticker-${from}-${to}.csv`);
  assert.equal(readFileSync(await download.path(), 'utf8'), csvResp.body);

  // A statement, then a refund from it, with a reason and a confirmation.
  await f.page.fill('#broadcaster', 'star');
  await f.page.click('#statement-form button');
  await f.page.waitForSelector(`#statement tr[data-gift="${gifts[1].gift_id}"]`);
  assert.equal(await f.page.$$eval('#statement tbody tr[data-gift]', (r) => r.length), 4);
  await f.page.selectOption('#group-by', 'day');
  await f.page.waitForSelector('#report[data-group-by="day"]');
  const before = (await api(server.base, 'GET', `/v1/finance/revenue?from=${from}&to=${to}&group_by=day`, { tok: fin })).body.totals;
  assert.equal(before.refunds, '0.00');
  await f.page.click(`#statement tr[data-gift="${gifts[1].gift_id}"] button.refund`);
  await f.page.waitForSelector('#refund-dialog[open]');
  assert.match(await f.page.textContent('#refund-what'), /\$199\.98/);
  await screenshot(f.page, 'finance-refund-dialog');
  await f.page.fill('#refund-reason', 'chargeback from the card issuer');
  await f.page.click('#refund-confirm');
  await f.page.waitForFunction(() => !document.querySelector('#refund-dialog').open);
  await f.page.waitForSelector(`#statement tr.refunded[data-gift="${gifts[1].gift_id}"]`);
  const afterJson = (await api(server.base, 'GET', `/v1/finance/revenue?from=${from}&to=${to}&group_by=day`, { tok: fin })).body.totals;
  assert.equal(afterJson.refunds, '199.98');
  await f.page.waitForFunction((v) => document.querySelector('#report tfoot td[data-col="refunds"]')?.textContent === v, usd('199.98'));
  assert.equal(await f.page.textContent('#report tfoot td[data-col="net"]'), usd(afterJson.net));
  const summary = (await api(server.base, 'GET', '/v1/finance/summary', { tok: fin })).body;
  assert.equal(summary.refunds, '199.98');
  await f.page.waitForFunction(() => document.querySelector('[data-key="Refunds"] .v')?.textContent === '$199.98');
  const wallet = (await api(server.base, 'GET', '/v1/wallet', { tok: tokens.mia })).body;
  assert.equal(wallet.balance, '220.01'); // 420.00 − 199.99 − 199.98 + 199.98

  // A second refund of the same gift is refused with a sentence, not JSON.
  f.expect(409, '/refund');
  await f.page.fill('#refund-gift', gifts[1].gift_id);
  await f.page.click('#refund-form button');
  await f.page.waitForSelector('#refund-error:not([hidden])');
  assert.equal(await f.page.textContent('#refund-error'), 'This gift was already refunded.');
  await screenshot(f.page, 'finance');
  await f.page.setViewportSize({ width: 390, height: 844 });
  await screenshot(f.page, 'finance-phone');
  assert.deepEqual(f.problems(), []);
  await f.close();
});

test('finance refuses a viewer token with a sign-in message, not an error page', async () => {
  const viewer = token('vic', 'viewer', 'Vic');
  const f = await openPage(browser);
  await f.page.goto(`${server.base}/finance#token=${viewer}`);
  await f.page.waitForSelector('#signed-out:not([hidden])');
  assert.match(await f.page.textContent('#signed-out'), /may not read the books/);
  assert.equal(await f.page.isVisible('#books'), false);
  assert.deepEqual(f.problems(), []);
  await f.close();
});
