//! The DM scheme: round trips, every rejection, and the vectors of `spec/vectors/dm.json`
//! (regenerate after a deliberate format change with
//! `GUILDHALL_REGENERATE_VECTORS=1 cargo test -p guildhall-proto dm`).

use std::path::PathBuf;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// A user with an identity key and one DM secret, both fixed by `n`.
struct Member {
    identity: Keypair,
    secret: [u8; 32],
}

impl Member {
    fn new(n: u8) -> Member {
        Member {
            identity: Keypair::from_secret([n; 32]),
            secret: [n.wrapping_add(100); 32],
        }
    }
    fn user(&self) -> UserId {
        self.identity.user_id()
    }
    fn entry(&self) -> (UserId, [u8; 32]) {
        (self.user(), public_key(&self.secret))
    }
    fn open(&self, envelope: &DmEnvelope) -> Result<Vec<u8>, DmError> {
        let own = public_key(&self.secret);
        open(envelope, &self.user(), |key| {
            (key == &own).then_some(self.secret)
        })
    }
}

fn randomness(members: usize, seed: u8) -> SealRandomness {
    SealRandomness {
        ephemeral_secret: [seed; 32],
        body_key: [seed.wrapping_add(1); 32],
        body_nonce: [seed.wrapping_add(2); 24],
        wrap_nonces: (0..members)
            .map(|i| [seed.wrapping_add(3 + i as u8); 24])
            .collect(),
    }
}

fn seal_from(sender: &Member, members: &[&Member], plaintext: &[u8]) -> DmEnvelope {
    let entries: Vec<_> = members.iter().map(|m| m.entry()).collect();
    seal(
        &Sealing {
            conversation: [9; 32],
            sender: sender.user(),
            sender_secret: &sender.secret,
            members: &entries,
            sent_ms: 1_700_000_000_000,
            plaintext,
        },
        &randomness(entries.len(), 7),
    )
    .unwrap()
}

#[test]
fn every_member_opens_a_group_message_and_outsiders_cannot() {
    let members: Vec<Member> = (1..=MAX_DM_MEMBERS as u8).map(Member::new).collect();
    let refs: Vec<&Member> = members.iter().collect();
    let envelope = seal_from(&members[0], &refs, b"hello, all 25 of you");
    let wire = envelope.sign(&members[0].identity);
    let verified = DmEnvelope::verify(&wire).unwrap();
    assert_eq!(verified.envelope, envelope);
    for member in &members {
        assert_eq!(
            member.open(&verified.envelope).unwrap(),
            b"hello, all 25 of you"
        );
    }
    assert_eq!(
        Member::new(99).open(&verified.envelope),
        Err(DmError::NotARecipient)
    );
}

#[test]
fn a_member_without_the_wrapped_key_gets_unknown_key_and_a_wrong_secret_tampered() {
    let (a, b) = (Member::new(1), Member::new(2));
    let envelope = seal_from(&a, &[&a, &b], b"hi");
    assert_eq!(
        open(&envelope, &b.user(), |_| None),
        Err(DmError::UnknownKey)
    );
    assert_eq!(
        open(&envelope, &b.user(), |_| Some([55; 32])),
        Err(DmError::Tampered)
    );
}

#[test]
fn rotation_keeps_old_messages_readable() {
    let (a, b) = (Member::new(1), Member::new(2));
    let old = seal_from(&a, &[&a, &b], b"before rotation");
    let b_new_secret = [77; 32];
    let new = seal(
        &Sealing {
            conversation: [9; 32],
            sender: a.user(),
            sender_secret: &a.secret,
            members: &[a.entry(), (b.user(), public_key(&b_new_secret))],
            sent_ms: 2,
            plaintext: b"after rotation",
        },
        &randomness(2, 8),
    )
    .unwrap();
    let keyring = [b.secret, b_new_secret];
    let secret_for = |key: &[u8; 32]| keyring.iter().find(|s| &public_key(s) == key).copied();
    assert_eq!(
        open(&old, &b.user(), secret_for).unwrap(),
        b"before rotation"
    );
    assert_eq!(
        open(&new, &b.user(), secret_for).unwrap(),
        b"after rotation"
    );
}

#[test]
fn a_member_cannot_alter_the_body_for_the_others() {
    let (a, b, c) = (Member::new(1), Member::new(2), Member::new(3));
    let mut envelope = seal_from(&a, &[&a, &b, &c], b"pay bea 5");
    // C knows the body key (from its own wrap) and re-encrypts a different body under it,
    // keeping B's wrap as it was.
    let body_key: [u8; 32] = aead(&wrap_key_for(&c, &envelope))
        .decrypt(
            &XNonce::from(envelope.wraps[2].nonce),
            envelope.wraps[2].sealed.as_slice(),
        )
        .unwrap()
        .try_into()
        .unwrap();
    envelope.body = aead(&body_key)
        .encrypt(
            &XNonce::from(envelope.body_nonce),
            Payload {
                msg: &pad(b"pay cal 500", DM_PADDING),
                aad: &body_aad(&envelope),
            },
        )
        .unwrap();
    assert_eq!(b.open(&envelope), Err(DmError::Tampered));
}

fn wrap_key_for(member: &Member, envelope: &DmEnvelope) -> [u8; 32] {
    let secret = StaticSecret::from(member.secret);
    let wrap = envelope
        .wraps
        .iter()
        .find(|w| w.user == member.user())
        .unwrap();
    wrap_key(
        &envelope.ephemeral,
        secret
            .diffie_hellman(&PublicKey::from(envelope.ephemeral))
            .as_bytes(),
        secret
            .diffie_hellman(&PublicKey::from(envelope.sender_key))
            .as_bytes(),
        &envelope.context(),
        wrap,
    )
}

#[test]
fn a_message_claiming_another_sender_key_does_not_open() {
    let (a, b, mallory) = (Member::new(1), Member::new(2), Member::new(3));
    let mut envelope = seal_from(&mallory, &[&mallory, &b], b"i am ada");
    envelope.sender_key = public_key(&a.secret);
    assert_eq!(b.open(&envelope), Err(DmError::Tampered));
}

#[test]
fn verify_refuses_bad_shapes_and_signatures() {
    let (a, b) = (Member::new(1), Member::new(2));
    let good = seal_from(&a, &[&a, &b], b"x");
    let mut not_member = good.clone();
    not_member.wraps.remove(0);
    let mut duplicate = good.clone();
    duplicate.wraps.push(good.wraps[1].clone());
    for (envelope, error) in [
        (not_member, DmError::BadMembers),
        (duplicate, DmError::BadMembers),
    ] {
        assert_eq!(DmEnvelope::verify(&envelope.sign(&a.identity)), Err(error));
    }
    // Signed by someone other than the sender.
    assert_eq!(
        DmEnvelope::verify(&good.sign(&b.identity)),
        Err(DmError::BadSignature)
    );
    let mut wire = good.sign(&a.identity);
    wire[0] = 2;
    assert_eq!(DmEnvelope::verify(&wire), Err(DmError::UnknownVersion(2)));
    assert_eq!(
        DmEnvelope::verify(&vec![0; MAX_DM_ENVELOPE_BYTES + 1]),
        Err(DmError::TooLarge(MAX_DM_ENVELOPE_BYTES + 1))
    );
}

#[test]
fn seal_refuses_too_many_members_and_low_order_keys() {
    let members: Vec<Member> = (1..=26).map(Member::new).collect();
    let entries: Vec<_> = members.iter().map(Member::entry).collect();
    let sender_secret = members[0].secret;
    let sealing = |members| Sealing {
        conversation: [0; 32],
        sender: entries[0].0,
        sender_secret: &sender_secret,
        members,
        sent_ms: 0,
        plaintext: b"x",
    };
    assert_eq!(
        seal(&sealing(&entries), &randomness(26, 1)).unwrap_err(),
        DmError::BadMembers
    );
    let low_order = [(entries[0].0, entries[0].1), (entries[1].0, [0; 32])];
    assert_eq!(
        seal(&sealing(&low_order), &randomness(2, 1)).unwrap_err(),
        DmError::BadKey
    );
}

#[test]
fn key_records_verify_and_refuse_forgery_and_low_order_keys() {
    let a = Member::new(1);
    let record = DmKeyRecord {
        user: a.user(),
        key: public_key(&a.secret),
        version: 3,
        created_ms: 5,
        home: b"/ip4/127.0.0.1/tcp/7701".to_vec(),
    };
    assert_eq!(
        DmKeyRecord::verify(&record.sign(&a.identity)).unwrap(),
        record
    );
    assert_eq!(
        DmKeyRecord::verify(&record.sign(&Member::new(2).identity)),
        Err(DmError::BadSignature)
    );
    let low = DmKeyRecord {
        key: [0; 32],
        ..record
    };
    assert_eq!(
        DmKeyRecord::verify(&low.sign(&a.identity)),
        Err(DmError::BadKey)
    );
}

#[test]
fn the_pair_conversation_is_symmetric() {
    let (a, b) = (Member::new(1).user(), Member::new(2).user());
    assert_eq!(pair_conversation(&a, &b), pair_conversation(&b, &a));
    assert_ne!(pair_conversation(&a, &b), pair_conversation(&a, &a));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_plaintext_round_trips(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2_000),
        count in 1usize..6,
        seed in any::<u8>(),
    ) {
        let members: Vec<Member> = (1..=count as u8).map(Member::new).collect();
        let entries: Vec<_> = members.iter().map(Member::entry).collect();
        let envelope = seal(
            &Sealing {
                conversation: [seed; 32],
                sender: members[0].user(),
                sender_secret: &members[0].secret,
                members: &entries,
                sent_ms: u64::from(seed),
                plaintext: &plaintext,
            },
            &randomness(count, seed),
        ).unwrap();
        prop_assert_eq!(envelope.body.len() % DM_PADDING, 16);
        let verified = DmEnvelope::verify(&envelope.sign(&members[0].identity)).unwrap();
        for member in &members {
            prop_assert_eq!(member.open(&verified.envelope).unwrap(), plaintext.clone());
        }
    }

    /// Cutting the wire bytes anywhere is refused as truncated (never opened, never a panic).
    #[test]
    fn every_truncation_is_refused(cut in 0usize..700) {
        let (a, b) = (Member::new(1), Member::new(2));
        let wire = seal_from(&a, &[&a, &b], b"short").sign(&a.identity);
        let cut = cut.min(wire.len() - 1);
        prop_assert!(matches!(DmEnvelope::verify(&wire[..cut]), Err(DmError::Truncated(_))));
    }

    /// Flipping any bit either fails verification or, once re-signed by the sender (a sender
    /// is free to sign anything), fails to open for the other member: nothing decrypts to a
    /// changed message.
    #[test]
    fn every_bit_flip_is_detected(byte in 0usize..1_000, bit in 0u8..8) {
        let (a, b) = (Member::new(1), Member::new(2));
        let wire = seal_from(&a, &[&a, &b], b"flip me").sign(&a.identity);
        let mut flipped = wire.clone();
        let byte = byte % wire.len();
        flipped[byte] ^= 1 << bit;
        prop_assert!(DmEnvelope::verify(&flipped).is_err());
        if let Ok(tampered) = decode_unchecked(&flipped) {
            let opened = b.open(&tampered);
            prop_assert!(opened.is_err() || opened == Ok(b"flip me".to_vec()),
                "a flipped byte {} opened to {:?}", byte, opened);
        }
    }
}

/// Decodes without the signature check, as if the sender had re-signed the altered bytes.
fn decode_unchecked(wire: &[u8]) -> Result<DmEnvelope, DmError> {
    let unsigned = wire[..wire.len() - 64].to_vec();
    let resigned = Keypair::from_secret([1; 32]).sign_appended(ENVELOPE_DOMAIN, unsigned);
    DmEnvelope::verify(&resigned).map(|v| v.envelope)
}

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors/dm.json")
}

fn hex32(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Two members, fixed keys and randomness: exact bytes for an independent implementation.
fn vectors() -> Value {
    let (a, b) = (Member::new(1), Member::new(2));
    let record = DmKeyRecord {
        user: b.user(),
        key: public_key(&b.secret),
        version: 1,
        created_ms: 1_700_000_000_000,
        home: b"\x04\x7f\x00\x00\x01\x06\x1e\x15".to_vec(),
    };
    let plaintext = br#"{"type":"message","content":"hello bea"}"#;
    let envelope = seal_from(&a, &[&a, &b], plaintext);
    let random = randomness(2, 7);
    let wire = envelope.sign(&a.identity);
    let verified = DmEnvelope::verify(&wire).unwrap();
    json!({
        "members": [
            {"identity_secret": hex32(&[1; 32]), "user": a.user().to_string(),
             "dm_secret": hex32(&a.secret), "dm_public": hex32(&public_key(&a.secret))},
            {"identity_secret": hex32(&[2; 32]), "user": b.user().to_string(),
             "dm_secret": hex32(&b.secret), "dm_public": hex32(&public_key(&b.secret))},
        ],
        "key_record": {
            "user": record.user.to_string(), "key": hex32(&record.key), "version": record.version,
            "created_ms": record.created_ms, "home": hex32(&record.home),
            "wire_hex": hex::encode(record.sign(&b.identity)),
        },
        "message": {
            "conversation": hex32(&[9; 32]),
            "sender": a.user().to_string(),
            "sent_ms": envelope.sent_ms,
            "plaintext": String::from_utf8_lossy(plaintext),
            "ephemeral_secret": hex32(&random.ephemeral_secret),
            "body_key": hex32(&random.body_key),
            "body_nonce": hex32(&random.body_nonce),
            "wrap_nonces": random.wrap_nonces.iter().map(|n| hex32(n)).collect::<Vec<_>>(),
            "header_hex": hex::encode(envelope.header_bytes()),
            "context_hex": hex32(&envelope.context()),
            "wrap_keys_hex": [hex32(&wrap_key_for(&a, &envelope)), hex32(&wrap_key_for(&b, &envelope))],
            "body_hex": hex::encode(&envelope.body),
            "wire_hex": hex::encode(&wire),
            "id": hex32(&verified.id),
        },
    })
}

#[test]
fn spec_vectors_match() {
    let expected = vectors();
    let path = vectors_path();
    if std::env::var_os("GUILDHALL_REGENERATE_VECTORS").is_some() {
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&expected).unwrap() + "\n",
        )
        .unwrap();
    }
    let stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        stored, expected,
        "spec/vectors/dm.json is stale; see this file's header"
    );
}

#[test]
fn a_sender_cannot_give_members_different_body_keys() {
    let (a, b, c) = (Member::new(1), Member::new(2), Member::new(3));
    let mut envelope = seal_from(&a, &[&a, &b, &c], b"same for all");
    // The sender wraps another key to bea (a body that opens under two keys is the attack
    // this prevents); the key commitment in the header no longer matches for her.
    let other_key = [0x99u8; 32];
    let wrap = envelope
        .wraps
        .iter()
        .position(|w| w.user == b.user())
        .unwrap();
    envelope.wraps[wrap].sealed = aead(&wrap_key_for(&b, &envelope))
        .encrypt(
            &XNonce::from(envelope.wraps[wrap].nonce),
            other_key.as_slice(),
        )
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(b.open(&envelope), Err(DmError::Tampered));
    assert_eq!(c.open(&envelope).unwrap(), b"same for all");
}
