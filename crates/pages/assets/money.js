// Money in the pages: amounts stay the API's decimal strings; when a page
// must add or compare them it does so in integer minor units (BigInt), never
// in floating point.

/** The number of decimals of an amount string ("1.99" → 2, "5" → 0). */
export function decimalsOf(s) {
  const i = String(s).indexOf('.');
  return i < 0 ? 0 : String(s).length - i - 1;
}

/** "12.34" → 1234n at `decimals` (2). Returns null for anything not an amount. */
export function toMinor(s, decimals) {
  const m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(String(s).trim());
  if (!m) return null;
  const frac = m[3] || '';
  if (frac.length > decimals) return null;
  const v = BigInt(m[2] + frac.padEnd(decimals, '0'));
  return m[1] === '-' ? -v : v;
}

/** 1234n at 2 decimals → "12.34". */
export function fromMinor(v, decimals) {
  const neg = v < 0n;
  let s = (neg ? -v : v).toString();
  if (decimals > 0) {
    s = s.padStart(decimals + 1, '0');
    s = s.slice(0, s.length - decimals) + '.' + s.slice(s.length - decimals);
  }
  return (neg ? '-' : '') + s;
}

/** The sum of amount strings, exact, as a string with the widest decimals seen. */
export function sum(amounts, decimals) {
  let d = decimals ?? 0;
  if (decimals == null) for (const a of amounts) d = Math.max(d, decimalsOf(a));
  let t = 0n;
  for (const a of amounts) t += toMinor(a, d) ?? 0n;
  return fromMinor(t, d);
}

/** Compares two amount strings exactly: -1, 0 or 1. */
export function compare(a, b) {
  const d = Math.max(decimalsOf(a), decimalsOf(b));
  const x = toMinor(a, d), y = toMinor(b, d);
  return x < y ? -1 : x > y ? 1 : 0;
}

/** "1234.5" with a currency code → "USD 1,234.50"-like text for people (digits untouched). */
export function show(amount, currency) {
  const s = String(amount);
  const neg = s.startsWith('-');
  const [int, frac] = (neg ? s.slice(1) : s).split('.');
  const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const sym = currency === 'USD' ? '$' : currency === 'EUR' ? '€' : currency === 'GBP' ? '£' : '';
  const body = frac !== undefined ? `${grouped}.${frac}` : grouped;
  const text = sym ? `${sym}${body}` : `${body}${currency ? ' ' + currency : ''}`;
  return neg ? `−${text}` : text;
}
