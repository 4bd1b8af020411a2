// A room's live events over the WebSocket, exactly once and in order.
//
// The socket reconnects by itself (backoff up to 5 s) and resumes with
// `{"type":"resume","epoch","since_seq"}` from the last seq it delivered;
// every event is de-duplicated by seq, so a replay that overlaps what was
// already shown adds nothing. `resync_required` (the gap is older than the
// server's history, or the room's epoch changed) starts over: the page
// reloads its state through `onResync`.

export class RoomFeed {
  /**
   * @param {string} roomId
   * @param {{token?: () => string|null, backfill?: number, onEvent: (e) => void,
   *          onStatus?: (s: string) => void, onResync?: () => void}} opts
   */
  constructor(roomId, opts) {
    this.roomId = roomId;
    this.opts = opts;
    this.epoch = null;
    this.lastSeq = null; // the highest seq delivered
    this.seen = new Set(); // seqs delivered since lastSeq's floor (bounded below)
    this.received = 0;
    this.attempt = 0;
    this.closed = false;
    this.status = 'connecting';
    this.connect();
  }

  setStatus(s) {
    if (this.status === s) return;
    this.status = s;
    this.opts.onStatus?.(s);
  }

  url() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = new URLSearchParams({ room: this.roomId });
    const t = this.opts.token?.();
    if (t) q.set('access_token', t);
    return `${proto}//${location.host}/v1/ws?${q}`;
  }

  connect() {
    if (this.closed) return;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onmessage = (m) => this.frame(ws, m.data);
    ws.onclose = (ev) => {
      if (this.ws !== ws || this.closed) return;
      this.ws = null;
      if (this.status === 'ended') return;
      // 4404-like refusals still retry slowly: a room may be created later.
      this.setStatus('reconnecting');
      const delay = Math.min(5000, 250 * 2 ** this.attempt++) + Math.floor(Math.random() * 200);
      this.timer = setTimeout(() => this.connect(), ev.code === 1008 ? 5000 : delay);
    };
  }

  /** Drops the current connection (it reconnects and resumes by itself). */
  drop() { this.ws?.close(); }

  close() {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws?.close(1000);
  }

  frame(ws, data) {
    let f;
    try { f = JSON.parse(data); } catch { return; }
    switch (f.type) {
      case 'welcome': {
        this.attempt = 0;
        if (this.epoch === f.epoch && this.lastSeq != null) {
          // Ask for everything after the last event shown (nothing if none was missed).
          this.resumeKind = 'reconnect';
          if (f.seq > this.lastSeq) this.send(ws, { type: 'resume', epoch: f.epoch, since_seq: this.lastSeq });
        } else {
          if (this.epoch != null && this.epoch !== f.epoch) { this.reset(); this.opts.onResync?.(); }
          this.epoch = f.epoch;
          this.lastSeq = f.seq;
          const back = this.opts.backfill || 0;
          this.resumeKind = 'backfill';
          // A first visit shows the room's recent events (bounded by the server's history).
          if (back > 0 && f.seq > 0) {
            this.lastSeq = Math.max(0, f.seq - back);
            this.send(ws, { type: 'resume', epoch: f.epoch, since_seq: this.lastSeq });
          }
        }
        this.setStatus('live');
        return;
      }
      case 'resync_required':
        // Live delivery goes on after it. For the first visit's backfill it
        // only means the history is shorter than asked; after a reconnect,
        // events were missed for good: the page reloads its state.
        if (this.resumeKind === 'backfill') return;
        this.seen = new Set();
        this.floorSeq = this.lastSeq;
        this.opts.onResync?.();
        return;
      case 'error':
        return;
      default:
        if (typeof f.seq !== 'number' || f.epoch !== this.epoch) return;
        if (f.seq <= this.floor || this.seen.has(f.seq)) return; // a replay of what we showed
        this.seen.add(f.seq);
        this.received++;
        if (f.seq > this.lastSeq) this.lastSeq = f.seq;
        this.trim();
        this.opts.onEvent(f);
        if (f.type === 'room_ended') {
          this.setStatus('ended');
          this.closed = true;
          ws.close(1000);
        }
    }
  }

  get floor() { return this.floorSeq ?? -1; }

  /** Keeps the seen set small: far-behind seqs can never be replayed to us again. */
  trim() {
    if (this.seen.size < 4096) return;
    const keep = [...this.seen].sort((a, b) => a - b).slice(-2048);
    this.floorSeq = keep[0] - 1;
    this.seen = new Set(keep);
  }

  reset() {
    this.epoch = null;
    this.lastSeq = null;
    this.seen = new Set();
    this.floorSeq = undefined;
  }

  send(ws, obj) {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }
}
