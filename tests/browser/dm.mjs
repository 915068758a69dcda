// End-to-end encrypted DMs in the web client, in headless Chromium against a real node: three
// users who share a guild unlock DMs; two exchange 1:1 DMs live both ways (reply, edit, react,
// delete, hostile text), compare key fingerprints, a third joins a group; a reload opens the
// history again; a DM altered under a valid signature shows as an error; and the node's copy
// holds no plaintext. Usage: node dm.mjs http://127.0.0.1:PORT

import {
  base, SHOTS, PASSWORD, suffix, step, assert, watchdog, rest, launch, problems, dialogs, openUser as open, fail,
} from './harness.mjs';
import * as dc from '../../web/js/dmcrypto.js';

const timer = watchdog(60);
const A = `ada${suffix}`;
const B = `bea${suffix}`;
const C = `cal${suffix}`;

/// A DM on screen whose own text (not a quoted reply) contains `text`.
const dm = (page, text) => page.locator('#dm-messages .message:not(.pending)', { has: page.locator('.content', { hasText: text }) });

async function send(page, text, shown = text) {
  const composer = page.locator('#dm-composer');
  await composer.fill(text);
  await composer.press('Enter');
  await dm(page, shown).last().waitFor();
}

async function hoverAction(page, text, action) {
  const m = dm(page, text).last();
  await m.hover();
  await m.getByRole('button', { name: action, exact: true }).click();
}

async function unlock(user) {
  const { page } = user;
  await page.getByRole('button', { name: 'Direct Messages' }).click();
  await page.locator('.dm-unlock').getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Unlock DMs' }).click();
  await page.locator('.dm-unlock').waitFor({ state: 'detached' });
  await page.locator('#guild-header').getByRole('button', { name: 'New message' }).waitFor();
}

step('accounts and a shared guild over REST');
const register = (username) => rest(null, 'POST', '/auth/register', { username, password: PASSWORD });
const auth = { ada: await register(A), bea: await register(B), cal: await register(C) };
const guild = await rest(auth.ada.token, 'POST', '/guilds', { name: 'Secret Society' });
const invite = await rest(auth.ada.token, 'POST', `/guilds/${guild.id}/invites`, {});
await rest(auth.bea.token, 'POST', `/invites/${encodeURIComponent(invite.code)}/accept`);
await rest(auth.cal.token, 'POST', `/invites/${encodeURIComponent(invite.code)}/accept`);

const browser = await launch();
async function openUser(name) {
  const user = await open(browser, name);
  await user.context.addInitScript((token) => localStorage.setItem('guildhall.token', token), auth[name].token);
  await user.page.goto(base);
  await user.page.locator('#conn.live').waitFor();
  return user;
}
const ada = await openUser('ada');
const bea = await openUser('bea');
let cal = null;

try {
  step('ada and bea unlock DMs');
  await ada.page.getByRole('button', { name: 'Direct Messages' }).click();
  await ada.page.locator('.dm-unlock').waitFor();
  await ada.page.screenshot({ path: `${SHOTS}/dm-01-unlock.png` });
  await unlock(ada);
  await unlock(bea);
  const stored = await ada.page.evaluate((id) => localStorage.getItem(`guildhall.dm.keyring.${id}`), auth.ada.user.id);
  assert(stored && JSON.parse(stored).secrets.length === 1, 'the keyring is kept in this browser');

  step('ada starts a 1:1 conversation; DMs go both ways live');
  await ada.page.locator('#guild-header').getByRole('button', { name: 'New message' }).click();
  const picker = ada.page.getByRole('dialog', { name: 'New Message' });
  await picker.locator('label', { hasText: B }).locator('input').check();
  await picker.getByRole('button', { name: 'Start conversation' }).click();
  await send(ada.page, 'hello bea, this is secret');
  await bea.page.locator('.dm-conv.unread', { hasText: A }).click();
  await dm(bea.page, 'hello bea, this is secret').waitFor();
  await bea.page.locator('.dm-conv.selected:not(.unread)', { hasText: A }).waitFor();

  step('reply');
  await hoverAction(bea.page, 'hello bea, this is secret', 'Reply');
  await bea.page.locator('.replying', { hasText: A }).waitFor();
  await send(bea.page, 'hi ada, **bold** reply', 'hi ada');
  const reply = dm(ada.page, 'hi ada');
  await reply.locator('.reply-ref', { hasText: 'hello bea, this is secret' }).waitFor();
  await reply.locator('strong', { hasText: 'bold' }).waitFor();

  step('edit with the Up key');
  await ada.page.locator('#dm-composer').focus();
  await ada.page.keyboard.press('ArrowUp');
  const editBox = ada.page.getByLabel('Edit message');
  await editBox.fill('hello bea, this is edited');
  await editBox.press('Enter');
  await dm(bea.page, 'hello bea, this is edited').locator('.edited').waitFor();
  await reply.locator('.reply-ref', { hasText: 'hello bea, this is edited' }).waitFor();

  step('react');
  await hoverAction(bea.page, 'hello bea, this is edited', 'Add reaction');
  await bea.page.getByRole('menuitem', { name: 'React with 👍' }).click();
  await dm(ada.page, 'hello bea, this is edited').locator('.reaction[data-emoji="👍"] .count', { hasText: '1' }).waitFor();
  await dm(bea.page, 'hello bea, this is edited').locator('.reaction.mine').waitFor();

  step('delete');
  await send(bea.page, 'oops, not for you');
  await dm(ada.page, 'oops, not for you').waitFor();
  await hoverAction(bea.page, 'oops, not for you', 'Delete');
  await bea.page.getByRole('dialog', { name: 'Delete Message' }).getByRole('button', { name: 'Delete' }).click();
  await dm(ada.page, 'oops, not for you').waitFor({ state: 'detached' });
  await dm(bea.page, 'oops, not for you').waitFor({ state: 'detached' });

  step('hostile content renders as text');
  const script = '<script>window.__xss = 1; alert(1)</script>';
  const img = '<img src=x onerror="window.__xss = 2; alert(2)">';
  await send(ada.page, script);
  await send(ada.page, img);
  for (const { page } of [ada, bea]) {
    await dm(page, img).waitFor();
    assert((await dm(page, script).locator('.content').innerText()).includes(script), 'script tag shown as text');
    assert((await dm(page, img).locator('.content').innerText()).includes(img), 'img tag shown as text');
    assert((await page.locator('#dm-messages img, #dm-messages script').count()) === 0, 'no img or script element in DMs');
    assert((await page.evaluate(() => window.__xss)) === undefined, 'no injected script ran');
  }

  step('fingerprints match across the two browsers');
  const fingerprint = (page, user) => page.locator(`#dm-info .fingerprint[data-user="${user}"]`);
  const pattern = /^[0-9a-f]{4}(-[0-9a-f]{4}){4}$/;
  await ada.page.waitForFunction((user) => /-/.test(document.querySelector(`#dm-info .fingerprint[data-user="${user}"]`)?.textContent ?? ''), auth.bea.user.id);
  await bea.page.waitForFunction((user) => /-/.test(document.querySelector(`#dm-info .fingerprint[data-user="${user}"]`)?.textContent ?? ''), auth.bea.user.id);
  const seenByAda = await fingerprint(ada.page, auth.bea.user.id).textContent();
  const ownByBea = await fingerprint(bea.page, auth.bea.user.id).textContent();
  assert(pattern.test(seenByAda) && seenByAda === ownByBea, `bea's fingerprint: ada sees ${seenByAda}, bea has ${ownByBea}`);
  await ada.page.screenshot({ path: `${SHOTS}/dm-02-conversation.png` });

  step('a third user; ada makes it a group');
  cal = await openUser('cal');
  await unlock(cal);
  await ada.page.locator('#dm-info').getByRole('button', { name: 'Add people' }).click();
  const adder = ada.page.getByRole('dialog', { name: 'Add People' });
  await adder.locator('label', { hasText: C }).locator('input').check();
  await adder.getByRole('button', { name: 'Add', exact: true }).click();
  await ada.page.locator('.dm-conv.selected[data-kind="group"]').waitFor();
  await send(ada.page, 'welcome to the group, cal');
  for (const user of [bea, cal]) {
    await user.page.locator('.dm-conv[data-kind="group"]').click();
    await dm(user.page, 'welcome to the group, cal').waitFor();
  }
  await send(cal.page, 'thanks, both of you');
  await dm(ada.page, 'thanks, both of you').waitFor();
  await dm(bea.page, 'thanks, both of you').waitFor();
  assert(await bea.page.locator('.dm-conv').count() === 2, 'bea keeps the 1:1 and the group apart');
  assert(!(await dm(cal.page, 'hello bea').count()), 'cal does not see the 1:1 history');
  await cal.page.screenshot({ path: `${SHOTS}/dm-03-group.png` });

  step('a DM altered under a valid signature shows an error, not a crash');
  const adaRecords = (await rest(auth.cal.token, 'GET', `/users/${auth.ada.user.id}/dm-keys`)).records;
  const adaKey = (await dc.verifyKeyRecord(dc.unhex(adaRecords.at(-1)))).key;
  const calSeed = dc.unhex((await rest(auth.cal.token, 'POST', '/users/@me/key', { password: PASSWORD })).secret_key);
  const calUser = dc.unhex(auth.cal.user.id);
  const stray = dc.randomBytes(32);
  const env = await dc.seal({
    conversation: await dc.pairConversation(calUser, dc.unhex(auth.ada.user.id)), sender: calUser, senderSecret: stray,
    members: [{ user: calUser, key: await dc.x25519Public(stray) }, { user: dc.unhex(auth.ada.user.id), key: adaKey }],
    sentMs: Date.now(), plaintext: new TextEncoder().encode('{"type":"message","content":"tampered"}'),
  }, dc.sealRandomness(2));
  env.body[0] ^= 1;
  await rest(auth.cal.token, 'POST', '/dms', { envelope: dc.hex(await dc.signEnvelope(env, calSeed)) });
  await ada.page.locator('.dm-conv.unread[data-kind="pair"]', { hasText: C }).click();
  await ada.page.locator('#dm-messages .dm-failed', { hasText: 'dm_tampered' }).waitFor();
  await ada.page.screenshot({ path: `${SHOTS}/dm-04-failed.png` });

  step('reload: the history opens again');
  await ada.page.locator('.dm-conv[data-kind="pair"]', { hasText: B }).click();
  await dm(ada.page, 'hi ada').waitFor();
  await ada.page.reload();
  await ada.page.locator('#conn.live').waitFor();
  await dm(ada.page, 'hello bea, this is edited').locator('.reaction[data-emoji="👍"] .count', { hasText: '1' }).waitFor();
  await dm(ada.page, 'hi ada').locator('.reply-ref', { hasText: 'hello bea, this is edited' }).waitFor();
  await dm(ada.page, script).waitFor();
  assert(!(await dm(ada.page, 'oops, not for you').count()), 'the deleted DM stays deleted');
  await ada.page.locator('.dm-conv[data-kind="group"]').click();
  await dm(ada.page, 'thanks, both of you').waitFor();

  step('the node stores only ciphertext');
  const inbox = await rest(auth.ada.token, 'GET', '/dms?after=0&limit=500');
  assert(inbox.dms.length === 11, `ada's inbox holds every DM (${inbox.dms.length})`);
  const raw = JSON.stringify(inbox);
  for (const secret of ['hello bea', 'welcome to the group', 'thanks, both', 'oops, not for you']) {
    assert(!raw.includes(secret) && !raw.includes(dc.hex(new TextEncoder().encode(secret))), `the node's copy has no "${secret}"`);
  }

  assert(dialogs.length === 0, `no dialogs opened: ${dialogs.join('; ')}`);
  assert(problems.length === 0, `no page errors: ${problems.join('; ')}`);
  step('ok');
} catch (err) {
  await fail(err, [ada, bea, ...(cal ? [cal] : [])], 'dm-failure');
} finally {
  clearTimeout(timer);
  await browser.close();
}
