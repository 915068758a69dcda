// The right-hand panel: member list with presence, pinned messages, threads and search results.

import { h, clear, toast, formatTime } from './dom.js';
import { state, currentGuild, displayName, roleColor, channelOf, notify } from './state.js';
import { render as markdown } from './markdown.js';
import { app } from './main.js';
import { avatar } from './layout.js';
import { dmOpen } from './dm.js';

let panel;
let searchQuery = '';

export function buildSidePanel() {
  panel = h('aside', { class: 'side-panel', id: 'side-panel' });
  return panel;
}

export function setPanel(name) {
  state.panel = name;
  notify('header');
  renderPanel();
}

export function searchFor(q) {
  searchQuery = q;
  setPanel('search');
}

export function renderPanel() {
  if (!panel) return;
  clear(panel);
  const guild = currentGuild();
  panel.hidden = dmOpen() || !guild || !state.panel;
  if (panel.hidden) return;
  if (state.panel === 'members') renderMembers(guild);
  else if (state.panel === 'pins') renderPins(guild);
  else if (state.panel === 'threads') renderThreads(guild);
  else if (state.panel === 'search') renderSearch(guild);
}

const ONLINE = new Set(['online', 'idle', 'dnd']);

function renderMembers(guild) {
  const members = [...(state.members.get(guild.id)?.values() || [])]
    .sort((a, b) => displayName(guild.id, a.user_id).localeCompare(displayName(guild.id, b.user_id)));
  const online = members.filter((m) => ONLINE.has(m.status));
  const offline = members.filter((m) => !ONLINE.has(m.status));
  const row = (m) => {
    const name = h('span', { class: 'name' }, displayName(guild.id, m.user_id));
    const color = roleColor(guild.id, m.user_id);
    if (color) name.style.color = color;
    return h('li', {}, h('button', {
      class: `member ${m.status || 'offline'}`, dataset: { userId: m.user_id, status: m.status || 'offline' },
      onclick: () => app.openMember(guild.id, m.user_id),
    }, avatar(m.user_id, displayName(guild.id, m.user_id), m.status || 'offline'), name,
    guild.owner_id === m.user_id ? h('span', { class: 'crown', title: 'Guild owner' }, '👑') : null));
  };
  panel.append(h('div', { class: 'member-list', role: 'list', 'aria-label': 'Members' },
    h('h3', {}, `Online — ${online.length}`), h('ul', {}, online.map(row)),
    h('h3', {}, `Offline — ${offline.length}`), h('ul', {}, offline.map(row))));
}

function resultList(guild, messages, empty, extra) {
  if (!messages.length) return h('p', { class: 'empty' }, empty);
  return h('ul', { class: 'results' }, messages.map((m) => {
    const parent = state.threads.get(m.channel_id)?.name ?? channelOf(guild, m.channel_id)?.name ?? '';
    return h('li', { class: 'result', dataset: { id: m.id } },
      h('div', { class: 'meta' }, h('strong', {}, displayName(guild.id, m.author_id)), h('span', { class: 'muted' }, ` #${parent} · ${formatTime(m.timestamp_ms)}`)),
      h('div', { class: 'content' }, markdown(m.content, { resolve: (kind, id) => ({ name: kind === 'user' ? displayName(guild.id, id) : kind === 'channel' ? channelOf(guild, id)?.name : guild.roles.find((r) => r.id === id)?.name }) })),
      h('div', { class: 'result-actions' },
        h('button', { class: 'link', onclick: () => app.selectChannel(m.channel_id, m.id) }, 'Jump'),
        extra?.(m)));
  }));
}

async function renderPins(guild) {
  const channelId = state.current.channelId;
  panel.append(h('h3', { class: 'panel-title' }, '📌 Pinned Messages'));
  const body = h('div', { class: 'panel-body' }, h('p', { class: 'muted' }, 'Loading…'));
  panel.append(body);
  try {
    const pins = await app.api.pins(guild.id, channelId);
    if (state.panel !== 'pins' || state.current.channelId !== channelId) return;
    clear(body).append(resultList(guild, pins.reverse(), 'This channel has no pinned messages yet.', (m) => h('button', { class: 'link danger', onclick: async () => {
      try {
        await app.api.unpin(guild.id, m.channel_id, m.id);
      } catch (err) {
        toast(err.message);
      }
    } }, 'Unpin')));
  } catch (err) {
    clear(body).append(h('p', { class: 'form-error' }, err.message));
  }
}

async function renderThreads(guild) {
  const channelId = state.threads.get(state.current.channelId)?.channel_id ?? state.current.channelId;
  panel.append(h('h3', { class: 'panel-title' }, '🧵 Threads'));
  const body = h('div', { class: 'panel-body' });
  panel.append(body);
  try {
    const threads = await app.api.threads(guild.id, channelId);
    for (const t of threads) app.noteThread({ ...t, guild_id: guild.id });
    if (state.panel !== 'threads') return;
    clear(body).append(threads.length
      ? h('ul', { class: 'results' }, threads.map((t) => h('li', { class: 'result' }, h('button', { class: 'link', onclick: () => app.selectChannel(t.id) }, `🧵 ${t.name}`))))
      : h('p', { class: 'empty' }, 'No threads yet. Start one from a message’s “Create thread” action.'));
  } catch (err) {
    clear(body).append(h('p', { class: 'form-error' }, err.message));
  }
}

async function renderSearch(guild) {
  panel.append(h('h3', { class: 'panel-title' }, `Results for “${searchQuery}”`));
  const body = h('div', { class: 'panel-body' }, h('p', { class: 'muted' }, 'Searching…'));
  panel.append(body);
  try {
    const results = await app.api.search(guild.id, searchQuery);
    if (state.panel !== 'search') return;
    clear(body).append(h('p', { class: 'muted' }, `${results.length} result${results.length === 1 ? '' : 's'}`), resultList(guild, results, 'No messages match.'));
  } catch (err) {
    clear(body).append(h('p', { class: 'form-error' }, err.message));
  }
}

export function refreshPanelFor(topic) {
  if (state.panel === topic) renderPanel();
}
