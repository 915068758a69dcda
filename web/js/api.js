// The node's REST API (spec/rest.md): one call per endpoint, errors as ApiError.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const seg = encodeURIComponent;

export class Api {
  constructor(token = null) {
    this.token = token;
  }

  async req(method, path, body, attempt = 0) {
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const res = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 204) return null;
    const data = await res.json().catch(() => null);
    if (res.ok) return data;
    if (res.status === 429 && attempt < 3) {
      await new Promise((r) => setTimeout(r, Math.ceil((data?.retry_after ?? 1) * 1000)));
      return this.req(method, path, body, attempt + 1);
    }
    throw new ApiError(res.status, data?.code ?? 'http_error', data?.message ?? res.statusText);
  }

  register(username, password) { return this.req('POST', '/auth/register', { username, password }); }
  login(username, password) { return this.req('POST', '/auth/login', { username, password }); }
  logout() { return this.req('POST', '/auth/logout'); }
  me() { return this.req('GET', '/users/@me'); }
  user(id) { return this.req('GET', `/users/${seg(id)}`); }

  guilds() { return this.req('GET', '/guilds'); }
  guild(g) { return this.req('GET', `/guilds/${g}`); }
  createGuild(name) { return this.req('POST', '/guilds', { name }); }
  updateGuild(g, fields) { return this.req('PATCH', `/guilds/${g}`, fields); }
  deleteGuild(g) { return this.req('DELETE', `/guilds/${g}`); }

  createChannel(g, fields) { return this.req('POST', `/guilds/${g}/channels`, fields); }
  updateChannel(g, c, fields) { return this.req('PATCH', `/guilds/${g}/channels/${c}`, fields); }
  deleteChannel(g, c) { return this.req('DELETE', `/guilds/${g}/channels/${c}`); }
  setOverwrite(g, c, kind, target, allow, deny) {
    return this.req('PUT', `/guilds/${g}/channels/${c}/overwrites/${kind}/${target}`, { allow, deny });
  }
  clearOverwrite(g, c, kind, target) {
    return this.req('DELETE', `/guilds/${g}/channels/${c}/overwrites/${kind}/${target}`);
  }

  messages(g, c, { before, after, limit = 50 } = {}) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (before) q.set('before', before);
    if (after) q.set('after', after);
    return this.req('GET', `/guilds/${g}/channels/${c}/messages?${q}`);
  }
  message(g, c, m) { return this.req('GET', `/guilds/${g}/channels/${c}/messages/${m}`); }
  editMessage(g, c, m, content) { return this.req('PATCH', `/guilds/${g}/channels/${c}/messages/${m}`, { content }); }
  deleteMessage(g, c, m) { return this.req('DELETE', `/guilds/${g}/channels/${c}/messages/${m}`); }
  react(g, c, m, emoji) { return this.req('PUT', `/guilds/${g}/channels/${c}/messages/${m}/reactions/${seg(emoji)}`); }
  unreact(g, c, m, emoji) { return this.req('DELETE', `/guilds/${g}/channels/${c}/messages/${m}/reactions/${seg(emoji)}`); }
  pins(g, c) { return this.req('GET', `/guilds/${g}/channels/${c}/pins`); }
  pin(g, c, m) { return this.req('PUT', `/guilds/${g}/channels/${c}/pins/${m}`); }
  unpin(g, c, m) { return this.req('DELETE', `/guilds/${g}/channels/${c}/pins/${m}`); }
  markRead(g, c, m) { return this.req('PUT', `/guilds/${g}/channels/${c}/read`, { message_id: m }); }
  threads(g, c) { return this.req('GET', `/guilds/${g}/channels/${c}/threads`); }
  createThread(g, c, name, messageId) {
    return this.req('POST', `/guilds/${g}/channels/${c}/threads`, { name, message_id: messageId ?? null });
  }

  createRole(g, fields) { return this.req('POST', `/guilds/${g}/roles`, fields); }
  updateRole(g, r, fields) { return this.req('PATCH', `/guilds/${g}/roles/${r}`, fields); }
  deleteRole(g, r) { return this.req('DELETE', `/guilds/${g}/roles/${r}`); }

  members(g) { return this.req('GET', `/guilds/${g}/members`); }
  updateMember(g, u, fields) { return this.req('PATCH', `/guilds/${g}/members/${u}`, fields); }
  removeMember(g, u, reason) {
    const q = reason ? `?${new URLSearchParams({ reason })}` : '';
    return this.req('DELETE', `/guilds/${g}/members/${u}${q}`);
  }
  grantRole(g, u, r) { return this.req('PUT', `/guilds/${g}/members/${u}/roles/${r}`); }
  revokeRole(g, u, r) { return this.req('DELETE', `/guilds/${g}/members/${u}/roles/${r}`); }

  bans(g) { return this.req('GET', `/guilds/${g}/bans`); }
  ban(g, u, reason) {
    const q = reason ? `?${new URLSearchParams({ reason })}` : '';
    return this.req('PUT', `/guilds/${g}/bans/${u}${q}`);
  }
  unban(g, u) { return this.req('DELETE', `/guilds/${g}/bans/${u}`); }

  invites(g) { return this.req('GET', `/guilds/${g}/invites`); }
  createInvite(g, fields) { return this.req('POST', `/guilds/${g}/invites`, fields); }
  revokeInvite(g, i) { return this.req('DELETE', `/guilds/${g}/invites/${i}`); }
  acceptInvite(code) { return this.req('POST', `/invites/${seg(code)}/accept`); }

  voiceStates(g) { return this.req('GET', `/guilds/${g}/voice-states`); }
  /// A moderator's change to someone in voice: any of mute, deaf, channel_id (null disconnects).
  moderateVoice(g, u, fields) { return this.req('PATCH', `/guilds/${g}/members/${u}/voice`, fields); }

  search(g, q) { return this.req('GET', `/guilds/${g}/search?${new URLSearchParams({ q, limit: '50' })}`); }
}
