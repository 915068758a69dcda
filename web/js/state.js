// What the client knows: guilds, members, loaded history, read marks, typing, and who is viewing
// what. Modules change it through these helpers and `notify` the parts of the screen to redraw.

import { channelPerms } from './perms.js';

export const state = {
  me: null,
  guilds: new Map(),
  /// guild id → Map(user id → member with username and status)
  members: new Map(),
  /// user id → { username } for authors who are not (or no longer) members
  users: new Map(),
  /// channel or thread id → { list: [message], byId: Map, reachedStart, loaded }
  history: new Map(),
  /// channel or thread id → last_read_id
  readStates: new Map(),
  /// channel or thread id → { id, author_id } of the newest message known
  latest: new Map(),
  /// thread id → { id, channel_id, name, guild_id }
  threads: new Map(),
  /// channel or thread id → Map(user id → expiry ms)
  typing: new Map(),
  /// guild id → Map(user id → voice state: channel_id, self_mute, self_deaf, mute, deaf, speaking)
  voice: new Map(),
  current: { guildId: null, channelId: null },
  replyTo: null,
  panel: 'members',
};

const listeners = new Map();

export function on(topic, fn) {
  if (!listeners.has(topic)) listeners.set(topic, []);
  listeners.get(topic).push(fn);
}

export function notify(...topics) {
  for (const topic of topics) for (const fn of listeners.get(topic) || []) fn();
}

export const currentGuild = () => state.guilds.get(state.current.guildId) || null;

export function channelOf(guild, id) {
  return guild?.channels.find((c) => c.id === id) || null;
}

/// The guild a channel or thread belongs to.
export function guildOfChannel(id) {
  const thread = state.threads.get(id);
  if (thread) return thread.guild_id;
  for (const g of state.guilds.values()) if (g.channels.some((c) => c.id === id)) return g.id;
  return null;
}

/// The channel whose permissions apply: the parent for a thread.
const gateChannel = (id) => state.threads.get(id)?.channel_id ?? id;

export function myRoles(guildId) {
  return state.members.get(guildId)?.get(state.me.id)?.roles || [];
}

export function permsIn(guildId, channelId) {
  const guild = state.guilds.get(guildId);
  if (!guild) return 0n;
  const channel = channelId ? channelOf(guild, gateChannel(channelId)) : null;
  return channelPerms(guild, channel, state.me.id, myRoles(guildId));
}

export function displayName(guildId, userId) {
  const member = state.members.get(guildId)?.get(userId);
  if (member?.nick) return member.nick;
  if (member?.username) return member.username;
  const user = state.users.get(userId);
  if (user?.username) return user.username;
  return `user-${userId.slice(0, 6)}`;
}

/// The colour of a member's highest coloured role, as CSS, or null.
export function roleColor(guildId, userId) {
  const guild = state.guilds.get(guildId);
  const member = state.members.get(guildId)?.get(userId);
  if (!guild || !member) return null;
  const roles = guild.roles
    .filter((r) => member.roles.includes(r.id) && r.color)
    .sort((a, b) => b.position - a.position);
  return roles.length ? `#${roles[0].color.toString(16).padStart(6, '0')}` : null;
}

export function channelHistory(channelId) {
  if (!state.history.has(channelId)) {
    state.history.set(channelId, { list: [], byId: new Map(), reachedStart: false, loaded: false });
  }
  return state.history.get(channelId);
}

/// History order is (hlc, id).
export function compareMessages(a, b) {
  const ha = BigInt(a.hlc);
  const hb = BigInt(b.hlc);
  if (ha !== hb) return ha < hb ? -1 : 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/// Inserts or replaces `message` in its channel's loaded history; returns its index.
export function upsertMessage(message) {
  const h = channelHistory(message.channel_id);
  noteLatest(message);
  if (h.byId.has(message.id)) {
    const i = h.list.findIndex((m) => m.id === message.id);
    h.list[i] = message;
    h.byId.set(message.id, message);
    return i;
  }
  let lo = 0;
  let hi = h.list.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (compareMessages(h.list[mid], message) < 0) lo = mid + 1;
    else hi = mid;
  }
  h.list.splice(lo, 0, message);
  h.byId.set(message.id, message);
  return lo;
}

export function removeMessage(channelId, id) {
  const h = channelHistory(channelId);
  if (!h.byId.has(id)) return;
  h.byId.delete(id);
  h.list = h.list.filter((m) => m.id !== id);
  if (state.latest.get(channelId)?.id === id) {
    const last = h.list[h.list.length - 1];
    if (last) state.latest.set(channelId, { id: last.id, author_id: last.author_id, hlc: last.hlc });
    else state.latest.delete(channelId);
  }
}

export function noteLatest(message) {
  const known = state.latest.get(message.channel_id);
  if (!known || compareMessages(known, message) <= 0) {
    state.latest.set(message.channel_id, { id: message.id, author_id: message.author_id, hlc: message.hlc });
  }
}

export function isUnread(channelId) {
  const latest = state.latest.get(channelId);
  if (!latest || latest.author_id === state.me.id) return false;
  return state.readStates.get(channelId) !== latest.id;
}

export function guildUnread(guild) {
  return guild.channels.some((c) => c.kind === 'text' && isUnread(c.id));
}

/// Replaces what is known of a guild's voice channels with the node's list (READY, GET guild).
export function setVoiceStates(guildId, list) {
  state.voice.set(guildId, new Map((list || []).map((v) => [v.user_id, v])));
}

/// Applies a VOICE_STATE_UPDATE: a null channel means the user left voice.
export function applyVoiceState(d) {
  if (!state.voice.has(d.guild_id)) state.voice.set(d.guild_id, new Map());
  const states = state.voice.get(d.guild_id);
  if (d.channel_id) states.set(d.user_id, d);
  else states.delete(d.user_id);
}

/// Who is in a voice channel, by name.
export function voiceMembers(guildId, channelId) {
  return [...(state.voice.get(guildId)?.values() || [])]
    .filter((v) => v.channel_id === channelId)
    .sort((a, b) => displayName(guildId, a.user_id).localeCompare(displayName(guildId, b.user_id)));
}
