// The broadcaster studio in a real browser: open a stream, see gifts with
// their split and the earnings, acknowledge (the sender sees it under the
// gift), a second ack is refused inline, end the stream.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, token, api, buy, launch, openPage, screenshot } from './lib/harness.mjs';

let server, browser;
before(async () => {
  server = await startServer();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the studio opens a stream, shows gifts with split and earnings, acknowledges, and ends the stream', async () => {
  const admin = token('admin', 'admin', 'Admin');
  const star = token('nova', 'broadcaster', 'Nova');
  const kim = token('kim', 'viewer', 'Kim');
  await api(server.base, 'POST', '/v1/topups', { tok: admin, body: { user_id: 'kim', channel: 'apple', amount: '500.00', receipt_id: 'kim-1' } });

  const studio = await openPage(browser);
  await studio.page.goto(`${server.base}/studio#token=${star}`);
  await studio.page.fill('#title', 'Cooking with Nova');
  await studio.page.click('#open');
  await studio.page.waitForFunction(() => window.applause?.feed?.status === 'live');
  const roomId = await studio.page.evaluate(() => window.applause.feed.roomId);
  assert.equal(await studio.page.textContent('#room-title'), 'Cooking with Nova');
  assert.ok((await studio.page.inputValue('#overlay-url')).endsWith(`/overlay/${roomId}?min=0.00&duration=6`));

  const viewer = await openPage(browser);
  await viewer.page.goto(`${server.base}/watch/${roomId}#token=${kim}`);
  await viewer.page.waitForFunction(() => window.applause?.feed?.status === 'live');

  const g1 = await buy(server, kim, roomId, 'cake', 1, 'for the recipe');
  const g2 = await buy(server, kim, roomId, 'rocket', 1);
  const row1 = `.gift-row[data-gift="${g1.gift_id}"]`;
  await studio.page.waitForSelector(row1);
  await studio.page.waitForSelector(`.gift-row[data-gift="${g2.gift_id}"]`);
  const splitText = await studio.page.textContent(`${row1} .split`);
  assert.ok(splitText.includes(`You $${g1.split.broadcaster}`), splitText);
  assert.ok(splitText.includes(`Store $${g1.split.store}`), splitText);
  assert.ok(splitText.includes(`Platform $${g1.split.platform}`), splitText);
  // Earnings come from the statement, summed exactly.
  const st = await api(server.base, 'GET', `/v1/finance/broadcasters/nova/statement?from=${new Date().toISOString().slice(0, 10)}&to=${new Date(Date.now() + 86400000).toISOString().slice(0, 10)}`, { tok: star });
  await studio.page.waitForFunction((v) => document.querySelector('#earn-today')?.textContent === v, `$${st.body.totals.broadcaster_net}`);
  assert.equal(await studio.page.textContent('#earn-stream'), `$${st.body.totals.broadcaster_net}`);
  assert.equal(await studio.page.textContent('#gifts-stream'), '2');

  // One click on a quick reply: the sender sees it under the gift, highlighted.
  await studio.page.click(`${row1} button.quick >> nth=0`);
  await studio.page.waitForSelector(`${row1} .acked`);
  await viewer.page.waitForSelector('#feed .ack.ack-mine');
  const ackCard = await viewer.page.$eval('#feed .ack.ack-mine', (el) => el.closest('.card').dataset.gifts);
  assert.equal(ackCard, g1.gift_id);
  assert.equal(await viewer.page.textContent('#feed .ack.ack-mine .ack-text'), 'Thank you so much! 💖');

  // A second ack (here: someone acked it from another device first) is refused inline.
  studio.expect(409, '/ack');
  await studio.page.route(`**/v1/gifts/${g2.gift_id}/ack`, async (route) => {
    await api(server.base, 'POST', `/v1/gifts/${g2.gift_id}/ack`, { tok: star, body: { text: 'from my phone' } });
    await route.continue();
  });
  const row2 = `.gift-row[data-gift="${g2.gift_id}"]`;
  await studio.page.fill(`${row2} input[name=ack]`, 'thanks!');
  await studio.page.click(`${row2} button.ack`);
  await studio.page.waitForSelector(`${row2} .inline-error`);
  assert.equal(await studio.page.textContent(`${row2} .inline-error`), 'Already acknowledged.');
  await screenshot(studio.page, 'studio');
  await studio.page.setViewportSize({ width: 390, height: 844 });
  await screenshot(studio.page, 'studio-phone');
  await studio.page.setViewportSize({ width: 1280, height: 860 });

  // The studio remembers the room across a reload; ending it needs a confirmation.
  await studio.page.reload();
  await studio.page.waitForFunction(() => window.applause?.feed?.status === 'live');
  await studio.page.click('#end');
  await studio.page.click('#end-confirm');
  await studio.page.waitForSelector('#go-live:not([hidden])');
  const room = await api(server.base, 'GET', `/v1/rooms/${roomId}`);
  assert.equal(room.body.live, false);
  await viewer.page.waitForSelector('#conn[data-state="ended"]');
  for (const p of [studio, viewer]) { assert.deepEqual(p.problems(), []); await p.close(); }
});

test('the overlay honours ?min= and plays the studio’s test alert with ?demo=1', async () => {
  const admin = token('admin', 'admin', 'Admin');
  const star = token('zed', 'broadcaster', 'Zed');
  const lou = token('lou', 'viewer', 'Lou');
  await api(server.base, 'POST', '/v1/topups', { tok: admin, body: { user_id: 'lou', channel: 'google', amount: '100.00', receipt_id: 'lou-1' } });
  const room = await api(server.base, 'POST', '/v1/rooms', { tok: star, body: { title: 'Overlay' } });
  const roomId = room.body.room_id;
  const ov = await openPage(browser, { viewport: { width: 1280, height: 720 } });
  await ov.page.goto(`${server.base}/overlay/${roomId}?min=5.00&duration=1`);
  await ov.page.waitForFunction(() => window.applause?.feed?.status === 'live');
  await buy(server, lou, roomId, 'rose', 1); // 0.99: below the minimum
  await buy(server, lou, roomId, 'cake', 1); // 9.99: shown
  await ov.page.waitForSelector('.alert');
  assert.match(await ov.page.textContent('.alert'), /Lou sent Cake/);
  assert.equal(await ov.page.evaluate(() => window.applause.gifts()), 2);
  assert.equal(await ov.page.evaluate(() => window.applause.shown()), 1);
  assert.equal(await ov.page.evaluate(() => window.applause.queued()), 0);

  const demo = await openPage(browser, { viewport: { width: 1280, height: 720 } });
  await demo.page.goto(`${server.base}/overlay/${roomId}?demo=1`);
  await demo.page.waitForSelector('.alert.tier-5');
  assert.match(await demo.page.textContent('.alert'), /Test alert sent Rocket/);
  await screenshot(demo.page, 'overlay-test-alert');
  for (const p of [ov, demo]) { assert.deepEqual(p.problems(), []); await p.close(); }
});
