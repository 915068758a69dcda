// DM conversations as their members see them (spec/dm.md §4, as crates/client/src/dm.rs):
// payload checks, and each conversation built from its opened DMs in arrival order with the
// rules that keep it honest (replays, non-members, edits and deletes by the author only, 1:1
// conversations named by their pair id and kept apart from groups). No DOM, no crypto here.

import { DmError } from './dmcrypto.js';

export const MAX_DM_CONTENT_CHARS = 4000;

const refuse = (message) => new DmError('malformed_dm', message);

/// Checks a decoded payload's shape and limits; returns it.
export function checkPayload(p) {
  if (!p || typeof p !== 'object') throw refuse('the payload is not an object');
  const str = (v) => typeof v === 'string';
  const content = () => {
    const n = str(p.content) ? [...p.content].length : 0;
    if (n === 0 || n > MAX_DM_CONTENT_CHARS) throw refuse(`content is 1 to ${MAX_DM_CONTENT_CHARS} characters`);
  };
  switch (p.type) {
    case 'message':
      content();
      if (p.reply_to !== undefined && p.reply_to !== null && !str(p.reply_to)) throw refuse('reply_to is a DM id');
      break;
    case 'edit':
      if (!str(p.target)) throw refuse('an edit has a target');
      content();
      break;
    case 'delete':
      if (!str(p.target)) throw refuse('a delete has a target');
      break;
    case 'reaction': {
      if (!str(p.target) || typeof p.add !== 'boolean' || !str(p.emoji)) throw refuse('a reaction has a target, an emoji and add');
      const bytes = new TextEncoder().encode(p.emoji).length;
      if (bytes === 0 || bytes > 64) throw refuse('an emoji is 1 to 64 bytes');
      break;
    }
    default:
      throw refuse('unknown payload type');
  }
  return p;
}

/// One conversation: `kind` is 'pair' or 'group', `id` the conversation id (hex).
export class Conversation {
  constructor(kind, id, members = []) {
    this.kind = kind;
    this.id = id;
    this.key = `${kind}-${id}`;
    this.members = new Set(members);
    /// { id, sender, sentMs, position, content, replyTo, edited, deleted, reactions: Map(emoji → Set(user)) }
    /// or { id, failed: code, sender, sentMs, position } for a DM that did not open.
    this.messages = [];
    this.index = new Map();
    this.seen = new Set();
    this.lastPosition = 0;
    this.lastActivity = 0;
  }

  message(id) {
    return this.messages[this.index.get(id)] ?? null;
  }

  /// Applies an opened DM `{ id, sender, members, sentMs, position, payload, pairOk }`; returns
  /// the id of the message it created or changed. Throws a DmError when the rules refuse it.
  apply(dm) {
    if (this.seen.has(dm.id)) throw new DmError('dm_replayed', 'this DM was already received');
    if (this.members.size && this.messages.length && !this.members.has(dm.sender)) throw refuse('the sender is not a member');
    if (dm.members.length === 2 && !dm.pairOk) throw refuse('a 1:1 DM’s conversation id is the pair’s id');
    const p = dm.payload;
    let changed;
    if (p.type === 'message') {
      this.index.set(dm.id, this.messages.length);
      this.messages.push({
        id: dm.id, sender: dm.sender, sentMs: dm.sentMs, position: dm.position, content: p.content,
        replyTo: p.reply_to ?? null, edited: false, deleted: false, reactions: new Map(),
      });
      changed = dm.id;
    } else if (p.type === 'edit' || p.type === 'delete') {
      const m = this.own(p.target, dm.sender);
      if (p.type === 'edit') {
        m.content = p.content;
        m.edited = true;
      } else {
        m.content = '';
        m.deleted = true;
        m.reactions.clear();
      }
      changed = m.id;
    } else {
      const m = this.target(p.target);
      const users = m.reactions.get(p.emoji) ?? new Set();
      if (p.add) users.add(dm.sender);
      else users.delete(dm.sender);
      if (users.size) m.reactions.set(p.emoji, users);
      else m.reactions.delete(p.emoji);
      changed = m.id;
    }
    this.seen.add(dm.id);
    this.members = new Set(dm.members);
    this.lastPosition = Math.max(this.lastPosition, dm.position);
    this.lastActivity = Math.max(this.lastActivity, dm.sentMs);
    return changed;
  }

  /// Records a DM of this conversation that could not be opened, so its members see that it exists.
  fail(dm) {
    if (this.seen.has(dm.id)) return;
    this.seen.add(dm.id);
    this.index.set(dm.id, this.messages.length);
    this.messages.push({ id: dm.id, sender: dm.sender, sentMs: dm.sentMs, position: dm.position, failed: dm.code });
    if (!this.members.size) this.members = new Set(dm.members);
    this.lastPosition = Math.max(this.lastPosition, dm.position);
    this.lastActivity = Math.max(this.lastActivity, dm.sentMs);
  }

  target(id) {
    const m = this.message(id);
    if (!m || m.failed) throw refuse(`no message ${id} here`);
    return m;
  }

  own(id, sender) {
    const m = this.target(id);
    if (m.sender !== sender || m.deleted) throw refuse('only the author edits or deletes a message, and not once deleted');
    return m;
  }
}

/// Every conversation, 1:1 and groups kept apart, by key (`pair-<id>` or `group-<id>`).
export class Conversations {
  constructor() {
    this.all = new Map();
  }

  get(key) {
    return this.all.get(key) ?? null;
  }

  /// The conversation a DM with `members` (hex ids) and conversation `id` belongs to.
  ensure(id, members) {
    const kind = members.length === 2 ? 'pair' : 'group';
    const key = `${kind}-${id}`;
    if (!this.all.has(key)) this.all.set(key, new Conversation(kind, id, members));
    return this.all.get(key);
  }

  /// Newest activity first.
  list() {
    return [...this.all.values()].sort((a, b) => b.lastActivity - a.lastActivity || (a.key < b.key ? -1 : 1));
  }
}
