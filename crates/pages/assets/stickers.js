// How a sticker looks: its emoji and its tier. The tier rises with the
// amount paid (colour, size, animation and display time grow with it, as
// Super Chat does), computed from the amount string in minor units.

import { toMinor } from './money.js';

const EMOJI = {
  clap: '👏', heart: '❤️', rose: '🌹', coffee: '☕', star: '⭐', cake: '🎂',
  fireworks: '🎆', rocket: '🚀', castle: '🏰', galaxy: '🌌',
};

/** The emoji of a sticker id or animation hint; a gift box for unknown ones. */
export function emoji(stickerId, hint) {
  return EMOJI[hint] || EMOJI[stickerId] || '🎁';
}

// Lower bounds in major units of the tiers 2..7 (tier 1 is below 1.00).
const TIER_FLOORS = [1n, 5n, 20n, 50n, 100n, 500n];

/** Tier 1..7 of an amount string ("0.99" → 1, "4.99" → 2, "500.00" → 7). */
export function tier(amount) {
  const cents = toMinor(amount, Math.max(2, (String(amount).split('.')[1] || '').length));
  if (cents == null) return 1;
  const scale = 10n ** BigInt(Math.max(2, (String(amount).split('.')[1] || '').length));
  let t = 1;
  for (const f of TIER_FLOORS) if (cents >= f * scale) t += 1;
  return t;
}

/** How long a viewer card stays highlighted, in ms, by tier. */
export function highlightMs(t) {
  return [0, 4000, 8000, 15000, 30000, 60000, 120000, 300000][t] || 4000;
}
