// The web client's DM crypto (web/js/xchacha.js, web/js/dmcrypto.js) against the RFC 8439 and
// XChaCha draft vectors, Node's own ChaCha20-Poly1305, a BigInt Poly1305, and every value of
// spec/vectors/dm.json. Run by tests/web.rs: node --test dm-crypto.test.mjs

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import nodeCrypto from 'node:crypto';

import { chacha20, hchacha20, poly1305, chachaSeal, chachaOpen, xchachaSeal, xchachaOpen } from '../../web/js/xchacha.js';
import * as dm from '../../web/js/dmcrypto.js';

const { hex, unhex } = dm;
const text = (s) => new TextEncoder().encode(s);
const vectors = JSON.parse(readFileSync(new URL('../../spec/vectors/dm.json', import.meta.url), 'utf8'));

const SUNSCREEN = text("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
const AEAD_KEY = unhex('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f');
const AEAD_AAD = unhex('50515253c0c1c2c3c4c5c6c7');

test('ChaCha20 encryption (RFC 8439 §2.4.2)', () => {
  const key = unhex('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');
  const out = chacha20(key, unhex('000000000000004a00000000'), 1, SUNSCREEN);
  assert.equal(hex(out), '6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0bf91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d807ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab77937365af90bbf74a35be6b40b8eedf2785e42874d');
});

test('Poly1305 (RFC 8439 §2.5.2)', () => {
  const key = unhex('85d6be7857556d337f4452fe42d506a80103808afb0db2fd4abff6af4149f51b');
  assert.equal(hex(poly1305(key, text('Cryptographic Forum Research Group'))), 'a8061dc1305136c6c22b8baf0c0127a9');
});

/// A plain BigInt Poly1305 to compare the limb arithmetic with, extreme inputs included.
function poly1305Ref(key, msg) {
  const le = (b) => b.reduceRight((acc, x) => (acc << 8n) + BigInt(x), 0n);
  const r = le(key.slice(0, 16)) & 0x0ffffffc0ffffffc0ffffffc0fffffffn;
  const s = le(key.slice(16));
  const p = (1n << 130n) - 5n;
  let h = 0n;
  for (let i = 0; i < msg.length; i += 16) {
    const block = msg.slice(i, i + 16);
    h = ((h + le(block) + (1n << BigInt(8 * block.length))) * r) % p;
  }
  let tag = (h + s) & ((1n << 128n) - 1n);
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i += 1) {
    out[i] = Number(tag & 0xffn);
    tag >>= 8n;
  }
  return out;
}

test('Poly1305 matches a BigInt reference, extreme limbs included', () => {
  for (let n = 0; n < 200; n += 1) {
    const key = n % 3 === 0 ? new Uint8Array(32).fill(0xff) : new Uint8Array(nodeCrypto.randomBytes(32));
    const msg = n % 2 ? new Uint8Array(n * 5).fill(0xff) : new Uint8Array(nodeCrypto.randomBytes(n * 5));
    assert.equal(hex(poly1305(key, msg)), hex(poly1305Ref(key, msg)), `case ${n}`);
  }
});

test('ChaCha20-Poly1305 AEAD (RFC 8439 §2.8.2)', () => {
  const nonce = unhex('070000004041424344454647');
  const sealed = chachaSeal(AEAD_KEY, nonce, SUNSCREEN, AEAD_AAD);
  assert.equal(hex(sealed), 'd31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116'
    + '1ae10b594f09e26a7e902ecbd0600691');
  assert.deepEqual(chachaOpen(AEAD_KEY, nonce, sealed, AEAD_AAD), SUNSCREEN);
});

test('ChaCha20-Poly1305 agrees with Node (OpenSSL) at every length', () => {
  for (let n = 0; n < 300; n += 1) {
    const key = nodeCrypto.randomBytes(32);
    const nonce = nodeCrypto.randomBytes(12);
    const pt = nodeCrypto.randomBytes(n * 3);
    const aad = nodeCrypto.randomBytes(n % 41);
    const c = nodeCrypto.createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
    c.setAAD(aad);
    const want = Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]).toString('hex');
    assert.equal(hex(chachaSeal(new Uint8Array(key), new Uint8Array(nonce), new Uint8Array(pt), new Uint8Array(aad))), want, `length ${pt.length}`);
  }
});

test('HChaCha20 (draft-irtf-cfrg-xchacha §2.2.1)', () => {
  const key = unhex('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f');
  assert.equal(hex(hchacha20(key, unhex('000000090000004a0000000031415927'))), '82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc');
});

test('XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha §A.3.1)', () => {
  const nonce = unhex('404142434445464748494a4b4c4d4e4f5051525354555657');
  const sealed = xchachaSeal(AEAD_KEY, nonce, SUNSCREEN, AEAD_AAD);
  assert.equal(hex(sealed), 'bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e'
    + 'c0875924c1c7987947deafd8780acf49');
  assert.deepEqual(xchachaOpen(AEAD_KEY, nonce, sealed, AEAD_AAD), SUNSCREEN);
  for (const at of [0, 50, sealed.length - 1]) {
    const bad = sealed.slice();
    bad[at] ^= 1;
    assert.equal(xchachaOpen(AEAD_KEY, nonce, bad, AEAD_AAD), null, `flipped byte ${at}`);
  }
  assert.equal(xchachaOpen(AEAD_KEY, nonce, sealed, text('other')), null, 'other aad');
});

const [ada, bea] = vectors.members;
const m = vectors.message;

test('dm.json: members’ keys', async () => {
  for (const member of vectors.members) {
    assert.equal(hex(await dm.ed25519Public(unhex(member.identity_secret))), member.user);
    assert.equal(hex(await dm.x25519Public(unhex(member.dm_secret))), member.dm_public);
  }
});

test('dm.json: the key record, signed and verified', async () => {
  const v = vectors.key_record;
  const record = { user: unhex(v.user), key: unhex(v.key), version: v.version, createdMs: v.created_ms, home: unhex(v.home) };
  const wire = await dm.signKeyRecord(record, unhex(bea.identity_secret));
  assert.equal(hex(wire), v.wire_hex);
  const back = await dm.verifyKeyRecord(wire);
  assert.equal(hex(back.user), v.user);
  assert.equal(hex(back.key), v.key);
  assert.equal(back.version, 1);
  assert.equal(back.createdMs, v.created_ms);
  assert.equal(hex(back.home), v.home);
  const bad = wire.slice();
  bad[40] ^= 1;
  await assert.rejects(dm.verifyKeyRecord(bad), { code: 'bad_signature' });
  await assert.rejects(dm.verifyKeyRecord(wire.slice(0, 100)), { code: 'dm_truncated' });
  // A low-order key, properly signed, is refused.
  const low = await dm.signKeyRecord({ ...record, key: new Uint8Array(32) }, unhex(bea.identity_secret));
  await assert.rejects(dm.verifyKeyRecord(low), { code: 'dm_bad_key' });
});

const sealing = () => ({
  conversation: unhex(m.conversation),
  sender: unhex(m.sender),
  senderSecret: unhex(ada.dm_secret),
  members: [{ user: unhex(ada.user), key: unhex(ada.dm_public) }, { user: unhex(bea.user), key: unhex(bea.dm_public) }],
  sentMs: m.sent_ms,
  plaintext: text(m.plaintext),
});
const random = () => ({
  ephemeralSecret: unhex(m.ephemeral_secret),
  bodyKey: unhex(m.body_key),
  bodyNonce: unhex(m.body_nonce),
  wrapNonces: m.wrap_nonces.map((n) => unhex(n)),
});
const secretsOf = (member) => async (key) => (hex(key) === member.dm_public ? unhex(member.dm_secret) : null);

test('dm.json: sealing gives the vector’s header, context, wrap keys, body, envelope and id', async () => {
  const env = await dm.seal(sealing(), random());
  assert.equal(hex(dm.headerBytes(env)), m.header_hex);
  const ctx = await dm.context(env);
  assert.equal(hex(ctx), m.context_hex);
  assert.equal(hex(env.body), m.body_hex);
  const secrets = [ada, bea];
  for (const [i, wrap] of env.wraps.entries()) {
    const dh1 = await dm.x25519(unhex(m.ephemeral_secret), wrap.key);
    const dh2 = await dm.x25519(unhex(ada.dm_secret), wrap.key);
    assert.equal(hex(await dm.wrapKey(env.ephemeral, dh1, dh2, ctx, wrap)), m.wrap_keys_hex[i]);
    // The member's side of the same two Diffie-Hellmans.
    assert.deepEqual(await dm.x25519(unhex(secrets[i].dm_secret), env.ephemeral), dh1);
  }
  const wire = await dm.signEnvelope(env, unhex(ada.identity_secret));
  assert.equal(hex(wire), m.wire_hex);
  const { id } = await dm.verifyEnvelope(wire);
  assert.equal(id, m.id);
});

test('dm.json: both members open the vector’s envelope to its plaintext', async () => {
  const { envelope, id } = await dm.verifyEnvelope(unhex(m.wire_hex));
  assert.equal(id, m.id);
  for (const member of [ada, bea]) {
    const plain = await dm.open(envelope, unhex(member.user), secretsOf(member));
    assert.equal(new TextDecoder().decode(plain), m.plaintext);
  }
  await assert.rejects(dm.open(envelope, new Uint8Array(32).fill(7), secretsOf(ada)), { code: 'dm_not_recipient' });
  await assert.rejects(dm.open(envelope, unhex(bea.user), async () => null), { code: 'dm_unknown_key' });
});

test('dm.json: a flipped byte anywhere fails to verify or to open', async () => {
  const wire = unhex(m.wire_hex);
  // Signature checked: any flip in the signed part or the signature is refused.
  for (const at of [0, 1, 40, 200, wire.length - 100, wire.length - 1]) {
    const bad = wire.slice();
    bad[at] ^= 1;
    await assert.rejects(dm.verifyEnvelope(bad), (e) => ['bad_signature', 'unknown_version', 'malformed_dm', 'dm_bad_members'].includes(e.code), `flip at ${at}`);
  }
  // A body or wrap altered under a valid signature (a dishonest sender) does not open.
  const { envelope } = await dm.verifyEnvelope(wire);
  const cases = [
    ['body', (e) => { e.body[5] ^= 1; }],
    ['sealed key', (e) => { e.wraps[1].sealed[3] ^= 1; }],
    ['wrap nonce', (e) => { e.wraps[1].nonce[0] ^= 1; }],
    ['key commitment', (e) => { e.keyCommit[0] ^= 1; }],
    ['sender key', (e) => { e.senderKey[0] ^= 1; }],
    ['sent time', (e) => { e.sentMs += 1; }],
  ];
  for (const [what, change] of cases) {
    const e = structuredClone(envelope);
    change(e);
    await assert.rejects(dm.open(e, unhex(bea.user), secretsOf(bea)), { code: 'dm_tampered' }, what);
  }
});

test('a fresh group DM round-trips; sizes pad to 256 bytes; envelope limits hold', async () => {
  const people = await Promise.all([1, 2, 3].map(async (n) => {
    const identity = new Uint8Array(32).fill(0x30 + n);
    const secret = dm.randomBytes(32);
    return { identity, user: await dm.ed25519Public(identity), secret, key: await dm.x25519Public(secret) };
  }));
  const [a, , c] = people;
  for (const len of [0, 254, 255, 256, 4000]) {
    const plaintext = new Uint8Array(len).fill(0x61);
    const env = await dm.seal({
      conversation: dm.randomBytes(32), sender: a.user, senderSecret: a.secret,
      members: people.map((p) => ({ user: p.user, key: p.key })), sentMs: Date.now(), plaintext,
    }, dm.sealRandomness(3));
    assert.equal(env.body.length, Math.ceil((len + 1) / 256) * 256 + 16);
    const wire = await dm.signEnvelope(env, a.identity);
    const { envelope } = await dm.verifyEnvelope(wire);
    const opened = await dm.open(envelope, c.user, async (k) => (dm.equalBytes(k, c.key) ? c.secret : null));
    assert.deepEqual(opened, plaintext);
  }
  await assert.rejects(dm.seal({
    conversation: dm.randomBytes(32), sender: a.user, senderSecret: a.secret,
    members: [{ user: people[1].user, key: people[1].key }], sentMs: 0, plaintext: text('x'),
  }, dm.sealRandomness(1)), { code: 'dm_bad_members' }, 'the sender must be a member');
  await assert.rejects(dm.seal({
    conversation: dm.randomBytes(32), sender: a.user, senderSecret: a.secret,
    members: [{ user: a.user, key: a.key }, { user: c.user, key: new Uint8Array(32) }], sentMs: 0, plaintext: text('x'),
  }, dm.sealRandomness(2)), { code: 'dm_bad_key' }, 'a low-order member key');
});

test('pair conversation ids and fingerprints', async () => {
  const a = unhex(ada.user);
  const b = unhex(bea.user);
  const ab = await dm.pairConversation(a, b);
  assert.deepEqual(ab, await dm.pairConversation(b, a));
  const [low, high] = ada.user < bea.user ? [a, b] : [b, a];
  const want = nodeCrypto.createHash('sha256').update(Buffer.concat([Buffer.from('guildhall/dm/v1 pair\0'), low, high])).digest('hex');
  assert.equal(hex(ab), want);
  const fp = await dm.fingerprint(unhex(ada.dm_public));
  assert.match(fp, /^[0-9a-f]{4}(-[0-9a-f]{4}){4}$/);
  const digest = nodeCrypto.createHash('sha256').update(Buffer.concat([Buffer.from('guildhall/dm/v1 fingerprint\0'), Buffer.from(ada.dm_public, 'hex')])).digest('hex');
  assert.equal(fp.replace(/-/g, ''), digest.slice(0, 20));
});

test('conversation rules: replays, authors only, reactions, pairs kept apart from groups', async () => {
  const { Conversations, checkPayload } = await import('../../web/js/dmconv.js');
  const msg = (content, extra = {}) => ({ type: 'message', content, ...extra });
  const dmOf = (id, sender, members, payload, position) => ({ id, sender, members, sentMs: position, position, payload, pairOk: true });
  const all = new Conversations();
  const group = all.ensure('g1', ['a', 'b', 'c']);
  assert.equal(group.kind, 'group');
  group.apply(dmOf('m1', 'a', ['a', 'b', 'c'], msg('hi'), 1));
  assert.throws(() => group.apply(dmOf('e1', 'b', ['a', 'b', 'c'], { type: 'edit', target: 'm1', content: 'x' }, 2)), /author/);
  group.apply(dmOf('e2', 'a', ['a', 'b', 'c'], { type: 'edit', target: 'm1', content: 'hello' }, 3));
  assert.equal(group.message('m1').content, 'hello');
  assert.ok(group.message('m1').edited);
  group.apply(dmOf('r1', 'b', ['a', 'b', 'c'], { type: 'reaction', target: 'm1', emoji: '👍', add: true }, 4));
  assert.equal(group.message('m1').reactions.get('👍').size, 1);
  assert.throws(() => group.apply(dmOf('r1', 'b', ['a', 'b', 'c'], msg('again'), 5)), { code: 'dm_replayed' });
  assert.throws(() => group.apply(dmOf('x', 'z', ['z', 'a', 'b'], msg('let me in'), 6)), /not a member/);
  assert.throws(() => group.apply(dmOf('y', 'a', ['a', 'b', 'c'], { type: 'reaction', target: 'nope', emoji: '👍', add: true }, 7)), /no message/);
  group.apply(dmOf('d1', 'a', ['a', 'b', 'c'], { type: 'delete', target: 'm1' }, 8));
  const m = group.message('m1');
  assert.ok(m.deleted && m.content === '' && m.reactions.size === 0);
  assert.throws(() => group.apply(dmOf('d2', 'a', ['a', 'b', 'c'], { type: 'edit', target: 'm1', content: 'back' }, 9)), /deleted/);
  // A group grows when a member sends to a larger set.
  group.apply(dmOf('m2', 'b', ['a', 'b', 'c', 'd'], msg('meet d'), 10));
  assert.equal(group.members.size, 4);
  // The same id with two members is a different (1:1) conversation, and must be the pair id.
  const pair = all.ensure('g1', ['a', 'b']);
  assert.notEqual(pair, group);
  assert.equal(pair.kind, 'pair');
  assert.throws(() => pair.apply({ ...dmOf('p1', 'a', ['a', 'b'], msg('hi'), 11), pairOk: false }), /pair/);
  assert.equal(all.list().length, 2);
  // Payload limits.
  assert.throws(() => checkPayload(msg('')), /content/);
  assert.throws(() => checkPayload(msg('x'.repeat(4001))), /content/);
  checkPayload(msg('🙂'.repeat(4000)));
  assert.throws(() => checkPayload({ type: 'reaction', target: 't', emoji: 'x'.repeat(65), add: true }), /emoji/);
  assert.throws(() => checkPayload({ type: 'shout', content: 'x' }), /unknown/);
});
