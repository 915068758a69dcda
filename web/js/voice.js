// Voice channels: joining one with the microphone (WebRTC to the node's SFU, signalled over the
// gateway: spec/gateway.md), who is in each voice channel with speaking, mute and deafen marks,
// the Voice Connected panel (mute, deafen, disconnect, connection info from getStats), and
// moderators' server mute, deafen, move and disconnect.

import { h, $, clear, toast } from './dom.js';
import { state, on, notify, displayName, permsIn, channelOf, voiceMembers, applyVoiceState } from './state.js';
import { P, has } from './perms.js';
import { app } from './main.js';
import { avatar } from './layout.js';

/// Listening slots offered at first (at least). The SFU takes at most 26 media lines, one of
/// them the microphone, so 25 is the most there can be.
const MIN_SLOTS = 4;
const MAX_SLOTS = 25;

const ERRORS = {
  missing_permission: 'You do not have permission to connect to this voice channel.',
  unknown_channel: 'That voice channel no longer exists.',
  unknown_guild: 'You are no longer in that guild.',
  banned: 'You are banned from that guild.',
  guild_deleted: 'That guild was deleted.',
  voice_unavailable: 'This node does not serve voice channels.',
  rate_limited: 'Too many voice requests; wait a moment and try again.',
  no_microphone: 'The browser offered no microphone track.',
  bad_offer: 'The voice server could not read this browser’s offer.',
  offer_too_large: 'Too many people to listen to at once.',
};

const STATUS = {
  connecting: 'Connecting…',
  connected: 'Voice Connected',
  failed: 'Connection failed',
};

/// Own mute and deafen. Like Discord, they carry over from one call to the next.
const self = { mute: false, deaf: false };

/// This tab's call, or null: { guildId, channelId, pc, mic, status, answered, confirmed, sent,
/// slots, audio: Map(mid → <audio>), chain }.
let call = null;
let statsOpen = false;
let statsTimer = null;
/// Packet counts at the previous refresh, by mid, to tell live streams from silent ones.
let lastPackets = new Map();
let panel = null;
let menu = null;

const SVG = 'http://www.w3.org/2000/svg';
const ICONS = {
  mic: 'M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.92V21h2v-3.08A7 7 0 0 0 19 11h-2z',
  deaf: 'M12 2a9 9 0 0 0-9 9v7a3 3 0 0 0 3 3h3v-8H5v-2a7 7 0 0 1 14 0v2h-4v8h3a3 3 0 0 0 3-3v-7a9 9 0 0 0-9-9z',
  hangup: 'M12 9c-1.6 0-3.15.25-4.6.72v3.1c0 .39-.23.74-.56.9-.98.49-1.87 1.12-2.66 1.85-.18.18-.43.28-.7.28-.28 0-.53-.11-.71-.29L.29 13.08a.96.96 0 0 1 0-1.41C3.34 8.78 7.46 7 12 7s8.66 1.78 11.71 4.67c.39.39.39 1.02 0 1.41l-2.48 2.48c-.18.18-.43.29-.71.29-.27 0-.52-.11-.7-.28a11.3 11.3 0 0 0-2.67-1.85 1 1 0 0 1-.56-.9v-3.1C15.15 9.25 13.6 9 12 9z',
  info: 'M4 18h3v-4H4v4zm6 0h3v-8h-3v8zm6 0h3V6h-3v12z',
};

/// An icon drawn with SVG (no images: the CSP allows none from elsewhere), struck through if `off`.
function icon(name, off = false) {
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', `vicon${off ? ' off' : ''}`);
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  if (off) {
    const slash = document.createElementNS(SVG, 'path');
    slash.setAttribute('d', 'M3 3l18 18');
    slash.setAttribute('class', 'slash');
    svg.append(slash);
  }
  return svg;
}

const others = (c) => voiceMembers(c.guildId, c.channelId).filter((v) => v.user_id !== state.me.id).length;
const messageOf = (err) => ERRORS[err.code] || err.message || String(err);
const mySession = () => app.gateway?.sessionId ?? null;

/// Whether this user may speak in the call's channel (SPEAK; the node silences them otherwise).
function maySpeak(c) {
  return has(permsIn(c.guildId, c.channelId), P.SPEAK);
}

export function inVoice(channelId) {
  return call?.channelId === channelId;
}

/// Joins a voice channel, or moves the current call there.
export async function joinVoice(guildId, channelId) {
  const channel = channelOf(state.guilds.get(guildId), channelId);
  if (!channel || channel.kind !== 'voice') return;
  if (!has(permsIn(guildId, channelId), P.VIEW_CHANNEL | P.CONNECT)) {
    toast(ERRORS.missing_permission);
    return;
  }
  if (call && call.status !== 'failed') {
    if (call.channelId !== channelId) await moveTo(call, guildId, channelId);
    return;
  }
  if (call) teardown({ leave: true });
  if (!navigator.mediaDevices?.getUserMedia || !window.RTCPeerConnection) {
    toast('Voice needs a browser with WebRTC, on a secure page (HTTPS or localhost).');
    return;
  }
  const c = {
    guildId, channelId, pc: null, mic: null, status: 'connecting', answered: false, confirmed: false,
    sent: null, slots: 0, audio: new Map(), chain: Promise.resolve(),
  };
  call = c;
  lastPackets = new Map();
  changed();
  startStats();
  let mic;
  try {
    mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true }, video: false,
    });
  } catch (err) {
    if (call === c) teardown({ leave: false });
    toast(`Cannot use the microphone: ${err.message}`);
    return;
  }
  if (call !== c) {
    for (const t of mic.getTracks()) t.stop();
    return;
  }
  c.mic = mic;
  const pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' });
  c.pc = pc;
  const [track] = mic.getAudioTracks();
  track.enabled = !(self.mute || self.deaf);
  pc.addTransceiver(track, { direction: 'sendonly', streams: [mic] });
  addSlots(c, Math.max(MIN_SLOTS, others(c) + 1));
  pc.addEventListener('track', (e) => attachAudio(c, e));
  pc.addEventListener('connectionstatechange', () => onConnectionState(c));
  try {
    await negotiate(c);
  } catch (err) {
    if (call !== c) return;
    // Without an answer the node's state is unknown only if the socket dropped meanwhile.
    teardown({ leave: err.code === 'disconnected' || err.code === 'timeout' });
    toast(`Could not join ${channel.name}: ${messageOf(err)}`);
  }
}

async function moveTo(c, guildId, channelId) {
  const from = { guildId: c.guildId, channelId: c.channelId, confirmed: c.confirmed };
  Object.assign(c, { guildId, channelId, confirmed: false });
  changed();
  try {
    await negotiate(c);
    ensureSlots(c);
  } catch (err) {
    if (call !== c) return;
    Object.assign(c, from);
    changed();
    toast(`Could not move: ${messageOf(err)}`);
  }
}

function addSlots(c, target) {
  for (; c.slots < Math.min(target, MAX_SLOTS); c.slots += 1) c.pc.addTransceiver('audio', { direction: 'recvonly' });
}

/// More people in the channel than listening slots: add slots and offer again (the SFU pins
/// each speaker to a slot, so without one a speaker cannot be heard).
function ensureSlots(c) {
  if (!c.pc || !c.answered || c.slots >= MAX_SLOTS || others(c) < c.slots) return;
  addSlots(c, others(c) + 2);
  negotiate(c).catch((err) => {
    if (call === c) toast(`Could not listen to everyone: ${messageOf(err)}`);
  });
}

/// One offer/answer exchange on the gateway; exchanges run one after another.
function negotiate(c) {
  const run = c.chain.then(async () => {
    if (call !== c) return;
    await c.pc.setLocalDescription(await c.pc.createOffer());
    const sent = { ...self };
    let answer;
    try {
      answer = await app.gateway.voiceConnect({
        guild_id: c.guildId, channel_id: c.channelId, sdp: c.pc.localDescription.sdp,
        self_mute: sent.mute, self_deaf: sent.deaf,
      });
    } catch (err) {
      if (c.pc.signalingState === 'have-local-offer') await c.pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      throw err;
    }
    if (call !== c) return;
    await c.pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    c.answered = true;
    c.sent = sent;
    syncSelf(c);
    changed();
  });
  c.chain = run.catch(() => {});
  return run;
}

function attachAudio(c, e) {
  if (call !== c) return;
  let holder = $('#voice-audio');
  if (!holder) {
    holder = h('div', { id: 'voice-audio', hidden: true });
    document.body.append(holder);
  }
  const key = e.transceiver?.mid ?? e.track.id;
  c.audio.get(key)?.remove();
  const el = h('audio', { autoplay: true, dataset: { mid: key } });
  el.srcObject = new MediaStream([e.track]);
  el.muted = self.deaf;
  holder.append(el);
  c.audio.set(key, el);
  el.play().catch(() => {});
}

function onConnectionState(c) {
  if (call !== c) return;
  const s = c.pc.connectionState;
  if (s === 'closed') return;
  c.status = s === 'connected' ? 'connected' : s === 'failed' ? 'failed' : 'connecting';
  renderVoicePanel();
}

/// Ends this tab's call. `leave` tells the node; it is left out when the node already ended it
/// (or another window of this user took over, which a leave would disconnect).
function teardown({ leave }) {
  const c = call;
  if (!c) return;
  call = null;
  if (leave) app.gateway?.voiceLeave();
  c.pc?.close();
  for (const t of c.mic?.getTracks() || []) t.stop();
  for (const el of c.audio.values()) {
    el.srcObject = null;
    el.remove();
  }
  const mine = state.voice.get(c.guildId)?.get(state.me.id);
  if (leave && mine?.session_id === mySession()) state.voice.get(c.guildId).delete(state.me.id);
  stopStats();
  changed();
}

export function leaveVoice() {
  teardown({ leave: true });
}

function setSelf(mute, deaf) {
  Object.assign(self, { mute, deaf });
  if (call) {
    for (const t of call.mic?.getAudioTracks() || []) t.enabled = !(mute || deaf);
    for (const el of call.audio.values()) el.muted = deaf;
    const mine = state.voice.get(call.guildId)?.get(state.me.id);
    if (mine && mine.session_id === mySession()) Object.assign(mine, { self_mute: mute, self_deaf: deaf });
    syncSelf(call);
  }
  renderVoicePanel();
  refreshVoiceLists();
}

/// Tells the node the own mute and deafen if they changed since it last heard them.
function syncSelf(c) {
  if (!c.answered || app.gateway?.status !== 'live') return;
  if (c.sent && c.sent.mute === self.mute && c.sent.deaf === self.deaf) return;
  c.sent = { ...self };
  app.gateway.voiceState(self.mute, self.deaf);
}

/// Unmuting while deafened undeafens too, as in Discord.
export function toggleMute() {
  const muted = self.mute || self.deaf;
  setSelf(!muted, muted ? false : self.deaf);
}

export function toggleDeaf() {
  setSelf(self.mute, !self.deaf);
}

// ---- gateway events ----

export function onVoiceState(d) {
  applyVoiceState(d);
  const c = call;
  if (c && d.user_id === state.me.id) {
    if (d.session_id !== mySession()) {
      if (d.channel_id) {
        teardown({ leave: false });
        toast('You joined voice from another window.', 'info');
      }
    } else if (!d.channel_id) {
      // A move is announced as a leave marked `moved`, then the join that follows.
      if (c.confirmed && !d.moved) checkGone(c);
    } else if (d.guild_id === c.guildId && d.channel_id === c.channelId) {
      c.confirmed = true;
    } else if (c.confirmed && c.answered) {
      // A moderator moved this call to another channel.
      Object.assign(c, { guildId: d.guild_id, channelId: d.channel_id });
      const name = channelOf(state.guilds.get(d.guild_id), d.channel_id)?.name ?? 'another channel';
      toast(`You were moved to ${name}.`, 'info');
      notify('channels');
    }
  }
  if (d.guild_id === state.current.guildId) refreshVoiceLists();
  if (call && d.guild_id === call.guildId && d.channel_id === call.channelId) ensureSlots(call);
  renderVoicePanel();
}

/// The node removed this session's voice state: unless a new one followed (a move), the call
/// is over (a moderator disconnected it, or the channel or the right to it went away).
function checkGone(c) {
  if (call !== c) return;
  const session = mySession();
  for (const states of state.voice.values()) {
    if (states.get(state.me.id)?.session_id === session) return;
  }
  teardown({ leave: false });
  toast('You were disconnected from voice.', 'info');
}

export function onVoiceSpeaking(d) {
  const v = state.voice.get(d.guild_id)?.get(d.user_id);
  if (v && v.channel_id === d.channel_id) v.speaking = d.speaking;
  for (const el of document.querySelectorAll('#channels .voice-user')) {
    if (el.dataset.userId === d.user_id && el.closest('.voice-users')?.dataset.channelId === d.channel_id) {
      el.classList.toggle('speaking', d.speaking);
    }
  }
}

/// A new gateway session (READY after a lost one): the node ended the old session's voice
/// connection, so the call is rebuilt on the new session.
export function onVoiceSession(first) {
  if (first || !call) return;
  const { guildId, channelId } = call;
  teardown({ leave: false });
  if (channelOf(state.guilds.get(guildId), channelId)) joinVoice(guildId, channelId);
}

/// A resumed session: mute or deafen changes made while the socket was down are sent now.
export function onVoiceResumed() {
  if (call) syncSelf(call);
}

/// The guild or channel went away, or the permission to be there did.
function checkAllowed() {
  const c = call;
  if (!c) return;
  const guild = state.guilds.get(c.guildId);
  const gone = !channelOf(guild, c.channelId);
  // Permissions come from roles, which are known once the guild's members are loaded.
  const barred = !gone && state.members.has(c.guildId) && !has(permsIn(c.guildId, c.channelId), P.VIEW_CHANNEL | P.CONNECT);
  if (gone || barred) {
    teardown({ leave: false });
    toast('You were disconnected from voice.', 'info');
  } else {
    renderVoicePanel();
  }
}

// ---- the channel sidebar ----

/// The people in a voice channel, for under its entry in the channel list.
export function voiceUserList(guild, channel) {
  const list = h('ul', { class: 'voice-users', dataset: { channelId: channel.id }, 'aria-label': `In ${channel.name}` });
  fillVoiceUsers(list, guild, channel);
  return list;
}

function fillVoiceUsers(list, guild, channel) {
  const perms = permsIn(guild.id, channel.id);
  const moderator = has(perms, P.MUTE_MEMBERS) || has(perms, P.DEAFEN_MEMBERS) || has(perms, P.MOVE_MEMBERS);
  const people = voiceMembers(guild.id, channel.id);
  clear(list).append(...people.map((v) => voiceUser(guild, channel, v, moderator)));
  list.hidden = !people.length;
}

/// Redraws the participant lists in place, keeping keyboard focus where it was.
function refreshVoiceLists() {
  const guild = state.guilds.get(state.current.guildId);
  if (!guild) return;
  const focused = document.activeElement?.closest?.('.voice-user');
  const focus = focused && { user: focused.dataset.userId, cls: document.activeElement.className };
  for (const list of document.querySelectorAll('#channels .voice-users')) {
    const channel = channelOf(guild, list.dataset.channelId);
    if (channel) fillVoiceUsers(list, guild, channel);
  }
  if (focus) {
    const row = [...document.querySelectorAll('#channels .voice-user')].find((el) => el.dataset.userId === focus.user);
    [...(row?.querySelectorAll('button') || [])].find((b) => b.className === focus.cls)?.focus();
  }
}

function voiceUser(guild, channel, v, moderator) {
  const name = displayName(guild.id, v.user_id);
  const suppressed = v.suppress;
  const marks = [];
  const mark = (kind, label, server) => marks.push(h('span', { class: `mark${server ? ' server' : ''}`, role: 'img', 'aria-label': label, title: label }, icon(kind, true)));
  if (v.mute) mark('mic', 'Server muted', true);
  else if (suppressed) mark('mic', 'Cannot speak in this channel', true);
  else if (v.self_mute) mark('mic', 'Muted');
  if (v.deaf) mark('deaf', 'Server deafened', true);
  else if (v.self_deaf) mark('deaf', 'Deafened');
  const classes = ['voice-user'];
  if (v.speaking) classes.push('speaking');
  if (v.self_mute || v.mute || suppressed) classes.push('muted');
  if (v.self_deaf || v.deaf) classes.push('deafened');
  if (v.mute) classes.push('server-muted');
  if (v.deaf) classes.push('server-deafened');
  const openMenu = (at) => openVoiceMenu(guild, channel, v, name, at);
  return h('li', { class: classes.join(' '), dataset: { userId: v.user_id } },
    h('button', {
      class: 'voice-user-main', title: name,
      onclick: () => app.openMember(guild.id, v.user_id),
      oncontextmenu: moderator ? (e) => { e.preventDefault(); openMenu({ x: e.clientX, y: e.clientY, from: e.currentTarget }); } : null,
      onkeydown: moderator ? (e) => {
        if (e.key === 'ContextMenu' || (e.shiftKey && e.key === 'F10')) {
          e.preventDefault();
          openMenu({ from: e.currentTarget });
        }
      } : null,
    }, avatar(v.user_id, name), h('span', { class: 'name' }, name), h('span', { class: 'marks' }, marks)),
    moderator ? h('button', {
      class: 'icon voice-user-menu', 'aria-label': `Voice options for ${name}`, 'aria-haspopup': 'menu', title: 'Voice options',
      onclick: (e) => openMenu({ from: e.currentTarget }),
    }, '⋯') : null);
}

// ---- moderator menu ----

function closeVoiceMenu(refocus = false) {
  if (!menu) return;
  const { el, from, cleanup } = menu;
  menu = null;
  cleanup();
  el.remove();
  if (refocus && from?.isConnected) from.focus();
}

function openVoiceMenu(guild, channel, v, name, { x, y, from }) {
  closeVoiceMenu();
  const perms = permsIn(guild.id, channel.id);
  const items = [];
  const item = (label, fields, cls = '') => items.push(h('button', {
    class: `menu-item ${cls}`, role: 'menuitem', tabindex: '-1',
    onclick: async () => {
      closeVoiceMenu(true);
      try {
        await app.api.moderateVoice(guild.id, v.user_id, fields);
      } catch (err) {
        toast(err.message);
      }
    },
  }, label));
  if (has(perms, P.MUTE_MEMBERS)) item(v.mute ? 'Server Unmute' : 'Server Mute', { mute: !v.mute });
  if (has(perms, P.DEAFEN_MEMBERS)) item(v.deaf ? 'Server Undeafen' : 'Server Deafen', { deaf: !v.deaf });
  if (has(perms, P.MOVE_MEMBERS)) {
    for (const to of guild.channels) {
      if (to.kind === 'voice' && to.id !== channel.id && has(permsIn(guild.id, to.id), P.MOVE_MEMBERS)) {
        item(`Move to ${to.name}`, { channel_id: to.id });
      }
    }
    item('Disconnect', { channel_id: null }, 'danger');
  }
  if (!items.length) return;
  const el = h('div', { class: 'menu context-menu', role: 'menu', 'aria-label': `Voice options for ${name}` }, items);
  document.body.append(el);
  const anchor = from?.getBoundingClientRect();
  const left = x ?? anchor?.left ?? 0;
  const top = y ?? anchor?.bottom ?? 0;
  el.style.setProperty('left', `${Math.max(4, Math.min(left, innerWidth - el.offsetWidth - 4))}px`);
  el.style.setProperty('top', `${Math.max(4, Math.min(top, innerHeight - el.offsetHeight - 4))}px`);
  const onKey = (e) => {
    const list = [...el.querySelectorAll('[role="menuitem"]')];
    const i = list.indexOf(document.activeElement);
    if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      closeVoiceMenu(true);
    } else if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      list[(i + (e.key === 'ArrowDown' ? 1 : list.length - 1)) % list.length].focus();
    } else if (e.key === 'Home' || e.key === 'End') {
      e.preventDefault();
      list[e.key === 'Home' ? 0 : list.length - 1].focus();
    } else if (e.key === 'Tab') {
      closeVoiceMenu(true);
    }
  };
  const onDown = (e) => { if (!el.contains(e.target)) closeVoiceMenu(); };
  const onBlur = () => closeVoiceMenu();
  document.addEventListener('keydown', onKey, true);
  document.addEventListener('mousedown', onDown, true);
  window.addEventListener('resize', onBlur);
  menu = {
    el,
    from,
    cleanup: () => {
      document.removeEventListener('keydown', onKey, true);
      document.removeEventListener('mousedown', onDown, true);
      window.removeEventListener('resize', onBlur);
    },
  };
  el.querySelector('[role="menuitem"]').focus();
}

// ---- the Voice Connected panel ----

function buildPanel(root) {
  const status = h('span', { class: 'voice-status', role: 'status', 'aria-live': 'polite' });
  const where = h('span', { class: 'voice-where' });
  const note = h('div', { class: 'voice-note' });
  const info = h('button', {
    class: 'icon', 'aria-label': 'Connection info', 'aria-expanded': 'false', title: 'Connection info',
    onclick: () => setStatsOpen(!statsOpen),
  }, icon('info'));
  const hangup = h('button', { class: 'icon hangup', 'aria-label': 'Disconnect', title: 'Disconnect', onclick: leaveVoice }, icon('hangup'));
  const mute = h('button', { class: 'voice-toggle', onclick: toggleMute });
  const deaf = h('button', { class: 'voice-toggle', onclick: toggleDeaf });
  const stats = h('div', { class: 'voice-stats', hidden: true, role: 'region', 'aria-label': 'Connection info' });
  clear(root).append(
    h('div', { class: 'voice-head' }, h('div', { class: 'voice-what' }, status, where), info, hangup),
    note,
    h('div', { class: 'voice-controls' }, mute, deaf),
    stats);
  return { status, where, note, info, mute, deaf, stats };
}

export function renderVoicePanel() {
  const root = $('#voice-panel');
  if (!root) return;
  if (!call) {
    root.hidden = true;
    clear(root);
    panel = null;
    return;
  }
  if (!panel || !root.contains(panel.status)) panel = buildPanel(root);
  root.hidden = false;
  root.dataset.state = call.status;
  const guild = state.guilds.get(call.guildId);
  const channel = channelOf(guild, call.channelId);
  panel.status.textContent = STATUS[call.status];
  panel.status.className = `voice-status ${call.status}`;
  panel.where.textContent = `${channel?.name ?? 'voice'} / ${guild?.name ?? ''}`;
  panel.where.title = panel.where.textContent;
  const mine = state.voice.get(call.guildId)?.get(state.me.id);
  const notes = [];
  if (mine?.mute) notes.push('Server muted');
  if (mine?.deaf) notes.push('Server deafened');
  if (!maySpeak(call)) notes.push('You cannot speak in this channel');
  panel.note.textContent = notes.join(' · ');
  panel.note.hidden = !notes.length;
  const muted = self.mute || self.deaf;
  setToggle(panel.mute, muted ? 'Unmute' : 'Mute', icon('mic', muted), muted, 'Ctrl+Shift+M');
  setToggle(panel.deaf, self.deaf ? 'Undeafen' : 'Deafen', icon('deaf', self.deaf), self.deaf, 'Ctrl+Shift+D');
  panel.info.setAttribute('aria-expanded', String(statsOpen));
  panel.info.classList.toggle('active', statsOpen);
  panel.stats.hidden = !statsOpen;
}

function setToggle(button, label, svg, on, keys) {
  button.setAttribute('aria-label', label);
  button.title = `${label} (${keys})`;
  button.classList.toggle('on', on);
  button.replaceChildren(svg);
}

function setStatsOpen(open) {
  statsOpen = open;
  startStats();
  renderVoicePanel();
}

/// Refreshes the connection info every second while it is open.
function startStats() {
  stopStats();
  if (statsOpen && call) {
    refreshStats();
    statsTimer = setInterval(refreshStats, 1000);
  }
}

function stopStats() {
  clearInterval(statsTimer);
  statsTimer = null;
}

/// Per remote stream (listening slot): packets received and audio energy, from getStats().
async function refreshStats() {
  const c = call;
  if (!c?.pc || !statsOpen || !panel) return;
  let report;
  try {
    report = await c.pc.getStats();
  } catch {
    return;
  }
  if (call !== c || !panel) return;
  const inbound = [];
  let sent = 0;
  let rtt = null;
  report.forEach((r) => {
    if (r.type === 'inbound-rtp' && r.kind === 'audio') inbound.push(r);
    else if (r.type === 'outbound-rtp' && r.kind === 'audio') sent += r.packetsSent ?? 0;
    else if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') rtt = r.currentRoundTripTime ?? rtt;
  });
  const slots = c.pc.getTransceivers().filter((t) => t.direction === 'recvonly').map((t) => t.mid);
  inbound.sort((a, b) => slots.indexOf(a.mid) - slots.indexOf(b.mid));
  const rows = inbound.map((r) => {
    const packets = r.packetsReceived ?? 0;
    const energy = r.totalAudioEnergy ?? 0;
    const live = packets > (lastPackets.get(r.mid) ?? 0);
    lastPackets.set(r.mid, packets);
    const level = Math.min(1, Math.sqrt(r.audioLevel ?? 0));
    const meter = h('span', { class: 'meter', 'aria-hidden': 'true' }, h('span', { style: { width: `${Math.round(level * 100)}%` } }));
    return h('li', {
      class: `voice-stream${live ? ' live' : ''}`,
      dataset: { mid: r.mid ?? '', packets: String(packets), energy: String(energy), lost: String(r.packetsLost ?? 0) },
    },
    h('span', { class: 'stream-name' }, `Stream ${slots.indexOf(r.mid) + 1}`),
    h('span', { class: 'stream-numbers' }, `${packets.toLocaleString()} packets · energy ${energy.toFixed(3)} · ${r.packetsLost ?? 0} lost`),
    meter);
  });
  clear(panel.stats).append(
    h('div', { class: 'stats-summary', dataset: { sent: String(sent) } },
      `Sent ${sent.toLocaleString()} packets`, rtt === null ? '' : ` · ${Math.round(rtt * 1000)} ms round trip`,
      ` · ${c.slots} listening slots`),
    rows.length
      ? h('ul', { class: 'voice-streams', 'aria-label': 'Incoming streams' }, rows)
      : h('p', { class: 'muted' }, 'No incoming audio yet.'));
}

// ---- wiring ----

/// Redraws what depends on the call: the channel list (the joined channel) and the panel.
function changed() {
  notify('channels');
  renderVoicePanel();
}

export function initVoice() {
  // Names in the participant lists come from the member list, which loads after the channels.
  on('members', refreshVoiceLists);
  document.addEventListener('keydown', (e) => {
    if (!call || !e.ctrlKey || !e.shiftKey || e.altKey || e.metaKey) return;
    const key = e.key.toLowerCase();
    if (key === 'm') toggleMute();
    else if (key === 'd') toggleDeaf();
    else return;
    e.preventDefault();
  });
  window.addEventListener('pagehide', () => teardown({ leave: true }));
}

export { checkAllowed as checkVoiceAllowed };
