// Dialogs: create or join a guild, invites, guild settings (overview, roles, channels, members,
// invites, bans), channel settings with permission overwrites, and a member's profile card.

import { h, clear, toast, modal, confirmDialog, formDialog, formatTime } from './dom.js';
import { state, displayName, permsIn, channelOf } from './state.js';
import { P, has, EDITABLE } from './perms.js';
import { app } from './main.js';
import { avatar } from './layout.js';

const hex = (color) => `#${(color || 0).toString(16).padStart(6, '0')}`;

/// Accepts a whole invite link or a bare code.
function inviteCode(text) {
  const trimmed = text.trim();
  const m = /\/invite\/([^/?#\s]+)/.exec(trimmed);
  return decodeURIComponent(m ? m[1] : trimmed);
}

const inviteLink = (code) => `${location.origin}/invite/${encodeURIComponent(code)}`;

export function openCreateOrJoin() {
  modal('Create or join a guild', (close) => {
    const error = h('p', { class: 'form-error', role: 'alert' });
    const name = h('input', { name: 'guild-name', placeholder: `${state.me.username}'s guild`, maxlength: 100, autofocus: true });
    const code = h('input', { name: 'invite', placeholder: `${location.origin}/invite/…` });
    return h('div', { class: 'form two' },
      h('form', { class: 'card', onsubmit: async (e) => {
        e.preventDefault();
        try {
          const guild = await app.api.createGuild(name.value.trim() || name.placeholder);
          close();
          app.addGuild(guild);
        } catch (err) {
          error.textContent = err.message;
        }
      } }, h('h3', {}, 'Create your own'), h('label', {}, h('span', {}, 'Guild name'), name), h('button', { class: 'primary', type: 'submit' }, 'Create')),
      h('form', { class: 'card', onsubmit: async (e) => {
        e.preventDefault();
        if (!code.value.trim()) return;
        try {
          await app.joinByCode(inviteCode(code.value));
          close();
        } catch (err) {
          error.textContent = err.message;
        }
      } }, h('h3', {}, 'Join with an invite'), h('label', {}, h('span', {}, 'Invite link or code'), code), h('button', { class: 'primary', type: 'submit' }, 'Join Guild')),
      error);
  });
}

const AGES = [['1800', '30 minutes'], ['3600', '1 hour'], ['86400', '1 day'], ['604800', '7 days'], ['0', 'Never']];

export function openInvite(guildId) {
  const guild = state.guilds.get(guildId);
  modal(`Invite friends to ${guild.name}`, () => {
    const link = h('input', { readonly: true, class: 'invite-link', 'aria-label': 'Invite link', value: '' });
    const age = h('select', { 'aria-label': 'Expire after' }, AGES.map(([v, l]) => h('option', { value: v, selected: v === '604800' }, l)));
    const uses = h('select', { 'aria-label': 'Max uses' }, [['0', 'No limit'], ['1', '1 use'], ['5', '5 uses'], ['10', '10 uses'], ['100', '100 uses']].map(([v, l]) => h('option', { value: v }, l)));
    const error = h('p', { class: 'form-error', role: 'alert' });
    const generate = async () => {
      try {
        const invite = await app.api.createInvite(guildId, { max_age_secs: Number(age.value), max_uses: Number(uses.value) });
        link.value = inviteLink(invite.code);
        link.select();
      } catch (err) {
        error.textContent = err.message;
      }
    };
    generate();
    return h('div', { class: 'form' },
      h('p', { class: 'muted' }, 'Send this link to someone: opening it in a browser signs them up on this node and joins the guild. The link is shown only once.'),
      h('div', { class: 'row' }, link, h('button', { class: 'primary', onclick: async () => {
        await navigator.clipboard?.writeText(link.value).catch(() => {});
        toast('Invite link copied', 'info');
      } }, 'Copy')),
      h('div', { class: 'row' }, h('label', {}, h('span', {}, 'Expire after'), age), h('label', {}, h('span', {}, 'Max uses'), uses),
        h('button', { class: 'secondary', onclick: generate }, 'New link')),
      error);
  });
}

export async function openCreateChannel(guildId, kind = 'text', parentId = null) {
  const guild = state.guilds.get(guildId);
  const categories = guild.channels.filter((c) => c.kind === 'category');
  const fields = [{ name: 'name', label: kind === 'category' ? 'Category name' : 'Channel name', required: true, maxlength: 100, placeholder: kind === 'category' ? 'Text channels' : 'new-channel' }];
  if (kind !== 'category') {
    fields.push({ name: 'kind', label: 'Type', value: kind, options: [['text', '# Text'], ['voice', '🔊 Voice']] });
    fields.push({ name: 'parent', label: 'Category', value: parentId ?? '', options: [['', 'None'], ...categories.map((c) => [c.id, c.name])] });
  }
  const values = await formDialog(kind === 'category' ? 'Create Category' : 'Create Channel', fields, 'Create');
  if (!values) return;
  const name = kind === 'category' ? values.name.trim() : values.name.trim().toLowerCase().replace(/\s+/g, '-');
  try {
    const position = guild.channels.reduce((max, c) => Math.max(max, c.position), 0) + 1;
    const channel = await app.api.createChannel(guildId, { name, kind: values.kind || kind, parent_id: values.parent || null, position });
    app.addChannel(channel);
    if (channel.kind === 'text') app.selectChannel(channel.id);
  } catch (err) {
    toast(err.message);
  }
}

/// Three-state permission toggles (deny / inherit / allow) for one overwrite target.
function overwriteEditor(guildId, channel, target) {
  const existing = channel.overwrites.find((o) => o.target.type === target.type && o.target.id === target.id);
  let allow = BigInt(existing?.allow ?? '0');
  let deny = BigInt(existing?.deny ?? '0');
  const rows = EDITABLE.filter(([k]) => k !== 'ADMINISTRATOR' && k !== 'MANAGE_GUILD' && k !== 'KICK_MEMBERS' && k !== 'BAN_MEMBERS').map(([key, label]) => {
    const bit = P[key];
    const current = () => (allow & bit ? 'allow' : deny & bit ? 'deny' : 'inherit');
    const group = h('div', { class: 'tri', role: 'radiogroup', 'aria-label': label },
      [['deny', '✕'], ['inherit', '/'], ['allow', '✓']].map(([v, icon]) => h('button', {
        class: `tri-${v}${current() === v ? ' on' : ''}`, 'aria-label': `${v} ${label}`, type: 'button',
        onclick: (e) => {
          allow &= ~bit;
          deny &= ~bit;
          if (v === 'allow') allow |= bit;
          if (v === 'deny') deny |= bit;
          for (const b of e.currentTarget.parentNode.children) b.classList.toggle('on', b === e.currentTarget);
        },
      }, icon)));
    return h('div', { class: 'perm-row' }, h('span', {}, label), group);
  });
  const save = async () => {
    try {
      if (!allow && !deny) {
        if (existing) await app.api.clearOverwrite(guildId, channel.id, target.type, target.id);
      } else {
        await app.api.setOverwrite(guildId, channel.id, target.type, target.id, allow.toString(), deny.toString());
      }
      toast('Permissions saved', 'info');
    } catch (err) {
      toast(err.message);
    }
  };
  return h('div', { class: 'overwrites' }, rows, h('div', { class: 'actions' }, h('button', { class: 'primary', onclick: save }, 'Save permissions')));
}

export function openChannelSettings(guildId, channelId) {
  const guild = state.guilds.get(guildId);
  const channel = channelOf(guild, channelId);
  if (!channel) return;
  modal(`Edit ${channel.kind === 'category' ? 'category' : `#${channel.name}`}`, (close) => {
    const name = h('input', { name: 'name', value: channel.name, maxlength: 100, required: true, autofocus: true });
    const topic = h('textarea', { name: 'topic', maxlength: 1024, rows: 3 });
    topic.value = channel.topic ?? '';
    const position = h('input', { name: 'position', type: 'number', min: 0, value: String(channel.position) });
    const error = h('p', { class: 'form-error', role: 'alert' });
    const overview = h('form', { class: 'form', onsubmit: async (e) => {
      e.preventDefault();
      const fields = {};
      if (name.value.trim() !== channel.name) fields.name = name.value.trim();
      if (topic.value !== (channel.topic ?? '')) fields.topic = topic.value;
      if (Number(position.value) !== channel.position) fields.position = Number(position.value);
      if (!Object.keys(fields).length) return close();
      try {
        await app.api.updateChannel(guildId, channelId, fields);
        await app.refreshGuild(guildId);
        close();
      } catch (err) {
        error.textContent = err.message;
      }
    } },
    h('label', {}, h('span', {}, 'Name'), name),
    channel.kind === 'category' ? null : h('label', {}, h('span', {}, 'Topic'), topic),
    h('label', {}, h('span', {}, 'Position'), position),
    error,
    h('div', { class: 'actions' },
      h('button', { type: 'button', class: 'danger', onclick: async () => {
        if (!(await confirmDialog('Delete Channel', `Delete ${channel.name}? Its history can no longer be read.`, 'Delete Channel'))) return;
        try {
          await app.api.deleteChannel(guildId, channelId);
          close();
        } catch (err) {
          error.textContent = err.message;
        }
      } }, 'Delete'),
      h('button', { type: 'submit', class: 'primary' }, 'Save Changes')));
    const targets = [...guild.roles].sort((a, b) => a.position - b.position)
      .map((r) => [`role:${r.id}`, r.id === guild.id ? '@everyone' : r.name]);
    for (const o of channel.overwrites.filter((x) => x.target.type === 'member')) {
      targets.push([`member:${o.target.id}`, `@${displayName(guildId, o.target.id)}`]);
    }
    const holder = h('div');
    const pick = h('select', { 'aria-label': 'Role or member', onchange: () => show() }, targets.map(([v, l]) => h('option', { value: v }, l)));
    const show = () => {
      const [type, id] = pick.value.split(':');
      clear(holder).append(overwriteEditor(guildId, channel, { type, id }));
    };
    show();
    return h('div', { class: 'settings-columns' },
      h('section', {}, h('h3', {}, 'Overview'), overview),
      h('section', {}, h('h3', {}, 'Permissions'), h('label', {}, h('span', {}, 'Overrides for'), pick), holder));
  }, { wide: true });
}

function permissionChecks(perms, allowed) {
  let value = BigInt(perms);
  const el = h('div', { class: 'perm-grid' }, EDITABLE.map(([key, label]) => {
    const bit = P[key];
    return h('label', { class: 'check' },
      h('input', { type: 'checkbox', checked: (value & bit) === bit, disabled: !has(allowed, bit), onchange: (e) => {
        value = e.target.checked ? value | bit : value & ~bit;
      } }), h('span', {}, label));
  }));
  return { el, value: () => value.toString() };
}

function rolesTab(guildId, body) {
  const guild = state.guilds.get(guildId);
  const base = permsIn(guildId, null);
  const roles = [...guild.roles].sort((a, b) => b.position - a.position);
  const editor = h('div', { class: 'role-editor' });
  const edit = (role) => {
    const name = h('input', { value: role.name, maxlength: 100, disabled: role.id === guild.id, 'aria-label': 'Role name' });
    const color = h('input', { type: 'color', value: hex(role.color), 'aria-label': 'Role colour' });
    const checks = permissionChecks(role.permissions, base);
    clear(editor).append(h('h3', {}, role.id === guild.id ? '@everyone' : role.name),
      h('div', { class: 'row' }, h('label', {}, h('span', {}, 'Name'), name), h('label', {}, h('span', {}, 'Colour'), color)),
      checks.el,
      h('div', { class: 'actions' },
        role.id === guild.id ? null : h('button', { class: 'danger', onclick: async () => {
          if (!(await confirmDialog('Delete Role', `Delete the role ${role.name}?`, 'Delete'))) return;
          await app.api.deleteRole(guildId, role.id).catch((err) => toast(err.message));
          await app.refreshGuild(guildId);
          rolesTab(guildId, body);
        } }, 'Delete Role'),
        h('button', { class: 'primary', onclick: async () => {
          const fields = {};
          if (checks.value() !== role.permissions) fields.permissions = checks.value();
          if (role.id !== guild.id && name.value.trim() && name.value.trim() !== role.name) fields.name = name.value.trim();
          const rgb = parseInt(color.value.slice(1), 16);
          if (role.id !== guild.id && rgb !== role.color) fields.color = rgb;
          if (!Object.keys(fields).length) return;
          try {
            await app.api.updateRole(guildId, role.id, fields);
            await app.refreshGuild(guildId);
            toast('Role saved', 'info');
            rolesTab(guildId, body);
          } catch (err) {
            toast(err.message);
          }
        } }, 'Save Changes')));
  };
  clear(body).append(h('div', { class: 'roles-layout' },
    h('div', { class: 'role-list' },
      h('button', { class: 'primary', onclick: async () => {
        const values = await formDialog('Create Role', [{ name: 'name', label: 'Role name', required: true, maxlength: 100, value: 'new role' }], 'Create');
        if (!values) return;
        try {
          const top = guild.owner_id === state.me.id ? Math.max(0, ...guild.roles.map((r) => r.position)) + 1 : 1;
          await app.api.createRole(guildId, { name: values.name.trim(), position: top, permissions: '0', color: 0 });
          await app.refreshGuild(guildId);
          rolesTab(guildId, body);
        } catch (err) {
          toast(err.message);
        }
      } }, 'Create Role'),
      h('ul', {}, roles.map((r) => h('li', {}, h('button', { class: 'role-item', onclick: () => edit(r) },
        h('span', { class: 'role-dot', style: { '--color': hex(r.color) } }), r.id === guild.id ? '@everyone' : r.name))))),
    editor));
  edit(roles[0]);
}

function channelsTab(guildId, body) {
  const guild = state.guilds.get(guildId);
  clear(body).append(
    h('div', { class: 'actions left' },
      h('button', { class: 'primary', onclick: () => openCreateChannel(guildId, 'text') }, 'Create Channel'),
      h('button', { class: 'secondary', onclick: () => openCreateChannel(guildId, 'category') }, 'Create Category')),
    h('ul', { class: 'setting-list' }, guild.channels.map((c) => h('li', {},
      h('span', {}, c.kind === 'category' ? `▾ ${c.name}` : `${c.kind === 'voice' ? '🔊' : '#'} ${c.name}`),
      h('span', { class: 'muted' }, `position ${c.position}`),
      h('button', { class: 'secondary', onclick: () => openChannelSettings(guildId, c.id) }, 'Edit')))));
}

async function listTab(body, load, row, empty) {
  clear(body).append(h('p', { class: 'muted' }, 'Loading…'));
  try {
    const items = await load();
    clear(body).append(items.length ? h('ul', { class: 'setting-list' }, items.map(row)) : h('p', { class: 'empty' }, empty));
  } catch (err) {
    clear(body).append(h('p', { class: 'form-error' }, err.message));
  }
}

function membersTab(guildId, body) {
  const members = [...(state.members.get(guildId)?.values() || [])];
  clear(body).append(h('ul', { class: 'setting-list' }, members.map((m) => h('li', {},
    avatar(m.user_id, displayName(guildId, m.user_id), m.status),
    h('span', {}, displayName(guildId, m.user_id)),
    h('span', { class: 'muted' }, `joined ${formatTime(m.joined_at_ms)}`),
    h('button', { class: 'secondary', onclick: () => openMember(guildId, m.user_id) }, 'Manage')))));
}

function invitesTab(guildId, body) {
  listTab(body, () => app.api.invites(guildId), (i) => h('li', {},
    h('span', { class: 'mono' }, i.id.slice(0, 12)),
    h('span', {}, `by ${displayName(guildId, i.creator)}`),
    h('span', { class: 'muted' }, `${i.uses}${i.max_uses ? `/${i.max_uses}` : ''} uses · ${i.expires_at_ms ? `expires ${formatTime(i.expires_at_ms)}` : 'never expires'}`),
    h('button', { class: 'danger', onclick: async () => {
      await app.api.revokeInvite(guildId, i.id).catch((err) => toast(err.message));
      invitesTab(guildId, body);
    } }, 'Revoke')), 'No active invites.');
}

function bansTab(guildId, body) {
  listTab(body, () => app.api.bans(guildId), (b) => h('li', {},
    h('span', {}, displayName(guildId, b.user_id)),
    h('span', { class: 'muted' }, b.reason ? `reason: ${b.reason}` : 'no reason given'),
    h('button', { class: 'secondary', onclick: async () => {
      await app.api.unban(guildId, b.user_id).catch((err) => toast(err.message));
      bansTab(guildId, body);
    } }, 'Unban')), 'Nobody is banned.');
}

function overviewTab(guildId, body) {
  const guild = state.guilds.get(guildId);
  const canManage = has(permsIn(guildId, null), P.MANAGE_GUILD);
  const name = h('input', { value: guild.name, maxlength: 100, disabled: !canManage, 'aria-label': 'Guild name' });
  const description = h('textarea', { maxlength: 1024, rows: 3, disabled: !canManage, 'aria-label': 'Description' });
  description.value = guild.description ?? '';
  clear(body).append(h('form', { class: 'form', onsubmit: async (e) => {
    e.preventDefault();
    const fields = {};
    if (name.value.trim() !== guild.name) fields.name = name.value.trim();
    if (description.value !== (guild.description ?? '')) fields.description = description.value;
    if (!Object.keys(fields).length) return;
    try {
      app.replaceGuild(await app.api.updateGuild(guildId, fields));
      toast('Guild saved', 'info');
    } catch (err) {
      toast(err.message);
    }
  } },
  h('label', {}, h('span', {}, 'Guild name'), name),
  h('label', {}, h('span', {}, 'Description'), description),
  h('p', { class: 'muted' }, `${guild.member_count} members · id ${guild.id.slice(0, 16)}…`),
  canManage ? h('div', { class: 'actions' }, h('button', { class: 'primary', type: 'submit' }, 'Save Changes')) : null,
  guild.owner_id === state.me.id ? h('div', { class: 'danger-zone' }, h('h3', {}, 'Delete guild'), h('p', { class: 'muted' }, 'Deletes the guild for everyone.'),
    h('button', { class: 'danger', type: 'button', onclick: async () => {
      if (!(await confirmDialog('Delete Guild', `Delete ${guild.name} for everyone? This cannot be undone.`, 'Delete Guild'))) return;
      await app.api.deleteGuild(guildId).catch((err) => toast(err.message));
    } }, 'Delete Guild')) : null));
}

export function openGuildSettings(guildId) {
  const guild = state.guilds.get(guildId);
  const base = permsIn(guildId, null);
  const tabs = [
    ['Overview', overviewTab, true],
    ['Roles', rolesTab, has(base, P.MANAGE_ROLES)],
    ['Channels', channelsTab, has(base, P.MANAGE_CHANNELS)],
    ['Members', membersTab, true],
    ['Invites', invitesTab, has(base, P.MANAGE_GUILD)],
    ['Bans', bansTab, has(base, P.BAN_MEMBERS)],
  ].filter(([, , ok]) => ok);
  modal(`${guild.name} — Settings`, () => {
    const body = h('div', { class: 'settings-body' });
    const nav = h('nav', { class: 'settings-nav' }, tabs.map(([label, fn], i) => h('button', {
      class: `tab${i === 0 ? ' active' : ''}`, dataset: { tab: label.toLowerCase() },
      onclick: (e) => {
        for (const b of nav.children) b.classList.toggle('active', b === e.currentTarget);
        fn(guildId, body);
      },
    }, label)));
    tabs[0][1](guildId, body);
    return h('div', { class: 'settings' }, nav, body);
  }, { wide: true });
}

export function openMember(guildId, userId) {
  const guild = state.guilds.get(guildId);
  const member = state.members.get(guildId)?.get(userId);
  const base = permsIn(guildId, null);
  const self = userId === state.me.id;
  modal(displayName(guildId, userId), (close) => {
    const roles = [...guild.roles].filter((r) => r.id !== guild.id).sort((a, b) => b.position - a.position);
    const roleList = member ? h('div', { class: 'member-roles' }, roles.map((r) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', checked: member.roles.includes(r.id), disabled: !has(base, P.MANAGE_ROLES), onchange: async (e) => {
        try {
          if (e.target.checked) await app.api.grantRole(guildId, userId, r.id);
          else await app.api.revokeRole(guildId, userId, r.id);
        } catch (err) {
          e.target.checked = !e.target.checked;
          toast(err.message);
        }
      } }), h('span', { class: 'role-dot', style: { '--color': hex(r.color) } }), h('span', {}, r.name)))) : null;
    const reason = async (title) => {
      const values = await formDialog(title, [{ name: 'reason', label: 'Reason (optional)', maxlength: 2048 }], title);
      return values && values.reason.trim();
    };
    return h('div', { class: 'profile' },
      h('div', { class: 'profile-head' }, avatar(userId, displayName(guildId, userId), member?.status || 'offline'),
        h('div', {}, h('div', { class: 'username' }, displayName(guildId, userId)),
          h('div', { class: 'muted' }, member?.username ?? state.users.get(userId)?.username ?? ''),
          h('div', { class: 'muted mono', title: userId }, `${userId.slice(0, 16)}…`))),
      member ? h('p', { class: 'muted' }, `Member since ${formatTime(member.joined_at_ms)}${guild.owner_id === userId ? ' · Owner' : ''}`) : h('p', { class: 'muted' }, 'Not a member of this guild.'),
      roles.length && member ? [h('h3', {}, 'Roles'), roleList] : null,
      h('div', { class: 'actions' },
        self ? h('button', { class: 'secondary', onclick: () => { close(); app.editNickname(guildId); } }, 'Change Nickname') : null,
        self ? null : h('button', { class: 'primary', onclick: () => { close(); app.messageUser(userId); } }, 'Message'),
        !self && member && has(base, P.KICK_MEMBERS) ? h('button', { class: 'danger', onclick: async () => {
          const why = await reason(`Kick ${displayName(guildId, userId)}`);
          if (why === null) return;
          try {
            await app.api.removeMember(guildId, userId, why);
            close();
          } catch (err) {
            toast(err.message);
          }
        } }, 'Kick') : null,
        !self && has(base, P.BAN_MEMBERS) ? h('button', { class: 'danger', onclick: async () => {
          const why = await reason(`Ban ${displayName(guildId, userId)}`);
          if (why === null) return;
          try {
            await app.api.ban(guildId, userId, why);
            close();
          } catch (err) {
            toast(err.message);
          }
        } }, 'Ban') : null));
  });
}
