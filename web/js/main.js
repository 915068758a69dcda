// Entry point: signs in, connects the gateway, applies its events to the state, and routes
// between guilds, channels and invite links.

import { Api } from './api.js';
import { Gateway } from './gateway.js';
import { h, $, clear, toast, formDialog, confirmDialog } from './dom.js';
import {
  state, on, notify, guildOfChannel, channelHistory, removeMessage, noteLatest, setVoiceStates,
} from './state.js';
import { showAuth } from './auth.js';
import {
  buildShell, renderRail, renderGuildHeader, renderChannels, renderUserPanel, renderChatHeader, renderConn,
} from './layout.js';
import {
  buildMessagesPane, showChannel, onMessage, onMessageDeleted, refreshMessages, renderTyping, focusMessage,
} from './messages.js';
import { buildSidePanel, renderPanel, refreshPanelFor } from './panels.js';
import { openMember } from './settings.js';
import {
  buildDmView, initDms, onDmCreate, openDms, closeDms, onDmKey, dmOpen, messageUser,
} from './dm.js';
import {
  initVoice, onVoiceState, onVoiceSpeaking, onVoiceSession, onVoiceResumed, checkVoiceAllowed, renderVoicePanel,
} from './voice.js';

const TOKEN_KEY = 'guildhall.token';
const INVITE_KEY = 'guildhall.invite';

export const app = {
  api: new Api(localStorage.getItem(TOKEN_KEY)),
  gateway: null,
  drafts: new Map(),
  collapsed: new Set(),
  lastChannel: new Map(),
  ready: false,

  async selectGuild(guildId, channelId = null) {
    const guild = state.guilds.get(guildId);
    if (!guild) return;
    closeDms();
    state.current.guildId = guildId;
    if (!state.members.has(guildId)) await loadMembers(guildId);
    const text = guild.channels.filter((c) => c.kind === 'text');
    const wanted = channelId || app.lastChannel.get(guildId);
    const known = wanted && (text.some((c) => c.id === wanted) || state.threads.has(wanted));
    app.selectChannel(known ? wanted : text[0]?.id ?? null);
  },

  selectChannel(channelId, focusId = null) {
    const guildId = guildOfChannel(channelId) ?? state.current.guildId;
    if (guildId !== state.current.guildId && guildId) {
      app.selectGuild(guildId, channelId);
      return;
    }
    state.current.channelId = channelId;
    if (channelId) app.lastChannel.set(guildId, channelId);
    state.replyTo = null;
    const path = channelId ? `/channels/${guildId}/${channelId}` : guildId ? `/channels/${guildId}` : '/';
    if (location.pathname !== path) history.pushState(null, '', path);
    if (state.panel === 'pins' || state.panel === 'threads') state.panel = 'members';
    notify('guilds', 'channels', 'header', 'panel');
    showChannel().then(() => focusId && focusMessage(focusId));
    if (channelId && !state.threads.has(channelId)) loadThreads(guildId, channelId);
  },

  addGuild(guild) {
    app.replaceGuild(guild);
    app.selectGuild(guild.id);
  },

  replaceGuild(guild) {
    state.guilds.set(guild.id, guild);
    if (guild.voice_states) setVoiceStates(guild.id, guild.voice_states);
    notify('guilds', 'channels', 'header');
  },

  async refreshGuild(guildId) {
    try {
      app.replaceGuild(await app.api.guild(guildId));
      await loadMembers(guildId);
    } catch (err) {
      // What the node answers about a guild the user is no longer in (rest.md §3).
      if (['unknown_guild', 'banned', 'guild_deleted'].includes(err.code)) dropGuild(guildId);
    }
  },

  addChannel(channel) {
    const guild = state.guilds.get(channel.guild_id);
    if (!guild || guild.channels.some((c) => c.id === channel.id)) return;
    guild.channels.push(channel);
    guild.channels.sort((a, b) => a.position - b.position || (a.id < b.id ? -1 : 1));
    notify('channels');
  },

  noteThread(thread) {
    state.threads.set(thread.id, thread);
    notify('channels');
  },

  async joinByCode(code) {
    const guild = await app.api.acceptInvite(code);
    app.addGuild(guild);
  },

  async fetchUser(userId) {
    if (state.users.has(userId)) return;
    state.users.set(userId, {});
    try {
      state.users.set(userId, await app.api.user(userId));
      refreshMessages();
    } catch {
      state.users.delete(userId);
    }
  },

  openMember,
  messageUser,

  async editNickname(guildId) {
    const member = state.members.get(guildId)?.get(state.me.id);
    const values = await formDialog('Change Nickname', [{ name: 'nick', label: 'Nickname (empty to reset)', value: member?.nick ?? '', maxlength: 100 }]);
    if (!values) return;
    try {
      await app.api.updateMember(guildId, '@me', { nick: values.nick.trim() });
    } catch (err) {
      toast(err.message);
    }
  },

  async leaveGuild(guildId) {
    const guild = state.guilds.get(guildId);
    if (!(await confirmDialog('Leave Guild', `Leave ${guild.name}? You will need a new invite to come back.`, 'Leave Guild'))) return;
    try {
      await app.api.removeMember(guildId, '@me');
      dropGuild(guildId);
    } catch (err) {
      toast(err.message);
    }
  },

  setStatus(status) {
    state.myStatus = status;
    app.gateway.setPresence(status);
    notify('me');
  },

  async logout() {
    await app.api.logout().catch(() => {});
    localStorage.removeItem(TOKEN_KEY);
    location.assign('/');
  },
};

async function loadMembers(guildId) {
  try {
    const members = await app.api.members(guildId);
    state.members.set(guildId, new Map(members.map((m) => [m.user_id, m])));
    notify('members');
  } catch (err) {
    toast(err.message);
  }
}

async function loadThreads(guildId, channelId) {
  try {
    for (const t of await app.api.threads(guildId, channelId)) state.threads.set(t.id, { ...t, guild_id: guildId });
    notify('channels');
  } catch {
    // A channel without READ_MESSAGE_HISTORY lists no threads; the message pane says why.
  }
}

/// Learns the newest message of every text channel, so unread markers are right from the start.
async function loadLatest(guild) {
  await Promise.all(guild.channels.filter((c) => c.kind === 'text').map(async (c) => {
    try {
      const [last] = await app.api.messages(guild.id, c.id, { limit: 1 });
      if (last) noteLatest(last);
    } catch {
      // Unreadable channels have no unread marker.
    }
  }));
  notify('unread');
}

function dropGuild(guildId) {
  state.guilds.delete(guildId);
  state.members.delete(guildId);
  state.voice.delete(guildId);
  if (state.current.guildId === guildId) {
    state.current = { guildId: null, channelId: null };
    const next = state.guilds.keys().next().value;
    if (next) app.selectGuild(next);
    else {
      history.pushState(null, '', '/');
      notify('channels', 'header', 'panel');
      showChannel();
    }
  }
  notify('guilds');
}

function member(guildId, userId) {
  return state.members.get(guildId)?.get(userId);
}

const handlers = {
  READY(d) {
    state.me = { ...state.me, ...d.user };
    state.myStatus = d.status;
    const first = !app.ready;
    app.ready = true;
    state.guilds = new Map(d.guilds.map((g) => [g.id, g]));
    state.voice.clear();
    for (const g of d.guilds) setVoiceStates(g.id, g.voice_states);
    state.readStates = new Map(d.read_states.map((r) => [r.channel_id, r.last_read_id]));
    if (!first) {
      // A new session may have missed events: drop cached history and members and reload.
      state.history.clear();
      state.members.clear();
    }
    notify('guilds', 'me');
    onVoiceSession(first);
    for (const g of state.guilds.values()) loadLatest(g);
    const dmsReady = initDms(first);
    const invite = sessionStorage.getItem(INVITE_KEY);
    if (invite) {
      sessionStorage.removeItem(INVITE_KEY);
      acceptPendingInvite(invite);
      return;
    }
    const [, kind, g, c] = location.pathname.split('/');
    if (first && kind === 'channels' && g === '@me') dmsReady.then(() => openDms(c ? decodeURIComponent(c) : null));
    else if (!first && dmOpen()) dmsReady.then(() => openDms());
    else if (first && kind === 'channels' && state.guilds.has(g)) app.selectGuild(g, c);
    else if (state.current.guildId && state.guilds.has(state.current.guildId)) app.selectGuild(state.current.guildId, state.current.channelId);
    else if (state.guilds.size) app.selectGuild(state.guilds.keys().next().value);
    else app.selectChannel(null);
  },
  MESSAGE_CREATE(d) {
    onMessage(d);
    state.typing.get(d.channel_id)?.delete(d.author_id);
    notify('typing', 'unread');
  },
  MESSAGE_UPDATE(d) {
    if (channelHistory(d.channel_id).byId.has(d.id)) onMessage(d);
    refreshPanelFor('pins');
  },
  MESSAGE_DELETE(d) {
    removeMessage(d.channel_id, d.id);
    onMessageDeleted(d.channel_id, d.id);
    refreshPanelFor('pins');
    notify('unread');
  },
  THREAD_CREATE(d) {
    app.noteThread({ id: d.id, channel_id: d.channel_id, name: d.name, guild_id: d.guild_id });
    const parent = channelHistory(d.channel_id).byId.get(d.message_id);
    if (parent && (!parent.thread_id || d.id < parent.thread_id)) onMessage({ ...parent, thread_id: d.id });
    refreshPanelFor('threads');
  },
  // A sealed thread name this node could not open at first: the thread as it now reads.
  THREAD_UPDATE(d) {
    app.noteThread({ id: d.id, channel_id: d.channel_id, name: d.name, guild_id: d.guild_id });
    refreshPanelFor('threads');
  },
  CHANNEL_CREATE(d) {
    app.addChannel(d);
  },
  CHANNEL_DELETE(d) {
    const guild = state.guilds.get(d.guild_id);
    if (!guild) return;
    guild.channels = guild.channels.filter((c) => c.id !== d.id);
    if (state.current.channelId === d.id) app.selectGuild(guild.id);
    notify('channels');
  },
  async GUILD_MEMBER_ADD(d) {
    const guild = state.guilds.get(d.guild_id);
    if (!guild) {
      // This user joined from another tab or client: show the new guild here too.
      if (d.user_id === state.me.id) app.refreshGuild(d.guild_id);
      return;
    }
    guild.member_count += 1;
    const members = state.members.get(d.guild_id);
    if (!members) return;
    const user = await app.api.user(d.user_id).catch(() => ({ username: null, status: 'offline' }));
    members.set(d.user_id, { ...d, username: user.username, status: user.status });
    notify('members');
  },
  GUILD_MEMBER_REMOVE(d) {
    removeMember(d.guild_id, d.user_id, d.reason === 'kick' ? 'You were kicked from' : null);
  },
  GUILD_BAN_ADD(d) {
    removeMember(d.guild_id, d.user_id, 'You were banned from');
    refreshPanelFor('bans');
  },
  GUILD_MEMBER_UPDATE(d) {
    const m = member(d.guild_id, d.user_id);
    if (m) m.roles = d.roles;
    notify('members', 'messages');
  },
  GUILD_UPDATE(d) {
    app.refreshGuild(d.id).then(() => notify('messages'));
  },
  GUILD_DELETE(d) {
    const guild = state.guilds.get(d.id);
    if (guild) toast(`${guild.name} was deleted.`, 'info');
    dropGuild(d.id);
  },
  PRESENCE_UPDATE(d) {
    const m = member(d.guild_id, d.user_id);
    if (m) m.status = d.status;
    if (d.user_id === state.me.id) state.myStatus = d.status === 'offline' ? state.myStatus : d.status;
    notify('members');
  },
  RESUMED() {
    onVoiceResumed();
  },
  DM_CREATE: onDmCreate,
  VOICE_STATE_UPDATE: onVoiceState,
  VOICE_SPEAKING: onVoiceSpeaking,
  TYPING_START(d) {
    if (!state.typing.has(d.channel_id)) state.typing.set(d.channel_id, new Map());
    state.typing.get(d.channel_id).set(d.user_id, Date.now() + d.ttl_ms);
    notify('typing');
    setTimeout(() => notify('typing'), d.ttl_ms + 50);
  },
};

function removeMember(guildId, userId, why) {
  if (userId === state.me.id) {
    const guild = state.guilds.get(guildId);
    if (guild && why) toast(`${why} ${guild.name}.`, 'info');
    if (guild) dropGuild(guildId);
    return;
  }
  const guild = state.guilds.get(guildId);
  if (guild && state.members.get(guildId)?.delete(userId)) guild.member_count -= 1;
  notify('members');
}

async function acceptPendingInvite(code) {
  const guildId = code.split('.')[0];
  try {
    await app.joinByCode(code);
    toast('Joined the guild.', 'info');
  } catch (err) {
    if (err.code === 'already_member' && state.guilds.has(guildId)) app.selectGuild(guildId);
    else {
      toast(`Could not accept the invite: ${err.message}`);
      if (state.guilds.size) app.selectGuild(state.guilds.keys().next().value);
    }
  }
}

function wire() {
  on('guilds', renderRail);
  on('guilds', renderGuildHeader);
  on('channels', renderChannels);
  on('unread', renderChannels);
  on('unread', renderRail);
  on('header', renderChatHeader);
  on('me', renderUserPanel);
  on('panel', renderPanel);
  on('members', () => refreshPanelFor('members'));
  on('messages', refreshMessages);
  on('typing', renderTyping);
  on('guilds', checkVoiceAllowed);
  on('channels', checkVoiceAllowed);
  initVoice();
}

function enterApp() {
  buildShell(buildMessagesPane(), buildSidePanel(), buildDmView());
  renderUserPanel();
  renderRail();
  renderGuildHeader();
  renderChannels();
  renderChatHeader();
  renderVoicePanel();
  const gateway = new Gateway(app.api.token);
  app.gateway = gateway;
  gateway.addEventListener('status', (e) => renderConn(e.detail));
  gateway.addEventListener('dispatch', (e) => handlers[e.detail.t]?.(e.detail.d));
  gateway.addEventListener('op_error', (e) => toast(e.detail.message));
  gateway.addEventListener('auth_failed', () => {
    localStorage.removeItem(TOKEN_KEY);
    toast('Your session ended; please log in again.');
    start();
  });
  gateway.connect();
}

function onAuthed({ token, user }) {
  localStorage.setItem(TOKEN_KEY, token);
  app.api.token = token;
  state.me = user;
  enterApp();
}

async function start() {
  const [, kind, code] = location.pathname.split('/');
  if (kind === 'invite' && code) {
    sessionStorage.setItem(INVITE_KEY, decodeURIComponent(code));
    history.replaceState(null, '', '/');
  }
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) {
    showAuth(app.api, onAuthed, { inviting: !!sessionStorage.getItem(INVITE_KEY) });
    return;
  }
  app.api.token = token;
  try {
    state.me = await app.api.me();
  } catch (err) {
    if (err.code === 'invalid_token') {
      localStorage.removeItem(TOKEN_KEY);
      showAuth(app.api, onAuthed, { inviting: !!sessionStorage.getItem(INVITE_KEY) });
      return;
    }
    clear($('#root')).append(h('div', { class: 'auth-screen' }, h('p', { class: 'form-error' }, `Cannot reach the node: ${err.message}`)));
    return;
  }
  enterApp();
}

window.addEventListener('popstate', () => {
  const [, kind, g, c] = location.pathname.split('/');
  if (kind === 'channels' && g === '@me') openDms(c ? decodeURIComponent(c) : null);
  else if (kind === 'channels' && state.guilds.has(g)) app.selectGuild(g, c);
});

/// Discord's shortcuts: Alt+Up/Down walks the channel list, typing anywhere goes to the composer.
document.addEventListener('keydown', (e) => {
  if (e.altKey && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
    const ids = [...document.querySelectorAll('#channels .channel:not(.kind-voice):not(.kind-category)')].map((el) => el.dataset.channelId);
    const next = ids[ids.indexOf(state.current.channelId) + (e.key === 'ArrowUp' ? -1 : 1)];
    if (next) {
      e.preventDefault();
      app.selectChannel(next);
    }
    return;
  }
  if (onDmKey(e)) return;
  const idle = e.target === document.body || e.target.classList?.contains('scroller');
  if (idle && e.key.length === 1 && !e.ctrlKey && !e.metaKey && !e.altKey && !$('#modal-root').children.length) {
    $('#composer')?.focus();
  }
});

wire();
start();
