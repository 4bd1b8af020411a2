// `applause demo` prints page links that work with one click: the viewer
// link signs Alice in, the studio link opens Demo Star's live room.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startServer, launch, openPage, eventually } from './lib/harness.mjs';

/** Waits until #room-title is no longer loading, then asserts its text. */
async function titled(page, expected) {
  await page.waitForFunction(() => {
    const t = document.querySelector('#room-title')?.textContent ?? '';
    return t !== '' && !t.startsWith('Loading');
  });
  assert.equal(await page.textContent('#room-title'), expected);
}

test('the links printed by applause demo open signed-in pages', async () => {
  const server = await startServer({ command: 'demo' });
  const browser = await launch();
  try {
    const out = await eventually(() => {
      const text = readFileSync(server.logPath, 'utf8');
      return text.includes('Finance:') && text;
    }, 10000, 'the demo banner');
    const link = (label) => new RegExp(`${label}\\s+(http://\\S+)`).exec(out)?.[1];
    const watch = link('Alice watches and sends gifts:');
    const studio = link("Demo Star's studio:");
    assert.ok(watch?.includes('/watch/') && watch.includes('#token='), out);
    assert.ok(studio?.includes('/studio#token='), out);

    const alice = await openPage(browser);
    await alice.page.goto(watch);
    await alice.page.waitForSelector('#balance[data-amount="500.00"]');
    // The balance and the room load separately: wait for the room's title
    // (it reads "Loading…" until the room arrives), then check it.
    await titled(alice.page, 'Demo stream');
    const star = await openPage(browser);
    await star.page.goto(studio);
    await star.page.waitForFunction(() => window.applause?.feed?.status === 'live');
    await titled(star.page, 'Demo stream');
    // Alice's click shows up in the studio with its split.
    await alice.page.click('[data-sticker="rose"]');
    await alice.page.click('#send');
    await star.page.waitForSelector('.gift-row .split');
    for (const p of [alice, star]) { assert.deepEqual(p.problems(), []); await p.close(); }
  } finally {
    await browser.close();
    await server.stop();
  }
});
