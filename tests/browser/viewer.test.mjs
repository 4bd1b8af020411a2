// The viewer page and the overlay in a real browser against a real server:
// buying, combos, red packets, acknowledgements and reconnects.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, seed, buy, api, launch, openPage, screenshot, eventually, token } from './lib/harness.mjs';

let server, browser;
before(async () => {
  server = await startServer();
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.stop();
});

const watchUrl = (roomId, tok) => `${server.base}/watch/${roomId}${tok ? `#token=${tok}` : ''}`;

async function cards(page) {
  return page.$$eval('#feed .card.gift', (els) => els.map((e) => ({
    sender: e.dataset.sender, sticker: e.dataset.sticker, count: Number(e.dataset.count), gifts: e.dataset.gifts.split(' '),
    amount: e.dataset.amount, acks: [...e.querySelectorAll('.ack')].map((a) => ({ text: a.querySelector('.ack-text').textContent, mine: a.classList.contains('ack-mine') })),
  })));
}

test('a gift bought on the page reaches a second viewer and the overlay; wallet and board update; a double click charges once', async () => {
  const { roomId, tokens } = await seed(server, [['alice1', 'Alice', '500.00'], ['bob1', 'Bob', '20.00']]);
  const alice = await openPage(browser);
  const bob = await openPage(browser, { viewport: { width: 390, height: 844 } });
  const overlay = await openPage(browser, { viewport: { width: 1280, height: 720 } });
  await alice.page.goto(watchUrl(roomId, tokens.alice1));
  await bob.page.goto(watchUrl(roomId, tokens.bob1));
  await overlay.page.goto(`${server.base}/overlay/${roomId}?duration=30`);
  for (const p of [alice, bob, overlay]) await p.page.waitForFunction(() => window.applause?.feed?.status === 'live');
  // The token left the address bar for sessionStorage.
  assert.ok(!alice.page.url().includes('token='));
  await alice.page.waitForSelector('#balance[data-amount="500.00"]');

  await alice.page.click('[data-sticker="star"]');
  await alice.page.fill('#qty', '2');
  await alice.page.fill('#msg', 'great stream!');
  const posts = [];
  alice.page.on('request', (r) => { if (r.method() === 'POST' && r.url().endsWith('/gifts')) posts.push(r.headers()['idempotency-key']); });
  await alice.page.dblclick('#send');

  const card = await bob.page.waitForSelector('#feed .card.gift[data-sender="alice1"]');
  assert.equal(await card.getAttribute('data-count'), '2');
  assert.equal(await card.getAttribute('data-amount'), '9.98');
  assert.match(await card.textContent(), /great stream!/);
  const alert = await overlay.page.waitForSelector('.alert');
  assert.match(await alert.textContent(), /Alice sent Star ×2/);
  assert.match(await alert.textContent(), /\$9\.98/);

  await alice.page.waitForSelector('#balance[data-amount="490.02"]');
  await bob.page.waitForFunction(() => document.querySelector('#podium')?.textContent.includes('Alice'));
  assert.match(await bob.page.textContent('#podium'), /Alice\s*\$9\.98/);
  await alice.page.waitForFunction(() => /#1/.test(document.querySelector('#my-rank')?.textContent || ''));

  // Exactly one purchase happened: the wallet and the board say so.
  const w = await api(server.base, 'GET', '/v1/wallet', { tok: tokens.alice1 });
  assert.equal(w.body.balance, '490.02');
  const board = await api(server.base, 'GET', `/v1/rooms/${roomId}/leaderboard?window=live`);
  assert.deepEqual(board.body.entries.map((e) => [e.user_id, e.amount]), [['alice1', '9.98']]);
  assert.equal((await cards(bob.page)).length, 1);
  await alice.page.waitForFunction(() => !document.querySelector('#send').disabled);
  assert.equal(posts.length, 1, 'a double click sends one request');

  await screenshot(alice.page, 'watch-desktop');
  await screenshot(bob.page, 'watch-phone');
  await screenshot(overlay.page, 'overlay');
  for (const p of [alice, bob, overlay]) { assert.deepEqual(p.problems(), []); await p.close(); }
});

test('a purchase whose response is lost is retried with the same Idempotency-Key and charges once', async () => {
  const { roomId, tokens } = await seed(server, [['carol', 'Carol', '10.00']]);
  const carol = await openPage(browser);
  const keys = [];
  let dropped = false;
  await carol.page.route('**/v1/rooms/*/gifts', async (route) => {
    keys.push(route.request().headers()['idempotency-key']);
    if (!dropped) {
      dropped = true;
      await route.fetch(); // the server commits the purchase…
      await route.abort('connectionreset'); // …and the answer never arrives
      return;
    }
    await route.continue();
  });
  await carol.page.goto(watchUrl(roomId, tokens.carol));
  await carol.page.waitForFunction(() => window.applause?.feed?.status === 'live');
  await carol.page.click('[data-sticker="coffee"]');
  await carol.page.click('#send');
  // The balance may already follow from the room feed: wait for the click's retry to finish.
  await eventually(() => keys.length === 2, 10000, 'the retry');
  await carol.page.waitForFunction(() => document.querySelector('#send')?.textContent === 'Send' && !document.querySelector('#send').disabled);
  await carol.page.waitForSelector('#balance[data-amount="8.01"]');
  assert.equal(keys.length, 2);
  assert.equal(await carol.page.isVisible('#send-error'), false);
  assert.equal(keys[0], keys[1]);
  const w = await api(server.base, 'GET', '/v1/wallet', { tok: tokens.carol });
  assert.equal(w.body.balance, '8.01');
  await carol.page.waitForSelector('#feed .card.gift[data-sender="carol"]');
  assert.equal((await cards(carol.page)).length, 1);
  // The one cut answer is the test's doing; anything else is a problem.
  const problems = carol.problems().filter((p) => !p.includes('ERR_CONNECTION_RESET'));
  assert.deepEqual(problems, []);
  await carol.close();
});

test('five identical gifts show one card ×5, and the broadcaster’s ack appears under it, highlighted for the sender', async () => {
  const { roomId, tokens } = await seed(server, [['dave', 'Dave', '50.00'], ['erin', 'Erin', '5.00']]);
  const dave = await openPage(browser);
  const erin = await openPage(browser);
  await dave.page.goto(watchUrl(roomId, tokens.dave));
  await erin.page.goto(watchUrl(roomId, tokens.erin));
  for (const p of [dave, erin]) await p.page.waitForFunction(() => window.applause?.feed?.status === 'live');
  const bought = [];
  for (let i = 0; i < 5; i++) bought.push(await buy(server, tokens.dave, roomId, 'rose', 1));
  await erin.page.waitForSelector('#feed .card.gift[data-count="5"]');
  const seen = await cards(erin.page);
  assert.equal(seen.length, 1);
  assert.deepEqual(seen[0].gifts, bought.map((g) => g.gift_id));
  assert.equal(seen[0].amount, '4.95');
  // Bought elsewhere, the sender's balance on this page follows.
  await dave.page.waitForSelector('#balance[data-amount="45.05"]');

  const ack = await api(server.base, 'POST', `/v1/gifts/${bought[2].gift_id}/ack`, { tok: tokens.star, body: { text: 'Thank you Dave!' } });
  assert.equal(ack.status, 200, JSON.stringify(ack.body));
  await dave.page.waitForSelector('#feed .ack.ack-mine');
  assert.deepEqual((await cards(dave.page))[0].acks, [{ text: 'Thank you Dave!', mine: true }]);
  await erin.page.waitForSelector('#feed .ack');
  assert.deepEqual((await cards(erin.page))[0].acks, [{ text: 'Thank you Dave!', mine: false }]);
  // Dave leads the live board (its push lands within a second), and his own
  // rank beside it says so.
  await dave.page.waitForSelector('#podium li.podium-1.me');
  await dave.page.waitForFunction(() => document.querySelector('#my-rank')?.textContent === 'Your rank: #1 · $4.95');
  await screenshot(dave.page, 'watch-combo-ack');
  for (const p of [dave, erin]) { assert.deepEqual(p.problems(), []); await p.close(); }
});

test('a red packet is claimed once through the page; a second claim says already claimed', async () => {
  const { roomId, tokens } = await seed(server, [['fay', 'Fay', '50.00'], ['gus', 'Gus', '1.00']]);
  const gus = await openPage(browser, { viewport: { width: 390, height: 844 } });
  await gus.page.goto(watchUrl(roomId, tokens.gus));
  await gus.page.waitForFunction(() => window.applause?.feed?.status === 'live');
  const drop = await api(server.base, 'POST', `/v1/rooms/${roomId}/red-packets`, {
    tok: tokens.fay, key: 'drop-1', body: { total: '3.00', count: 3, mode: 'equal' },
  });
  assert.equal(drop.status, 201, JSON.stringify(drop.body));
  await gus.page.click('.card.packet .claim');
  await gus.page.waitForSelector('.card.packet .packet-status');
  assert.equal(await gus.page.textContent('.card.packet .packet-status'), 'You got $1.00!');
  await gus.page.waitForSelector('#balance[data-amount="2.00"]');
  await gus.page.waitForFunction(() => document.querySelector('.card.packet')?.textContent.includes('2 left'));
  await screenshot(gus.page, 'watch-red-packet');

  // A reload shows the packet again (from the room's history); claiming again is refused.
  gus.expect(409, '/claim');
  await gus.page.reload();
  await gus.page.waitForSelector('.card.packet .claim:not([disabled])');
  await gus.page.click('.card.packet .claim');
  await gus.page.waitForSelector('.card.packet .packet-status');
  assert.equal(await gus.page.textContent('.card.packet .packet-status'), 'Already claimed');
  const w = await api(server.base, 'GET', '/v1/wallet', { tok: tokens.gus });
  assert.equal(w.body.balance, '2.00');
  assert.deepEqual(gus.problems(), []);
  await gus.close();
});

test('after a cut connection the page shows reconnecting, then every gift bought meanwhile exactly once', async () => {
  const { roomId, tokens } = await seed(server, [['hal', 'Hal', '100.00'], ['ivy', 'Ivy', '1.00']]);
  const ivy = await openPage(browser);
  let blocked = false;
  const sockets = [];
  await ivy.page.routeWebSocket(/\/v1\/ws/, (ws) => {
    if (blocked) { ws.close({ code: 1011, reason: 'cut by the test' }); return; }
    const upstream = ws.connectToServer();
    sockets.push({ ws, upstream });
  });
  await ivy.page.goto(watchUrl(roomId, tokens.ivy));
  await ivy.page.waitForFunction(() => window.applause?.feed?.status === 'live');
  const first = await buy(server, tokens.hal, roomId, 'heart', 1);
  await ivy.page.waitForSelector(`#feed .card.gift[data-gifts~="${first.gift_id}"]`);

  blocked = true;
  for (const s of sockets) { s.ws.close({ code: 1006 }); s.upstream.close(); }
  await ivy.page.waitForSelector('#conn[data-state="reconnecting"]');
  await screenshot(ivy.page, 'watch-reconnecting');
  const meanwhile = [];
  for (const s of ['rose', 'coffee', 'star', 'cake']) meanwhile.push(await buy(server, tokens.hal, roomId, s, 1));
  blocked = false;
  await ivy.page.waitForSelector('#conn[data-state="live"]');
  for (const g of meanwhile) await ivy.page.waitForSelector(`#feed .card.gift[data-gifts~="${g.gift_id}"]`);
  const seen = await cards(ivy.page);
  const ids = seen.flatMap((c) => c.gifts);
  assert.deepEqual(ids.slice().sort(), [first, ...meanwhile].map((g) => g.gift_id).sort());
  assert.equal(new Set(ids).size, ids.length, 'no gift twice');
  // And once more without a cut: live delivery goes on after the resume.
  const after = await buy(server, tokens.hal, roomId, 'clap', 1);
  await ivy.page.waitForSelector(`#feed .card.gift[data-gifts~="${after.gift_id}"]`);
  assert.equal((await cards(ivy.page)).length, 6);
  const problems = ivy.problems().filter((p) => !p.includes('/v1/ws'));
  assert.deepEqual(problems, []);
  await ivy.close();
});

test('signed out, the page watches and asks to sign in; a bad token is refused with a prompt, not an error page', async () => {
  const { roomId } = await seed(server, [['jay', 'Jay', '1.00']]);
  const anon = await openPage(browser);
  await anon.page.goto(watchUrl(roomId));
  await anon.page.waitForFunction(() => window.applause?.feed?.status === 'live');
  assert.equal(await anon.page.isVisible('#send-signed-out'), true);
  await anon.page.fill('.signin input', 'not-a-token');
  await anon.page.click('.signin button');
  await anon.page.waitForSelector('.toast.error');
  assert.match(await anon.page.textContent('.toast.error'), /not valid/);
  // A well-formed token signed with another secret: the server answers 401 and the page asks again.
  const forged = token('jay', 'viewer', 'Jay').replace(/\.[^.]+$/, '.AAAA');
  anon.expect(401, '/v1/');
  await anon.page.fill('.signin input', forged);
  await anon.page.click('.signin button');
  await anon.page.waitForFunction(() => document.querySelector('.signin input'));
  const body = await anon.page.textContent('body');
  assert.ok(!body.includes('{"error"'), 'no raw JSON');
  assert.deepEqual(anon.problems(), []);
  await anon.close();
});

test('429 is waited out (Retry-After) and retried with the same key; 402 asks to top up', async () => {
  const { roomId, tokens } = await seed(server, [['kit', 'Kit', '2.00']]);
  const kit = await openPage(browser);
  kit.expect(429, '/gifts');
  kit.expect(402, '/gifts');
  const keys = [];
  await kit.page.route('**/v1/rooms/*/gifts', async (route) => {
    keys.push(route.request().headers()['idempotency-key']);
    if (keys.length === 1) {
      await route.fulfill({ status: 429, headers: { 'Retry-After': '1', 'Content-Type': 'application/json' }, body: '{"error":{"code":"rate_limited","message":"slow down"}}' });
      return;
    }
    await route.continue();
  });
  await kit.page.goto(watchUrl(roomId, tokens.kit));
  await kit.page.waitForFunction(() => window.applause?.feed?.status === 'live');
  await kit.page.click('[data-sticker="rose"]');
  await kit.page.click('#send');
  await kit.page.waitForSelector('#waiting:not([hidden])');
  assert.match(await kit.page.textContent('#waiting'), /retrying in 1 s/);
  await kit.page.waitForSelector('#feed .card.gift[data-sender="kit"]');
  await kit.page.waitForSelector('#balance[data-amount="1.01"]');
  assert.equal(keys.length, 2);
  assert.equal(keys[0], keys[1], 'the retry reuses the click’s key');
  assert.equal(await kit.page.isVisible('#waiting'), false);

  await kit.page.click('[data-sticker="coffee"]'); // 1.99 > 1.01
  await kit.page.click('#send');
  await kit.page.waitForSelector('#send-error:not([hidden])');
  assert.match(await kit.page.textContent('#send-error'), /Not enough balance.*Top up/);
  assert.ok(!(await kit.page.textContent('body')).includes('insufficient_funds'), 'no raw code or JSON');
  assert.deepEqual(kit.problems(), []);
  await kit.close();
});
