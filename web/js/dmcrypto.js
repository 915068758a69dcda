// End-to-end encrypted DMs (spec/dm.md §2–§3): key records, the envelope, sealing and opening.
// The same bytes as crates/proto/src/dm.rs, checked against spec/vectors/dm.json by
// tests/browser/dm-crypto.test.mjs. SHA-256, HKDF, X25519 and Ed25519 come from WebCrypto;
// XChaCha20-Poly1305 from xchacha.js. Every random value is passed in, as in the reference.
// Importable from Node.js 20 as well as the browser (no DOM here).

import { xchachaSeal, xchachaOpen } from './xchacha.js';

const subtle = () => {
  const s = globalThis.crypto?.subtle;
  if (!s) throw new DmError('no_webcrypto', 'This browser offers no WebCrypto here (it needs HTTPS or localhost).');
  return s;
};

const enc = new TextEncoder();
const DM_VERSION = 1;
const KEY_RECORD_DOMAIN = enc.encode('guildhall/dm-key/v1\0');
const ENVELOPE_DOMAIN = enc.encode('guildhall/dm/v1\0');
const BODY_AAD_DOMAIN = enc.encode('guildhall/dm/v1 body\0');
const WRAP_INFO = enc.encode('guildhall/dm/v1 wrap\0');
const PAIR_DOMAIN = enc.encode('guildhall/dm/v1 pair\0');
const KEY_COMMIT_DOMAIN = enc.encode('guildhall/dm/v1 key commit\0');
const FINGERPRINT_DOMAIN = enc.encode('guildhall/dm/v1 fingerprint\0');

export const MAX_DM_MEMBERS = 25;
export const MAX_DM_BODY_BYTES = 32 * 1024;
export const DM_PADDING = 256;
export const MAX_HOME_BYTES = 256;
const WRAP_BYTES = 32 + 32 + 24 + 48;
export const MAX_DM_ENVELOPE_BYTES = 1 + 32 * 5 + 8 + 1 + MAX_DM_MEMBERS * WRAP_BYTES + 24 + 3 + MAX_DM_BODY_BYTES + 64;
const MAX_KEY_RECORD_BYTES = 1 + 32 + 32 + 10 + 8 + 2 + MAX_HOME_BYTES + 64;

/// A DM failure with the reference's code (`dm_tampered`, `dm_unknown_key`, …).
export class DmError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

// ---- bytes ----

export function hex(bytes) {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

export function unhex(text, len = null) {
  if (typeof text !== 'string' || text.length % 2 || /[^0-9a-fA-F]/.test(text)) throw new DmError('malformed_dm', 'not hex');
  const out = new Uint8Array(text.length / 2);
  for (let i = 0; i < out.length; i += 1) out[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  if (len !== null && out.length !== len) throw new DmError('malformed_dm', `expected ${len} bytes`);
  return out;
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i += 1) diff |= a[i] ^ b[i];
  return diff === 0;
}

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i += 1) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

export function randomBytes(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

class Writer {
  constructor() { this.parts = []; }
  u8(v) { this.parts.push(Uint8Array.of(v)); }
  fixed(b) { this.parts.push(b); }
  uint(v) {
    const out = [];
    let n = BigInt(v);
    do {
      const byte = Number(n & 0x7fn);
      n >>= 7n;
      out.push(n ? byte | 0x80 : byte);
    } while (n);
    this.parts.push(Uint8Array.from(out));
  }
  u64be(v) {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt(v));
    this.parts.push(b);
  }
  bytes(b) { this.uint(b.length); this.fixed(b); }
  done() { return concat(...this.parts); }
}

class Reader {
  constructor(bytes) { this.b = bytes; this.at = 0; }
  take(n, what) {
    if (this.at + n > this.b.length) throw new DmError('dm_truncated', `the DM is cut short: ${what}`);
    const out = this.b.slice(this.at, this.at + n);
    this.at += n;
    return out;
  }
  u8(what) { return this.take(1, what)[0]; }
  array(n, what) { return this.take(n, what); }
  uint(what) {
    let value = 0n;
    for (let i = 0; i < 10; i += 1) {
      const byte = this.u8(what);
      const payload = BigInt(byte & 0x7f);
      if (i === 9 && payload > 1n) throw new DmError('malformed_dm', `bad integer: ${what}`);
      value |= payload << BigInt(7 * i);
      if (!(byte & 0x80)) {
        if (byte === 0 && i > 0) throw new DmError('malformed_dm', `bad integer: ${what}`);
        return value;
      }
    }
    throw new DmError('malformed_dm', `bad integer: ${what}`);
  }
  u64be(what) { return new DataView(this.take(8, what).buffer).getBigUint64(0); }
  bytes(what, max) {
    const len = this.uint(what);
    if (len > BigInt(max)) throw new DmError('malformed_dm', `${what} is too long`);
    return this.take(Number(len), what);
  }
  finish() {
    if (this.at !== this.b.length) throw new DmError('malformed_dm', 'trailing bytes');
  }
}

// ---- primitives ----

export async function sha256(...parts) {
  return new Uint8Array(await subtle().digest('SHA-256', concat(...parts)));
}

export async function hkdf32(salt, ikm, info) {
  const key = await subtle().importKey('raw', ikm, 'HKDF', false, ['deriveBits']);
  return new Uint8Array(await subtle().deriveBits({ name: 'HKDF', hash: 'SHA-256', salt, info }, key, 256));
}

// PKCS#8 prefixes for a raw 32-byte private key (RFC 8410): X25519 and Ed25519.
const PKCS8_X25519 = unhex('302e020100300506032b656e04220420');
const PKCS8_ED25519 = unhex('302e020100300506032b657004220420');

function fromB64url(text) {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

const x25519Private = (secret) => subtle().importKey('pkcs8', concat(PKCS8_X25519, secret), { name: 'X25519' }, true, ['deriveBits']);
const ed25519Private = (seed) => subtle().importKey('pkcs8', concat(PKCS8_ED25519, seed), { name: 'Ed25519' }, true, ['sign']);

/// The X25519 public key of a 32-byte secret (clamped as RFC 7748 says).
export async function x25519Public(secret) {
  const jwk = await subtle().exportKey('jwk', await x25519Private(secret));
  return fromB64url(jwk.x);
}

/// X25519(secret, public), or null when the result is all zeros (a low-order public key).
export async function x25519(secret, publicKey) {
  try {
    const pub = await subtle().importKey('raw', publicKey, { name: 'X25519' }, false, []);
    const bits = new Uint8Array(await subtle().deriveBits({ name: 'X25519', public: pub }, await x25519Private(secret), 256));
    return bits.some((b) => b) ? bits : null;
  } catch {
    // WebCrypto refuses an all-zero shared secret.
    return null;
  }
}

/// The Ed25519 public key (a user id) of a 32-byte identity seed.
export async function ed25519Public(seed) {
  const jwk = await subtle().exportKey('jwk', await ed25519Private(seed));
  return fromB64url(jwk.x);
}

export async function ed25519Sign(seed, message) {
  return new Uint8Array(await subtle().sign({ name: 'Ed25519' }, await ed25519Private(seed), message));
}

export async function ed25519Verify(publicKey, message, signature) {
  try {
    const key = await subtle().importKey('raw', publicKey, { name: 'Ed25519' }, false, ['verify']);
    return await subtle().verify({ name: 'Ed25519' }, key, signature, message);
  } catch {
    return false;
  }
}

const LOW_ORDER_PROBE = new Uint8Array(32).fill(0x42);

/// Whether X25519 with any secret gives all zeros for this key.
export async function isLowOrder(key) {
  return (await x25519(LOW_ORDER_PROBE, key)) === null;
}

// ---- ids ----

/// The conversation id of the 1:1 DM between two users (ids as bytes).
export function pairConversation(a, b) {
  const [low, high] = compareBytes(a, b) <= 0 ? [a, b] : [b, a];
  return sha256(PAIR_DOMAIN, low, high);
}

/// `xxxx-xxxx-xxxx-xxxx-xxxx`: the first 10 bytes of a domain-separated SHA-256 of a DM key.
export async function fingerprint(key) {
  const digest = await sha256(FINGERPRINT_DOMAIN, key);
  const text = hex(digest.subarray(0, 10));
  return text.match(/.{4}/g).join('-');
}

/// `unsigned` with the seed's signature over `domain ‖ unsigned` appended: the signed form of
/// key records and envelopes (the reference's `Keypair::sign_appended`).
async function signAppended(domain, unsigned, identitySeed) {
  return concat(unsigned, await ed25519Sign(identitySeed, concat(domain, unsigned)));
}

/// Throws `bad_signature` unless `signature` is `author`'s over `domain ‖ signed`.
async function requireSignature(author, domain, signed, signature, message) {
  if (!(await ed25519Verify(author, concat(domain, signed), signature))) {
    throw new DmError('bad_signature', message);
  }
}

// ---- key records (§2) ----

function recordUnsigned(r) {
  const w = new Writer();
  w.u8(DM_VERSION);
  w.fixed(r.user);
  w.fixed(r.key);
  w.uint(r.version);
  w.u64be(r.createdMs);
  w.bytes(r.home);
  return w.done();
}

/// A key record `{ user, key, version, createdMs, home }` signed by the identity seed.
export function signKeyRecord(record, identitySeed) {
  return signAppended(KEY_RECORD_DOMAIN, recordUnsigned(record), identitySeed);
}

/// Decodes a record, checks its user signed it and that its key is usable.
export async function verifyKeyRecord(bytes) {
  if (bytes.length > MAX_KEY_RECORD_BYTES) throw new DmError('dm_too_large', 'the key record is too large');
  const r = new Reader(bytes);
  checkVersion(r);
  const record = {
    user: r.array(32, 'user'),
    key: r.array(32, 'dm key'),
    version: Number(r.uint('version')),
    createdMs: Number(r.u64be('created')),
    home: r.bytes('home', MAX_HOME_BYTES),
  };
  const signedLen = r.at;
  const signature = r.array(64, 'signature');
  r.finish();
  const signed = bytes.subarray(0, signedLen);
  await requireSignature(record.user, KEY_RECORD_DOMAIN, signed, signature, 'the key record’s signature does not verify');
  if (await isLowOrder(record.key)) throw new DmError('dm_bad_key', 'a DM key is not a usable X25519 key');
  return record;
}

function checkVersion(r) {
  const v = r.u8('version');
  if (v !== DM_VERSION) throw new DmError('unknown_version', `unknown DM format version ${v}`);
}

// ---- the envelope (§3) ----

/// The bytes the body is bound to: everything but the wraps' nonces and sealed keys, and the body.
export function headerBytes(env) {
  const w = new Writer();
  w.u8(DM_VERSION);
  w.fixed(env.conversation);
  w.fixed(env.sender);
  w.fixed(env.senderKey);
  w.fixed(env.ephemeral);
  w.fixed(env.keyCommit);
  w.u64be(env.sentMs);
  w.u8(env.wraps.length);
  for (const wrap of env.wraps) {
    w.fixed(wrap.user);
    w.fixed(wrap.key);
  }
  return w.done();
}

export function context(env) {
  return sha256(headerBytes(env), env.bodyNonce, env.body);
}

function unsignedBytes(env) {
  const w = new Writer();
  w.fixed(headerBytes(env).subarray(0, 1 + 32 * 5 + 8 + 1));
  for (const wrap of env.wraps) {
    w.fixed(wrap.user);
    w.fixed(wrap.key);
    w.fixed(wrap.nonce);
    w.fixed(wrap.sealed);
  }
  w.fixed(env.bodyNonce);
  w.bytes(env.body);
  return w.done();
}

/// The envelope's wire form, signed by the sender's identity seed.
export function signEnvelope(env, identitySeed) {
  return signAppended(ENVELOPE_DOMAIN, unsignedBytes(env), identitySeed);
}

function membersAreValid(sender, wraps) {
  const users = new Set(wraps.map((w) => hex(w.user)));
  return users.size === wraps.length && users.size >= 1 && users.size <= MAX_DM_MEMBERS && users.has(hex(sender));
}

/// Decodes an envelope and checks its shape and its sender's signature, in the reference's order.
/// Returns `{ envelope, id }` (id as hex).
export async function verifyEnvelope(bytes) {
  if (bytes.length > MAX_DM_ENVELOPE_BYTES) throw new DmError('dm_too_large', 'the DM is too large');
  const r = new Reader(bytes);
  checkVersion(r);
  const env = {
    conversation: r.array(32, 'conversation'),
    sender: r.array(32, 'sender'),
    senderKey: r.array(32, 'sender key'),
    ephemeral: r.array(32, 'ephemeral key'),
    keyCommit: r.array(32, 'key commitment'),
    sentMs: Number(r.u64be('sent time')),
    wraps: [],
  };
  const count = r.u8('member count');
  if (count === 0 || count > MAX_DM_MEMBERS) throw new DmError('dm_bad_members', 'bad member count');
  for (let i = 0; i < count; i += 1) {
    env.wraps.push({
      user: r.array(32, 'member'),
      key: r.array(32, 'member key'),
      nonce: r.array(24, 'wrap nonce'),
      sealed: r.array(48, 'wrapped key'),
    });
  }
  env.bodyNonce = r.array(24, 'body nonce');
  env.body = r.bytes('body', MAX_DM_BODY_BYTES);
  const signedLen = r.at;
  const signature = r.array(64, 'signature');
  r.finish();
  if (!membersAreValid(env.sender, env.wraps)) throw new DmError('dm_bad_members', 'bad members');
  if (env.body.length < 16) throw new DmError('dm_truncated', 'the DM is cut short: body');
  const signed = bytes.subarray(0, signedLen);
  await requireSignature(env.sender, ENVELOPE_DOMAIN, signed, signature, 'the signature does not verify for the DM’s sender');
  return { envelope: env, id: hex(await sha256(signed)) };
}

const keyCommitment = (bodyKey) => sha256(KEY_COMMIT_DOMAIN, bodyKey);
const bodyAad = (env) => concat(BODY_AAD_DOMAIN, headerBytes(env));

/// HKDF-SHA256(salt = E, ikm = dh1 ‖ dh2, info = domain ‖ context ‖ member ‖ member key).
export function wrapKey(ephemeral, dh1, dh2, ctx, wrap) {
  return hkdf32(ephemeral, concat(dh1, dh2), concat(WRAP_INFO, ctx, wrap.user, wrap.key));
}

/// Plaintext, a 0x80 marker, then zeros up to a multiple of 256 bytes.
export function pad(plaintext) {
  const len = Math.ceil((plaintext.length + 1) / DM_PADDING) * DM_PADDING;
  const out = new Uint8Array(len);
  out.set(plaintext);
  out[plaintext.length] = 0x80;
  return out;
}

function unpad(padded) {
  let i = padded.length - 1;
  while (i >= 0 && padded[i] === 0) i -= 1;
  if (i < 0 || padded[i] !== 0x80) throw new DmError('malformed_dm', 'bad padding');
  return padded.slice(0, i);
}

/// Fresh randomness for sealing to `members` members.
export function sealRandomness(members) {
  return {
    ephemeralSecret: randomBytes(32),
    bodyKey: randomBytes(32),
    bodyNonce: randomBytes(24),
    wrapNonces: Array.from({ length: members }, () => randomBytes(24)),
  };
}

/// Encrypts `plaintext` to every member: `{ conversation, sender, senderSecret, members:
/// [{ user, key }] (the sender with its own key included), sentMs, plaintext }`. Unsigned.
export async function seal(s, random) {
  if (random.wrapNonces.length !== s.members.length) throw new DmError('malformed_dm', 'one wrap nonce per member');
  const padded = pad(s.plaintext);
  if (padded.length + 16 > MAX_DM_BODY_BYTES) throw new DmError('dm_too_large', 'the message is too long');
  const env = {
    conversation: s.conversation,
    sender: s.sender,
    senderKey: await x25519Public(s.senderSecret),
    ephemeral: await x25519Public(random.ephemeralSecret),
    keyCommit: await keyCommitment(random.bodyKey),
    sentMs: s.sentMs,
    wraps: s.members.map((m, i) => ({ user: m.user, key: m.key, nonce: random.wrapNonces[i], sealed: new Uint8Array(48) })),
    bodyNonce: random.bodyNonce,
    body: new Uint8Array(0),
  };
  if (!membersAreValid(env.sender, env.wraps)) throw new DmError('dm_bad_members', 'bad members');
  env.body = xchachaSeal(random.bodyKey, random.bodyNonce, padded, bodyAad(env));
  const ctx = await context(env);
  for (const wrap of env.wraps) {
    const dh1 = await x25519(random.ephemeralSecret, wrap.key);
    const dh2 = await x25519(s.senderSecret, wrap.key);
    if (!dh1 || !dh2) throw new DmError('dm_bad_key', 'a DM key is not a usable X25519 key');
    wrap.sealed = xchachaSeal(await wrapKey(env.ephemeral, dh1, dh2, ctx, wrap), wrap.nonce, random.bodyKey, new Uint8Array(0));
  }
  return env;
}

/// Decrypts an envelope for member `me` (bytes); `secretFor(publicKey)` finds the DM secret
/// (or null). The caller still checks that `senderKey` is one the sender published.
export async function open(env, me, secretFor) {
  const wrap = env.wraps.find((w) => equalBytes(w.user, me));
  if (!wrap) throw new DmError('dm_not_recipient', 'this DM is not addressed to you');
  const secret = await secretFor(wrap.key);
  if (!secret) throw new DmError('dm_unknown_key', 'the DM is wrapped to a DM key you do not hold');
  const dh1 = await x25519(secret, env.ephemeral);
  const dh2 = await x25519(secret, env.senderKey);
  const tampered = () => new DmError('dm_tampered', 'the DM was altered or was not made by the sender’s DM key');
  if (!dh1 || !dh2) throw tampered();
  const key = await wrapKey(env.ephemeral, dh1, dh2, await context(env), wrap);
  const bodyKey = xchachaOpen(key, wrap.nonce, wrap.sealed, new Uint8Array(0));
  if (!bodyKey || bodyKey.length !== 32) throw tampered();
  if (!equalBytes(await keyCommitment(bodyKey), env.keyCommit)) throw tampered();
  const padded = xchachaOpen(bodyKey, env.bodyNonce, env.body, bodyAad(env));
  if (!padded) throw tampered();
  return unpad(padded);
}
