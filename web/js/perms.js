// Permission bits and their resolution, as in spec/rest.md §3, to decide which controls to show.
// The node still decides every request; this only hides what would be refused.

const bit = (n) => 1n << BigInt(n);

export const P = {
  CREATE_INSTANT_INVITE: bit(0),
  KICK_MEMBERS: bit(1),
  BAN_MEMBERS: bit(2),
  ADMINISTRATOR: bit(3),
  MANAGE_CHANNELS: bit(4),
  MANAGE_GUILD: bit(5),
  ADD_REACTIONS: bit(6),
  VIEW_CHANNEL: bit(10),
  SEND_MESSAGES: bit(11),
  MANAGE_MESSAGES: bit(13),
  EMBED_LINKS: bit(14),
  ATTACH_FILES: bit(15),
  READ_MESSAGE_HISTORY: bit(16),
  MENTION_EVERYONE: bit(17),
  CONNECT: bit(20),
  SPEAK: bit(21),
  MUTE_MEMBERS: bit(22),
  DEAFEN_MEMBERS: bit(23),
  MOVE_MEMBERS: bit(24),
  CHANGE_NICKNAME: bit(26),
  MANAGE_NICKNAMES: bit(27),
  MANAGE_ROLES: bit(28),
  MANAGE_THREADS: bit(34),
  CREATE_PUBLIC_THREADS: bit(35),
  SEND_MESSAGES_IN_THREADS: bit(38),
  PIN_MESSAGES: bit(51),
};

const ALL = 2253998836940799n;

/// The bits offered in role and channel editors, with the names Discord users know.
export const EDITABLE = [
  ['ADMINISTRATOR', 'Administrator'],
  ['MANAGE_GUILD', 'Manage guild'],
  ['MANAGE_ROLES', 'Manage roles'],
  ['MANAGE_CHANNELS', 'Manage channels'],
  ['KICK_MEMBERS', 'Kick members'],
  ['BAN_MEMBERS', 'Ban members'],
  ['CREATE_INSTANT_INVITE', 'Create invite'],
  ['CHANGE_NICKNAME', 'Change nickname'],
  ['MANAGE_NICKNAMES', 'Manage nicknames'],
  ['VIEW_CHANNEL', 'View channels'],
  ['SEND_MESSAGES', 'Send messages'],
  ['SEND_MESSAGES_IN_THREADS', 'Send messages in threads'],
  ['CREATE_PUBLIC_THREADS', 'Create threads'],
  ['EMBED_LINKS', 'Embed links'],
  ['ADD_REACTIONS', 'Add reactions'],
  ['MENTION_EVERYONE', 'Mention @everyone'],
  ['MANAGE_MESSAGES', 'Manage messages'],
  ['PIN_MESSAGES', 'Pin messages'],
  ['READ_MESSAGE_HISTORY', 'Read message history'],
  ['CONNECT', 'Connect to voice'],
  ['SPEAK', 'Speak in voice'],
  ['MUTE_MEMBERS', 'Mute members'],
  ['DEAFEN_MEMBERS', 'Deafen members'],
  ['MOVE_MEMBERS', 'Move members'],
];

export const has = (perms, flag) => (perms & flag) === flag;

/// The caller's permissions in `channel`; `guild.permissions` is already the node's base answer.
export function channelPerms(guild, channel, me, myRoles) {
  const base = BigInt(guild.permissions);
  if (guild.owner_id === me || has(base, P.ADMINISTRATOR)) return ALL;
  if (!channel) return base;
  let perms = base;
  const overwrites = channel.overwrites || [];
  const apply = (o) => {
    perms &= ~BigInt(o.deny);
    perms |= BigInt(o.allow);
  };
  const everyone = overwrites.find((o) => o.target.type === 'role' && o.target.id === guild.id);
  if (everyone) apply(everyone);
  let allow = 0n;
  let deny = 0n;
  for (const o of overwrites) {
    if (o.target.type === 'role' && o.target.id !== guild.id && myRoles.includes(o.target.id)) {
      allow |= BigInt(o.allow);
      deny |= BigInt(o.deny);
    }
  }
  apply({ allow, deny });
  const mine = overwrites.find((o) => o.target.type === 'member' && o.target.id === me);
  if (mine) apply(mine);
  return has(perms, P.VIEW_CHANNEL) ? perms : 0n;
}
