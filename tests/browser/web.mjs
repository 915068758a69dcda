// Drives the node's web client in headless Chromium: two users in two browser contexts sign up,
// one creates a guild and an invite, the other joins by the invite link, and they use the client
// against the real node. Usage: node web.mjs http://127.0.0.1:PORT
// Screenshots go to <repo>/screenshots/ (kept out of git), or $SCREENSHOTS_DIR.

import {
  base, SHOTS, PASSWORD, suffix, step, assert, watchdog, rest, launch, problems, dialogs, openUser as open, fail,
} from './harness.mjs';

const HISTORY = 500;
const A = `ada${suffix}`;
const B = `bea${suffix}`;
// The whole run must stay well under a minute.
const timer = watchdog(60);

const browser = await launch();
const openUser = (name) => open(browser, name);

/// Proxies the gateway socket so the test can drop it and hold the resume, as a flaky network would.
async function proxyGateway(page) {
  const net = { routes: [], hold: null };
  await page.routeWebSocket(/\/api\/v1\/gateway$/, (ws) => {
    const server = ws.connectToServer();
    net.routes.push({ ws, server });
    ws.onMessage(async (frame) => {
      if (net.hold && JSON.parse(frame).op === 'resume') await net.hold;
      server.send(frame);
    });
  });
  return net;
}

/// A message on screen whose own text (not a quoted reply) contains `text`.
const message = (page, text) => page.locator('#messages .message:not(.pending)', { has: page.locator('.content', { hasText: text }) });

async function signUp(user, username) {
  const { page } = user;
  await page.getByRole('button', { name: 'Register' }).click();
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Sign Up' }).click();
  await page.locator('#conn.live').waitFor();
}

/// Sends from the composer and waits until the node has it; `shown` is text of the rendering.
async function send(page, text, shown = text) {
  const composer = page.locator('#composer');
  await composer.fill(text);
  await composer.press('Enter');
  await message(page, shown).last().waitFor();
}

async function hoverAction(page, text, action) {
  const m = message(page, text).last();
  await m.hover();
  await m.getByRole('button', { name: action, exact: true }).click();
}

const ada = await openUser('ada');
const bea = await openUser('bea');
const adaNet = await proxyGateway(ada.page);

try {
  step('sign up');
  await ada.page.goto(base);
  await ada.page.getByRole('button', { name: 'Log In' }).waitFor();
  await ada.page.screenshot({ path: `${SHOTS}/01-login.png` });
  await signUp(ada, A);

  step('create a guild and an invite');
  await ada.page.locator('.onboarding').getByRole('button', { name: 'Create or join a guild' }).click();
  await ada.page.getByLabel('Guild name').fill('Book Club');
  await ada.page.getByRole('button', { name: 'Create', exact: true }).click();
  await ada.page.locator('#chat-header .channel-title', { hasText: 'general' }).waitFor();
  await ada.page.locator('.guild-name', { hasText: 'Book Club' }).click();
  await ada.page.getByRole('menuitem', { name: 'Invite People' }).click();
  const linkBox = ada.page.getByLabel('Invite link');
  await ada.page.waitForFunction(() => document.querySelector('.invite-link')?.value.includes('/invite/'));
  const link = await linkBox.inputValue();
  assert(link.startsWith(`${base}/invite/`), `invite link ${link}`);
  await ada.page.screenshot({ path: `${SHOTS}/02-invite.png` });
  await ada.page.keyboard.press('Escape');

  step('second user joins by the invite link');
  await bea.page.goto(link);
  await bea.page.getByText('Log in or sign up to accept your invite.').waitFor();
  await signUp(bea, B);
  await bea.page.locator('#chat-header .channel-title', { hasText: 'general' }).waitFor();
  await bea.page.locator('.guild-name', { hasText: 'Book Club' }).waitFor();
  await ada.page.locator('.member.online', { hasText: B }).waitFor();
  await bea.page.locator('.member.online', { hasText: A }).waitFor();

  step('typing indicator, then chat both ways live');
  await ada.page.locator('#composer').pressSequentially('hello bea');
  await bea.page.locator('#typing', { hasText: `${A} is typing…` }).waitFor();
  await ada.page.locator('#composer').press('Enter');
  await message(bea.page, 'hello bea').waitFor();
  await bea.page.locator('#typing:empty').waitFor();

  step('reply with markdown and a mention');
  await hoverAction(bea.page, 'hello bea', 'Reply');
  await bea.page.locator('.replying', { hasText: A }).waitFor();
  await send(bea.page, `hi @${A}, **bold** *it* \`code\` > not a quote\n> quoted\n\`\`\`\nfn main() {}\n\`\`\``, `hi @${A}`);
  const reply = message(ada.page, `hi @${A}`);
  await reply.waitFor();
  await reply.locator('.reply-ref', { hasText: 'hello bea' }).waitFor();
  await reply.locator('strong', { hasText: 'bold' }).waitFor();
  await reply.locator('em', { hasText: 'it' }).waitFor();
  await reply.locator('code.inline', { hasText: 'code' }).waitFor();
  await reply.locator('blockquote', { hasText: 'quoted' }).waitFor();
  await reply.locator('pre.codeblock', { hasText: 'fn main() {}' }).waitFor();
  await reply.locator('.mention-user', { hasText: `@${A}` }).waitFor();
  assert(await reply.evaluate((el) => el.classList.contains('mentioned')), 'a mention is highlighted for the one mentioned');

  step('edit the last message with the Up key');
  await ada.page.locator('#composer').focus();
  await ada.page.keyboard.press('ArrowUp');
  const editBox = ada.page.getByLabel('Edit message');
  await editBox.fill('hello bea, welcome!');
  await editBox.press('Enter');
  await message(bea.page, 'hello bea, welcome!').locator('.edited').waitFor();

  step('react');
  await hoverAction(bea.page, 'hello bea, welcome!', 'Add reaction');
  await bea.page.getByRole('menuitem', { name: 'React with 👍' }).click();
  await message(ada.page, 'hello bea, welcome!').locator('.reaction[data-emoji="👍"] .count', { hasText: '1' }).waitFor();
  await message(bea.page, 'hello bea, welcome!').locator('.reaction.mine').waitFor();

  step('pin, and the pins panel');
  await hoverAction(ada.page, `hi @${A}`, 'Pin');
  await message(bea.page, `hi @${A}`).locator('.badge.pin').waitFor();
  await bea.page.getByRole('button', { name: 'Pinned messages' }).click();
  await bea.page.locator('#side-panel .result', { hasText: `hi @${A}` }).waitFor();
  await bea.page.getByRole('button', { name: 'Member list' }).click();

  step('hostile content renders as text');
  const script = '<script>window.__xss = 1; alert(1)</script>';
  const img = '<img src=x onerror="window.__xss = 2; alert(2)">';
  await send(bea.page, script);
  await send(bea.page, img);
  await send(bea.page, '[click me](javascript:alert(3)) and <a href="javascript:alert(4)">x</a>', 'click me');
  for (const { page } of [ada, bea]) {
    await message(page, img).waitFor();
    assert((await message(page, script).locator('.content').innerText()).includes(script), 'script tag shown as text');
    assert((await message(page, img).locator('.content').innerText()).includes(img), 'img tag shown as text');
    assert((await page.locator('#messages img, #messages script').count()) === 0, 'no img or script element in messages');
    assert((await page.locator('#messages a[href^="javascript"]').count()) === 0, 'no javascript: link');
    assert((await page.evaluate(() => window.__xss)) === undefined, 'no injected script ran');
  }

  step('delete');
  await send(bea.page, 'oops, wrong channel');
  await message(ada.page, 'oops, wrong channel').waitFor();
  await hoverAction(bea.page, 'oops, wrong channel', 'Delete');
  await bea.page.getByRole('dialog', { name: 'Delete Message' }).getByRole('button', { name: 'Delete' }).click();
  await message(ada.page, 'oops, wrong channel').waitFor({ state: 'detached' });
  await message(bea.page, 'oops, wrong channel').waitFor({ state: 'detached' });

  step('presence in the member list');
  await bea.page.getByLabel('Status').selectOption('dnd');
  await ada.page.locator('.member[data-status="dnd"]', { hasText: B }).waitFor();

  step('thread');
  await hoverAction(ada.page, `hi @${A}`, 'Create thread');
  await ada.page.getByLabel('Thread name').fill('side chat');
  await ada.page.getByRole('button', { name: 'Create', exact: true }).click();
  await ada.page.locator('#chat-header .channel-title', { hasText: 'side chat' }).waitFor();
  await send(ada.page, 'talking in the thread');
  await bea.page.locator('.channel.thread', { hasText: 'side chat' }).click();
  await message(bea.page, 'talking in the thread').waitFor();
  await bea.page.locator('#chat-header').getByRole('button', { name: '# general' }).click();
  await message(bea.page, `hi @${A}`).locator('.thread-link', { hasText: 'side chat' }).waitFor();

  step('channel settings: a new channel, and its unread marker');
  await ada.page.locator('.guild-name', { hasText: 'Book Club' }).click();
  await ada.page.getByRole('menuitem', { name: 'Create Channel' }).click();
  await ada.page.getByLabel('Channel name').fill('random');
  await ada.page.getByRole('button', { name: 'Create', exact: true }).click();
  await ada.page.locator('#chat-header .channel-title', { hasText: 'random' }).waitFor();
  await send(ada.page, 'over here');
  const randomForBea = bea.page.locator('.channel[data-name="random"]');
  await bea.page.locator('.channel.unread[data-name="random"]').waitFor();
  await bea.page.locator('.rail-item.selected').waitFor();
  await randomForBea.getByRole('button').first().click();
  await message(bea.page, 'over here').waitFor();
  await bea.page.locator('.channel.selected[data-name="random"]:not(.unread)').waitFor();

  step('reconnect indicator: drop the socket, catch up, live again');
  await ada.page.locator('#conn.live').waitFor();
  await ada.page.evaluate(() => {
    window.__conn = [];
    new MutationObserver(() => window.__conn.push(document.querySelector('#conn').textContent))
      .observe(document.querySelector('#chat-header'), { subtree: true, childList: true, characterData: true });
  });
  let release;
  adaNet.hold = new Promise((r) => { release = r; });
  const dropped = adaNet.routes.at(-1);
  dropped.ws.close();
  dropped.server.close();
  await ada.page.locator('#conn', { hasText: 'Catching up…' }).waitFor();
  await send(bea.page, 'sent while you were away');
  release();
  await ada.page.locator('#conn.live').waitFor();
  await message(ada.page, 'sent while you were away').waitFor();
  const states = await ada.page.evaluate(() => window.__conn);
  assert(states.indexOf('Reconnecting…') >= 0 && states.indexOf('Reconnecting…') < states.indexOf('Catching up…'), `indicator went ${states.join(' → ')}`);
  adaNet.hold = null;

  step('search');
  await bea.page.getByLabel('Search messages').fill('welcome');
  await bea.page.getByLabel('Search messages').press('Enter');
  await bea.page.locator('#side-panel .result', { hasText: 'hello bea, welcome!' }).waitFor();
  await bea.page.getByRole('button', { name: 'Member list' }).click();

  step(`page back through ${HISTORY} messages`);
  const token = await ada.page.evaluate(() => localStorage.getItem('guildhall.token'));
  const guildId = new URL(ada.page.url()).pathname.split('/')[2];
  const channel = await rest(token, 'POST', `/guilds/${guildId}/channels`, { name: 'archive', position: 5 });
  const label = (i) => `archived message ${String(i).padStart(3, '0')}`;
  const post = (i) => rest(token, 'POST', `/guilds/${guildId}/channels/${channel.id}/messages`, { content: label(i) });
  await post(1);
  for (let i = 2; i <= HISTORY; i += 25) {
    // Batches in order keep the first message the oldest; within a batch the order is free.
    await Promise.all(Array.from({ length: Math.min(25, HISTORY + 1 - i) }, (_, k) => post(i + k)));
  }
  await bea.page.locator('.channel[data-name="archive"]').getByRole('button').first().click();
  await message(bea.page, label(HISTORY)).waitFor();
  const scroller = bea.page.locator('#scroller');
  const oldest = message(bea.page, label(1));
  const start = bea.page.locator('#history-start:not(.hidden)');
  for (let round = 0; round < 20 && !(await start.count()); round += 1) {
    const before = await bea.page.locator('#messages .message').count();
    await scroller.hover();
    await bea.page.mouse.wheel(0, -100_000);
    await bea.page.waitForFunction((n) => document.querySelectorAll('#messages .message').length > n
      || !document.querySelector('#history-start').classList.contains('hidden'), before);
  }
  await oldest.waitFor();
  await start.waitFor();
  assert((await bea.page.locator('#messages .message').count()) === HISTORY, 'every message loaded once');
  await start.scrollIntoViewIfNeeded();
  await bea.page.screenshot({ path: `${SHOTS}/05-history-start.png` });

  step('screenshots of the main screens');
  await ada.page.locator('.channel[data-name="general"]').getByRole('button').first().click();
  await message(ada.page, 'hello bea, welcome!').waitFor();
  await ada.page.screenshot({ path: `${SHOTS}/03-chat.png` });
  await bea.page.locator('.channel[data-name="general"]').getByRole('button').first().click();
  await message(bea.page, 'hello bea, welcome!').waitFor();
  await bea.page.screenshot({ path: `${SHOTS}/04-chat-second-user.png` });

  step('role settings');
  await ada.page.locator('.guild-name', { hasText: 'Book Club' }).click();
  await ada.page.getByRole('menuitem', { name: 'Guild Settings' }).click();
  await ada.page.locator('.settings-nav [data-tab="roles"]').click();
  await ada.page.getByRole('button', { name: 'Create Role' }).click();
  await ada.page.getByLabel('Role name').last().fill('Moderators');
  await ada.page.getByRole('dialog', { name: 'Create Role' }).getByRole('button', { name: 'Create' }).click();
  await ada.page.locator('.role-item', { hasText: 'Moderators' }).click();
  await ada.page.locator('.role-editor h3', { hasText: 'Moderators' }).waitFor();
  await ada.page.locator('.role-editor label.check', { hasText: 'Manage messages' }).locator('input').check();
  await ada.page.locator('.role-editor').getByRole('button', { name: 'Save Changes' }).click();
  await ada.page.getByText('Role saved').waitFor();
  await ada.page.screenshot({ path: `${SHOTS}/06-settings-roles.png` });
  await ada.page.keyboard.press('Escape');

  step('channel settings: a permission override');
  await ada.page.getByRole('button', { name: 'Edit channel random' }).click();
  const channelDialog = ada.page.getByRole('dialog', { name: 'Edit #random' });
  await channelDialog.getByRole('button', { name: 'deny Add reactions' }).click();
  await channelDialog.getByRole('button', { name: 'Save permissions' }).click();
  await ada.page.getByText('Permissions saved').waitFor();
  await ada.page.screenshot({ path: `${SHOTS}/07-settings-channel.png` });
  await ada.page.keyboard.press('Escape');
  await bea.page.locator('.channel[data-name="random"]').getByRole('button').first().click();
  await message(bea.page, 'over here').hover();
  await message(bea.page, 'over here').getByRole('button', { name: 'Reply' }).waitFor();
  await message(bea.page, 'over here').getByRole('button', { name: 'Add reaction' }).waitFor({ state: 'detached' });

  step('ban');
  await ada.page.locator('#side-panel .member', { hasText: B }).click();
  await ada.page.getByRole('dialog', { name: B }).getByRole('button', { name: 'Ban' }).click();
  await ada.page.getByLabel('Reason (optional)').fill('testing bans');
  await ada.page.getByRole('dialog', { name: `Ban ${B}` }).getByRole('button', { name: `Ban ${B}` }).click();
  await ada.page.locator('#side-panel .member', { hasText: B }).waitFor({ state: 'detached' });
  await bea.page.getByText('You were banned from Book Club.').waitFor();
  await bea.page.locator('.guild-name', { hasText: 'No guild yet' }).waitFor();

  assert(dialogs.length === 0, `no dialogs opened: ${dialogs.join('; ')}`);
  assert(problems.length === 0, `no page errors: ${problems.join('; ')}`);
  step('ok');
} catch (err) {
  await fail(err, [ada, bea], 'failure');
} finally {
  clearTimeout(timer);
  await browser.close();
}
