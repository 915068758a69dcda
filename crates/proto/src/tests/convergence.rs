//! Convergence: random histories written on three replicas with partial syncs in between end,
//! after full delivery in any order with duplicates, in byte-identical state everywhere.

use proptest::prelude::*;

use super::*;
use crate::body::OverwriteTarget;
use crate::meta::MetaValue;
use crate::perm::Permissions as P;

const REPLICAS: usize = 3;
/// Actors 1 (owner) to 4; 2 and 3 start as members, 4 as an outsider holding the invite.
const ACTORS: u8 = 4;

#[derive(Debug, Clone)]
enum Action {
    Say {
        actor: u8,
        reply: Option<usize>,
    },
    Edit {
        actor: u8,
        pick: usize,
    },
    Delete {
        actor: u8,
        pick: usize,
    },
    React {
        actor: u8,
        pick: usize,
        emoji: u8,
        add: bool,
    },
    Pin {
        actor: u8,
        pick: usize,
        pin: bool,
    },
    Thread {
        actor: u8,
        pick: usize,
    },
    RoleCreate {
        actor: u8,
        perms: P,
        position: u32,
    },
    Grant {
        actor: u8,
        member: u8,
        pick: usize,
        grant: bool,
    },
    Remove {
        actor: u8,
        member: u8,
        ban: bool,
    },
    Unban {
        actor: u8,
        member: u8,
    },
    Join {
        actor: u8,
    },
    Leave {
        actor: u8,
    },
    Overwrite {
        actor: u8,
        member: u8,
        deny: P,
    },
    Rename {
        actor: u8,
        name: u8,
    },
    DeleteGuild {
        actor: u8,
    },
    /// An actor names their home nodes (of test nodes 0 to 5).
    Home {
        actor: u8,
        nodes: std::collections::BTreeSet<u8>,
    },
    /// An actor writing on a replica other than their home one: a fork of their log.
    Equivocate {
        actor: u8,
        replica: usize,
    },
    Sync {
        from: usize,
        to: usize,
    },
}

fn actor() -> impl Strategy<Value = u8> {
    1..=ACTORS
}

fn perms() -> impl Strategy<Value = P> {
    prop::sample::subsequence(
        vec![
            P::SEND_MESSAGES,
            P::VIEW_CHANNEL,
            P::MANAGE_ROLES,
            P::BAN_MEMBERS,
            P::KICK_MEMBERS,
            P::MANAGE_MESSAGES,
            P::ADMINISTRATOR,
        ],
        0..3,
    )
    .prop_map(|bits| bits.into_iter().fold(P::empty(), |a, b| a | b))
}

fn action() -> impl Strategy<Value = Action> {
    let pick = any::<usize>();
    prop_oneof![
        6 => (actor(), prop::option::of(pick)).prop_map(|(actor, reply)| Action::Say { actor, reply }),
        2 => (actor(), pick).prop_map(|(actor, pick)| Action::Edit { actor, pick }),
        1 => (actor(), pick).prop_map(|(actor, pick)| Action::Delete { actor, pick }),
        3 => (actor(), pick, 0u8..3, any::<bool>())
            .prop_map(|(actor, pick, emoji, add)| Action::React { actor, pick, emoji, add }),
        1 => (actor(), pick, any::<bool>()).prop_map(|(actor, pick, pin)| Action::Pin { actor, pick, pin }),
        1 => (actor(), pick).prop_map(|(actor, pick)| Action::Thread { actor, pick }),
        2 => (actor(), perms(), 1u32..5)
            .prop_map(|(actor, perms, position)| Action::RoleCreate { actor, perms, position }),
        3 => (actor(), actor(), pick, any::<bool>())
            .prop_map(|(actor, member, pick, grant)| Action::Grant { actor, member, pick, grant }),
        2 => (actor(), actor(), any::<bool>())
            .prop_map(|(actor, member, ban)| Action::Remove { actor, member, ban }),
        1 => (actor(), actor()).prop_map(|(actor, member)| Action::Unban { actor, member }),
        2 => actor().prop_map(|actor| Action::Join { actor }),
        1 => actor().prop_map(|actor| Action::Leave { actor }),
        1 => (actor(), actor(), perms())
            .prop_map(|(actor, member, deny)| Action::Overwrite { actor, member, deny }),
        1 => (actor(), any::<u8>()).prop_map(|(actor, name)| Action::Rename { actor, name }),
        1 => actor().prop_map(|actor| Action::DeleteGuild { actor }),
        2 => (actor(), prop::collection::btree_set(0u8..6, 0..=crate::limits::MAX_HOMES_PER_MEMBER))
            .prop_map(|(actor, nodes)| Action::Home { actor, nodes }),
        1 => (actor(), 0..REPLICAS).prop_map(|(actor, replica)| Action::Equivocate { actor, replica }),
        4 => (0..REPLICAS, 0..REPLICAS).prop_map(|(from, to)| Action::Sync { from, to }),
    ]
}

fn home(actor: u8) -> usize {
    usize::from(actor - 1) % REPLICAS
}

/// The ids of ops with bodies matching `wanted` on a replica, in a stable order.
fn ids_where(r: &Replica, wanted: impl Fn(&Body) -> bool) -> Vec<OpId> {
    let mut ids: Vec<OpId> = r
        .guild
        .ops()
        .filter(|op| wanted(&op.envelope().body))
        .map(|op| op.id())
        .collect();
    ids.sort();
    ids
}

fn nth(ids: &[OpId], pick: usize) -> Option<OpId> {
    (!ids.is_empty()).then(|| ids[pick % ids.len()])
}

struct World {
    replicas: Vec<Replica>,
    general: ChannelId,
    invite: OpId,
}

impl World {
    fn new() -> World {
        let mut r = Replica::new(&key(1));
        let general = r.text_channel(&key(1), "general");
        let invite = r.invite(&key(1));
        r.join(&key(2), invite);
        r.join(&key(3), invite);
        World {
            replicas: vec![r; REPLICAS],
            general,
            invite,
        }
    }

    fn run(&mut self, action: &Action) {
        if let Action::Sync { from, to } = *action {
            let source = self.replicas[from].clone();
            self.replicas[to].sync_from(&source);
            return;
        }
        let (actor, at, body) = match self.body_for(action) {
            Some(made) => made,
            None => return,
        };
        // Invalid ops are part of the history too: they must be judged alike everywhere.
        let _ = self.replicas[at].attempt(&key(actor), body);
    }

    fn body_for(&self, action: &Action) -> Option<(u8, usize, Body)> {
        let general = self.general;
        let messages = |r: &Replica| ids_where(r, |b| matches!(b, Body::MessageCreate { .. }));
        let at_home = |actor: u8| &self.replicas[home(actor)];
        let made = match *action {
            Action::Say { actor, reply } => {
                let r = at_home(actor);
                let reply_to = reply.and_then(|p| nth(&messages(r), p));
                let content = format!("from {actor}");
                (
                    actor,
                    Body::MessageCreate {
                        channel: general,
                        content: content.into(),
                        reply_to,
                    },
                )
            }
            Action::Edit { actor, pick } => {
                let message = nth(&messages(at_home(actor)), pick)?;
                let content = format!("edited by {actor}");
                (
                    actor,
                    Body::MessageEdit {
                        message,
                        content: content.into(),
                    },
                )
            }
            Action::Delete { actor, pick } => {
                let message = nth(&messages(at_home(actor)), pick)?;
                (actor, Body::MessageDelete { message })
            }
            Action::React {
                actor,
                pick,
                emoji,
                add,
            } => {
                let message = nth(&messages(at_home(actor)), pick)?;
                let emoji = ["👍", "🎉", "x"][usize::from(emoji)].to_owned();
                let body = if add {
                    Body::ReactionAdd { message, emoji }
                } else {
                    Body::ReactionRemove { message, emoji }
                };
                (actor, body)
            }
            Action::Pin { actor, pick, pin } => {
                let message = nth(&messages(at_home(actor)), pick)?;
                let body = if pin {
                    Body::Pin { message }
                } else {
                    Body::Unpin { message }
                };
                (actor, body)
            }
            Action::Thread { actor, pick } => {
                let message = nth(&messages(at_home(actor)), pick);
                let name = format!("thread by {actor}");
                (
                    actor,
                    Body::ThreadCreate {
                        channel: general,
                        name: name.into(),
                        message,
                    },
                )
            }
            Action::RoleCreate {
                actor,
                perms,
                position,
            } => {
                let body = Body::RoleCreate {
                    name: format!("role {position}"),
                    permissions: perms.bits(),
                    color: 0,
                    position,
                };
                (actor, body)
            }
            Action::Grant {
                actor,
                member,
                pick,
                grant,
            } => {
                let roles = ids_where(at_home(actor), |b| matches!(b, Body::RoleCreate { .. }));
                let role = nth(&roles, pick)?;
                let member = user(member);
                let body = if grant {
                    Body::MemberRoleGrant { member, role }
                } else {
                    let cutoff = at_home(actor).cutoff(&key(member_index(&member)));
                    Body::MemberRoleRevoke {
                        member,
                        role,
                        cutoff,
                    }
                };
                (actor, body)
            }
            Action::Remove { actor, member, ban } => {
                let cutoff = at_home(actor).cutoff(&key(member));
                (actor, removal(ban, user(member), cutoff))
            }
            Action::Unban { actor, member } => (
                actor,
                Body::Unban {
                    member: user(member),
                },
            ),
            Action::Join { actor } => (
                actor,
                Body::join(
                    &at_home(actor).guild.id(),
                    self.invite,
                    &user(actor),
                    SECRET,
                ),
            ),
            Action::Leave { actor } => (actor, Body::Leave),
            Action::Overwrite {
                actor,
                member,
                deny,
            } => {
                let body = Body::OverwriteSet {
                    channel: general,
                    target: OverwriteTarget::Member(user(member)),
                    allow: 0,
                    deny: deny.bits(),
                };
                (actor, body)
            }
            Action::Rename { actor, name } => {
                let value = MetaValue::Str(format!("guild {name}"));
                let change = at_home(actor)
                    .guild
                    .meta()
                    .make_change(&user(actor), &[("guild.name", Some(value))])?;
                (actor, Body::MetaChange { change })
            }
            Action::DeleteGuild { actor } => (actor, Body::GuildDelete),
            Action::Home { actor, ref nodes } => {
                (actor, Body::home(nodes.iter().map(|n| node(*n))))
            }
            Action::Equivocate { actor, replica } => {
                let content = format!("fork by {actor}");
                return Some((
                    actor,
                    replica,
                    Body::MessageCreate {
                        channel: general,
                        content: content.into(),
                        reply_to: None,
                    },
                ));
            }
            Action::Sync { .. } => unreachable!("handled by run"),
        };
        Some((made.0, home(made.0), made.1))
    }

    fn all_ops(&self) -> Vec<VerifiedOp> {
        let mut all: Vec<VerifiedOp> = Vec::new();
        for r in &self.replicas {
            all.extend(r.guild.ops().cloned());
        }
        all.sort_by_key(|op| op.id());
        all.dedup_by_key(|op| op.id());
        all
    }
}

fn member_index(member: &UserId) -> u8 {
    (1..=ACTORS)
        .find(|n| user(*n) == *member)
        .expect("an actor")
}

/// A catch-up as nodes run it: `to` states its log positions once and `from` answers in
/// batches of `max_ops`, each after the cursor the previous one reached.
fn catch_up(to: &mut Guild, from: &Guild, max_ops: usize) {
    let have = to.log_positions();
    let mut after = None;
    loop {
        let (batch, more) = from.ops_missing_from(&have, after, max_ops, usize::MAX);
        if let Some(last) = batch.last() {
            after = Some((last.envelope().hlc, last.id()));
        }
        for op in batch {
            to.insert(op.clone()).unwrap();
        }
        if !more {
            return;
        }
    }
}

/// A join as nodes run it (guild state and recent history, in batches), then a back-fill of
/// older history in batches, newest first.
fn join_then_backfill(source: &Guild, recent: usize, max_ops: usize) -> Guild {
    let mut joined: Option<Guild> = None;
    let mut after = None;
    loop {
        let (batch, more) = source.ops_for_join(recent, after, max_ops, usize::MAX);
        for op in batch {
            after = Some((op.envelope().hlc, op.id()));
            match &mut joined {
                None => joined = Some(Guild::new(op.clone()).unwrap()),
                Some(g) => {
                    g.insert(op.clone()).unwrap();
                }
            }
        }
        if !more {
            break;
        }
    }
    let mut joined = joined.expect("the genesis op comes first");
    assert_eq!(
        joined.version_vector(),
        source.version_vector(),
        "a join knows where every log ends"
    );
    let mut before = joined.backfill_start();
    while let Some(cursor) = before {
        let (batch, more) = source.content_before(cursor, max_ops, usize::MAX);
        before = batch
            .last()
            .filter(|_| more)
            .map(|op| (op.envelope().hlc, op.id()));
        for op in batch {
            joined.insert(op.clone()).unwrap();
        }
    }
    joined
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_delivery_order_converges(
        actions in prop::collection::vec(action(), 1..40),
        seeds in prop::collection::vec(any::<u64>(), 2),
        duplicate_every in 2usize..6,
        batch in 1usize..5,
        recent in 1usize..12,
    ) {
        let mut world = World::new();
        for action in &actions {
            world.run(action);
        }
        let all = world.all_ops();

        let snapshot = world.replicas.clone();
        for r in &mut world.replicas {
            for other in &snapshot {
                r.sync_from(other);
            }
        }
        let expected = world.replicas[0].guild.state_hash();
        for r in &world.replicas {
            prop_assert_eq!(r.guild.state_hash(), expected);
            prop_assert_eq!(r.guild.pending_len(), 0);
            prop_assert!(entitlement_is_indexed(&r.guild));
        }

        for seed in seeds {
            let mut delivery = shuffled(all.clone(), seed);
            let repeats: Vec<VerifiedOp> =
                delivery.iter().step_by(duplicate_every).cloned().collect();
            delivery.extend(repeats);
            let delivery = shuffled(delivery, seed.rotate_left(17));
            let guild = fresh_replica_from(delivery);
            prop_assert_eq!(guild.state_hash(), expected);
            prop_assert!(entitlement_is_indexed(&guild));
        }

        // The federation protocol reaches the same state: pairs reconcile by catch-up in small
        // batches, the answering side pulling back when the asker holds what it lacks, until a
        // pass changes nothing. Forks seen on one side only can take a second pass: an asker
        // ahead of the answerer learns of the answerer's fork once the answerer has caught up.
        let mut caught_up: Vec<Guild> = snapshot.iter().map(|r| r.guild.clone()).collect();
        let held = |guilds: &[Guild]| guilds.iter().map(Guild::len).collect::<Vec<_>>();
        let mut passes = 0;
        loop {
            let before = held(&caught_up);
            for i in 0..REPLICAS {
                for j in i + 1..REPLICAS {
                    let asker = caught_up[i].log_positions();
                    let source = caught_up[j].clone();
                    catch_up(&mut caught_up[i], &source, batch);
                    if caught_up[j].lacks_from(&asker) {
                        let source = caught_up[i].clone();
                        catch_up(&mut caught_up[j], &source, batch);
                    }
                }
            }
            passes += 1;
            if held(&caught_up) == before {
                break;
            }
            prop_assert!(passes < 4, "catch-up keeps finding ops after {} passes", passes);
        }
        for guild in &caught_up {
            prop_assert_eq!(guild.state_hash(), expected);
            prop_assert!(entitlement_is_indexed(guild));
            prop_assert_eq!(guild.pending_len(), 0);
            prop_assert!(!caught_up[0].lacks_from(&guild.log_positions()));
        }

        // A replica joining with the newest `recent` content ops only, then back-filling the
        // rest newest first, batch by batch, ends the same.
        let joined = join_then_backfill(&caught_up[0], recent, batch);
        prop_assert_eq!(joined.state_hash(), expected);
        prop_assert!(!joined.has_gaps());
        prop_assert!(entitlement_is_indexed(&joined));

        let mut replayed = world.replicas[1].guild.clone();
        for op in &all {
            prop_assert_eq!(replayed.insert(op.clone()).unwrap(), Inserted::Duplicate);
        }
        prop_assert_eq!(replayed.state_hash(), expected);
    }
}
