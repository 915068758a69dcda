// The WebSocket gateway (spec/gateway.md): identify, heartbeats, resume after drops, and sends
// that are retried with the same nonce until acknowledged.

const FATAL = new Set([4004]);
/// Closes after which the session cannot be resumed, so the next connection identifies.
const FRESH = new Set([4011, 4012, 4002, 4005, 4001]);

export class Gateway extends EventTarget {
  constructor(token) {
    super();
    this.token = token;
    this.ws = null;
    this.sessionId = null;
    this.seq = 0;
    this.status = 'connecting';
    this.attempt = 0;
    this.heartbeat = null;
    this.awaitingAck = false;
    this.pending = new Map();
    /// The `voice_connect` waiting for its answer: { nonce, resolve, reject, timer }. Offers are
    /// sent one at a time, each after the last one's answer.
    this.voicePending = null;
    this.voiceQueue = Promise.resolve();
    this.stopped = false;
  }

  connect() {
    const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/v1/gateway`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.addEventListener('message', (e) => this.onFrame(JSON.parse(e.data)));
    ws.addEventListener('close', (e) => this.onClose(ws, e.code));
  }

  stop() {
    this.stopped = true;
    clearInterval(this.heartbeat);
    this.ws?.close(1000);
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.dispatchEvent(new CustomEvent('status', { detail: status }));
  }

  raw(op, d) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ op, d }));
  }

  onFrame(frame) {
    switch (frame.op) {
      case 'hello':
        this.startHeartbeat(frame.d.heartbeat_interval_ms);
        if (this.sessionId) {
          this.setStatus('catching_up');
          this.raw('resume', { token: this.token, session_id: this.sessionId, seq: this.seq });
        } else {
          this.identify();
        }
        break;
      case 'heartbeat_ack':
        this.awaitingAck = false;
        break;
      case 'invalid_session':
        this.sessionId = null;
        this.identify();
        break;
      case 'dispatch':
        if (frame.s <= this.seq) return;
        this.seq = frame.s;
        if (frame.t === 'READY') {
          this.sessionId = frame.d.session_id;
          this.attempt = 0;
          this.setStatus('live');
          this.resendPending();
        } else if (frame.t === 'RESUMED') {
          this.attempt = 0;
          this.setStatus('live');
          this.resendPending();
        }
        this.dispatchEvent(new CustomEvent('dispatch', { detail: { t: frame.t, d: frame.d } }));
        break;
      case 'ack':
      case 'error': {
        const entry = frame.d.nonce && this.pending.get(frame.d.nonce);
        if (entry) {
          this.pending.delete(frame.d.nonce);
          if (frame.op === 'ack') entry.resolve(frame.d.message_id);
          else entry.reject(Object.assign(new Error(frame.d.message), { code: frame.d.code }));
        } else if (frame.op === 'error' && frame.d.nonce && frame.d.nonce === this.voicePending?.nonce) {
          this.settleVoice(null, Object.assign(new Error(frame.d.message), { code: frame.d.code }));
        } else if (frame.op === 'error') {
          this.dispatchEvent(new CustomEvent('op_error', { detail: frame.d }));
        }
        break;
      }
      case 'voice_answer':
        if (frame.d.nonce === this.voicePending?.nonce) this.settleVoice(frame.d, null);
        break;
      default:
        break;
    }
  }

  identify() {
    this.seq = 0;
    this.raw('identify', { token: this.token, status: this.presence ?? 'online' });
  }

  startHeartbeat(interval) {
    clearInterval(this.heartbeat);
    this.awaitingAck = false;
    this.heartbeat = setInterval(() => {
      if (this.awaitingAck) {
        // No ack for a whole interval: the connection is dead even if the socket is not closed.
        this.ws.close(4000);
        return;
      }
      this.awaitingAck = true;
      this.raw('heartbeat', { seq: this.seq });
    }, interval);
  }

  onClose(ws, code) {
    if (ws !== this.ws) return;
    clearInterval(this.heartbeat);
    // The answer to an offer sent on this socket is lost with it.
    this.settleVoice(null, Object.assign(new Error('The connection to the node dropped.'), { code: 'disconnected' }));
    if (this.stopped) return;
    if (FATAL.has(code)) {
      this.setStatus('offline');
      this.dispatchEvent(new CustomEvent('auth_failed'));
      return;
    }
    if (FRESH.has(code)) this.sessionId = null;
    this.setStatus('reconnecting');
    const delay = Math.min(10_000, 250 * 2 ** this.attempt) * (0.75 + Math.random() / 2);
    this.attempt += 1;
    setTimeout(() => this.connect(), delay);
  }

  /// Sends a message; resolves with its id once the node has made it durable.
  send(message) {
    const nonce = crypto.randomUUID();
    return new Promise((resolve, reject) => {
      this.pending.set(nonce, { message: { ...message, nonce }, resolve, reject });
      if (this.status === 'live') this.raw('send', { ...message, nonce });
    });
  }

  resendPending() {
    for (const { message } of this.pending.values()) this.raw('send', message);
  }

  typing(guildId, channelId) {
    this.raw('typing', { guild_id: guildId, channel_id: channelId });
  }

  /// Offers `sdp` for a voice channel (a join, a move, or more listening slots); resolves with
  /// the node's `voice_answer` payload.
  voiceConnect(d) {
    const offer = this.voiceQueue.then(() => this.offerVoice(d));
    this.voiceQueue = offer.catch(() => {});
    return offer;
  }

  offerVoice(d) {
    if (this.status !== 'live') {
      return Promise.reject(Object.assign(new Error('Not connected to the node.'), { code: 'disconnected' }));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.settleVoice(null, Object.assign(new Error('The node did not answer the voice offer.'), { code: 'timeout' })), 15_000);
      const nonce = crypto.randomUUID();
      this.voicePending = { nonce, resolve, reject, timer };
      this.raw('voice_connect', { ...d, nonce });
    });
  }

  settleVoice(answer, error) {
    const pending = this.voicePending;
    if (!pending) return;
    this.voicePending = null;
    clearTimeout(pending.timer);
    if (error) pending.reject(error);
    else pending.resolve(answer);
  }

  voiceState(selfMute, selfDeaf) {
    this.raw('voice_state', { self_mute: selfMute, self_deaf: selfDeaf });
  }

  voiceLeave() {
    this.raw('voice_leave', {});
  }

  setPresence(status) {
    this.presence = status;
    this.raw('presence', { status });
  }
}
