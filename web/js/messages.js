// The message pane: history with infinite scroll back, live updates, the composer, inline
// editing, replies, reactions, pins, threads and the typing line.

import { h, $, clear, toast, formatTime, confirmDialog, formDialog, inlineEditor, openEmojiPicker } from './dom.js';
import { render as markdown, preview } from './markdown.js';
import {
  state, notify, currentGuild, channelHistory, upsertMessage, displayName, roleColor, permsIn, channelOf,
  compareMessages,
} from './state.js';
import { P, has } from './perms.js';
import { app } from './main.js';
import { avatar } from './layout.js';
import { openCreateOrJoin } from './settings.js';

const PAGE = 50;
const OLDER_PAGE = 100;
const GROUP_MS = 7 * 60 * 1000;
const TYPING_EVERY_MS = 8000;

const els = new Map();
let scroller;
let list;
let composerBox;
let typingLine;
let shownChannel = null;
let loadingOlder = false;
let lastTypingSent = 0;
let readTimer = null;
/// The read mark when the channel was opened: the "new messages" line goes below it.
let readMarkOnOpen = null;

export function buildMessagesPane() {
  scroller = h('div', { class: 'scroller', id: 'scroller', onscroll: onScroll });
  list = h('ol', { class: 'messages', id: 'messages', 'aria-label': 'Messages' });
  scroller.append(list);
  typingLine = h('div', { class: 'typing', id: 'typing', 'aria-live': 'polite' });
  composerBox = h('div', { class: 'composer-box' });
  return h('section', { class: 'messages-pane' }, scroller, composerBox, typingLine);
}

const ctxFor = (guildId) => ({
  resolve(kind, id) {
    const guild = state.guilds.get(guildId);
    if (kind === 'user') {
      if (!state.members.get(guildId)?.has(id) && !state.users.has(id)) app.fetchUser(id);
      return { name: displayName(guildId, id), onclick: () => app.openMember(guildId, id) };
    }
    if (kind === 'role') {
      const role = guild?.roles.find((r) => r.id === id);
      return role && { name: role.id === guildId ? 'everyone' : role.name, color: role.color ? `#${role.color.toString(16).padStart(6, '0')}` : null };
    }
    const channel = channelOf(guild, id) || state.threads.get(id);
    return channel && { name: channel.name, onclick: () => app.selectChannel(id) };
  },
});

/// Shows the current channel from scratch: called when the selection changes.
export async function showChannel() {
  const channelId = state.current.channelId;
  shownChannel = channelId;
  els.clear();
  clear(list);
  renderComposer();
  renderTyping();
  readMarkOnOpen = channelId && state.readStates.get(channelId);
  if (!channelId) {
    list.append(h('li', { class: 'onboarding' },
      h('h3', {}, state.guilds.size ? 'No text channel here yet' : 'Welcome to Guildhall'),
      h('p', { class: 'muted' }, state.guilds.size ? 'Pick a channel on the left.' : 'Create a guild for your community, or join one with an invite link.'),
      state.guilds.size ? null : h('button', { class: 'primary', onclick: openCreateOrJoin }, 'Create or join a guild')));
    return;
  }
  const guildId = state.current.guildId;
  const hist = channelHistory(channelId);
  if (!hist.loaded) {
    list.append(h('li', { class: 'loading' }, 'Loading messages…'));
    try {
      const page = await app.api.messages(guildId, channelId, { limit: PAGE });
      for (const m of page) upsertMessage(m);
      hist.reachedStart = page.length < PAGE;
      hist.loaded = true;
    } catch (err) {
      if (shownChannel === channelId) {
        clear(list).append(h('li', { class: 'empty' }, err.code === 'missing_permission' ? 'You cannot read the history of this channel.' : err.message));
      }
      return;
    }
    if (shownChannel !== channelId) return;
  }
  renderAll();
  scroller.scrollTop = scroller.scrollHeight;
  fillViewport();
  // At once, not debounced: the user may switch away before a timer fires.
  markRead();
}

function renderAll() {
  const hist = channelHistory(shownChannel);
  clear(list);
  els.clear();
  list.append(startMarker(hist));
  let prev = null;
  for (const m of hist.list) {
    const el = messageEl(m, prev);
    els.set(m.id, el);
    list.append(el);
    if (m.id === readMarkOnOpen && m !== hist.list[hist.list.length - 1]) {
      list.append(h('li', { class: 'new-divider', role: 'separator' }, h('span', {}, 'NEW')));
    }
    prev = m;
  }
}

function startMarker(hist) {
  const guild = currentGuild();
  const name = channelOf(guild, shownChannel)?.name ?? state.threads.get(shownChannel)?.name ?? '';
  return h('li', { class: `history-start${hist.reachedStart ? '' : ' hidden'}`, id: 'history-start' },
    h('h3', {}, `Welcome to #${name}!`), h('p', { class: 'muted' }, `This is the start of the #${name} channel.`));
}

function grouped(prev, m) {
  return prev && prev.author_id === m.author_id && !m.reply_to && m.timestamp_ms - prev.timestamp_ms < GROUP_MS;
}

function messageEl(m, prev) {
  const guildId = state.current.guildId;
  if (!state.members.get(guildId)?.has(m.author_id) && !state.users.has(m.author_id)) app.fetchUser(m.author_id);
  const name = displayName(guildId, m.author_id);
  const color = roleColor(guildId, m.author_id);
  const mine = m.author_id === state.me.id;
  const mentioned = m.content.includes(`<@${state.me.id}>`);
  const author = h('button', { class: 'author', onclick: () => app.openMember(guildId, m.author_id) }, name);
  if (color) author.style.color = color;
  const el = h('li', {
    class: `message${grouped(prev, m) ? ' compact' : ''}${mine ? ' mine' : ''}${mentioned ? ' mentioned' : ''}${m.pinned ? ' pinned' : ''}`,
    dataset: { id: m.id, author: m.author_id },
  },
  m.reply_to ? replyRef(m) : null,
  avatar(m.author_id, name),
  h('div', { class: 'body' },
    h('div', { class: 'meta' }, author, h('time', { datetime: new Date(m.timestamp_ms).toISOString(), title: new Date(m.timestamp_ms).toLocaleString() }, formatTime(m.timestamp_ms)),
      m.pinned ? h('span', { class: 'badge pin', title: 'Pinned' }, '📌') : null),
    h('div', { class: 'content' }, markdown(m.content, ctxFor(guildId)),
      m.edited_at_ms ? h('span', { class: 'edited', title: `Edited ${new Date(m.edited_at_ms).toLocaleString()}` }, ' (edited)') : null),
    m.thread_id ? threadLink(m.thread_id) : null,
    m.reactions.length ? h('div', { class: 'reactions' }, m.reactions.map((r) => reactionChip(m, r))) : null),
  actions(m));
  return el;
}

function replyRef(m) {
  const hist = channelHistory(m.channel_id);
  const target = hist.byId.get(m.reply_to) || hist.quoted?.get(m.reply_to);
  const guildId = state.current.guildId;
  if (!target && !hist.missing?.has(m.reply_to)) loadReplyTarget(guildId, m.channel_id, m.reply_to);
  return h('div', { class: 'reply-ref', onclick: () => focusMessage(m.reply_to) },
    h('span', { class: 'reply-spine' }),
    target
      ? [h('span', { class: 'reply-author' }, `@${displayName(guildId, target.author_id)}`), h('span', { class: 'reply-text' }, preview(target.content, 80))]
      : h('span', { class: 'reply-text muted' }, hist.missing?.has(m.reply_to) ? 'Original message was deleted' : 'Loading…'));
}

async function loadReplyTarget(guildId, channelId, id) {
  const hist = channelHistory(channelId);
  hist.fetching ??= new Set();
  if (hist.fetching.has(id)) return;
  hist.fetching.add(id);
  try {
    const target = await app.api.message(guildId, channelId, id);
    hist.quoted ??= new Map();
    hist.quoted.set(id, target);
    rerenderReplies(channelId, id, target);
  } catch {
    hist.missing ??= new Set();
    hist.missing.add(id);
    rerenderReplies(channelId, id, null);
  }
}

function rerenderReplies(channelId, id, target) {
  if (channelId !== shownChannel) return;
  for (const [mid, el] of els) {
    const m = channelHistory(channelId).byId.get(mid);
    if (m?.reply_to !== id) continue;
    const ref = el.querySelector('.reply-ref');
    if (!ref) continue;
    const guildId = state.current.guildId;
    ref.replaceWith(target
      ? h('div', { class: 'reply-ref', onclick: () => focusMessage(id) }, h('span', { class: 'reply-spine' }),
        h('span', { class: 'reply-author' }, `@${displayName(guildId, target.author_id)}`), h('span', { class: 'reply-text' }, preview(target.content, 80)))
      : replyRef(m));
  }
}

export function focusMessage(id) {
  const el = els.get(id);
  if (!el) {
    toast('That message is further back; scroll up to load it.', 'info');
    return;
  }
  el.scrollIntoView({ block: 'center' });
  el.classList.add('flash');
  setTimeout(() => el.classList.remove('flash'), 1500);
}

function threadLink(threadId) {
  const thread = state.threads.get(threadId);
  return h('button', { class: 'thread-link', onclick: () => app.selectChannel(threadId) }, '🧵 ', thread?.name ?? 'Thread', h('span', { class: 'muted' }, ' — open thread'));
}

function reactionChip(m, r) {
  const mine = r.users.includes(state.me.id);
  return h('button', {
    class: `reaction${mine ? ' mine' : ''}`, 'aria-pressed': String(mine), dataset: { emoji: r.emoji },
    title: r.users.map((u) => displayName(state.current.guildId, u)).join(', '),
    onclick: () => toggleReaction(m, r.emoji, mine),
  }, h('span', { class: 'emoji' }, r.emoji), h('span', { class: 'count' }, String(r.count)));
}

async function toggleReaction(m, emoji, mine) {
  try {
    if (mine) await app.api.unreact(state.current.guildId, m.channel_id, m.id, emoji);
    else await app.api.react(state.current.guildId, m.channel_id, m.id, emoji);
  } catch (err) {
    toast(err.message);
  }
}

function actions(m) {
  const guildId = state.current.guildId;
  const perms = permsIn(guildId, m.channel_id);
  const mine = m.author_id === state.me.id;
  const inThread = state.threads.has(m.channel_id);
  const button = (label, icon, fn, cls = '') => h('button', { class: `icon ${cls}`, title: label, 'aria-label': label, onclick: (e) => fn(e) }, icon);
  const bar = h('div', { class: 'msg-actions', role: 'toolbar', 'aria-label': 'Message actions' });
  if (has(perms, P.ADD_REACTIONS)) bar.append(button('Add reaction', '☺', (e) => openPicker(e.currentTarget, m)));
  if (has(perms, inThread ? P.SEND_MESSAGES_IN_THREADS : P.SEND_MESSAGES)) bar.append(button('Reply', '↩', () => startReply(m)));
  if (mine) bar.append(button('Edit', '✎', () => startEdit(m.id)));
  if (!inThread && !m.thread_id && has(perms, P.CREATE_PUBLIC_THREADS)) bar.append(button('Create thread', '🧵', () => createThread(m)));
  if (has(perms, P.PIN_MESSAGES) || has(perms, P.MANAGE_MESSAGES)) {
    bar.append(button(m.pinned ? 'Unpin' : 'Pin', '📌', () => togglePin(m)));
  }
  if (mine || has(perms, P.MANAGE_MESSAGES)) bar.append(button('Delete', '🗑', (e) => deleteMessage(m, e.shiftKey), 'danger'));
  return bar;
}

function openPicker(anchor, m) {
  openEmojiPicker(anchor, (e) => {
    const r = m.reactions.find((x) => x.emoji === e);
    toggleReaction(m, e, !!r?.users.includes(state.me.id));
  });
}

function startReply(m) {
  state.replyTo = m;
  renderComposer();
  $('#composer')?.focus();
}

async function togglePin(m) {
  try {
    if (m.pinned) await app.api.unpin(state.current.guildId, m.channel_id, m.id);
    else await app.api.pin(state.current.guildId, m.channel_id, m.id);
  } catch (err) {
    toast(err.message);
  }
}

async function deleteMessage(m, skipConfirm) {
  if (!skipConfirm && !(await confirmDialog('Delete Message', `Delete this message? “${preview(m.content, 120)}”`, 'Delete'))) return;
  try {
    await app.api.deleteMessage(state.current.guildId, m.channel_id, m.id);
  } catch (err) {
    toast(err.message);
  }
}

async function createThread(m) {
  const values = await formDialog('Create Thread', [{ name: 'name', label: 'Thread name', value: preview(m.content, 40), required: true, maxlength: 100 }], 'Create');
  if (!values) return;
  try {
    const thread = await app.api.createThread(state.current.guildId, m.channel_id, values.name.trim(), m.id);
    app.noteThread({ ...thread, guild_id: state.current.guildId });
    app.selectChannel(thread.id);
  } catch (err) {
    toast(err.message);
  }
}

function startEdit(id) {
  const el = els.get(id);
  const m = channelHistory(shownChannel).byId.get(id);
  if (!el || !m) return;
  const save = async (text, done) => {
    if (!text) {
      done();
      deleteMessage(m, false);
      return;
    }
    if (text === m.content) {
      done();
      return;
    }
    try {
      const updated = await app.api.editMessage(state.current.guildId, m.channel_id, m.id, text);
      done();
      onMessage(updated);
    } catch (err) {
      toast(err.message);
    }
  };
  const box = inlineEditor(el.querySelector('.content'), m.content, save, '#composer');
  autosize(box);
  box.addEventListener('input', () => autosize(box));
}

function autosize(box) {
  box.style.height = 'auto';
  box.style.height = `${Math.min(box.scrollHeight, 300)}px`;
}

function renderComposer() {
  clear(composerBox);
  const guildId = state.current.guildId;
  const channelId = state.current.channelId;
  if (!guildId || !channelId) return;
  const thread = state.threads.get(channelId);
  const channel = channelOf(currentGuild(), channelId);
  const perms = permsIn(guildId, channelId);
  const canSend = has(perms, thread ? P.SEND_MESSAGES_IN_THREADS : P.SEND_MESSAGES);
  if (state.replyTo && state.replyTo.channel_id === channelId) {
    composerBox.append(h('div', { class: 'replying' },
      'Replying to ', h('strong', {}, displayName(guildId, state.replyTo.author_id)),
      h('button', { class: 'icon', 'aria-label': 'Cancel reply', onclick: () => { state.replyTo = null; renderComposer(); } }, '✕')));
  }
  const name = thread ? thread.name : `#${channel?.name ?? ''}`;
  const box = h('textarea', {
    id: 'composer', rows: 1, maxlength: 4000, 'aria-label': `Message ${name}`,
    placeholder: canSend ? `Message ${name}` : 'You do not have permission to send messages in this channel.',
    disabled: !canSend,
  });
  box.value = app.drafts.get(channelId) || '';
  box.addEventListener('input', () => {
    app.drafts.set(channelId, box.value);
    autosize(box);
    if (box.value.trim() && Date.now() - lastTypingSent > TYPING_EVERY_MS) {
      lastTypingSent = Date.now();
      app.gateway.typing(guildId, channelId);
    }
  });
  box.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send(box);
    } else if (e.key === 'ArrowUp' && !box.value) {
      const last = [...channelHistory(channelId).list].reverse().find((m) => m.author_id === state.me.id);
      if (last) {
        e.preventDefault();
        startEdit(last.id);
      }
    } else if (e.key === 'Escape' && state.replyTo) {
      state.replyTo = null;
      renderComposer();
    }
  });
  composerBox.append(h('div', { class: 'composer' }, box));
  autosize(box);
}

/// Turns `@name` and `#channel` into mention syntax for members, roles and channels we know.
function encodeMentions(text, guildId) {
  const guild = state.guilds.get(guildId);
  const members = [...(state.members.get(guildId)?.values() || [])];
  return text.split(/(```[\s\S]*?```|`[^`]*`)/).map((part, i) => {
    if (i % 2) return part;
    return part
      .replace(/(^|[\s(])@([a-z0-9_.-]{2,32})\b/g, (all, pre, name) => {
        if (name === 'everyone') return `${pre}<@&${guildId}>`;
        const member = members.find((m) => m.username === name || m.nick === name);
        if (member) return `${pre}<@${member.user_id}>`;
        const role = guild.roles.find((r) => r.name.toLowerCase() === name);
        return role ? `${pre}<@&${role.id}>` : all;
      })
      .replace(/(^|[\s(])#([\w-]{1,100})/g, (all, pre, name) => {
        const channel = guild.channels.find((c) => c.name === name && c.kind !== 'category');
        return channel ? `${pre}<#${channel.id}>` : all;
      });
  }).join('');
}

async function send(box) {
  const text = box.value.trim();
  if (!text) return;
  const guildId = state.current.guildId;
  const channelId = state.current.channelId;
  const replyTo = state.replyTo?.channel_id === channelId ? state.replyTo.id : null;
  box.value = '';
  app.drafts.delete(channelId);
  autosize(box);
  state.replyTo = null;
  if (replyTo) renderComposer();
  lastTypingSent = 0;
  const content = encodeMentions(text, guildId);
  const pending = h('li', { class: 'message pending mine' }, avatar(state.me.id, state.me.username),
    h('div', { class: 'body' }, h('div', { class: 'meta' }, h('span', { class: 'author' }, displayName(guildId, state.me.id))),
      h('div', { class: 'content' }, markdown(content, ctxFor(guildId)))));
  list.append(pending);
  scroller.scrollTop = scroller.scrollHeight;
  try {
    const id = await app.gateway.send({ guild_id: guildId, channel_id: channelId, content, reply_to: replyTo });
    pending.remove();
    if (!channelHistory(channelId).byId.has(id)) onMessage(await app.api.message(guildId, channelId, id));
  } catch (err) {
    pending.classList.add('failed');
    pending.querySelector('.body').append(h('div', { class: 'form-error' }, `Not sent: ${err.message}`));
  }
}

function atBottom() {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
}

/// A message arrived or changed; places it if its channel is on screen.
export function onMessage(m) {
  const wasBottom = shownChannel && atBottom();
  const hist = channelHistory(m.channel_id);
  if (!hist.loaded && !hist.byId.has(m.id)) {
    upsertMessage(m);
    return;
  }
  const index = upsertMessage(m);
  if (m.channel_id !== shownChannel) return;
  const prev = hist.list[index - 1] || null;
  const el = messageEl(m, prev);
  const old = els.get(m.id);
  els.set(m.id, el);
  if (old) {
    old.replaceWith(el);
  } else {
    const next = hist.list[index + 1];
    const nextEl = next && els.get(next.id);
    if (nextEl) list.insertBefore(el, nextEl);
    else list.insertBefore(el, list.querySelector('.pending'));
    if (next && nextEl) nextEl.classList.toggle('compact', !!grouped(m, next));
  }
  if (wasBottom) scroller.scrollTop = scroller.scrollHeight;
  rerenderReplies(m.channel_id, m.id, m);
  scheduleRead();
}

export function onMessageDeleted(channelId, id) {
  if (channelId !== shownChannel) return;
  const el = els.get(id);
  if (!el) return;
  const next = el.nextElementSibling;
  el.remove();
  els.delete(id);
  const hist = channelHistory(channelId);
  if (next?.dataset.id) {
    const i = hist.list.findIndex((m) => m.id === next.dataset.id);
    if (i >= 0) next.classList.toggle('compact', !!grouped(hist.list[i - 1], hist.list[i]));
  }
  hist.missing ??= new Set();
  hist.missing.add(id);
  rerenderReplies(channelId, id, null);
}

/// Re-renders every shown message, after names, roles or permissions changed.
export function refreshMessages() {
  if (!shownChannel || !channelHistory(shownChannel).loaded) return;
  const top = scroller.scrollTop;
  renderAll();
  scroller.scrollTop = top;
  renderComposer();
}

function onScroll() {
  if (scroller.scrollTop < 400) loadOlder();
  if (atBottom()) scheduleRead();
}

async function loadOlder() {
  const channelId = shownChannel;
  const hist = channelHistory(channelId);
  if (loadingOlder || !hist.loaded || hist.reachedStart || !hist.list.length) return;
  loadingOlder = true;
  try {
    const page = await app.api.messages(state.current.guildId, channelId, { before: hist.list[0].id, limit: OLDER_PAGE });
    if (channelId !== shownChannel) return;
    const height = scroller.scrollHeight;
    const top = scroller.scrollTop;
    for (const m of page) upsertMessage(m);
    hist.reachedStart = page.length < OLDER_PAGE;
    const first = list.querySelector('.message');
    const firstMessage = first && hist.byId.get(first.dataset.id);
    let prev = null;
    const frag = document.createDocumentFragment();
    for (const m of page) {
      const el = messageEl(m, prev);
      els.set(m.id, el);
      frag.append(el);
      prev = m;
    }
    if (first && firstMessage) first.classList.toggle('compact', !!grouped(prev, firstMessage));
    $('#history-start').after(frag);
    $('#history-start').classList.toggle('hidden', !hist.reachedStart);
    scroller.scrollTop = top + (scroller.scrollHeight - height);
  } catch (err) {
    toast(err.message);
  } finally {
    loadingOlder = false;
  }
  fillViewport();
}

/// Keeps loading older pages while there is nothing to scroll.
function fillViewport() {
  if (scroller.scrollHeight <= scroller.clientHeight + 400) loadOlder();
}

function scheduleRead() {
  clearTimeout(readTimer);
  readTimer = setTimeout(markRead, 300);
}

function markRead() {
  const channelId = shownChannel;
  if (!channelId || document.visibilityState !== 'visible' || !atBottom()) return;
  const hist = channelHistory(channelId);
  const last = hist.list[hist.list.length - 1];
  if (!last || state.readStates.get(channelId) === last.id) return;
  const latest = state.latest.get(channelId);
  if (latest && compareMessages(latest, last) > 0) return;
  state.readStates.set(channelId, last.id);
  notify('unread');
  app.api.markRead(state.current.guildId, channelId, last.id).catch((err) => toast(err.message));
}

export function renderTyping() {
  if (!typingLine) return;
  clear(typingLine);
  const now = Date.now();
  const typers = [...(state.typing.get(shownChannel)?.entries() || [])].filter(([, until]) => until > now).map(([u]) => displayName(state.current.guildId, u));
  if (!typers.length) return;
  const text = typers.length === 1 ? `${typers[0]} is typing…`
    : typers.length <= 3 ? `${typers.slice(0, -1).join(', ')} and ${typers[typers.length - 1]} are typing…`
      : 'Several people are typing…';
  typingLine.append(h('span', { class: 'dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')), h('span', {}, text));
}
