//! Envelope faults: each one a clear error with a stable code, never a panic.

use proptest::prelude::*;

use super::*;
use crate::guild::InsertError;
use crate::limits;
use crate::op::{Op, OpError, verify_batch};
use crate::sealed::Text;

fn message_envelope(r: &Replica, who: &Keypair, text: &str) -> Envelope {
    r.guild.next_envelope(
        who.user_id(),
        r.now + 1,
        Body::MessageCreate {
            channel: r.guild.id(),
            content: text.into(),
            reply_to: None,
        },
    )
}

fn signed_wire(r: &Replica, text: &str) -> Vec<u8> {
    message_envelope(r, &key(1), text)
        .sign(&key(1))
        .unwrap()
        .encode()
}

#[test]
fn decode_encode_is_the_identity_and_ids_are_stable() {
    let r = Replica::new(&key(1));
    let wire = signed_wire(&r, "hello");
    let op = Op::decode(&wire).unwrap();
    assert_eq!(op.encode(), wire);
    let again = Op::decode(&op.encode()).unwrap();
    assert_eq!(again.id(), op.id());
    assert!(op.verify().is_ok());
}

#[test]
fn an_op_signed_here_verifies_like_any_other() {
    let r = Replica::new(&key(1));
    let vouched = message_envelope(&r, &key(1), "mine")
        .sign_verified(&key(1))
        .unwrap();
    let checked = Op::decode(&vouched.encode()).unwrap().verify().unwrap();
    assert_eq!(vouched, checked);
    let err = message_envelope(&r, &key(1), "theirs").sign_verified(&key(2));
    assert_eq!(err.unwrap_err(), OpError::WrongSigner);
}

#[test]
fn stored_ops_must_hash_to_the_id_they_were_stored_under() {
    let r = Replica::new(&key(1));
    let wire = signed_wire(&r, "stored");
    let id = Op::decode(&wire).unwrap().id();
    assert_eq!(Op::decode_stored(&wire, &id).unwrap().id(), id);
    let mut damaged = wire.clone();
    let at = damaged.windows(6).position(|w| w == b"stored").unwrap();
    damaged[at] = b'S';
    assert!(matches!(
        Op::decode_stored(&damaged, &id),
        Err(OpError::Malformed(_))
    ));
}

#[test]
fn a_flipped_signature_bit_is_a_bad_signature() {
    let r = Replica::new(&key(1));
    let mut wire = signed_wire(&r, "hello");
    let last = wire.len() - 1;
    wire[last] ^= 1;
    let err = Op::decode(&wire).unwrap().verify().unwrap_err();
    assert_eq!(err, OpError::BadSignature);
    assert_eq!(err.code(), "bad_signature");
}

#[test]
fn a_tampered_body_or_author_no_longer_verifies() {
    let r = Replica::new(&key(1));
    let wire = signed_wire(&r, "hello");
    let at = wire.windows(5).position(|w| w == b"hello").unwrap();
    let mut tampered = wire.clone();
    tampered[at] = b'j';
    assert_eq!(
        Op::decode(&tampered).unwrap().verify().unwrap_err(),
        OpError::BadSignature
    );
    // Claiming another author: bytes 33..65 are the author key.
    let mut impostor = wire;
    impostor[33..65].copy_from_slice(&user(2).0);
    assert_eq!(
        Op::decode(&impostor).unwrap().verify().unwrap_err(),
        OpError::BadSignature
    );
}

#[test]
fn signing_for_another_author_is_refused() {
    let r = Replica::new(&key(1));
    let env = message_envelope(&r, &key(1), "hello");
    let err = env.sign(&key(2)).unwrap_err();
    assert_eq!(err, OpError::WrongSigner);
    assert_eq!(err.code(), "wrong_signer");
}

#[test]
fn unknown_version_oversized_and_trailing_bytes_are_refused() {
    let r = Replica::new(&key(1));
    let wire = signed_wire(&r, "hello");
    let mut v2 = wire.clone();
    v2[0] = 2;
    let err = Op::decode(&v2).unwrap_err();
    assert_eq!(err, OpError::UnknownVersion(2));
    assert_eq!(err.code(), "unknown_version");

    let mut trailing = wire.clone();
    trailing.push(0);
    assert_eq!(Op::decode(&trailing).unwrap_err().code(), "malformed_op");
    assert_eq!(
        Op::decode(&wire[..wire.len() - 1]).unwrap_err().code(),
        "malformed_op"
    );

    let huge = vec![1u8; limits::MAX_OP_BYTES + 1];
    let err = Op::decode(&huge).unwrap_err();
    assert_eq!(err, OpError::TooLarge(limits::MAX_OP_BYTES + 1));
    assert_eq!(err.code(), "op_too_large");

    let too_long = "x".repeat(limits::MAX_CONTENT_CHARS + 1);
    let env = message_envelope(&r, &key(1), &too_long);
    assert_eq!(env.sign(&key(1)).unwrap_err().code(), "malformed_op");
}

#[test]
fn nothing_is_signed_that_would_not_decode() {
    let r = Replica::new(&key(1));
    let kick = Body::Kick {
        member: user(2),
        cutoff: 0,
        reason: "r".repeat(limits::MAX_REASON_BYTES + 1),
    };
    let env = r.guild.next_envelope(user(1), 3_000, kick);
    assert_eq!(env.sign(&key(1)).unwrap_err().code(), "malformed_op");
}

#[test]
fn envelope_shape_rules() {
    let r = Replica::new(&key(1));
    let base = message_envelope(&r, &key(1), "hi");
    let refused = |env: Envelope| env.sign(&key(1)).unwrap_err();
    let mut e = base.clone();
    e.seq = 0;
    assert!(matches!(refused(e), OpError::Malformed(_)));
    let mut e = base.clone();
    e.prev = None;
    assert!(
        matches!(refused(e), OpError::Malformed(_)),
        "seq 2 needs prev"
    );
    let mut e = base.clone();
    e.seq = 1;
    assert!(
        matches!(refused(e), OpError::Malformed(_)),
        "seq 1 has no prev"
    );
    let mut e = base.clone();
    e.deps = vec![OpId([2; 32]), OpId([1; 32])];
    assert!(matches!(refused(e), OpError::Malformed(_)), "deps ascend");
    let mut e = base.clone();
    e.deps = (0..=limits::MAX_DEPS as u8)
        .map(|i| OpId([i; 32]))
        .collect();
    assert!(matches!(refused(e), OpError::Malformed(_)), "too many deps");
    let mut e = base.clone();
    e.deps.clear();
    assert!(matches!(refused(e), OpError::Malformed(_)), "no deps");
    let mut e = base;
    e.guild = OpId::default();
    assert!(matches!(refused(e), OpError::Malformed(_)), "zero guild");
}

#[test]
fn batch_verification_pinpoints_the_bad_op() {
    let r = Replica::new(&key(1));
    let mut ops: Vec<Op> = (0..8)
        .map(|i| {
            message_envelope(&r, &key(1), &format!("message {i}"))
                .sign(&key(1))
                .unwrap()
        })
        .collect();
    let mut bad = ops[5].encode();
    let last = bad.len() - 1;
    bad[last] ^= 0x80;
    ops[5] = Op::decode(&bad).unwrap();
    let results = verify_batch(ops, rand::rng());
    for (i, res) in results.iter().enumerate() {
        assert_eq!(res.is_ok(), i != 5, "op {i}");
    }
}

#[test]
fn an_op_that_does_not_extend_its_prev_is_held_but_never_counts() {
    // Each case in a fresh replica: a wrong `prev` at a seq nobody else holds is not an
    // equivocation, just a broken link, which ends the author's chain there.
    // Each breaks the link of an op whose prev is `one`, in a guild whose first channel is
    // `general`.
    type BreakLink = fn(&mut Envelope, &Guild, OpId, OpId);
    let cases: [(&str, BreakLink); 3] = [
        ("prev at another seq", |env, _, general, _| {
            env.prev = Some(general)
        }),
        ("timestamp not after prev's", |env, guild, _, one| {
            env.hlc = guild.op(&one).unwrap().envelope().hlc
        }),
        ("deps older than prev's", |env, guild, _, _| {
            env.deps = vec![guild.id()]
        }),
    ];
    for (case, break_link) in cases {
        let mut r = Replica::new(&key(1));
        let general = r.text_channel(&key(1), "general");
        let one = r.say(&key(1), general, "one").0;
        let mut env = message_envelope(&r, &key(1), "two");
        break_link(&mut env, &r.guild, general, one);
        let bad = env.sign(&key(1)).unwrap().verify().unwrap();
        let bad_id = bad.id();
        let Inserted::Applied { changes, .. } = r.guild.insert(bad).unwrap() else {
            panic!("{case}: held");
        };
        assert_eq!(changes, vec![(bad_id, Verdict::Forked)], "{case}");
        let mut env = message_envelope(&r, &key(1), "three");
        (env.seq, env.prev) = (env.seq + 1, Some(bad_id));
        let after = env.sign(&key(1)).unwrap().verify().unwrap();
        let after_id = after.id();
        r.guild.insert(after).unwrap();
        let verdict = r.guild.verdict(&after_id);
        assert_eq!(
            verdict,
            Some(&Verdict::Forked),
            "{case}: builds on a forked op"
        );
        assert!(r.guild.message(&after_id).is_none(), "{case}");
    }
}

#[test]
fn a_log_received_in_any_order_with_gaps_is_judged_alike() {
    // ada's log: ... one (seq 3), a (4), c (5), and b at seq 6 naming a as prev: a broken
    // link that shows only once a arrives. Every delivery order of a, b and c, each leaving
    // gaps for a while, must end in the same verdicts and state.
    let mut r = Replica::new(&key(1));
    let general = r.text_channel(&key(1), "general");
    r.say(&key(1), general, "one");
    let base: Vec<VerifiedOp> = r.guild.ops().cloned().collect();
    let (a, _) = r.say(&key(1), general, "a");
    let (c, _) = r.say(&key(1), general, "c");
    let mut env = message_envelope(&r, &key(1), "b");
    env.prev = Some(a);
    let b = env.sign(&key(1)).unwrap().verify().unwrap();
    let b_id = b.id();
    let tail = [
        r.guild.op(&a).unwrap().clone(),
        b,
        r.guild.op(&c).unwrap().clone(),
    ];
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let judged = |order: &[usize; 3]| {
        let mut ops = base.clone();
        ops.sort_by_key(|op| op.envelope().hlc);
        let mut guild = Guild::new(ops.remove(0)).unwrap();
        for op in ops
            .into_iter()
            .chain(order.iter().map(|&i| tail[i].clone()))
        {
            guild.insert(op).unwrap();
        }
        let verdicts: Vec<_> = [a, c, b_id].map(|id| guild.verdict(&id).cloned()).into();
        (verdicts, guild.state_hash())
    };
    let expected = judged(&orders[0]);
    assert_eq!(
        expected.0,
        vec![
            Some(Verdict::Valid),
            Some(Verdict::Valid),
            Some(Verdict::Forked)
        ]
    );
    for order in &orders[1..] {
        assert_eq!(judged(order), expected, "order {order:?}");
    }
}

#[test]
fn an_op_naming_a_later_op_as_prev_is_caught_when_that_op_comes() {
    // After `one` (seq 3): w at seq 5 names y as prev, y at seq 9 names p (seq 8, never sent).
    // Held alone, w and y each sit across a gap; together, w's link is broken (y is not at
    // seq 4), which ends the chain at 5.
    let mut r = Replica::new(&key(1));
    let general = r.text_channel(&key(1), "general");
    let (one, _) = r.say(&key(1), general, "one");
    let base: Vec<VerifiedOp> = r.guild.ops().cloned().collect();
    let at = |seq: u64, prev: OpId, text: &str| {
        let mut env = message_envelope(&r, &key(1), text);
        (env.seq, env.prev) = (seq, Some(prev));
        env.hlc = Hlc::from_parts(10_000 + seq, 0);
        env.sign(&key(1)).unwrap().verify().unwrap()
    };
    let p = at(8, one, "p");
    let y = at(9, p.id(), "y");
    let w = at(5, y.id(), "w");
    for order in [[&w, &y], [&y, &w]] {
        let mut ops = base.clone();
        ops.sort_by_key(|op| op.envelope().hlc);
        let mut guild = Guild::new(ops.remove(0)).unwrap();
        for op in ops.into_iter().chain(order.map(|op| op.clone())) {
            guild.insert(op).unwrap();
        }
        for op in [&w, &y] {
            assert_eq!(guild.verdict(&op.id()), Some(&Verdict::Forked));
        }
    }
}

#[test]
fn an_op_naming_another_authors_op_as_prev_is_forked_in_either_order() {
    // bea's op at seq 5, then ada's at seq 6 naming it as prev: the seq fits, the author does
    // not. Ada holds nothing at 4 or 5, so on its own her op sits across a gap.
    let mut r = Replica::new(&key(1));
    let general = r.text_channel(&key(1), "general");
    let invite = r.invite(&key(1));
    r.join(&key(2), invite);
    let base: Vec<VerifiedOp> = r.guild.ops().cloned().collect();
    let beas: Vec<VerifiedOp> = (0..4)
        .map(|i| {
            let (id, _) = r.say(&key(2), general, &format!("bea {i}"));
            r.guild.op(&id).unwrap().clone()
        })
        .collect();
    let last = beas.last().unwrap();
    let mut env = message_envelope(&r, &key(1), "ada's");
    (env.seq, env.prev) = (last.envelope().seq + 1, Some(last.id()));
    assert!(env.seq > r.guild.chain_head(&key(1).user_id()).unwrap().0 + 1);
    let adas = env.sign(&key(1)).unwrap().verify().unwrap();
    let judged = |tail: Vec<VerifiedOp>| {
        let mut ops = base.clone();
        ops.sort_by_key(|op| op.envelope().hlc);
        let mut guild = Guild::new(ops.remove(0)).unwrap();
        for op in ops.into_iter().chain(tail) {
            guild.insert(op).unwrap();
        }
        (guild.verdict(&adas.id()).cloned(), guild.state_hash())
    };
    let adas_last = judged(beas.iter().cloned().chain([adas.clone()]).collect());
    let adas_first = judged([adas.clone()].into_iter().chain(beas.clone()).collect());
    assert_eq!(adas_last.0, Some(Verdict::Forked));
    assert_eq!(adas_first, adas_last);
}

#[test]
fn deps_are_checked_on_insert() {
    let mut r = Replica::new(&key(1));
    let general = r.text_channel(&key(1), "general");
    let first = r.say(&key(1), general, "one").0;

    let mut env = message_envelope(&r, &key(1), "from the past");
    env.hlc = Hlc::from_parts(1_500, 0);
    let op = env.sign(&key(1)).unwrap().verify().unwrap();
    let err = r.guild.insert(op).unwrap_err();
    assert_eq!(err, InsertError::CausalityViolation);
    assert_eq!(err.code(), "causality_violation");

    let mut env = message_envelope(&r, &key(1), "deps on a message");
    env.deps = vec![first];
    let op = env.sign(&key(1)).unwrap().verify().unwrap();
    assert_eq!(
        r.guild.insert(op).unwrap_err(),
        InsertError::DepNotGuildState
    );

    let other = Replica::new(&key(2));
    let foreign = message_envelope(&other, &key(2), "elsewhere")
        .sign(&key(2))
        .unwrap()
        .verify()
        .unwrap();
    assert_eq!(
        r.guild.insert(foreign).unwrap_err(),
        InsertError::WrongGuild
    );
}

#[test]
fn ops_wait_for_missing_predecessors_then_apply() {
    let mut author = Replica::new(&key(1));
    let general = author.text_channel(&key(1), "general");
    let (hello, _) = author.say(&key(1), general, "hello");
    let mut reader = Replica::new(&key(1));
    let ops: Vec<VerifiedOp> = author.guild.ops().cloned().collect();
    let mut later: Vec<VerifiedOp> = ops
        .iter()
        .filter(|op| !op.envelope().is_genesis())
        .cloned()
        .collect();
    later.sort_by_key(|op| std::cmp::Reverse(op.envelope().seq));
    let message = later.remove(0);
    match reader.guild.insert(message.clone()).unwrap() {
        Inserted::Pending { missing } => assert_eq!(missing.len(), 1),
        other => panic!("expected pending, got {other:?}"),
    }
    assert_eq!(reader.guild.insert(message).unwrap(), Inserted::Duplicate);
    let channel = later.remove(0);
    let channel_id = channel.id();
    let Inserted::Applied {
        accepted, changes, ..
    } = reader.guild.insert(channel).unwrap()
    else {
        panic!("the channel applies");
    };
    assert_eq!(changes.len(), 2, "the channel and the released message");
    assert_eq!(
        accepted,
        vec![channel_id, hello],
        "in the order they entered"
    );
    assert_eq!(reader.verdict(&hello), Verdict::Valid);
    assert_eq!(reader.guild.state_hash(), author.guild.state_hash());
}

#[test]
fn an_equivocating_author_is_no_longer_trusted_from_the_fork_on() {
    let mut a = Replica::new(&key(1));
    let invite = a.invite(&key(1));
    a.join(&key(2), invite);
    let general = a.text_channel(&key(1), "general");
    let (before, _) = a.say(&key(2), general, "before the fork");
    let mut b = a.clone();
    let (left, _) = a.say(&key(2), general, "left");
    let (after, _) = a.say(&key(2), general, "after, on the left fork");
    let (right, _) = b.say(&key(2), general, "right");
    a.sync_from(&b);
    b.sync_from(&a);
    for r in [&a, &b] {
        let proofs = r.guild.equivocations();
        assert_eq!(proofs.len(), 1);
        let proof = &proofs[0];
        assert_eq!(proof.author, user(2));
        assert_eq!(proof.first.envelope().seq, proof.second.envelope().seq);
        assert_ne!(proof.first.id(), proof.second.id());
        assert!(proof.first.clone().verify().is_ok() && proof.second.clone().verify().is_ok());
        assert_eq!(
            r.verdict(&before),
            Verdict::Valid,
            "what came before stands"
        );
        for forked in [left, right, after] {
            assert_eq!(r.verdict(&forked), Verdict::Forked);
        }
        let shown: Vec<Text> = r
            .guild
            .messages(&general, None, None, 10)
            .into_iter()
            .map(|m| m.content)
            .collect();
        assert_eq!(shown, ["before the fork"]);
    }
    assert_eq!(a.guild.state_hash(), b.guild.state_hash());
}

/// The ed25519 identity point, a small-order point: as an `R` or as an author key.
const IDENTITY: [u8; 32] = {
    let mut point = [0; 32];
    point[0] = 1;
    point
};

proptest! {
    /// One batch equation and one check per op accept the same ops (ZIP-215), whatever mix of
    /// good and broken signatures the batch holds, so a node's verdict never depends on how its
    /// ops were batched.
    #[test]
    fn batch_and_single_verification_agree(
        damage in proptest::collection::vec(0u8..6, 1..24),
    ) {
        let r = Replica::new(&key(1));
        let ops: Vec<Op> = damage
            .iter()
            .enumerate()
            .map(|(i, how)| {
                let signer = key(1 + (i % 3) as u8);
                let mut wire = message_envelope(&r, &signer, &format!("message {i}"))
                    .sign(&signer)
                    .unwrap()
                    .encode();
                let sig = wire.len() - 64;
                match how {
                    1 => wire[sig + 7] ^= 0x10,
                    2 => wire[sig..sig + 32].copy_from_slice(&IDENTITY),
                    // S not below the group order.
                    3 => wire[sig + 32..].copy_from_slice(&[0xff; 32]),
                    // A weak author: the identity point.
                    4 => wire[33..65].copy_from_slice(&IDENTITY),
                    _ => {}
                }
                Op::decode(&wire).unwrap()
            })
            .collect();
        let single: Vec<bool> = ops.iter().cloned().map(|op| op.verify().is_ok()).collect();
        let batch: Vec<bool> = verify_batch(ops, rand::rng()).iter().map(Result::is_ok).collect();
        prop_assert_eq!(&single, &batch);
        for (ok, how) in single.iter().zip(&damage) {
            prop_assert_eq!(*ok, *how == 0 || *how == 5, "damage {}", how);
        }
    }

    #[test]
    fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(op) = Op::decode(&bytes) {
            prop_assert_eq!(op.encode(), bytes);
            let _ = op.verify();
        }
    }

    #[test]
    fn mutating_a_valid_op_never_panics_and_never_verifies(
        position in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let r = Replica::new(&key(1));
        let mut wire = signed_wire(&r, "a message long enough to mutate");
        let at = position.index(wire.len());
        wire[at] ^= flip;
        if let Ok(op) = Op::decode(&wire) {
            prop_assert!(op.verify().is_err());
        }
    }
}

/// A guild with a channel and `count(bytes of one)` messages of the largest size in it: the
/// replica, the channel's op and the messages' ops. A replica without the channel parks them.
fn messages_of_the_largest_size(
    count: impl Fn(usize) -> usize,
) -> (Replica, VerifiedOp, Vec<VerifiedOp>) {
    let mut author = Replica::new(&key(1));
    let general = author.text_channel(&key(1), "general");
    let big = "😀".repeat(crate::limits::MAX_CONTENT_CHARS);
    let messages = (0..count(big.len()))
        .map(|_| {
            let (id, _) = author.say(&key(1), general, &big);
            author.guild.op(&id).unwrap().clone()
        })
        .collect();
    let channel = author.guild.op(&general).unwrap().clone();
    (author, channel, messages)
}

#[test]
fn pending_ops_are_bounded_in_bytes_and_expire() {
    let (author, channel, messages) =
        messages_of_the_largest_size(|big| crate::guild::MAX_PENDING_BYTES / big + 10);
    let count = messages.len();

    // Without the channel, every message waits, until the bytes they take reach the cap.
    let mut reader = Replica::new(&key(1));
    let mut refused = 0;
    for op in &messages {
        match reader.guild.insert(op.clone()) {
            Ok(Inserted::Pending { .. }) => {}
            Err(InsertError::PendingFull) => refused += 1,
            other => panic!("expected pending or full, got {other:?}"),
        }
    }
    assert!(refused > 0, "the cap was reached");
    assert!(reader.guild.pending_bytes() <= crate::guild::MAX_PENDING_BYTES);
    assert_eq!(reader.guild.pending_len(), count - refused);

    // Past their time they are dropped; they come again later, and then apply.
    let newest = messages.last().unwrap().envelope().hlc.ms();
    assert_eq!(reader.guild.expire_pending(newest + 1), count - refused);
    assert_eq!(
        (reader.guild.pending_len(), reader.guild.pending_bytes()),
        (0, 0)
    );
    let Inserted::Applied { accepted, .. } = reader.guild.insert(channel).unwrap() else {
        panic!("the channel applies");
    };
    assert_eq!(accepted.len(), 1, "nothing expired is released");
    for op in messages {
        reader.guild.insert(op).unwrap();
    }
    assert_eq!(reader.guild.state_hash(), author.guild.state_hash());
}

#[test]
fn each_peer_may_park_only_its_share_of_pending_bytes_and_is_released_when_they_apply() {
    use crate::guild::MAX_PENDING_BYTES_PER_PEER;
    let (_, channel, messages) =
        messages_of_the_largest_size(|big| 2 * (MAX_PENDING_BYTES_PER_PEER / big + 5));
    let count = messages.len() / 2;

    let mut reader = Replica::new(&key(1));
    let (flooder, other) = (node(7), node(8));
    let mut refused = 0;
    for op in &messages[..count] {
        match reader.guild.insert_from(op.clone(), Some(flooder)) {
            Ok(Inserted::Pending { .. }) => {}
            Err(e) => {
                assert_eq!(e, InsertError::PeerPendingFull);
                assert_eq!(e.code(), "peer_pending_full");
                refused += 1;
            }
            other => panic!("expected pending or full, got {other:?}"),
        }
    }
    assert!(refused > 0, "the peer's share was reached");
    let parked = reader.guild.pending_bytes_from(&flooder);
    assert!(parked <= MAX_PENDING_BYTES_PER_PEER && parked == reader.guild.pending_bytes());
    // Another peer still parks what it sends, and local inserts are not charged to anyone.
    for op in &messages[count..count + 3] {
        assert!(matches!(
            reader.guild.insert_from(op.clone(), Some(other)),
            Ok(Inserted::Pending { .. })
        ));
    }
    assert!(matches!(
        reader.guild.insert(messages[count + 3].clone()),
        Ok(Inserted::Pending { .. })
    ));
    assert_eq!(
        reader.guild.pending_bytes_from(&other),
        3 * messages[0].encoded_len()
    );

    // Once the channel arrives, what waited applies and no peer is charged any more.
    reader.guild.insert(channel).unwrap();
    assert_eq!(reader.guild.pending_len(), 0);
    assert_eq!(reader.guild.pending_bytes_from(&flooder), 0);
    assert_eq!(reader.guild.pending_bytes_from(&other), 0);
    for op in &messages[..count] {
        assert!(matches!(
            reader.guild.insert_from(op.clone(), Some(flooder)),
            Ok(Inserted::Applied { .. } | Inserted::Duplicate)
        ));
    }
}
