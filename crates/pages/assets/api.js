// The pages' API client: the token (from the link's `#token=` fragment, kept
// in sessionStorage so it never reaches a server log), JSON requests with the
// error handling every page shares (401 → sign in, 429 → wait Retry-After and
// retry, network or 5xx → retry), and small DOM helpers.

const TOKEN_KEY = 'applause.token';

/** Takes `#token=` from the address into sessionStorage and out of the address bar. */
function adoptFragmentToken() {
  const h = new URLSearchParams(location.hash.slice(1));
  const t = h.get('token');
  if (t) {
    sessionStorage.setItem(TOKEN_KEY, t.trim());
    h.delete('token');
    const rest = h.toString();
    history.replaceState(null, '', location.pathname + location.search + (rest ? '#' + rest : ''));
  }
}
adoptFragmentToken();

export function token() { return sessionStorage.getItem(TOKEN_KEY); }
export function setToken(t) { sessionStorage.setItem(TOKEN_KEY, t.trim()); }
export function clearToken() { sessionStorage.removeItem(TOKEN_KEY); }

/** The token's claims (display only: the server decides who we are). */
export function claims() {
  const t = token();
  if (!t) return null;
  try {
    const part = t.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const c = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), '=')));
    if (typeof c.sub !== 'string') return null;
    if (typeof c.exp === 'number' && c.exp * 1000 < Date.now()) return null;
    return { sub: c.sub, role: c.role, name: c.name || c.sub };
  } catch {
    return null;
  }
}

/** An API refusal, with a sentence for a person (never the raw body). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const FRIENDLY = {
  unauthorized: 'Please sign in again.',
  forbidden: 'Your account may not do that.',
  insufficient_funds: 'Not enough balance. Top up your wallet to send this.',
  rate_limited: 'Slow down a little.',
  room_not_found: 'This room does not exist.',
  room_not_live: 'This stream has ended.',
  self_gift: 'You cannot send gifts to your own stream.',
  already_claimed: 'Already claimed.',
  red_packet_gone: 'This red packet is gone.',
  already_acknowledged: 'Already acknowledged.',
  already_refunded: 'This gift was already refunded.',
  unavailable: 'The service is busy. Nothing was charged; try again.',
  network: 'Cannot reach the server. Check your connection.',
};

/** A sentence for a person from an ApiError (or anything thrown). */
export function describe(e) {
  if (e instanceof ApiError) {
    if (FRIENDLY[e.code]) return FRIENDLY[e.code];
    if (e.message && e.status < 500) return e.message;
    return FRIENDLY.unavailable;
  }
  return FRIENDLY.network;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let onUnauthorized = () => {};
let onWaiting = () => {};
/** Called on a 401 (show the sign-in prompt). */
export function whenUnauthorized(f) { onUnauthorized = f; }
/** Called with seconds while a 429 is being waited out (0 when done). */
export function whenWaiting(f) { onWaiting = f; }

/**
 * A JSON request. `key` is the Idempotency-Key of one click: the same key is
 * sent on every retry, so a retried purchase never charges twice.
 * Resolves to the parsed body; rejects with ApiError.
 */
export async function request(method, path, { body, key, auth = true, retries = 4, raw = false } = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = {};
    const t = auth ? token() : null;
    if (t) headers.Authorization = `Bearer ${t}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (key) headers['Idempotency-Key'] = key;
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch {
      if (attempt < retries) { await sleep(300 * 2 ** attempt); continue; }
      throw new ApiError(0, 'network', FRIENDLY.network);
    }
    if (resp.ok) return raw ? resp : resp.status === 204 ? null : resp.json();
    let code = 'error', message = '';
    try {
      const j = await resp.json();
      code = j?.error?.code || code;
      message = j?.error?.message || '';
    } catch { /* not JSON: keep the generic text */ }
    const again = attempt < retries;
    if (resp.status === 429 && again) {
      const secs = Math.min(30, Math.max(1, parseInt(resp.headers.get('Retry-After') || '1', 10) || 1));
      onWaiting(secs);
      await sleep(secs * 1000);
      onWaiting(0);
      continue;
    }
    // In flight elsewhere (our own earlier attempt) or the ledger busy: same key, later.
    if ((code === 'idempotency_key_in_flight' || resp.status === 503 || resp.status === 502) && again) {
      await sleep(300 * 2 ** attempt);
      continue;
    }
    if (resp.status === 401) onUnauthorized();
    throw new ApiError(resp.status, code, message);
  }
}

export const get = (path, opts) => request('GET', path, opts);
export const post = (path, body, opts = {}) => request('POST', path, { ...opts, body });

/** A tiny element builder: h('div.card.tier-3', {dataset…}, children…). */
export function h(spec, attrs, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** Shows a short message in the page's toast area. */
export function toast(text, kind = 'info') {
  let box = $('#toasts');
  if (!box) { box = h('div', { id: 'toasts' }); document.body.append(box); }
  const t = h(`div.toast.${kind}`, { role: 'status' }, text);
  box.append(t);
  setTimeout(() => t.remove(), 5000);
}

/**
 * The sign-in box: shows the signed-in user, or a field to paste a token.
 * `onChange` runs after signing in or out.
 */
export function mountSignIn(root, { role, onChange }) {
  const render = () => {
    root.replaceChildren();
    const c = claims();
    if (c) {
      root.append(
        h('span.who', { title: c.sub }, h('span.avatar', c.name.slice(0, 1).toUpperCase()), c.name),
        h('button.link', { type: 'button', onclick: () => { clearToken(); render(); onChange?.(); } }, 'Sign out'),
      );
      return;
    }
    const input = h('input', { type: 'password', name: 'token', placeholder: `Paste your ${role || ''} token`, autocomplete: 'off', 'aria-label': 'Token' });
    const form = h('form.signin', {
      onsubmit: (ev) => {
        ev.preventDefault();
        if (!input.value.trim()) return;
        setToken(input.value);
        if (!claims()) { clearToken(); toast('That token is not valid or has expired.', 'error'); return; }
        render();
        onChange?.();
      },
    }, input, h('button', { type: 'submit' }, 'Sign in'));
    root.append(form);
  };
  whenUnauthorized(() => {
    clearToken();
    render();
    toast('Your session has expired. Please sign in again.', 'error');
    onChange?.();
  });
  render();
  return render;
}

/** Shows the 429 wait in a status element. */
export function mountWaiting(el) {
  whenWaiting((secs) => {
    el.hidden = secs === 0;
    el.textContent = secs ? `Too many requests — retrying in ${secs} s…` : '';
  });
}

/** Today's UTC date and the next, as YYYY-MM-DD. */
export function utcDay(offsetDays = 0) {
  const d = new Date(Date.now() + offsetDays * 86400000);
  return d.toISOString().slice(0, 10);
}

/** "2026-12-03T07:01:02.345Z" → "07:01:02" in the viewer's local time. */
export function clock(iso) {
  const d = new Date(iso);
  return isNaN(d) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}
