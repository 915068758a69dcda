// XChaCha20-Poly1305 (RFC 8439 and draft-irtf-cfrg-xchacha), which WebCrypto lacks. Pure
// functions on Uint8Arrays, importable from Node.js too (tests/browser/dm-crypto.test.mjs checks
// them against the RFC and draft vectors and spec/vectors/dm.json).
//
// Poly1305 uses ten 13-bit limbs so every product stays an exact integer in a double; the only
// data-dependent branch is the final reduction (BigInt), once per tag.

const SIGMA = [0x61707865, 0x3320646e, 0x79622d32, 0x6b206574];

function rotl(x, n) {
  return (x << n) | (x >>> (32 - n));
}

function quarter(s, a, b, c, d) {
  s[a] = (s[a] + s[b]) | 0; s[d] = rotl(s[d] ^ s[a], 16);
  s[c] = (s[c] + s[d]) | 0; s[b] = rotl(s[b] ^ s[c], 12);
  s[a] = (s[a] + s[b]) | 0; s[d] = rotl(s[d] ^ s[a], 8);
  s[c] = (s[c] + s[d]) | 0; s[b] = rotl(s[b] ^ s[c], 7);
}

function rounds(s) {
  for (let i = 0; i < 10; i += 1) {
    quarter(s, 0, 4, 8, 12);
    quarter(s, 1, 5, 9, 13);
    quarter(s, 2, 6, 10, 14);
    quarter(s, 3, 7, 11, 15);
    quarter(s, 0, 5, 10, 15);
    quarter(s, 1, 6, 11, 12);
    quarter(s, 2, 7, 8, 13);
    quarter(s, 3, 4, 9, 14);
  }
}

const word = (b, i) => (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)) >>> 0;

function putWord(out, i, w) {
  out[i] = w & 0xff;
  out[i + 1] = (w >>> 8) & 0xff;
  out[i + 2] = (w >>> 16) & 0xff;
  out[i + 3] = (w >>> 24) & 0xff;
}

function check(bytes, len, what) {
  if (!(bytes instanceof Uint8Array) || bytes.length !== len) throw new TypeError(`${what} must be ${len} bytes`);
}

/// The IETF ChaCha20 stream (96-bit nonce, 32-bit block counter from `counter`) XORed into `data`.
export function chacha20(key, nonce, counter, data) {
  check(key, 32, 'a ChaCha20 key');
  check(nonce, 12, 'a ChaCha20 nonce');
  const init = new Uint32Array(16);
  init.set(SIGMA);
  for (let i = 0; i < 8; i += 1) init[4 + i] = word(key, 4 * i);
  for (let i = 0; i < 3; i += 1) init[13 + i] = word(nonce, 4 * i);
  const out = new Uint8Array(data.length);
  const s = new Uint32Array(16);
  const block = new Uint8Array(64);
  for (let off = 0, n = counter; off < data.length; off += 64, n += 1) {
    init[12] = n >>> 0;
    s.set(init);
    rounds(s);
    for (let i = 0; i < 16; i += 1) putWord(block, 4 * i, (s[i] + init[i]) >>> 0);
    const end = Math.min(64, data.length - off);
    for (let i = 0; i < end; i += 1) out[off + i] = data[off + i] ^ block[i];
  }
  return out;
}

/// HChaCha20: a 32-byte subkey from a key and the first 16 bytes of an XChaCha20 nonce.
export function hchacha20(key, nonce16) {
  check(key, 32, 'an HChaCha20 key');
  check(nonce16, 16, 'an HChaCha20 nonce');
  const s = new Uint32Array(16);
  s.set(SIGMA);
  for (let i = 0; i < 8; i += 1) s[4 + i] = word(key, 4 * i);
  for (let i = 0; i < 4; i += 1) s[12 + i] = word(nonce16, 4 * i);
  rounds(s);
  const out = new Uint8Array(32);
  for (let i = 0; i < 4; i += 1) {
    putWord(out, 4 * i, s[i]);
    putWord(out, 16 + 4 * i, s[12 + i]);
  }
  return out;
}

const LIMB = 8192; // 2^13

/// 130 bits of `bytes` (up to 17, little-endian) as ten 13-bit limbs.
function limbs(bytes) {
  const b = new Uint8Array(20);
  b.set(bytes);
  const out = new Array(10);
  for (let i = 0; i < 10; i += 1) {
    const bit = 13 * i;
    const at = bit >> 3;
    out[i] = ((b[at] | (b[at + 1] << 8) | (b[at + 2] << 16)) >>> (bit & 7)) & 0x1fff;
  }
  return out;
}

/// The Poly1305 one-time authenticator of `msg` under `key` (RFC 8439 §2.5).
export function poly1305(key, msg) {
  check(key, 32, 'a Poly1305 key');
  const rBytes = key.slice(0, 16);
  rBytes[3] &= 15; rBytes[7] &= 15; rBytes[11] &= 15; rBytes[15] &= 15;
  rBytes[4] &= 252; rBytes[8] &= 252; rBytes[12] &= 252;
  const r = limbs(rBytes);
  const r5 = r.map((x) => x * 5);
  let h = new Array(10).fill(0);
  const d = new Array(10);
  const block = new Uint8Array(17);
  for (let off = 0; off < msg.length; off += 16) {
    const end = Math.min(16, msg.length - off);
    block.fill(0);
    block.set(msg.subarray(off, off + end));
    block[end] = 1;
    const m = limbs(block);
    for (let i = 0; i < 10; i += 1) h[i] += m[i];
    for (let i = 0; i < 10; i += 1) {
      let sum = 0;
      for (let j = 0; j <= i; j += 1) sum += h[j] * r[i - j];
      for (let j = i + 1; j < 10; j += 1) sum += h[j] * r5[i - j + 10];
      d[i] = sum;
    }
    let c = 0;
    for (let i = 0; i < 10; i += 1) {
      const v = d[i] + c;
      c = Math.floor(v / LIMB);
      d[i] = v - c * LIMB;
    }
    d[0] += c * 5;
    c = Math.floor(d[0] / LIMB);
    d[0] -= c * LIMB;
    d[1] += c;
    h = d.slice();
  }
  let acc = 0n;
  for (let i = 9; i >= 0; i -= 1) acc = (acc << 13n) + BigInt(h[i]);
  const p = (1n << 130n) - 5n;
  acc %= p;
  let s = 0n;
  for (let i = 15; i >= 0; i -= 1) s = (s << 8n) + BigInt(key[16 + i]);
  acc = (acc + s) & ((1n << 128n) - 1n);
  const tag = new Uint8Array(16);
  for (let i = 0; i < 16; i += 1) {
    tag[i] = Number(acc & 0xffn);
    acc >>= 8n;
  }
  return tag;
}

function macData(aad, ct) {
  const pad = (n) => (16 - (n % 16)) % 16;
  const out = new Uint8Array(aad.length + pad(aad.length) + ct.length + pad(ct.length) + 16);
  out.set(aad, 0);
  const at = aad.length + pad(aad.length);
  out.set(ct, at);
  const lens = new DataView(out.buffer, at + ct.length + pad(ct.length), 16);
  lens.setUint32(0, aad.length, true);
  lens.setUint32(8, ct.length, true);
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i += 1) diff |= a[i] ^ b[i];
  return diff === 0;
}

/// ChaCha20-Poly1305 (RFC 8439 §2.8): ciphertext followed by the 16-byte tag.
export function chachaSeal(key, nonce, plaintext, aad = new Uint8Array(0)) {
  const polyKey = chacha20(key, nonce, 0, new Uint8Array(32));
  const ct = chacha20(key, nonce, 1, plaintext);
  const out = new Uint8Array(ct.length + 16);
  out.set(ct);
  out.set(poly1305(polyKey, macData(aad, ct)), ct.length);
  return out;
}

/// Opens what `chachaSeal` made; null if the tag does not verify.
export function chachaOpen(key, nonce, sealed, aad = new Uint8Array(0)) {
  if (sealed.length < 16) return null;
  const ct = sealed.subarray(0, sealed.length - 16);
  const polyKey = chacha20(key, nonce, 0, new Uint8Array(32));
  if (!equal(poly1305(polyKey, macData(aad, ct)), sealed.subarray(sealed.length - 16))) return null;
  return chacha20(key, nonce, 1, ct);
}

function extended(key, nonce) {
  check(nonce, 24, 'an XChaCha20 nonce');
  const sub = hchacha20(key, nonce.subarray(0, 16));
  const short = new Uint8Array(12);
  short.set(nonce.subarray(16), 4);
  return [sub, short];
}

/// XChaCha20-Poly1305 with a 24-byte nonce: ciphertext followed by the 16-byte tag.
export function xchachaSeal(key, nonce, plaintext, aad) {
  const [sub, short] = extended(key, nonce);
  return chachaSeal(sub, short, plaintext, aad);
}

/// Opens what `xchachaSeal` made; null if it was altered or the key is wrong.
export function xchachaOpen(key, nonce, sealed, aad) {
  const [sub, short] = extended(key, nonce);
  return chachaOpen(sub, short, sealed, aad);
}
