// Encrypted direct messages (spec/dm.md): the DM home (conversation list, new message), a
// conversation view with replies, edits, deletes and reactions, and the keyring. The identity
// key and the DM secrets live in this browser's localStorage for the signed-in user; the node
// only ever sees key records and ciphertext. Every DM is opened here, from the inbox
// (GET /dms) on load and from DM_CREATE dispatches live.

import { h, $, clear, append, toast, formatTime, confirmDialog, modal, inlineEditor, openEmojiPicker } from './dom.js';
import { render as markdown, preview } from './markdown.js';
import { state, notify } from './state.js';
import { app } from './main.js';
import { avatar } from './layout.js';
import * as dc from './dmcrypto.js';
import { Conversations, checkPayload } from './dmconv.js';

const { hex, unhex } = dc;
const KEYRING_KEY = (user) => `guildhall.dm.keyring.${user}`;
const READ_KEY = (user) => `guildhall.dm.read.${user}`;
const INBOX_PAGE = 500;
const KEYS_FRESH_MS = 30_000;
const GROUP_MS = 7 * 60 * 1000;
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: true });

export const dms = {
  open: false,
  /// { identity: Uint8Array, user: hex, secrets: [{ version, secret, public }] } once unlocked.
  keyring: null,
  convs: new Conversations(),
  current: null,
  processed: new Set(),
  maxPosition: 0,
  loaded: false,
  /// user hex → { at, records: [verified record] }
  keys: new Map(),
  /// DMs whose envelope did not even verify (no trustworthy conversation to show them in).
  broken: 0,
  refused: 0,
  replyTo: null,
  read: {},
  infoOpen: true,
};

let queue = Promise.resolve();
const els = new Map();
let view;
let scroller;
let list;
let composerBox;
let info;

// ---- keyring ----

function saveKeyring() {
  const k = dms.keyring;
  localStorage.setItem(KEYRING_KEY(k.user), JSON.stringify({
    identity: hex(k.identity),
    secrets: k.secrets.map((s) => ({ version: s.version, secret: hex(s.secret) })),
  }));
}

async function loadKeyring(user) {
  const text = localStorage.getItem(KEYRING_KEY(user));
  if (!text) return null;
  try {
    const saved = JSON.parse(text);
    const identity = unhex(saved.identity, 32);
    if (hex(await dc.ed25519Public(identity)) !== user) return null;
    const secrets = [];
    for (const s of saved.secrets) {
      const secret = unhex(s.secret, 32);
      secrets.push({ version: s.version, secret, public: await dc.x25519Public(secret) });
    }
    if (!secrets.length) return null;
    return { identity, user, secrets };
  } catch {
    return null;
  }
}

const currentSecret = () => dms.keyring.secrets[dms.keyring.secrets.length - 1];

async function secretFor(publicKey) {
  return dms.keyring.secrets.find((s) => dc.equalBytes(s.public, publicKey))?.secret ?? null;
}

/// A user's verified key records, cached for a while (`fresh` asks the node again).
async function recordsOf(user, fresh = false) {
  const cached = dms.keys.get(user);
  if (cached && !fresh && Date.now() - cached.at < KEYS_FRESH_MS) return cached.records;
  const { records } = await app.api.req('GET', `/users/${user}/dm-keys`);
  const verified = [];
  for (const text of records) {
    try {
      const r = await dc.verifyKeyRecord(unhex(text));
      if (hex(r.user) === user) verified.push(r);
    } catch {
      // A record that does not verify is not this user's.
    }
  }
  dms.keys.set(user, { at: Date.now(), records: verified });
  return verified;
}

const newest = (records) => records.reduce((a, r) => (!a || r.version > a.version ? r : a), null);

/// Makes sure the keyring's current key is the user's newest published one.
async function publishKey() {
  const published = await recordsOf(dms.keyring.user, true);
  const mine = currentSecret();
  if (published.some((r) => dc.equalBytes(r.key, mine.public))) return;
  const top = Math.max(0, ...published.map((r) => r.version));
  if (mine.version <= top) {
    // Another browser published a newer key: this one takes the next version.
    mine.version = top + 1;
    saveKeyring();
  }
  const { home } = await app.api.req('GET', '/dms/home');
  const record = await dc.signKeyRecord({
    user: unhex(dms.keyring.user), key: mine.public, version: mine.version, createdMs: Date.now(), home: unhex(home),
  }, dms.keyring.identity);
  await app.api.req('PUT', '/users/@me/dm-keys', { record: hex(record) });
  dms.keys.delete(dms.keyring.user);
}

/// Asks the node for the identity key (the password proves it is the user), makes a DM key,
/// publishes it and keeps both in this browser.
async function unlock(password) {
  const { secret_key: secretHex } = await app.api.req('POST', '/users/@me/key', { password });
  const identity = unhex(secretHex, 32);
  const user = hex(await dc.ed25519Public(identity));
  if (user !== state.me.id) throw new Error('The node returned a key that is not yours.');
  const secret = dc.randomBytes(32);
  dms.keyring = { identity, user, secrets: [{ version: 1, secret, public: await dc.x25519Public(secret) }] };
  const existing = await recordsOf(user, true);
  dms.keyring.secrets[0].version = Math.max(0, ...existing.map((r) => r.version)) + 1;
  saveKeyring();
  await publishKey();
}

/// At sign-in: a keyring already in this browser unlocks DMs at once and loads the inbox.
export async function initDms(first) {
  if (!first) {
    if (dms.keyring) enqueue(loadInbox);
    return;
  }
  dms.read = JSON.parse(localStorage.getItem(READ_KEY(state.me.id)) || '{}');
  dms.keyring = await loadKeyring(state.me.id);
  if (!dms.keyring) return;
  publishKey().catch((err) => toast(`Could not publish your DM key: ${err.message}`));
  enqueue(loadInbox);
}

// ---- the inbox ----

function enqueue(fn) {
  queue = queue.then(fn).catch((err) => toast(`Direct messages: ${err.message}`));
  return queue;
}

async function loadInbox() {
  for (;;) {
    const page = await app.api.req('GET', `/dms?after=${dms.maxPosition}&limit=${INBOX_PAGE}`);
    for (const d of page.dms) await processDm(d);
    if (page.dms.length < INBOX_PAGE) break;
  }
  dms.loaded = true;
  renderAllDm();
}

export function onDmCreate(d) {
  if (!dms.keyring) {
    notify('guilds');
    return;
  }
  enqueue(async () => {
    await processDm(d);
    renderAllDm();
  });
}

/// Verifies, opens and applies one inbox entry `{ position, envelope }`.
async function processDm(d) {
  if (dms.processed.has(d.position)) return;
  dms.processed.add(d.position);
  dms.maxPosition = Math.max(dms.maxPosition, d.position);
  let verified;
  try {
    verified = await dc.verifyEnvelope(unhex(d.envelope));
  } catch (err) {
    dms.broken += 1;
    toast(`A direct message was refused: it does not verify (${err.code || err.message}).`);
    return;
  }
  const env = verified.envelope;
  const members = env.wraps.map((w) => hex(w.user));
  const conversation = hex(env.conversation);
  const sender = hex(env.sender);
  const pairOk = members.length !== 2 || hex(await dc.pairConversation(env.wraps[0].user, env.wraps[1].user)) === conversation;
  if (!pairOk) {
    // Two members under another id: someone trying to pass for a 1:1 conversation.
    dms.refused += 1;
    return;
  }
  const base = { id: verified.id, sender, members, sentMs: env.sentMs, position: d.position, pairOk };
  let payload;
  try {
    const plain = await dc.open(env, unhex(dms.keyring.user), secretFor);
    let records = await recordsOf(sender);
    if (!records.some((r) => dc.equalBytes(r.key, env.senderKey))) records = await recordsOf(sender, true);
    if (!records.some((r) => dc.equalBytes(r.key, env.senderKey))) {
      throw new dc.DmError('dm_unknown_sender_key', 'the sender’s DM key is not one the sender published');
    }
    try {
      payload = checkPayload(JSON.parse(fromUtf8.decode(plain)));
    } catch (err) {
      throw err instanceof dc.DmError ? err : new dc.DmError('malformed_dm', 'the payload is not a DM payload');
    }
  } catch (err) {
    dms.convs.ensure(conversation, members).fail({ ...base, code: err.code || 'malformed_dm' });
    return;
  }
  const conv = dms.convs.ensure(conversation, members);
  try {
    const changed = conv.apply({ ...base, payload });
    if (conv === currentConv()) patchMessage(conv, changed);
  } catch (err) {
    if (err.code !== 'dm_replayed') dms.refused += 1;
  }
}

function currentConv() {
  return dms.open && dms.current ? dms.convs.get(dms.current) : null;
}

export function isUnread(conv) {
  return conv.messages.some((m) => m.sender !== state.me.id && m.position > (dms.read[conv.key] ?? 0) && !m.deleted);
}

export const anyUnread = () => dms.convs.list().some(isUnread);

function markRead(conv) {
  if (!conv || document.visibilityState !== 'visible') return;
  if ((dms.read[conv.key] ?? 0) >= conv.lastPosition) return;
  dms.read[conv.key] = conv.lastPosition;
  localStorage.setItem(READ_KEY(state.me.id), JSON.stringify(dms.read));
  renderDmList();
  notify('guilds');
}

// ---- names ----

const fetching = new Set();

export function userName(id) {
  if (id === state.me?.id) return state.me.username;
  for (const members of state.members.values()) {
    const m = members.get(id);
    if (m?.username) return m.username;
  }
  const user = state.users.get(id);
  if (user?.username) return user.username;
  if (!fetching.has(id)) {
    fetching.add(id);
    app.api.user(id).then((u) => {
      state.users.set(id, u);
      renderAllDm();
    }).catch(() => {});
  }
  return `user-${id.slice(0, 6)}`;
}

function convTitle(conv) {
  const others = [...conv.members].filter((m) => m !== state.me.id).map(userName).sort();
  return others.length ? others.join(', ') : 'Just you';
}

// ---- mode ----

export const dmOpen = () => dms.open;

/// Shows the DM home, or conversation `key`.
export function openDms(key = null) {
  dms.open = true;
  if (key) dms.current = key;
  const path = dms.current ? `/channels/@me/${dms.current}` : '/channels/@me';
  if (location.pathname !== path) history.pushState(null, '', path);
  document.querySelector('.messages-pane:not(.dm-pane)')?.setAttribute('hidden', '');
  $('#side-panel')?.setAttribute('hidden', '');
  view.hidden = false;
  dms.replyTo = null;
  notify('guilds', 'channels', 'header', 'panel');
  showConversation();
}

export function closeDms() {
  if (!dms.open) return;
  dms.open = false;
  view.hidden = true;
  document.querySelector('.messages-pane:not(.dm-pane)')?.removeAttribute('hidden');
}

export function buildDmView() {
  scroller = h('div', { class: 'scroller', id: 'dm-scroller', onscroll: () => { if (atBottom()) markRead(currentConv()); } });
  list = h('ol', { class: 'messages', id: 'dm-messages', 'aria-label': 'Direct messages' });
  scroller.append(list);
  composerBox = h('div', { class: 'composer-box' });
  info = h('aside', { class: 'side-panel dm-info', id: 'dm-info', 'aria-label': 'Conversation info' });
  view = h('div', { class: 'dm-view', id: 'dm-view', hidden: true },
    h('section', { class: 'messages-pane dm-pane' }, scroller, composerBox, h('div', { class: 'typing' })), info);
  return view;
}

/// Re-renders everything DM-related that is on screen.
function renderAllDm() {
  notify('guilds');
  if (!dms.open) return;
  renderDmList();
  renderDmHeader();
  if (shownAs() !== shown) showConversation();
  else renderInfo();
}

/// What the conversation pane shows; it is redrawn whole only when this changes.
let shown = '';
const shownAs = () => `${dms.current}|${!!currentConv()}|${dms.loaded}|${!!dms.keyring}`;

// ---- sidebar, header ----

export function renderDmSidebarHeader() {
  const header = clear($('#guild-header'));
  header.append(h('div', { class: 'dm-head' },
    h('span', { class: 'dm-head-title' }, 'Direct Messages'),
    h('button', { class: 'icon', title: 'New message', 'aria-label': 'New message', onclick: () => newMessage() }, '✚')));
}

export function renderDmList() {
  const box = $('#channels');
  if (!box || !dms.open) return;
  clear(box);
  if (!dms.keyring) {
    box.append(h('p', { class: 'empty' }, 'Unlock encrypted DMs to see your conversations.'));
    return;
  }
  const convs = dms.convs.list();
  const current = dms.current && !dms.convs.get(dms.current) ? null : dms.current;
  if (!convs.length) box.append(h('p', { class: 'empty' }, 'No conversations yet. Start one with “New message”.'));
  for (const conv of convs) {
    const unread = conv.key !== current && isUnread(conv);
    const others = [...conv.members].filter((m) => m !== state.me.id);
    box.append(h('div', { class: `channel dm-conv${conv.key === current ? ' selected' : ''}${unread ? ' unread' : ''}`, dataset: { conv: conv.key, kind: conv.kind } },
      h('button', { class: 'channel-link', onclick: () => selectConv(conv.key) },
        conv.kind === 'pair' && others[0] ? avatar(others[0], userName(others[0])) : h('span', { class: 'avatar group', 'aria-hidden': 'true' }, String(conv.members.size)),
        h('span', { class: 'dm-conv-text' },
          h('span', { class: 'channel-name' }, convTitle(conv)),
          conv.kind === 'group' ? h('span', { class: 'dm-conv-sub' }, `${conv.members.size} members`) : null))));
  }
}

export function renderDmHeader() {
  const header = clear($('#chat-header'));
  const conv = currentConv();
  document.title = conv ? `${convTitle(conv)} — Guildhall` : 'Direct Messages — Guildhall';
  header.append(
    h('div', { class: 'title' },
      h('span', { class: 'hash' }, conv?.kind === 'group' ? '👥' : '@'),
      h('span', { class: 'channel-title' }, conv ? convTitle(conv) : 'Direct Messages'),
      h('span', { class: 'topic', title: 'End-to-end encrypted' }, '🔒 End-to-end encrypted')),
    h('div', { class: 'tools' },
      h('span', { id: 'conn', class: `conn ${app.gateway?.status ?? 'connecting'}`, role: 'status' }, app.gateway?.status === 'live' ? 'Live' : 'Connecting…'),
      conv ? h('button', {
        class: `icon tab${dms.infoOpen ? ' active' : ''}`, title: 'Conversation info', 'aria-label': 'Conversation info', 'aria-pressed': String(dms.infoOpen),
        onclick: () => { dms.infoOpen = !dms.infoOpen; renderDmHeader(); renderInfo(); },
      }, '👥') : null));
}

function selectConv(key) {
  dms.current = key;
  dms.replyTo = null;
  const path = `/channels/@me/${key}`;
  if (location.pathname !== path) history.pushState(null, '', path);
  renderDmList();
  renderDmHeader();
  showConversation();
}

// ---- the conversation ----

const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;

function showConversation() {
  shown = shownAs();
  els.clear();
  clear(list);
  clear(composerBox);
  renderInfo();
  if (!dms.keyring) {
    list.append(unlockCard());
    return;
  }
  const conv = currentConv();
  if (!conv) {
    list.append(h('li', { class: 'onboarding' },
      h('h3', {}, 'Direct Messages'),
      h('p', { class: 'muted' }, dms.loaded ? 'Pick a conversation, or start a new one with someone from your guilds.' : 'Loading your messages…'),
      h('button', { class: 'primary', onclick: () => newMessage() }, 'New message')));
    return;
  }
  list.append(h('li', { class: 'history-start' },
    h('h3', {}, convTitle(conv)),
    h('p', { class: 'muted' }, conv.kind === 'pair'
      ? `This is the beginning of your encrypted direct messages with ${convTitle(conv)}.`
      : 'This is the beginning of this encrypted group.')));
  let prev = null;
  for (const m of conv.messages) {
    const el = messageEl(conv, m, prev);
    els.set(m.id, el);
    if (el) list.append(el);
    if (!m.deleted) prev = m;
  }
  renderComposer(conv);
  scroller.scrollTop = scroller.scrollHeight;
  markRead(conv);
}

/// A DM changed or arrived in the shown conversation: redraw its element only.
function patchMessage(conv, id) {
  const m = conv.message(id);
  if (!m) return;
  const wasBottom = atBottom();
  const old = els.get(id);
  const i = conv.messages.indexOf(m);
  const prev = conv.messages.slice(0, i).reverse().find((x) => !x.deleted) ?? null;
  const el = messageEl(conv, m, prev);
  if (old) {
    if (el) old.replaceWith(el);
    else old.remove();
  } else if (el) {
    list.insertBefore(el, list.querySelector('.pending'));
  }
  els.set(id, el);
  for (const other of conv.messages) {
    if (other.replyTo === id && els.get(other.id)) {
      els.get(other.id).querySelector('.reply-ref')?.replaceWith(replyRef(conv, other));
    }
  }
  if (wasBottom) scroller.scrollTop = scroller.scrollHeight;
  if (atBottom()) markRead(conv);
}

function messageEl(conv, m, prev) {
  if (m.deleted) return null;
  const name = userName(m.sender);
  const mine = m.sender === state.me.id;
  const time = h('time', { datetime: new Date(m.sentMs).toISOString(), title: new Date(m.sentMs).toLocaleString() }, formatTime(m.sentMs));
  if (m.failed) {
    return h('li', { class: 'message dm-failed', dataset: { id: m.id, author: m.sender } },
      avatar(m.sender, name),
      h('div', { class: 'body' },
        h('div', { class: 'meta' }, h('span', { class: 'author' }, name), time),
        h('div', { class: 'content', role: 'alert' }, `🔒 This message could not be opened (${m.failed}). `,
          h('span', { class: 'muted' }, failureText(m.failed)))));
  }
  const compact = prev && !prev.failed && prev.sender === m.sender && !m.replyTo && m.sentMs - prev.sentMs < GROUP_MS;
  return h('li', { class: `message${compact ? ' compact' : ''}${mine ? ' mine' : ''}`, dataset: { id: m.id, author: m.sender } },
    m.replyTo ? replyRef(conv, m) : null,
    avatar(m.sender, name),
    h('div', { class: 'body' },
      h('div', { class: 'meta' }, h('span', { class: 'author' }, name), time),
      h('div', { class: 'content' }, markdown(m.content, { resolve: (kind, id) => (kind === 'user' ? { name: userName(id) } : null) }),
        m.edited ? h('span', { class: 'edited' }, ' (edited)') : null),
      m.reactions.size ? h('div', { class: 'reactions' }, [...m.reactions].map(([emoji, users]) => reactionChip(conv, m, emoji, users))) : null),
    actions(conv, m));
}

function failureText(code) {
  return {
    dm_tampered: 'It was altered on the way, or was not made with the sender’s DM key.',
    dm_unknown_key: 'It was encrypted to a DM key this browser does not hold (perhaps one made in another browser).',
    dm_unknown_sender_key: 'It was made with a DM key the sender never published.',
    dm_not_recipient: 'It is not addressed to you.',
  }[code] ?? 'Its content is not a valid direct message.';
}

function replyRef(conv, m) {
  const target = conv.message(m.replyTo);
  const live = target && !target.deleted && !target.failed;
  return h('div', { class: 'reply-ref', onclick: () => focusDm(m.replyTo) },
    h('span', { class: 'reply-spine' }),
    live
      ? [h('span', { class: 'reply-author' }, `@${userName(target.sender)}`), h('span', { class: 'reply-text' }, preview(target.content, 80))]
      : h('span', { class: 'reply-text muted' }, target ? 'Original message was deleted' : 'Original message is not here'));
}

function focusDm(id) {
  const el = els.get(id);
  if (!el) return;
  el.scrollIntoView({ block: 'center' });
  el.classList.add('flash');
  setTimeout(() => el.classList.remove('flash'), 1500);
}

function reactionChip(conv, m, emoji, users) {
  const mine = users.has(state.me.id);
  return h('button', {
    class: `reaction${mine ? ' mine' : ''}`, 'aria-pressed': String(mine), dataset: { emoji },
    title: [...users].map(userName).join(', '),
    onclick: () => react(conv, m, emoji, !mine),
  }, h('span', { class: 'emoji' }, emoji), h('span', { class: 'count' }, String(users.size)));
}

function react(conv, m, emoji, add) {
  sendPayload(conv, { type: 'reaction', target: m.id, emoji, add });
}

function actions(conv, m) {
  const mine = m.sender === state.me.id;
  const button = (label, icon, fn, cls = '') => h('button', { class: `icon ${cls}`, title: label, 'aria-label': label, onclick: (e) => fn(e) }, icon);
  return h('div', { class: 'msg-actions', role: 'toolbar', 'aria-label': 'Message actions' },
    button('Add reaction', '☺', (e) => openPicker(e.currentTarget, conv, m)),
    button('Reply', '↩', () => { dms.replyTo = m.id; renderComposer(conv); $('#dm-composer')?.focus(); }),
    mine ? button('Edit', '✎', () => startEdit(conv, m)) : null,
    mine ? button('Delete', '🗑', (e) => deleteDm(conv, m, e.shiftKey), 'danger') : null);
}

function openPicker(anchor, conv, m) {
  openEmojiPicker(anchor, (e) => react(conv, m, e, !m.reactions.get(e)?.has(state.me.id)));
}

async function deleteDm(conv, m, skipConfirm) {
  if (!skipConfirm && !(await confirmDialog('Delete Message', `Delete this message? “${preview(m.content, 120)}”`, 'Delete'))) return;
  sendPayload(conv, { type: 'delete', target: m.id });
}

function startEdit(conv, m) {
  const el = els.get(m.id);
  if (!el) return;
  inlineEditor(el.querySelector('.content'), m.content, (text, done) => {
    done();
    if (!text) deleteDm(conv, m, false);
    else if (text !== m.content) sendPayload(conv, { type: 'edit', target: m.id, content: text });
  }, '#dm-composer');
}

function renderComposer(conv) {
  clear(composerBox);
  const target = dms.replyTo && conv.message(dms.replyTo);
  if (target) {
    composerBox.append(h('div', { class: 'replying' },
      'Replying to ', h('strong', {}, userName(target.sender)),
      h('button', { class: 'icon', 'aria-label': 'Cancel reply', onclick: () => { dms.replyTo = null; renderComposer(conv); } }, '✕')));
  }
  const label = `Message ${conv.kind === 'pair' ? '@' : ''}${convTitle(conv)}`;
  const box = h('textarea', { id: 'dm-composer', rows: 1, maxlength: 4000, 'aria-label': label, placeholder: label });
  box.value = app.drafts.get(conv.key) || '';
  box.addEventListener('input', () => app.drafts.set(conv.key, box.value));
  box.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      const text = box.value.trim();
      if (!text) return;
      box.value = '';
      app.drafts.delete(conv.key);
      const replyTo = dms.replyTo && conv.message(dms.replyTo) ? dms.replyTo : null;
      if (dms.replyTo) {
        dms.replyTo = null;
        renderComposer(conv);
        $('#dm-composer')?.focus();
      }
      sendMessage(conv, text, replyTo);
    } else if (e.key === 'ArrowUp' && !box.value) {
      const last = [...conv.messages].reverse().find((m) => m.sender === state.me.id && !m.deleted && !m.failed);
      if (last) {
        e.preventDefault();
        startEdit(conv, last);
      }
    } else if (e.key === 'Escape' && dms.replyTo) {
      dms.replyTo = null;
      renderComposer(conv);
    }
  });
  composerBox.append(h('div', { class: 'composer' }, box),
    h('div', { class: 'dm-note muted' }, '🔒 Encrypted in this browser; the node stores only ciphertext.'));
}

async function sendMessage(conv, content, replyTo) {
  const pending = h('li', { class: 'message pending mine' }, avatar(state.me.id, state.me.username),
    h('div', { class: 'body' }, h('div', { class: 'meta' }, h('span', { class: 'author' }, state.me.username)),
      h('div', { class: 'content' }, content)));
  list.append(pending);
  scroller.scrollTop = scroller.scrollHeight;
  const payload = { type: 'message', content };
  if (replyTo) payload.reply_to = replyTo;
  const ok = await sendPayload(conv, payload);
  if (ok) pending.remove();
  else {
    pending.classList.add('failed');
    pending.querySelector('.body').append(h('div', { class: 'form-error' }, 'Not sent.'));
  }
}

/// Seals `payload` to every member's newest DM key, signs it, sends it, and applies it here.
async function sendPayload(conv, payload) {
  try {
    checkPayload(payload);
    const me = state.me.id;
    const mine = currentSecret();
    const entries = [{ user: unhex(me), key: mine.public }];
    for (const member of [...conv.members].filter((m) => m !== me)) {
      const record = newest(await recordsOf(member, true));
      if (!record) throw new Error(`${userName(member)} has not set up encrypted DMs yet: they need to open Direct Messages once.`);
      entries.push({ user: unhex(member), key: record.key });
    }
    const env = await dc.seal({
      conversation: unhex(conv.id), sender: unhex(me), senderSecret: mine.secret, members: entries,
      sentMs: Date.now(), plaintext: utf8.encode(JSON.stringify(payload)),
    }, dc.sealRandomness(entries.length));
    const wire = hex(await dc.signEnvelope(env, dms.keyring.identity));
    const sent = await app.api.req('POST', '/dms', { envelope: wire });
    await enqueue(async () => {
      await processDm({ position: sent.position, envelope: wire });
      renderAllDm();
    });
    return true;
  } catch (err) {
    toast(`Not sent: ${err.message}`);
    return false;
  }
}

// ---- info panel ----

async function renderInfo() {
  if (!info) return;
  const conv = currentConv();
  info.hidden = !dms.open || !conv || !dms.infoOpen;
  if (info.hidden) return;
  const rows = [...conv.members].sort((a, b) => (a === state.me.id ? -1 : b === state.me.id ? 1 : userName(a).localeCompare(userName(b))));
  const items = rows.map((user) => {
    const fp = h('span', { class: 'fingerprint mono', dataset: { user } }, '…');
    (user === state.me.id ? Promise.resolve(currentSecret().public) : recordsOf(user).then((r) => newest(r)?.key))
      .then(async (key) => { fp.textContent = key ? await dc.fingerprint(key) : 'no DM key published'; })
      .catch(() => { fp.textContent = 'unknown'; });
    return h('li', { class: 'dm-member' }, avatar(user, userName(user)),
      h('div', { class: 'dm-member-text' },
        h('span', { class: 'name' }, user === state.me.id ? `${userName(user)} (you)` : userName(user)), fp));
  });
  append(clear(info), [
    h('h3', { class: 'panel-title' }, 'Members'),
    h('ul', { class: 'dm-members' }, items),
    h('button', { class: 'secondary wide', onclick: () => newMessage(conv) }, 'Add people'),
    h('h3', { class: 'panel-title' }, 'Encryption'),
    h('p', { class: 'muted small' }, 'Each person’s DM key fingerprint is shown above. Compare them with the other members out of band (in person or on a call): if they match, only these browsers can read this conversation — not the node.'),
    h('p', { class: 'muted small' }, 'Your identity key and DM keys are stored in this browser only (localStorage). Another browser makes a new DM key and cannot read messages sent to this one.'),
    dms.refused || dms.broken ? h('p', { class: 'muted small' }, `${dms.refused + dms.broken} direct message(s) were refused (replayed, altered, or breaking the conversation rules).`) : null]);
}

// ---- unlock ----

function unlockCard() {
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'current-password', required: true });
  const error = h('p', { class: 'form-error', role: 'alert' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Unlock DMs');
  const form = h('form', { class: 'card dm-unlock', onsubmit: async (e) => {
    e.preventDefault();
    button.disabled = true;
    error.textContent = '';
    try {
      await unlock(password.value);
      toast('Encrypted DMs are unlocked in this browser.', 'info');
      await enqueue(loadInbox);
      openDms(dms.current);
    } catch (err) {
      error.textContent = err.code === 'invalid_credentials' || err.status === 401 ? 'That password is not right.' : err.message;
      button.disabled = false;
    }
  } },
  h('h3', {}, '🔒 Unlock encrypted direct messages'),
  h('p', {}, 'Direct messages are end-to-end encrypted: they are sealed and opened here, and the node only stores ciphertext.'),
  h('p', { class: 'muted' }, 'Enter your password once. Your identity key and a new DM key will be stored in this browser (localStorage), never sent back to the node. Only people you share a guild with can start a conversation here.'),
  h('label', {}, h('span', {}, 'Password'), password),
  error,
  h('div', { class: 'actions' }, button));
  setTimeout(() => password.focus());
  return h('li', { class: 'onboarding' }, form);
}

// ---- new conversations ----

/// Everyone in a guild with us, by user id → name.
async function people() {
  await Promise.all([...state.guilds.keys()].filter((g) => !state.members.has(g)).map(async (g) => {
    try {
      const members = await app.api.members(g);
      state.members.set(g, new Map(members.map((m) => [m.user_id, m])));
    } catch {
      // A guild whose members cannot be listed adds nobody.
    }
  }));
  const all = new Map();
  for (const members of state.members.values()) {
    for (const m of members.values()) if (m.user_id !== state.me.id && m.username) all.set(m.user_id, m.username);
  }
  return [...all].sort((a, b) => a[1].localeCompare(b[1]));
}

/// The "New message" dialog; from a conversation, `base` adds people to it.
async function newMessage(base = null) {
  if (!dms.keyring) {
    openDms();
    return;
  }
  const everyone = await people();
  const fixed = new Set(base ? base.members : []);
  const picked = await modal(base ? 'Add People' : 'New Message', (close) => {
    const boxes = new Map();
    const filter = h('input', { type: 'search', placeholder: 'Type a username', 'aria-label': 'Find people' });
    const rows = h('div', { class: 'dm-pick' }, everyone.map(([id, name]) => {
      const box = h('input', { type: 'checkbox', value: id, checked: fixed.has(id), disabled: fixed.has(id) });
      boxes.set(id, box);
      return h('label', { class: 'check', dataset: { name } }, box, avatar(id, name), h('span', {}, name));
    }));
    filter.addEventListener('input', () => {
      const q = filter.value.trim().toLowerCase();
      for (const row of rows.children) row.hidden = q && !row.dataset.name.toLowerCase().includes(q);
    });
    const error = h('p', { class: 'form-error', role: 'alert' });
    return h('form', { class: 'form', onsubmit: (e) => {
      e.preventDefault();
      const chosen = [...boxes].filter(([id, b]) => b.checked && !fixed.has(id)).map(([id]) => id);
      if (!chosen.length) {
        error.textContent = 'Pick at least one person.';
        return;
      }
      if (fixed.size + chosen.length + (fixed.has(state.me.id) ? 0 : 1) > dc.MAX_DM_MEMBERS) {
        error.textContent = `A conversation has at most ${dc.MAX_DM_MEMBERS} members.`;
        return;
      }
      close(chosen);
    } },
    h('p', { class: 'muted' }, everyone.length ? 'People from the guilds you are in. Pick one for a direct message, or several for a group.' : 'Nobody shares a guild with you yet.'),
    filter, rows, error,
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', onclick: () => close(null) }, 'Cancel'),
      h('button', { type: 'submit', class: 'primary' }, base ? 'Add' : 'Start conversation')));
  });
  if (!picked) return;
  const members = [...new Set([state.me.id, ...fixed, ...picked])];
  let conv;
  if (base?.kind === 'group') {
    // A group grows when a member sends to the larger set.
    conv = base;
    conv.members = new Set(members);
  } else if (members.length === 2) {
    const other = members.find((m) => m !== state.me.id);
    const id = hex(await dc.pairConversation(unhex(state.me.id), unhex(other)));
    conv = dms.convs.ensure(id, members);
  } else {
    conv = dms.convs.ensure(hex(dc.randomBytes(32)), members);
  }
  if (!conv.lastActivity) conv.lastActivity = Date.now();
  dms.open = true;
  selectConv(conv.key);
  $('#dm-composer')?.focus();
}

/// "Message" from a member's profile: the 1:1 conversation with them.
export async function messageUser(userId) {
  openDms();
  if (!dms.keyring) return;
  const id = hex(await dc.pairConversation(unhex(state.me.id), unhex(userId)));
  const conv = dms.convs.ensure(id, [state.me.id, userId]);
  if (!conv.lastActivity) conv.lastActivity = Date.now();
  selectConv(conv.key);
}

export function onDmKey(e) {
  if (!dms.open) return false;
  const idle = e.target === document.body || e.target.classList?.contains('scroller');
  if (idle && e.key.length === 1 && !e.ctrlKey && !e.metaKey && !e.altKey && !$('#modal-root').children.length) $('#dm-composer')?.focus();
  return true;
}
