// The app shell: guild rail, channel sidebar with the user panel, chat header and connection
// indicator. The message pane is messages.js, the right-hand panel panels.js.

import { h, $, clear, hue, initials } from './dom.js';
import { state, currentGuild, isUnread, guildUnread, permsIn } from './state.js';
import { P, has } from './perms.js';
import { app } from './main.js';
import { openCreateOrJoin, openGuildSettings, openChannelSettings, openInvite, openCreateChannel } from './settings.js';
import { setPanel, searchFor } from './panels.js';
import { joinVoice, inVoice, voiceUserList } from './voice.js';
import { dmOpen, anyUnread, openDms, renderDmSidebarHeader, renderDmList, renderDmHeader } from './dm.js';

const STATUS_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  catching_up: 'Catching up…',
  offline: 'Offline',
};

export function buildShell(messagesPane, sidePanel, dmView) {
  clear($('#root')).append(h('div', { class: 'app' },
    h('nav', { id: 'rail', 'aria-label': 'Guilds' }),
    h('aside', { id: 'sidebar' },
      h('header', { id: 'guild-header' }),
      h('div', { id: 'channels', role: 'navigation', 'aria-label': 'Channels' }),
      h('section', { id: 'voice-panel', hidden: true, 'aria-label': 'Voice connection' }),
      h('section', { id: 'user-panel' })),
    h('main', { id: 'chat' },
      h('header', { id: 'chat-header' }),
      h('div', { class: 'chat-body' }, messagesPane, sidePanel, dmView))));
}

export function renderRail() {
  const rail = clear($('#rail'));
  rail.append(h('div', { class: `rail-item${dmOpen() ? ' selected' : ''}${anyUnread() ? ' unread' : ''}` },
    h('span', { class: 'pill' }),
    h('button', {
      class: 'guild-icon dm-home', title: 'Direct Messages', 'aria-label': 'Direct Messages', onclick: () => openDms(),
    }, '✉')));
  rail.append(h('div', { class: 'rail-separator' }));
  for (const guild of state.guilds.values()) {
    const selected = guild.id === state.current.guildId && !dmOpen();
    rail.append(h('div', { class: `rail-item${selected ? ' selected' : ''}${guildUnread(guild) ? ' unread' : ''}` },
      h('span', { class: 'pill' }),
      h('button', {
        class: 'guild-icon', title: guild.name, 'aria-label': guild.name, dataset: { guildId: guild.id },
        style: { '--hue': hue(guild.id) }, onclick: () => app.selectGuild(guild.id),
      }, initials(guild.name))));
  }
  rail.append(h('div', { class: 'rail-separator' }));
  rail.append(h('div', { class: 'rail-item' },
    h('button', { class: 'guild-icon add', title: 'Create or join a guild', 'aria-label': 'Create or join a guild', onclick: openCreateOrJoin }, '+')));
}

export function renderGuildHeader() {
  if (dmOpen()) {
    renderDmSidebarHeader();
    return;
  }
  const header = clear($('#guild-header'));
  const guild = currentGuild();
  if (!guild) {
    header.append(h('span', { class: 'guild-name' }, 'No guild yet'));
    return;
  }
  const base = permsIn(guild.id, null);
  const menu = h('div', { class: 'menu', hidden: true, role: 'menu' });
  const item = (label, fn, cls = '') => h('button', { class: `menu-item ${cls}`, role: 'menuitem', onclick: () => { menu.hidden = true; fn(); } }, label);
  if (has(base, P.CREATE_INSTANT_INVITE)) menu.append(item('Invite People', () => openInvite(guild.id), 'accent'));
  menu.append(item('Guild Settings', () => openGuildSettings(guild.id)));
  if (has(base, P.MANAGE_CHANNELS)) {
    menu.append(item('Create Channel', () => openCreateChannel(guild.id, 'text')));
    menu.append(item('Create Category', () => openCreateChannel(guild.id, 'category')));
  }
  menu.append(item('Edit Nickname', () => app.editNickname(guild.id)));
  if (guild.owner_id !== state.me.id) menu.append(item('Leave Guild', () => app.leaveGuild(guild.id), 'danger'));
  const toggle = h('button', { class: 'guild-name', 'aria-haspopup': 'menu', onclick: () => { menu.hidden = !menu.hidden; } },
    h('span', {}, guild.name), h('span', { class: 'chevron' }, '▾'));
  header.append(toggle, menu);
  document.addEventListener('click', (e) => { if (!header.contains(e.target)) menu.hidden = true; }, { once: true, capture: true });
}

function channelButton(guild, channel, manage) {
  if (channel.kind === 'voice') return voiceChannel(guild, channel, manage);
  const selected = channel.id === state.current.channelId;
  const unread = channel.kind === 'text' && !selected && isUnread(channel.id);
  const row = h('div', { class: `channel kind-${channel.kind}${selected ? ' selected' : ''}${unread ? ' unread' : ''}`, dataset: { channelId: channel.id, name: channel.name } },
    h('button', {
      class: 'channel-link',
      title: channel.topic || channel.name,
      onclick: () => app.selectChannel(channel.id),
    }, h('span', { class: 'channel-icon' }, '#'), h('span', { class: 'channel-name' }, channel.name)),
    gear(guild, channel, manage));
  const threads = [...state.threads.values()].filter((t) => t.channel_id === channel.id);
  if (!threads.length) return row;
  return h('div', {}, row, threads.map((t) => h('div', {
    class: `channel thread${t.id === state.current.channelId ? ' selected' : ''}${t.id !== state.current.channelId && isUnread(t.id) ? ' unread' : ''}`,
    dataset: { channelId: t.id },
  }, h('button', { class: 'channel-link', onclick: () => app.selectChannel(t.id) }, h('span', { class: 'channel-icon' }, '↳'), h('span', { class: 'channel-name' }, t.name)))));
}

const gear = (guild, channel, manage) => (manage ? h('button', { class: 'icon gear', title: 'Edit channel', 'aria-label': `Edit channel ${channel.name}`, onclick: () => openChannelSettings(guild.id, channel.id) }, '⚙') : null);

/// A voice channel: clicking joins it; the people in it are listed below.
function voiceChannel(guild, channel, manage) {
  const joined = inVoice(channel.id);
  const allowed = has(permsIn(guild.id, channel.id), P.CONNECT);
  return h('div', { class: 'voice-channel' },
    h('div', { class: `channel kind-voice${joined ? ' joined' : ''}`, dataset: { channelId: channel.id, name: channel.name } },
      h('button', {
        class: 'channel-link',
        disabled: !allowed,
        title: allowed ? (joined ? `Connected to ${channel.name}` : `Join voice channel ${channel.name}`) : 'You do not have permission to connect here',
        'aria-current': joined ? 'true' : null,
        onclick: () => joinVoice(guild.id, channel.id),
      }, h('span', { class: 'channel-icon' }, '🔊'), h('span', { class: 'channel-name' }, channel.name)),
      gear(guild, channel, manage)),
    voiceUserList(guild, channel));
}

export function renderChannels() {
  if (dmOpen()) {
    renderDmList();
    return;
  }
  const list = clear($('#channels'));
  const guild = currentGuild();
  if (!guild) {
    list.append(h('p', { class: 'empty' }, 'Create a guild or join one with an invite link using the + on the left.'));
    return;
  }
  const manage = (c) => has(permsIn(guild.id, c.id), P.MANAGE_CHANNELS);
  const categories = guild.channels.filter((c) => c.kind === 'category');
  const known = new Set(categories.map((c) => c.id));
  const loose = guild.channels.filter((c) => c.kind !== 'category' && !known.has(c.parent_id));
  list.append(...loose.map((c) => channelButton(guild, c, manage(c))));
  for (const cat of categories) {
    const children = guild.channels.filter((c) => c.parent_id === cat.id);
    const collapsed = app.collapsed.has(cat.id);
    list.append(h('div', { class: 'category', dataset: { channelId: cat.id } },
      h('div', { class: 'category-header' },
        h('button', { class: 'category-name', 'aria-expanded': String(!collapsed), onclick: () => {
          if (collapsed) app.collapsed.delete(cat.id); else app.collapsed.add(cat.id);
          renderChannels();
        } }, h('span', { class: 'chevron' }, collapsed ? '▸' : '▾'), cat.name),
        manage(cat) ? h('button', { class: 'icon gear', 'aria-label': `Edit category ${cat.name}`, onclick: () => openChannelSettings(guild.id, cat.id) }, '⚙') : null),
      children
        .filter((c) => !collapsed || c.id === state.current.channelId || isUnread(c.id) || inVoice(c.id))
        .map((c) => channelButton(guild, c, manage(c)))));
  }
}

export function avatar(userId, name, status) {
  return h('span', { class: 'avatar', style: { '--hue': hue(userId) }, 'aria-hidden': 'true' },
    initials(name).slice(0, 1).toUpperCase(),
    status ? h('span', { class: `status-dot ${status}`, title: status }) : null);
}

export function renderUserPanel() {
  const panel = clear($('#user-panel'));
  const status = state.myStatus || 'online';
  const select = h('select', { 'aria-label': 'Status', onchange: (e) => app.setStatus(e.target.value) },
    [['online', 'Online'], ['idle', 'Idle'], ['dnd', 'Do Not Disturb'], ['offline', 'Invisible']]
      .map(([v, label]) => h('option', { value: v, selected: v === status }, label)));
  panel.append(
    avatar(state.me.id, state.me.username, status),
    h('div', { class: 'who' }, h('div', { class: 'username' }, state.me.username), select),
    h('button', { class: 'logout', title: 'Log out', onclick: () => app.logout() }, 'Log out'));
}

export function renderChatHeader() {
  if (dmOpen()) {
    renderDmHeader();
    return;
  }
  const header = clear($('#chat-header'));
  const guild = currentGuild();
  const id = state.current.channelId;
  const thread = state.threads.get(id);
  const channel = guild?.channels.find((c) => c.id === id);
  const title = thread
    ? [h('button', { class: 'link', onclick: () => app.selectChannel(thread.channel_id) }, `# ${guild?.channels.find((c) => c.id === thread.channel_id)?.name ?? 'channel'}`), h('span', { class: 'sep' }, '›'), h('span', { class: 'channel-title' }, `🧵 ${thread.name}`)]
    : channel ? [h('span', { class: 'hash' }, '#'), h('span', { class: 'channel-title' }, channel.name), channel.topic ? h('span', { class: 'topic', title: channel.topic }, channel.topic) : null]
      : [h('span', { class: 'channel-title' }, guild ? 'No channel' : 'Guildhall')];
  const search = h('input', {
    type: 'search', class: 'search', placeholder: 'Search', 'aria-label': 'Search messages',
    onkeydown: (e) => { if (e.key === 'Enter' && e.target.value.trim()) searchFor(e.target.value.trim()); },
  });
  const tab = (name, label, icon) => h('button', {
    class: `icon tab${state.panel === name ? ' active' : ''}`, title: label, 'aria-label': label, 'aria-pressed': String(state.panel === name),
    onclick: () => setPanel(state.panel === name ? null : name),
  }, icon);
  const where = thread?.name ?? channel?.name;
  document.title = guild && where ? `#${where} | ${guild.name} — Guildhall` : 'Guildhall';
  header.append(
    h('div', { class: 'title' }, title),
    h('div', { class: 'tools' },
      h('span', { id: 'conn', class: `conn ${app.gateway?.status ?? 'connecting'}`, role: 'status', 'aria-live': 'polite' }, STATUS_TEXT[app.gateway?.status ?? 'connecting']),
      guild && channel?.kind === 'text' ? tab('threads', 'Threads', '🧵') : null,
      guild ? tab('pins', 'Pinned messages', '📌') : null,
      guild ? tab('members', 'Member list', '👥') : null,
      guild ? search : null));
}

export function renderConn(status) {
  const el = $('#conn');
  if (!el) return;
  el.className = `conn ${status}`;
  el.textContent = STATUS_TEXT[status];
}
