// Real voice between browsers: three users in three Chromium contexts join one voice channel
// through the web client, with Chromium's fake microphone (a periodic beep), and the node's SFU
// forwards their audio. What each page receives is read from the client's Connection info
// panel (per incoming stream: packets received and audio energy, from getStats()).
// Usage: node voice.mjs http://127.0.0.1:PORT (a node serving voice).

import {
  base, SHOTS, PASSWORD, suffix, step, assert, watchdog, rest, launch, problems, dialogs, openUser, fail,
} from './harness.mjs';

const SPEAK = 1n << 21n;
/// How long a stream must not grow to count as stopped (Opus sends 50 packets a second; the
/// client refreshes its stats every second).
const WINDOW_MS = 1500;
/// How long a change may take to show in what the pages receive.
const SETTLE_MS = 10_000;

const timer = watchdog(60);
const browser = await launch([
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
  // The SFU's only candidate is 127.0.0.1, which WebRTC ignores without this.
  '--allow-loopback-in-peer-connection',
]);

/// The incoming streams a page shows, by mid: { packets, energy }.
async function sample(user) {
  const rows = await user.page.locator('#voice-panel .voice-stream').evaluateAll((els) => els.map((el) => [
    el.dataset.mid, { packets: Number(el.dataset.packets), energy: Number(el.dataset.energy) },
  ]));
  return new Map(rows);
}

/// Measures `user`'s incoming streams over windows of WINDOW_MS until `check({ growing,
/// stopped })` holds (mids whose packets grew, with audio energy, and mids that got none), or
/// fails after SETTLE_MS. Returns what the passing window saw.
async function streams(user, what, check) {
  const deadline = Date.now() + SETTLE_MS;
  let before = await sample(user);
  for (;;) {
    await user.page.waitForTimeout(WINDOW_MS);
    const after = await sample(user);
    const growing = [...after].filter(([mid, s]) => s.packets > (before.get(mid)?.packets ?? 0) && s.energy > 0).map(([mid]) => mid);
    const stopped = [...after].filter(([mid, s]) => before.has(mid) && s.packets === before.get(mid).packets).map(([mid]) => mid);
    const seen = { growing, stopped };
    if (check(seen)) return seen;
    if (Date.now() > deadline) throw new Error(`${user.name}: ${what}; saw ${JSON.stringify(seen)} in the last ${WINDOW_MS} ms`);
    before = after;
  }
}

const sameSet = (a, b) => a.length === b.length && a.every((x) => b.includes(x));
const voiceUser = (user, id) => user.page.locator(`#channels .voice-user[data-user-id="${id}"]`);
const panelButton = (user, name) => user.page.locator('#voice-panel').getByRole('button', { name, exact: true });

/// Proxies a page's gateway socket so the test can drop it and refuse the resume, as a node
/// would after the session expired: the client must identify again, on a new session.
async function gatewayProxy(page) {
  const net = { sockets: [], refuseResume: false };
  await page.routeWebSocket(/\/api\/v1\/gateway$/, (ws) => {
    const server = ws.connectToServer();
    net.sockets.push({ ws, server });
    ws.onMessage((frame) => {
      if (net.refuseResume && JSON.parse(frame).op === 'resume') {
        net.refuseResume = false;
        ws.send(JSON.stringify({ op: 'invalid_session', d: { resumable: false } }));
        return;
      }
      server.send(frame);
    });
  });
  return net;
}

/// Joins by clicking the channel; returns the milliseconds from the click to "connected"
/// (microphone, offer, answer, ICE and DTLS), as the user waits for it.
async function join(user) {
  const clicked = Date.now();
  await user.page.locator('.channel[data-name="lounge"] .channel-link').click();
  await user.page.locator('#voice-panel[data-state="connected"]').waitFor();
  return Date.now() - clicked;
}

let users = [];
try {
  step('three accounts, a guild with a voice channel (REST)');
  const accounts = await Promise.all(['ada', 'bea', 'cai'].map((n) => rest(null, 'POST', '/auth/register', { username: `${n}${suffix}`, password: PASSWORD })));
  const [owner] = accounts;
  const guild = await rest(owner.token, 'POST', '/guilds', { name: 'Voice Club' });
  const lounge = await rest(owner.token, 'POST', `/guilds/${guild.id}/channels`, { name: 'lounge', kind: 'voice' });
  const invite = await rest(owner.token, 'POST', `/guilds/${guild.id}/invites`, { max_uses: 0, max_age_secs: 0 });
  await Promise.all(accounts.slice(1).map((a) => rest(a.token, 'POST', `/invites/${encodeURIComponent(invite.code)}/accept`)));

  step('each logs in in its own browser context');
  users = await Promise.all(accounts.map(async ({ user: account }, i) => {
    const user = await openUser(browser, account.username, { permissions: ['microphone'] });
    user.id = account.id;
    if (i === 1) user.net = await gatewayProxy(user.page);
    await user.page.goto(base);
    await user.page.getByLabel('Username').fill(account.username);
    await user.page.getByLabel('Password').fill(PASSWORD);
    await user.page.getByRole('button', { name: 'Log In' }).click();
    await user.page.locator('#conn.live').waitFor();
    await user.page.locator('.channel[data-name="lounge"]').waitFor();
    return user;
  }));
  const [ada, bea, cai] = users;

  step('all three join the voice channel by clicking it, one after another');
  const joinMs = [];
  for (const user of users) joinMs.push(await join(user));
  console.log(`voice join, click to connected: ${joinMs.map((ms, i) => `${users[i].name} ${ms} ms`).join(', ')}`);
  for (const user of users) {
    for (const other of users) await voiceUser(user, other.id).waitFor();
    await panelButton(user, 'Connection info').click();
  }

  step('everyone receives audio from the two others');
  await Promise.all(users.map((u) => streams(u, 'two streams with audio', (s) => s.growing.length === 2)));

  step('speaking indicators');
  await voiceUser(ada, bea.id).and(ada.page.locator('.speaking')).waitFor();
  await voiceUser(bea, cai.id).and(bea.page.locator('.speaking')).waitFor();
  await voiceUser(cai, ada.id).and(cai.page.locator('.speaking')).waitFor();
  await ada.page.screenshot({ path: `${SHOTS}/voice-01-connected.png` });
  await ada.page.locator('#sidebar').screenshot({ path: `${SHOTS}/voice-02-panel.png` });

  step('cai mutes: the others stop receiving cai, and only cai');
  await panelButton(cai, 'Mute').click();
  await panelButton(cai, 'Unmute').waitFor();
  await voiceUser(ada, cai.id).and(ada.page.locator('.muted')).waitFor();
  const caiAt = new Map();
  const beaAtAda = [];
  const adaAtBea = [];
  await Promise.all([
    streams(ada, 'cai silent, bea heard', (s) => s.growing.length === 1 && s.stopped.length === 1).then((s) => { caiAt.set(ada, s.stopped[0]); beaAtAda.push(s.growing[0]); }),
    streams(bea, 'cai silent, ada heard', (s) => s.growing.length === 1 && s.stopped.length === 1).then((s) => { caiAt.set(bea, s.stopped[0]); adaAtBea.push(s.growing[0]); }),
    streams(cai, 'muting does not deafen', (s) => s.growing.length === 2),
  ]);

  step('cai unmutes: heard again on the same stream');
  await panelButton(cai, 'Unmute').click();
  await panelButton(cai, 'Mute').waitFor();
  await Promise.all([
    streams(ada, 'cai and bea heard', (s) => sameSet(s.growing, [caiAt.get(ada), beaAtAda[0]])),
    streams(bea, 'cai and ada heard', (s) => sameSet(s.growing, [caiAt.get(bea), adaAtBea[0]])),
  ]);

  step('cai disconnects: cai’s stream stops at the others, theirs goes on');
  await panelButton(cai, 'Disconnect').click();
  await cai.page.locator('#voice-panel').waitFor({ state: 'hidden' });
  await voiceUser(ada, cai.id).waitFor({ state: 'detached' });
  await voiceUser(bea, cai.id).waitFor({ state: 'detached' });
  await Promise.all([
    streams(ada, 'only bea heard', (s) => sameSet(s.growing, beaAtAda) && s.stopped.includes(caiAt.get(ada))),
    streams(bea, 'only ada heard', (s) => sameSet(s.growing, adaAtBea) && s.stopped.includes(caiAt.get(bea))),
  ]);

  step('SPEAK denied to cai, who rejoins: cai hears both, nobody hears cai');
  await rest(owner.token, 'PUT', `/guilds/${guild.id}/channels/${lounge.id}/overwrites/member/${cai.id}`, { allow: '0', deny: String(SPEAK) });
  await join(cai);
  await cai.page.locator('#voice-panel .voice-note', { hasText: 'You cannot speak in this channel' }).waitFor();
  await panelButton(cai, 'Connection info').waitFor();
  if ((await panelButton(cai, 'Connection info').getAttribute('aria-expanded')) !== 'true') await panelButton(cai, 'Connection info').click();
  await streams(cai, 'ada and bea heard', (s) => s.growing.length === 2);
  await Promise.all([
    streams(ada, 'cai not heard', (s) => sameSet(s.growing, beaAtAda)),
    streams(bea, 'cai not heard', (s) => sameSet(s.growing, adaAtBea)),
  ]);

  step('bea’s gateway session is lost: the client rejoins voice on the new session');
  const sessionOf = async (id) => (await rest(owner.token, 'GET', `/guilds/${guild.id}/voice-states`)).find((v) => v.user_id === id)?.session_id;
  const oldSession = await sessionOf(bea.id);
  bea.net.refuseResume = true;
  const dropped = bea.net.sockets.at(-1);
  dropped.ws.close();
  dropped.server.close();
  for (let i = 0; (await sessionOf(bea.id)) === oldSession; i += 1) {
    assert(i < 100, 'bea is in voice on a new session within 10 s');
    await bea.page.waitForTimeout(100);
  }
  assert(!bea.net.refuseResume, 'the client tried to resume first');
  await bea.page.locator('#voice-panel[data-state="connected"]').waitFor();
  await Promise.all([
    streams(bea, 'ada heard again', (s) => s.growing.length === 1),
    streams(ada, 'bea heard again', (s) => s.growing.length === 1),
    streams(cai, 'both heard', (s) => s.growing.length === 2),
  ]);

  step('ada server-mutes bea from the participant menu');
  await voiceUser(ada, bea.id).locator('.voice-user-main').click({ button: 'right' });
  await ada.page.getByRole('menu', { name: `Voice options for ${bea.name}` }).waitFor();
  await ada.page.screenshot({ path: `${SHOTS}/voice-03-moderator-menu.png` });
  await ada.page.getByRole('menuitem', { name: 'Server Mute', exact: true }).click();
  await bea.page.locator('#voice-panel .voice-note', { hasText: 'Server muted' }).waitFor();
  await voiceUser(cai, bea.id).and(cai.page.locator('.server-muted')).waitFor();
  await Promise.all([
    streams(ada, 'nobody heard (bea muted, cai may not speak)', (s) => s.growing.length === 0),
    streams(cai, 'only ada heard', (s) => s.growing.length === 1 && s.stopped.length >= 1),
    streams(bea, 'ada heard', (s) => s.growing.length === 1),
  ]);
  await bea.page.locator('#sidebar').screenshot({ path: `${SHOTS}/voice-04-server-muted.png` });

  assert(dialogs.length === 0, `no dialogs opened: ${dialogs.join('; ')}`);
  assert(problems.length === 0, `no page errors: ${problems.join('; ')}`);
  step('ok');
} catch (err) {
  await fail(err, users, 'voice-failure');
} finally {
  clearTimeout(timer);
  await browser.close();
}
