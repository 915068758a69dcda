//! Benchmarks of the sans-IO core: decoding, signature checks, applying ops to a guild, and
//! sealing and opening DMs.
//!
//! Run with `cargo bench -p guildhall-proto --bench core`; results are recorded in
//! BENCHMARKS.md at the repository root.

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use guildhall_proto::guild::{Guild, Inserted, Verdict};
use guildhall_proto::perm::Permissions;
use guildhall_proto::{
    Body, ChannelId, ChannelKind, Envelope, Hlc, Keypair, Op, OpId, OverwriteTarget, VerifiedOp,
    verify_batch,
};

const SECRET: &[u8] = b"open sesame";

/// A deterministic key per member number (0 is the owner).
fn key(n: u32) -> Keypair {
    let mut secret = [0x5a; 32];
    secret[..4].copy_from_slice(&n.to_le_bytes());
    Keypair::from_secret(secret)
}

/// One replica with a clock that moves forward a second per op.
struct Builder {
    guild: Guild,
    now: u64,
}

impl Builder {
    fn new(owner: &Keypair) -> Builder {
        let genesis = Envelope {
            guild: OpId::default(),
            author: owner.user_id(),
            seq: 1,
            prev: None,
            hlc: Hlc::from_parts(1_000, 0),
            deps: vec![],
            body: Body::Genesis {
                name: "bench guild".into(),
            },
        }
        .sign(owner)
        .unwrap()
        .verify()
        .unwrap();
        Builder {
            guild: Guild::new(genesis).unwrap(),
            now: 2_000,
        }
    }

    /// Signs (and verifies) `who`'s next op on top of everything held, without inserting it.
    /// Ops are a second apart, so that no author passes the guild-state rate.
    fn make(&mut self, who: &Keypair, body: Body) -> VerifiedOp {
        self.now += 1_000;
        self.guild
            .next_envelope(who.user_id(), self.now, body)
            .sign(who)
            .unwrap()
            .verify()
            .unwrap()
    }

    /// Authors an op and inserts it; it must be valid.
    fn ok(&mut self, who: &Keypair, body: Body) -> OpId {
        let op = self.make(who, body);
        let id = op.id();
        match self.guild.insert(op).unwrap() {
            Inserted::Applied { .. } => {}
            other => panic!("own op not applied: {other:?}"),
        }
        assert_eq!(self.guild.verdict(&id), Some(&Verdict::Valid), "{id:?}");
        id
    }

    fn text_channel(&mut self, owner: &Keypair, name: &str) -> ChannelId {
        self.ok(
            owner,
            Body::ChannelCreate {
                kind: ChannelKind::Text,
                name: name.into(),
                parent: None,
                position: 0,
            },
        )
    }

    fn invite(&mut self, owner: &Keypair) -> OpId {
        self.ok(owner, Body::invite_create(SECRET, 0, 0))
    }

    fn join(&mut self, who: &Keypair, invite: OpId) -> OpId {
        let body = Body::join(&self.guild.id(), invite, &who.user_id(), SECRET);
        self.ok(who, body)
    }
}

fn message(channel: ChannelId, i: usize) -> Body {
    Body::MessageCreate {
        channel,
        content: format!("message number {i}: the quick brown fox jumps over the lazy dog").into(),
        reply_to: None,
    }
}

/// A guild with an owner, `members` joined members and one text channel.
fn small_guild(members: u32) -> (Builder, Keypair, Vec<Keypair>, ChannelId) {
    let owner = key(0);
    let mut b = Builder::new(&owner);
    let channel = b.text_channel(&owner, "general");
    let invite = b.invite(&owner);
    let keys: Vec<Keypair> = (1..=members).map(key).collect();
    for k in &keys {
        b.join(k, invite);
    }
    (b, owner, keys, channel)
}

/// `n` message ops authored in sequence by `keys` in turn on top of `b`'s guild; the guild is
/// left as it was.
fn messages(b: &Builder, keys: &[Keypair], channel: ChannelId, n: usize) -> Vec<VerifiedOp> {
    let mut scratch = Builder {
        guild: b.guild.clone(),
        now: b.now,
    };
    (0..n)
        .map(|i| {
            let who = &keys[i % keys.len()];
            let op = scratch.make(who, message(channel, i));
            scratch.guild.insert(op.clone()).unwrap();
            op
        })
        .collect()
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

fn bench_decode(c: &mut Criterion) {
    let (b, _owner, keys, channel) = small_guild(4);
    let msg = messages(&b, &keys, channel, 1)[0].encode();
    let join = b
        .guild
        .ops()
        .find(|op| matches!(op.envelope().body, Body::Join { .. }))
        .unwrap()
        .encode();
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function(format!("message_{}B", msg.len()), |bn| {
        bn.iter(|| Op::decode(std::hint::black_box(&msg)).unwrap())
    });
    g.bench_function(format!("join_{}B", join.len()), |bn| {
        bn.iter(|| Op::decode(std::hint::black_box(&join)).unwrap())
    });
    g.finish();
}

fn bench_verify(c: &mut Criterion) {
    let (b, _owner, keys, channel) = small_guild(8);
    // Unverified ops as they arrive off the wire, from 8 different authors.
    let ops: Vec<Op> = messages(&b, &keys, channel, 256)
        .iter()
        .map(|op| Op::decode(&op.encode()).unwrap())
        .collect();

    let mut g = c.benchmark_group("verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |bn| {
        bn.iter_batched(
            || ops[0].clone(),
            |op| op.verify().unwrap(),
            BatchSize::SmallInput,
        )
    });
    // Baselines: the raw ed25519 work inside `Op::verify`, to show the core's own overhead.
    let op = &ops[0];
    let author = op.envelope().author;
    let message = [b"guildhall/op-sig/v1\0".as_slice(), op.id().as_bytes()].concat();
    let signature = ed25519_dalek::Signature::from_bytes(op.signature());
    g.bench_function("ed25519_key_decompress", |bn| {
        bn.iter(|| ed25519_dalek::VerifyingKey::from_bytes(std::hint::black_box(&author.0)))
    });
    let vk = author.verifying_key().unwrap();
    g.bench_function("ed25519_verify_strict", |bn| {
        bn.iter(|| {
            vk.verify_strict(std::hint::black_box(&message), &signature)
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("verify_batch");
    for n in [64usize, 256] {
        let batch: Vec<Op> = ops[..n].to_vec();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(n.to_string(), |bn| {
            bn.iter_batched(
                || batch.clone(),
                |batch| {
                    let out = verify_batch(batch, rand::rng());
                    assert!(out.iter().all(Result::is_ok));
                    out
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn bench_apply(c: &mut Criterion) {
    const N: usize = 1_000;
    let (b, _owner, keys, channel) = small_guild(4);
    let ops = messages(&b, &keys, channel, N);

    let mut g = c.benchmark_group("apply");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("messages_1000", |bn| {
        bn.iter_batched(
            || (b.guild.clone(), ops.clone()),
            |(mut guild, ops)| {
                for op in ops {
                    guild.insert(op).unwrap();
                }
                guild
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// About 500 guild-state ops (joins, roles, grants, channels, overwrites) interleaved with
/// 1,000 messages from 20 members: each message cites different guild-state heads.
fn big_guild() -> (Builder, Keypair, Vec<Keypair>) {
    const MEMBERS: u32 = 200;
    const ROLES: usize = 20;
    const CHANNELS: usize = 20;
    const MESSAGES: usize = 1_000;
    let owner = key(0);
    let mut b = Builder::new(&owner);
    let general = b.text_channel(&owner, "general");
    let invite = b.invite(&owner);
    let keys: Vec<Keypair> = (1..=MEMBERS).map(key).collect();
    let chatty = 20;
    for k in &keys[..chatty] {
        b.join(k, invite);
    }

    // The remaining guild-state ops, in an order where each is valid when authored.
    let mut control: Vec<(Keypair, Body)> = Vec::new();
    for k in &keys[chatty..] {
        let join = Body::join(&b.guild.id(), invite, &k.user_id(), SECRET);
        control.push((k.clone(), join));
    }
    for i in 0..ROLES {
        control.push((
            owner.clone(),
            Body::RoleCreate {
                name: format!("role {i}"),
                permissions: (Permissions::DEFAULT_EVERYONE | Permissions::MANAGE_MESSAGES).bits(),
                color: i as u32,
                position: i as u32 + 1,
            },
        ));
    }
    for i in 0..CHANNELS {
        control.push((
            owner.clone(),
            Body::ChannelCreate {
                kind: ChannelKind::Text,
                name: format!("channel {i}"),
                parent: None,
                position: i as u32 + 1,
            },
        ));
    }
    // Grants and overwrites need the ids of the roles and channels: they come last.
    let mut grants = 0..200usize;
    let mut overwrites = 0..58usize;
    let mut role_ids = Vec::new();
    let mut channel_ids = Vec::new();
    let mut queue = control.into_iter();
    for i in 0..MESSAGES {
        let who = &keys[i % chatty];
        b.ok(who, message(general, i));
        // One guild-state op for every two messages.
        if i % 2 == 0 {
            continue;
        }
        if let Some((k, body)) = queue.next() {
            let is_role = matches!(body, Body::RoleCreate { .. });
            let is_channel = matches!(body, Body::ChannelCreate { .. });
            let id = b.ok(&k, body);
            if is_role {
                role_ids.push(id);
            } else if is_channel {
                channel_ids.push(id);
            }
        } else if let Some(g) = grants.next() {
            let body = Body::MemberRoleGrant {
                member: keys[g % keys.len()].user_id(),
                role: role_ids[g % role_ids.len()],
            };
            b.ok(&owner, body);
        } else if let Some(o) = overwrites.next() {
            let body = Body::OverwriteSet {
                channel: channel_ids[o % channel_ids.len()],
                target: OverwriteTarget::Role(role_ids[o % role_ids.len()]),
                allow: Permissions::ATTACH_FILES.bits(),
                deny: Permissions::MENTION_EVERYONE.bits(),
            };
            b.ok(&owner, body);
        }
    }
    (b, owner, keys)
}

fn bench_ban(c: &mut Criterion) {
    let (mut b, owner, keys) = big_guild();
    let control = b
        .guild
        .ops()
        .filter(|op| op.envelope().body.is_control())
        .count();
    let content = b.guild.len() - control;
    eprintln!("ban fixture: {control} guild-state ops, {content} content ops");

    let target = &keys[1];
    let cutoff = b.guild.chain_head(&target.user_id()).unwrap().0;
    let ban = b.make(
        &owner,
        Body::Ban {
            member: target.user_id(),
            cutoff,
            reason: "spam".into(),
        },
    );
    let role = b.make(
        &owner,
        Body::RoleCreate {
            name: "one more role".into(),
            permissions: Permissions::DEFAULT_EVERYONE.bits(),
            color: 0,
            position: 30,
        },
    );
    // Sanity: both are valid when applied.
    for op in [&ban, &role] {
        let mut g = b.guild.clone();
        g.insert(op.clone()).unwrap();
        assert_eq!(g.verdict(&op.id()), Some(&Verdict::Valid));
    }
    // A member who may not ban bans the owner: refused where it stands.
    let refused_ban = b.make(
        &keys[2],
        Body::Ban {
            member: owner.user_id(),
            cutoff: 0,
            reason: "flood".into(),
        },
    );
    {
        let mut g = b.guild.clone();
        g.insert(refused_ban.clone()).unwrap();
        assert!(matches!(
            g.verdict(&refused_ban.id()),
            Some(Verdict::Invalid(_))
        ));
    }

    let mut g = c.benchmark_group("insert_into_big_guild");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    for (name, op) in [
        ("valid_ban", &ban),
        ("refused_ban_incremental", &refused_ban),
        ("role_create_incremental", &role),
    ] {
        g.bench_function(name, |bn| {
            bn.iter_batched(
                || (b.guild.clone(), op.clone()),
                |(mut guild, op)| {
                    guild.insert(op).unwrap();
                    guild
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// An owner, `members` members, a text channel and `messages` messages from the members in
/// turn, with a role created every 250 messages so that messages cite different heads.
fn chat_guild(members: u32, messages: usize) -> (Builder, Keypair, Vec<Keypair>) {
    let (mut b, owner, keys, channel) = small_guild(members);
    for i in 0..messages {
        b.ok(&keys[i % keys.len()], message(channel, i));
        if i % 250 == 249 {
            b.ok(
                &owner,
                Body::RoleCreate {
                    name: format!("role {i}"),
                    permissions: Permissions::DEFAULT_EVERYONE.bits(),
                    color: 0,
                    position: 1,
                },
            );
        }
    }
    (b, owner, keys)
}

/// `by`'s ban of `target`, cutting their log above `cutoff`, signed but not inserted.
fn ban_of(b: &mut Builder, by: &Keypair, target: &Keypair, cutoff: u64) -> VerifiedOp {
    b.make(
        by,
        Body::Ban {
            member: target.user_id(),
            cutoff,
            reason: "spam".into(),
        },
    )
}

/// What a removal costs as guilds grow: one ban in guilds of 10k and 50k messages (with the
/// target's log held to its head, and purging the target's last 100 messages), and floods of
/// 100 and 400 concurrent bans, each by another moderator, into a guild of 1,000 messages.
fn bench_removal_cost(c: &mut Criterion) {
    let insert_all = |guild: &Guild, ops: &[VerifiedOp]| {
        let mut guild = guild.clone();
        for op in ops {
            guild.insert(op.clone()).unwrap();
        }
        guild
    };
    let mut g = c.benchmark_group("removal");
    g.sample_size(10);
    for messages in [10_000usize, 50_000] {
        let (mut b, owner, keys) = chat_guild(20, messages);
        let target = &keys[1];
        let head = b.guild.chain_head(&target.user_id()).unwrap().0;
        let mut cases = vec![("ban_one", ban_of(&mut b, &owner, target, head))];
        if messages == 10_000 {
            cases.push((
                "ban_purging_100",
                ban_of(&mut b, &owner, target, head - 100),
            ));
        }
        for (name, ban) in cases {
            let after = insert_all(&b.guild, std::slice::from_ref(&ban));
            assert_eq!(after.verdict(&ban.id()), Some(&Verdict::Valid));
            g.bench_function(format!("{name}/{messages}_messages"), |bn| {
                bn.iter_batched(
                    || (b.guild.clone(), ban.clone()),
                    |(mut guild, ban)| {
                        guild.insert(ban).unwrap();
                        guild
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }

    const MODERATORS: u32 = 400;
    let (mut b, owner, keys) = chat_guild(2 * MODERATORS, 1_000);
    let (moderators, targets) = keys.split_at(MODERATORS as usize);
    let mods = b.ok(
        &owner,
        Body::RoleCreate {
            name: "mods".into(),
            permissions: (Permissions::DEFAULT_EVERYONE | Permissions::BAN_MEMBERS).bits(),
            color: 0,
            position: 2,
        },
    );
    for m in moderators {
        b.ok(
            &owner,
            Body::MemberRoleGrant {
                member: m.user_id(),
                role: mods,
            },
        );
    }
    // Every ban cites the same heads: each is concurrent with all the others.
    let bans: Vec<VerifiedOp> = moderators
        .iter()
        .zip(targets)
        .map(|(m, t)| {
            let cutoff = b.guild.chain_head(&t.user_id()).unwrap().0;
            ban_of(&mut b, m, t, cutoff)
        })
        .collect();
    let after = insert_all(&b.guild, &bans);
    assert!(
        bans.iter()
            .all(|ban| after.verdict(&ban.id()) == Some(&Verdict::Valid))
    );
    for n in [100usize, 400] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("concurrent_bans/{n}"), |bn| {
            bn.iter_batched(
                || (b.guild.clone(), bans[..n].to_vec()),
                |(mut guild, bans)| {
                    for ban in bans {
                        guild.insert(ban).unwrap();
                    }
                    guild
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// Sealing (what a client does per DM sent), and verifying then opening (what a node checks,
/// then what a member does, per DM received), for a 1:1 DM and a 25-member group.
fn bench_dm(c: &mut Criterion) {
    use guildhall_proto::dm::{self, DmEnvelope, SealRandomness, Sealing};
    let mut g = c.benchmark_group("dm");
    let plaintext = br#"{"type":"message","content":"a 200-byte message, about what people type in a chat line, padded out to make up the length of a typical message of two sentences or so; nothing more than that."}"#;
    for members in [2usize, 25] {
        let keys: Vec<(Keypair, [u8; 32])> = (0..members as u32)
            .map(|n| (key(n), [n as u8 + 1; 32]))
            .collect();
        let entries: Vec<_> = keys
            .iter()
            .map(|(k, s)| (k.user_id(), dm::public_key(s)))
            .collect();
        let sealing = Sealing {
            conversation: [7; 32],
            sender: keys[0].0.user_id(),
            sender_secret: &keys[0].1,
            members: &entries,
            sent_ms: 1,
            plaintext,
        };
        let random = SealRandomness {
            ephemeral_secret: [3; 32],
            body_key: [4; 32],
            body_nonce: [5; 24],
            wrap_nonces: vec![[6; 24]; members],
        };
        g.bench_function(format!("seal_and_sign/{members}_members"), |bench| {
            bench.iter(|| dm::seal(&sealing, &random).unwrap().sign(&keys[0].0))
        });
        let wire = dm::seal(&sealing, &random).unwrap().sign(&keys[0].0);
        g.bench_function(format!("node_verify/{members}_members"), |bench| {
            bench.iter(|| DmEnvelope::verify(&wire).unwrap())
        });
        let envelope = DmEnvelope::verify(&wire).unwrap().envelope;
        let (reader, secret) = &keys[members - 1];
        g.bench_function(format!("open/{members}_members"), |bench| {
            bench.iter(|| dm::open(&envelope, &reader.user_id(), |_| Some(*secret)).unwrap())
        });
    }
    g.finish();
}

/// The gate of fan-out: for one channel event, which of the guild's members may receive it
/// (member, and VIEW_CHANNEL in the channel), as the gateway asks for every session.
fn bench_fanout_gate(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_gate");
    for members in [10u32, 1_000] {
        let (b, owner, keys, channel) = small_guild(members);
        let state = b.guild.state();
        let users: Vec<_> = std::iter::once(&owner)
            .chain(&keys)
            .map(|k| k.user_id())
            .collect();
        g.throughput(Throughput::Elements(users.len() as u64));
        g.bench_function(format!("{members}_members"), |bench| {
            bench.iter(|| {
                users
                    .iter()
                    .filter(|u| {
                        state.is_member(u)
                            && state
                                .channel_permissions(u, &channel)
                                .contains(Permissions::VIEW_CHANNEL)
                    })
                    .count()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_decode, bench_verify, bench_apply, bench_ban, bench_removal_cost, bench_dm,
        bench_fanout_gate
}
criterion_main!(benches);
