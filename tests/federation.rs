//! Federation over real libp2p on loopback: guilds joined by invite across nodes, live
//! replication, partitions that heal, and peers that lie.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::attacker::rogue_peer;
use common::{TestNode, WAIT, dispatch_where, eventually};
use guildhall_client::{Client, Gateway, Page, User};
use guildhall_gateway::Node;
use guildhall_gateway::federation::InviteCode;
use guildhall_gateway::node::now_ms;
use guildhall_net::protocol::{MAX_BATCH_BYTES, MAX_BATCH_OPS};
use guildhall_net::{Batch, Budget, Host, NetConfig, NetError, NetHandle, NodeKey, Refusal};
use guildhall_proto::body::{Body, ChannelKind};
use guildhall_proto::guild::{Guild, LogPositions};
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::{ChannelId, GuildId, InviteId, Keypair, OpId};
use guildhall_proto::op::{Envelope, VerifiedOp};

/// Waits until every node holds the guild with the same state hash (state and history).
async fn converged(nodes: &[&TestNode], guild: &str) -> [u8; 32] {
    let gid: GuildId = guild.parse().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let hashes: Vec<Option<[u8; 32]>> = nodes
            .iter()
            .map(|n| {
                n.node
                    .guild(&gid)
                    .ok()
                    .map(|g| g.lock().unwrap().state_hash())
            })
            .collect();
        if hashes[0].is_some() && hashes.iter().all(|h| *h == hashes[0]) {
            return hashes[0].unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "nodes did not converge on {guild}: {hashes:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A guild Alice creates on `home`, joined by invite by each `(name, node)` of `joiners`; ready
/// once every node involved holds the same state.
struct Shared {
    alice: Client,
    guild: guildhall_client::Guild,
    gid: GuildId,
    channel: String,
    members: Vec<(Client, User)>,
}

async fn shared_guild(home: &TestNode, name: &str, joiners: &[(&str, &TestNode)]) -> Shared {
    let (alice, _) = home.user("alice").await;
    let guild = alice.create_guild(name).await.unwrap();
    let channel = guild.first_text_channel().unwrap().id.clone();
    let invite = alice.create_invite(&guild.id, 0, 0).await.unwrap().code;
    let mut members = Vec::new();
    for (who, node) in joiners {
        let (client, user) = node.user(who).await;
        client.accept_invite(&invite).await.unwrap();
        members.push((client, user));
    }
    let nodes: Vec<&TestNode> = std::iter::once(home)
        .chain(joiners.iter().map(|(_, n)| *n))
        .collect();
    converged(&nodes, &guild.id).await;
    Shared {
        alice,
        gid: guild.id.parse().unwrap(),
        guild,
        channel,
        members,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_guild_lives_on_three_nodes_and_every_change_reaches_every_client() {
    let a = TestNode::federated(&[]).await;
    let b = TestNode::federated(&[&a]).await;
    let c = TestNode::federated(&[&b]).await;
    let Shared {
        alice,
        guild,
        channel,
        mut members,
        ..
    } = shared_guild(&a, "Federated", &[("bob", &b), ("carol", &c)]).await;
    let (carol, carol_user) = members.pop().unwrap();
    let (bob, bob_user) = members.pop().unwrap();
    assert_eq!(bob.guild(&guild.id).await.unwrap().name, "Federated");
    let on_a = alice.guild(&guild.id).await.unwrap();
    assert_eq!(
        on_a.member_count, 3,
        "both remote joins reached the owner's node"
    );

    let mut alice_gw = Gateway::connect(&alice).await.unwrap();
    let mut bob_gw = Gateway::connect(&bob).await.unwrap();
    let mut carol_gw = Gateway::connect(&carol).await.unwrap();

    let sent = alice
        .send(&guild.id, &channel, "hello from A")
        .await
        .unwrap();
    for gw in [&mut bob_gw, &mut carol_gw] {
        let d = dispatch_where(gw, "MESSAGE_CREATE", "id", &sent.id).await;
        assert_eq!(d.data["content"], "hello from A");
    }
    let reply = carol
        .send(&guild.id, &channel, "hello from C")
        .await
        .unwrap();
    dispatch_where(&mut alice_gw, "MESSAGE_CREATE", "id", &reply.id).await;
    dispatch_where(&mut bob_gw, "MESSAGE_CREATE", "id", &reply.id).await;

    bob.edit(&guild.id, &channel, &sent.id, "edited?")
        .await
        .expect_err("only the author edits");
    carol
        .edit(&guild.id, &channel, &reply.id, "hello from C, edited")
        .await
        .unwrap();
    let d = dispatch_where(&mut alice_gw, "MESSAGE_UPDATE", "id", &reply.id).await;
    assert_eq!(d.data["content"], "hello from C, edited");
    bob.react(&guild.id, &channel, &sent.id, "👍")
        .await
        .unwrap();
    loop {
        let d = dispatch_where(&mut carol_gw, "MESSAGE_UPDATE", "id", &sent.id).await;
        if d.data["reactions"].to_string().contains("👍") {
            break;
        }
    }
    carol
        .delete_message(&guild.id, &channel, &reply.id)
        .await
        .unwrap();
    dispatch_where(&mut bob_gw, "MESSAGE_DELETE", "id", &reply.id).await;

    // A role change on A binds B: a member-level overwrite denying carol the channel.
    alice
        .set_member_overwrite(&guild.id, &channel, &carol_user.id, 0, 1 << 10)
        .await
        .unwrap();
    converged(&[&a, &b, &c], &guild.id).await;
    let hidden = carol.send(&guild.id, &channel, "can I still talk?").await;
    assert!(hidden.is_err(), "the overwrite made on A applies on C");

    // A ban on A stops bob on B.
    alice.ban(&guild.id, &bob_user.id).await.unwrap();
    eventually("bob's node applies the ban", async || {
        bob.send(&guild.id, &channel, "still here?").await.is_err()
    })
    .await;
    let hash = converged(&[&a, &b, &c], &guild.id).await;
    let history = |n: &TestNode| {
        let g = n.node.guild(&guild.id.parse().unwrap()).unwrap();
        let g = g.lock().unwrap();
        g.messages(&channel.parse().unwrap(), None, None, 100)
            .into_iter()
            .map(|m| (m.id, m.content))
            .collect::<Vec<_>>()
    };
    assert_eq!(history(&a), history(&c));
    assert_eq!(history(&a), history(&b));
    assert_ne!(hash, [0; 32]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_heals_with_nothing_lost_and_the_ban_winning() {
    let a = TestNode::federated(&[]).await;
    let b = TestNode::federated(&[&a]).await;
    let Shared {
        alice,
        guild,
        channel,
        mut members,
        ..
    } = shared_guild(&a, "Split", &[("bob", &b), ("dave", &b)]).await;
    let (dave, _) = members.pop().unwrap();
    let (bob, bob_user) = members.pop().unwrap();
    let before = bob
        .send(&guild.id, &channel, "before the split")
        .await
        .unwrap();
    converged(&[&a, &b], &guild.id).await;

    a.net().block(b.net().peer_id());
    b.net().block(a.net().peer_id());
    eventually("the nodes are apart", async || {
        a.net().peers().await.is_empty()
    })
    .await;

    // Both sides keep chatting; A bans bob without having seen his partition messages.
    let mut acked_a = Vec::new();
    let mut acked_b = Vec::new();
    for i in 0..5 {
        acked_a.push(
            alice
                .send(&guild.id, &channel, &format!("A{i}"))
                .await
                .unwrap(),
        );
        acked_b.push(
            dave.send(&guild.id, &channel, &format!("B{i}"))
                .await
                .unwrap(),
        );
    }
    alice.ban(&guild.id, &bob_user.id).await.unwrap();
    let mut dave_gw = Gateway::connect(&dave).await.unwrap();
    let doomed = bob.send(&guild.id, &channel, "bob, unaware").await.unwrap();
    dispatch_where(&mut dave_gw, "MESSAGE_CREATE", "id", &doomed.id).await;

    a.net().unblock(b.net().peer_id());
    b.net().unblock(a.net().peer_id());
    converged(&[&a, &b], &guild.id).await;

    // Dave saw bob's message retracted once the ban arrived.
    dispatch_where(&mut dave_gw, "MESSAGE_DELETE", "id", &doomed.id).await;
    for node in [&a, &b] {
        let g = node.node.guild(&guild.id.parse().unwrap()).unwrap();
        let g = g.lock().unwrap();
        let ids: Vec<String> = g
            .messages(&channel.parse().unwrap(), None, None, 100)
            .into_iter()
            .map(|m| m.id.to_string())
            .collect();
        for acked in acked_a.iter().chain(&acked_b).chain([&before]) {
            assert!(ids.contains(&acked.id), "acknowledged {} kept", acked.id);
        }
        assert!(
            !ids.contains(&doomed.id),
            "the banned user's concurrent message is cut"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn presence_and_typing_cross_nodes_signed_by_the_user() {
    let a = TestNode::federated(&[]).await;
    let b = TestNode::federated(&[&a]).await;
    let Shared {
        alice,
        guild,
        channel,
        mut members,
        ..
    } = shared_guild(&a, "Chatty", &[("bob", &b)]).await;
    let (bob, bob_user) = members.pop().unwrap();
    let mut alice_gw = Gateway::connect(&alice).await.unwrap();

    let mut bob_gw = Gateway::connect(&bob).await.unwrap();
    let online = dispatch_where(&mut alice_gw, "PRESENCE_UPDATE", "user_id", &bob_user.id).await;
    assert_eq!(online.data["status"], "online");
    let profile = alice.profile(&bob_user.id).await.unwrap();
    assert_eq!(
        profile["status"], "online",
        "node A knows bob's status from node B"
    );

    bob_gw.typing(&guild.id, &channel).await.unwrap();
    let typing = dispatch_where(&mut alice_gw, "TYPING_START", "user_id", &bob_user.id).await;
    assert_eq!(typing.data["channel_id"], channel.as_str());

    bob_gw.set_presence("dnd").await.unwrap();
    let dnd = dispatch_where(&mut alice_gw, "PRESENCE_UPDATE", "user_id", &bob_user.id).await;
    assert_eq!(dnd.data["status"], "dnd");
    // A dropped socket keeps its session resumable (and bob online); logging out ends it.
    bob.logout().await.unwrap();
    drop(bob_gw);
    let offline = dispatch_where(&mut alice_gw, "PRESENCE_UPDATE", "user_id", &bob_user.id).await;
    assert_eq!(offline.data["status"], "offline");
}

/// Forged, malformed, oversized, replayed and misdirected ops from a peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lying_peers_are_refused_and_blocked_while_honest_clients_chat() {
    let a = TestNode::federated(&[]).await;
    let b = TestNode::federated(&[&a]).await;
    let Shared {
        alice,
        guild,
        gid,
        channel,
        mut members,
        ..
    } = shared_guild(&a, "Targeted", &[("bob", &b)]).await;
    let (bob, _) = members.pop().unwrap();

    let rogue = rogue_peer(&a, gid).await;
    let rogue_id = rogue.peer_id();

    // A real op, then forged variants of it.
    let real = {
        let g = a.node.guild(&gid).unwrap();
        let g = g.lock().unwrap();
        g.ops().next().unwrap().encode()
    };
    let before = a.node.guild(&gid).unwrap().lock().unwrap().len();

    // A replay is harmless and costs the sender nothing; an op of another guild pushed as this
    // guild's is refused.
    let elsewhere = TestNode::start().await;
    let other = elsewhere
        .user("other")
        .await
        .0
        .create_guild("Other")
        .await
        .unwrap();
    let other_genesis = {
        let g = elsewhere.node.guild(&other.id.parse().unwrap()).unwrap();
        let g = g.lock().unwrap();
        g.op(&other.id.parse().unwrap()).unwrap().encode()
    };
    rogue.publish(gid, real.clone());
    rogue.publish(gid, other_genesis);
    eventually("the misdirected op is refused", async || {
        a.net().faults().await.contains_key("wrong_guild")
    })
    .await;
    // (Its catch-ups are refused too: it is home to no member, `not_entitled`.)
    assert_eq!(
        a.net()
            .faults()
            .await
            .into_iter()
            .filter(|(code, _)| *code != "not_entitled")
            .collect::<Vec<_>>(),
        vec![("wrong_guild", 1)],
        "the replay was not held against the sender"
    );
    assert!(a.node.guild(&other.id.parse().unwrap()).is_err());

    // Each round differs, so that no round is a replay.
    let mut round = 0usize;
    while a.net().peers().await.contains(&rogue_id) {
        assert!(round < 1_000, "the rogue was never blocked");
        round += 1;
        let mut forged = real.clone();
        let at = forged.len() - 1 - round % 64;
        forged[at] ^= 1 << (round % 8);
        let mut junk = vec![0xff; 100];
        junk[0] = 1;
        junk[1..9].copy_from_slice(&round.to_le_bytes());
        let mut oversized = vec![1u8; guildhall_proto::limits::MAX_OP_BYTES + 1];
        oversized[1..9].copy_from_slice(&round.to_le_bytes());
        for bytes in [forged, junk, oversized] {
            rogue.publish(gid, bytes);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        a.node.guild(&gid).unwrap().lock().unwrap().len(),
        before,
        "nothing the rogue sent was stored"
    );
    let faults = a.net().faults().await;
    let refused: u64 = [
        "bad_signature",
        "malformed_op",
        "op_too_large",
        "wrong_guild",
    ]
    .iter()
    .filter_map(|code| faults.get(code))
    .sum();
    assert!(refused >= 3, "refusals are counted by reason: {faults:?}");

    // Honest traffic still flows both ways.
    let mut bob_gw = Gateway::connect(&bob).await.unwrap();
    let sent = alice.send(&guild.id, &channel, "still fine").await.unwrap();
    dispatch_where(&mut bob_gw, "MESSAGE_CREATE", "id", &sent.id).await;
    let messages = bob
        .messages(&guild.id, &channel, &Page::default())
        .await
        .unwrap();
    assert!(messages.iter().any(|m| m.id == sent.id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flooding_peer_is_throttled_then_blocked_and_nothing_is_lost() {
    let a = TestNode::federated_with(&[], |c| {
        c.peer_rate = 1.0;
        c.peer_burst = 2.0;
    })
    .await;
    let b = TestNode::federated(&[&a]).await;
    let Shared {
        alice,
        guild,
        gid,
        channel,
        mut members,
        ..
    } = shared_guild(&a, "Flooded", &[("bob", &b)]).await;
    let (bob, _) = members.pop().unwrap();

    // Valid ops that A has not seen yet: bob's, written while A and B are apart.
    a.net().block(b.net().peer_id());
    b.net().block(a.net().peer_id());
    for i in 0..10 {
        bob.send(&guild.id, &channel, &format!("m{i}"))
            .await
            .unwrap();
    }
    let unseen: Vec<Vec<u8>> = {
        let on_b = b.node.guild(&gid).unwrap();
        let on_a = a.node.guild(&gid).unwrap();
        let (on_b, on_a) = (on_b.lock().unwrap(), on_a.lock().unwrap());
        on_b.ops()
            .filter(|op| on_a.op(&op.id()).is_none())
            .map(|op| op.encode())
            .collect()
    };
    assert_eq!(unseen.len(), 10);
    let rogue = rogue_peer(&a, gid).await;
    // Pushed one after another, each push over the budget of 2: every one is a strike.
    for round in 0.. {
        if !a.net().peers().await.contains(&rogue.peer_id()) {
            break;
        }
        assert!(round < 100, "the flooding peer was never blocked");
        for op in &unseen {
            rogue.publish(gid, op.clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(a.net().faults().await["gossip_flood"] >= 3);

    // What the flood carried arrives anyway once the honest peer is back.
    a.net().unblock(b.net().peer_id());
    b.net().unblock(a.net().peer_id());
    converged(&[&a, &b], &guild.id).await;
    let page = alice
        .messages(&guild.id, &channel, &Page::default())
        .await
        .unwrap();
    assert_eq!(page.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forks_seen_apart_are_reconciled_with_proof_and_one_wins_everywhere() {
    let a = TestNode::federated(&[]).await;
    let b = TestNode::federated(&[&a]).await;
    let Shared {
        guild,
        gid,
        channel,
        mut members,
        ..
    } = shared_guild(&a, "Forked", &[("mallory", &a), ("bob", &b)]).await;
    members.pop();
    let (mallory, mallory_user) = members.pop().unwrap();

    // Mallory takes her key elsewhere and signs two different ops at the same seq.
    let exported = mallory.export_key(common::PASSWORD).await.unwrap();
    let secret: [u8; 32] = hex::decode(exported).unwrap().try_into().unwrap();
    let key = guildhall_proto::id::Keypair::from_secret(secret);
    let forks: Vec<Vec<u8>> = ["fork one", "fork two"]
        .iter()
        .map(|content| {
            let g = a.node.guild(&gid).unwrap();
            let g = g.lock().unwrap();
            let body = guildhall_proto::body::Body::MessageCreate {
                channel: channel.parse().unwrap(),
                content: (*content).into(),
                reply_to: None,
            };
            let env = g.next_envelope(key.user_id(), guildhall_gateway::node::now_ms(), body);
            env.sign(&key).unwrap().encode()
        })
        .collect();
    // Each side of a partition sees one fork only: neither can tell, and their version
    // vectors agree. Catch-up must still bring both forks everywhere once they reconnect.
    a.net().block(b.net().peer_id());
    b.net().block(a.net().peer_id());
    for (node, fork) in [&a, &b].into_iter().zip(&forks) {
        let rogue = rogue_peer(node, gid).await;
        rogue.publish(gid, fork.clone());
        let id = guildhall_proto::op::Op::decode(fork).unwrap().id();
        eventually("the node holds its fork", async || {
            node.node
                .guild(&gid)
                .unwrap()
                .lock()
                .unwrap()
                .op(&id)
                .is_some()
        })
        .await;
        node.net().block(rogue.peer_id());
    }
    for node in [&a, &b] {
        let g = node.node.guild(&gid).unwrap();
        assert!(g.lock().unwrap().equivocations().is_empty());
    }
    a.net().unblock(b.net().peer_id());
    b.net().unblock(a.net().peer_id());
    // The state hash covers what is shown, which the equivocation decides; wait for both forks.
    for node in [&a, &b] {
        eventually("the node holds both forks, with the proof", async || {
            node.node
                .guild(&gid)
                .unwrap()
                .lock()
                .unwrap()
                .equivocations()
                .len()
                == 1
        })
        .await;
    }
    converged(&[&a, &b], &guild.id).await;
    for node in [&a, &b] {
        let g = node.node.guild(&gid).unwrap();
        let g = g.lock().unwrap();
        let proof = &g.equivocations()[0];
        assert_eq!(
            proof.author.to_string(),
            mallory_user.id,
            "the proof names her"
        );
        let shown: Vec<String> = g
            .messages(&channel.parse().unwrap(), None, None, 100)
            .into_iter()
            .filter_map(|m| m.content.plain().map(str::to_owned))
            .filter(|c| c.starts_with("fork"))
            .collect();
        assert!(
            shown.is_empty(),
            "an equivocating author is no longer trusted: neither fork is shown, anywhere"
        );
    }
}

/// Every message of a channel as `client` pages back through it, 25 at a time, oldest first.
async fn whole_history(
    client: &Client,
    guild: &str,
    channel: &str,
) -> Vec<guildhall_client::Message> {
    let mut history = Vec::new();
    let mut before = None;
    loop {
        let page = Page {
            limit: Some(25),
            before: before.clone(),
            ..Page::default()
        };
        let page = client.messages(guild, channel, &page).await.unwrap();
        let Some(oldest) = page.first() else {
            return history;
        };
        before = Some(oldest.id.clone());
        history.splice(0..0, page);
    }
}

/// Alice's guild on `home` with `count` messages in its first channel: (alice, guild,
/// channel, message ids).
async fn guild_with_history(
    home: &TestNode,
    count: usize,
) -> (Client, guildhall_client::Guild, String, Vec<String>) {
    let (alice, _) = home.user("alice").await;
    let guild = alice.create_guild("Long history").await.unwrap();
    let general = guild.first_text_channel().unwrap().id.clone();
    let mut sent = Vec::new();
    for i in 0..count {
        let message = alice
            .send(&guild.id, &general, &format!("message {i}"))
            .await;
        sent.push(message.unwrap().id);
    }
    (alice, guild, general, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_fetches_recent_history_and_paging_back_fills_in_the_rest() {
    let home = TestNode::federated(&[]).await;
    let (alice, guild, general, sent) = guild_with_history(&home, 120).await;
    // Old messages changed since: their edit, reaction and deletion are recent ops.
    alice
        .edit(&guild.id, &general, &sent[3], "message 3, edited")
        .await
        .unwrap();
    alice
        .react(&guild.id, &general, &sent[5], "👍")
        .await
        .unwrap();
    alice
        .delete_message(&guild.id, &general, &sent[7])
        .await
        .unwrap();
    let invite = alice.create_invite(&guild.id, 0, 0).await.unwrap().code;

    let joiner = TestNode::federated_node(&[&home], |c| {
        c.join_recent = 20;
        c.backfill_in_background = false;
    })
    .await;
    let (bea, _) = joiner.user("bea").await;
    let mut bea_gw = Gateway::connect(&bea).await.unwrap();
    bea.accept_invite(&invite).await.unwrap();
    let gid: GuildId = guild.id.parse().unwrap();
    let held = |n: &TestNode| n.node.guild(&gid).unwrap().lock().unwrap().len();
    assert!(
        held(&joiner) < held(&home) / 2,
        "the join fetched guild state and recent history only ({} of {} ops)",
        held(&joiner),
        held(&home)
    );
    assert!(joiner.node.backfilling(&gid));

    // Paging back fetches older history as needed: bea sees exactly what alice sees.
    let expected = whole_history(&alice, &guild.id, &general).await;
    assert_eq!(expected.len(), 119);
    assert_eq!(whole_history(&bea, &guild.id, &general).await, expected);
    assert!(!joiner.node.backfilling(&gid));
    converged(&[&home, &joiner], &guild.id).await;

    // History is not news: no MESSAGE_CREATE reached bea for what was back-filled.
    let later = alice.send(&guild.id, &general, "after").await.unwrap();
    dispatch_where(&mut bea_gw, "MESSAGE_CREATE", "id", &later.id).await;
    assert!(bea_gw.pending().all(|d| d.name != "MESSAGE_CREATE"
        || !sent.contains(&d.data["id"].as_str().unwrap().to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joined_guild_back_fills_on_its_own() {
    let home = TestNode::federated(&[]).await;
    let (alice, guild, _, _) = guild_with_history(&home, 60).await;
    let invite = alice.create_invite(&guild.id, 0, 0).await.unwrap().code;
    let joiner = TestNode::federated_node(&[&home], |c| c.join_recent = 10).await;
    let (bea, _) = joiner.user("bea").await;
    bea.accept_invite(&invite).await.unwrap();
    let gid: GuildId = guild.id.parse().unwrap();
    eventually("the back-fill finishes", async || {
        !joiner.node.backfilling(&gid)
    })
    .await;
    converged(&[&home, &joiner], &guild.id).await;
    assert!(!joiner.node.guild(&gid).unwrap().lock().unwrap().has_gaps());
}

/// Starts a swarm for a test's own `Host`, dialing `peers`.
async fn start_host<H: Host>(
    host: Arc<H>,
    peers: &[&TestNode],
    configure: impl FnOnce(&mut NetConfig),
) -> NetHandle {
    let mut config = NetConfig::new("/ip4/127.0.0.1/tcp/0".parse().unwrap());
    config.bootstrap = peers.iter().map(|p| p.p2p_addr()).collect();
    configure(&mut config);
    guildhall_net::start(config, NodeKey::generate_ed25519(), host)
        .await
        .unwrap()
}

/// An invite code naming `node`'s address as the one to fetch the guild from.
fn invite_via(code: &str, node: &NetHandle) -> String {
    let mut code = InviteCode::parse(code).unwrap();
    code.addr = Some(node.listen_addrs()[0].clone());
    code.encode()
}

fn encoded(ops: Vec<&VerifiedOp>, more: bool) -> Batch {
    Batch {
        ops: ops.into_iter().map(|op| op.encode()).collect(),
        more,
    }
}

/// How a lying holder answers joins.
#[derive(Debug, Clone, Copy)]
enum JoinLie {
    /// Fresh, valid ops of the guild, `per_batch` at a time after `delay`, always with more.
    Endless { per_batch: usize, delay: Duration },
    /// A batch that starts past the genesis.
    NoGenesis,
    /// The first batch, again and again, with more to come.
    Repeats,
}

/// The `Host` methods of a lying test peer that takes nothing in: it treats every node as
/// entitled to what it serves, ignores signals, ops and DMs pushed to it, and holds no DM keys.
macro_rules! ignores_signals_ops_and_dms {
    () => {
        fn entitled(
            &self,
            _: &guildhall_proto::id::GuildId,
            _: &guildhall_proto::id::NodeId,
        ) -> bool {
            true
        }
        fn signal(&self, _: guildhall_proto::signal::Signal) -> guildhall_net::Applied {
            guildhall_net::Applied::Duplicate
        }
        async fn apply(
            &self,
            _: guildhall_proto::id::GuildId,
            _: guildhall_proto::id::NodeId,
            ops: Vec<guildhall_proto::op::VerifiedOp>,
        ) -> Vec<guildhall_net::Applied> {
            vec![guildhall_net::Applied::Duplicate; ops.len()]
        }
        fn dm_keys(&self, _: &guildhall_proto::id::UserId) -> Vec<Vec<u8>> {
            Vec::new()
        }
        async fn take_dms(&self, _: Vec<Vec<u8>>) -> Result<u32, guildhall_net::Refusal> {
            Err(guildhall_net::Refusal::new("no", "no"))
        }
    };
}

/// A node holding a guild of its own making (so its ops are all validly signed) that lies to
/// nodes joining it.
struct LyingHolder {
    owner: Keypair,
    guild: Mutex<Guild>,
    channel: ChannelId,
    lie: JoinLie,
    /// Ops it has sent in join answers.
    sent: AtomicUsize,
}

impl LyingHolder {
    fn new(lie: JoinLie) -> LyingHolder {
        let owner = Keypair::from_secret([0x3c; 32]);
        let genesis = Envelope {
            guild: OpId::default(),
            author: owner.user_id(),
            seq: 1,
            prev: None,
            hlc: Hlc::next(Hlc::default(), now_ms()),
            deps: vec![],
            body: Body::Genesis {
                name: "Liar's".into(),
            },
        };
        let mut guild = Guild::new(genesis.sign_verified(&owner).unwrap()).unwrap();
        let channel = Body::ChannelCreate {
            kind: ChannelKind::Text,
            name: "general".into(),
            parent: None,
            position: 0,
        };
        let channel = Self::sign(&mut guild, &owner, channel);
        LyingHolder {
            owner,
            guild: Mutex::new(guild),
            channel,
            lie,
            sent: AtomicUsize::new(0),
        }
    }

    fn sign(guild: &mut Guild, key: &Keypair, body: Body) -> OpId {
        let op = guild
            .next_envelope(key.user_id(), now_ms(), body)
            .sign_verified(key)
            .unwrap();
        let id = op.id();
        guild.insert(op).unwrap();
        id
    }

    fn id(&self) -> GuildId {
        self.guild.lock().unwrap().id()
    }

    fn invite(&self, net: &NetHandle) -> String {
        InviteCode {
            guild: self.id(),
            invite: OpId([0x77; 32]),
            secret: vec![1; 16],
            addr: Some(net.listen_addrs()[0].clone()),
        }
        .encode()
    }
}

impl Host for LyingHolder {
    fn log_positions(&self, _: &GuildId) -> Option<LogPositions> {
        None
    }
    fn lacks_from(&self, _: &GuildId, _: &LogPositions) -> bool {
        false
    }
    fn missing_ops(&self, _: &GuildId, _: &LogPositions, _: Option<(Hlc, OpId)>) -> Option<Batch> {
        None
    }
    fn join_ops(
        &self,
        _: &GuildId,
        _: &InviteId,
        _: &guildhall_proto::id::NodeId,
        _: &[u8; 64],
        after: Option<(Hlc, OpId)>,
        _: Option<usize>,
    ) -> Result<Batch, Refusal> {
        let everything = LogPositions::new();
        let batch = match self.lie {
            JoinLie::Endless { per_batch, delay } => {
                std::thread::sleep(delay);
                let mut g = self.guild.lock().unwrap();
                for n in 0..per_batch {
                    let body = Body::MessageCreate {
                        channel: self.channel,
                        content: format!("filler {n}").into(),
                        reply_to: None,
                    };
                    Self::sign(&mut g, &self.owner, body);
                }
                let (ops, _) = g.ops_missing_from(&everything, after, per_batch, MAX_BATCH_BYTES);
                encoded(ops, true)
            }
            JoinLie::NoGenesis => {
                let g = self.guild.lock().unwrap();
                let (ops, _) =
                    g.ops_missing_from(&everything, None, MAX_BATCH_OPS, MAX_BATCH_BYTES);
                encoded(ops[1..].to_vec(), false)
            }
            JoinLie::Repeats => {
                let g = self.guild.lock().unwrap();
                let (ops, _) =
                    g.ops_missing_from(&everything, None, MAX_BATCH_OPS, MAX_BATCH_BYTES);
                encoded(ops, true)
            }
        };
        self.sent.fetch_add(batch.ops.len(), Ordering::Relaxed);
        Ok(batch)
    }
    fn backfill_ops(&self, _: &GuildId, _: (Hlc, OpId)) -> Option<Batch> {
        None
    }
    ignores_signals_ops_and_dms!();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lying_holder_cannot_stall_or_fill_a_join() {
    const MAX_OPS: usize = 1_000;
    const TIMEOUT: Duration = Duration::from_secs(3);
    let home = TestNode::federated(&[]).await;
    let joiner = TestNode::federated_node(&[&home], |c| {
        c.join_max_ops = MAX_OPS;
        c.join_timeout = TIMEOUT;
    })
    .await;
    let (bea, _) = joiner.user("bea").await;
    let lies = [
        (
            JoinLie::Endless {
                per_batch: 100,
                delay: Duration::ZERO,
            },
            "join_too_large",
        ),
        (
            JoinLie::Endless {
                per_batch: 1,
                delay: Duration::from_millis(200),
            },
            "join_timeout",
        ),
        (JoinLie::NoGenesis, "bad_peer_response"),
        (JoinLie::Repeats, "join_out_of_order"),
    ];
    for (lie, code) in lies {
        let holder = Arc::new(LyingHolder::new(lie));
        let gid = holder.id();
        let net = start_host(Arc::clone(&holder), &[], |_| {}).await;
        let started = Instant::now();
        let refused = bea.accept_invite(&holder.invite(&net)).await.unwrap_err();
        assert_eq!(refused.code(), Some(code), "{lie:?}: {refused}");
        assert!(
            started.elapsed() < TIMEOUT + Duration::from_secs(2),
            "{lie:?} took {:?}",
            started.elapsed()
        );
        assert!(joiner.node.guild(&gid).is_err(), "{lie:?}: nothing kept");
        let sent = holder.sent.load(Ordering::Relaxed);
        assert!(
            sent <= MAX_OPS + 100,
            "{lie:?}: the joiner stopped asking at its bound, not after {sent} ops"
        );
    }

    // An honest join by the same node and user still works.
    let (alice, _) = home.user("alice").await;
    let guild = alice.create_guild("Honest").await.unwrap();
    let invite = alice.create_invite(&guild.id, 0, 0).await.unwrap().code;
    bea.accept_invite(&invite).await.unwrap();
    converged(&[&home, &joiner], &guild.id).await;
}

/// How a lying back-fill source answers.
#[derive(Debug, Clone, Copy)]
enum BackfillLie {
    /// The guild's genesis: a control op, which never comes by back-fill.
    ControlOp,
    /// The op at the cursor itself, not strictly before it.
    NotBefore,
}

/// A node that answers joins and catch-ups honestly from `honest`'s replicas, and lies when
/// asked for older history.
struct LyingSource {
    honest: Arc<Node>,
    lie: BackfillLie,
    /// Back-fill requests it has answered.
    asked: AtomicUsize,
}

impl Host for LyingSource {
    fn log_positions(&self, _: &GuildId) -> Option<LogPositions> {
        None
    }
    fn lacks_from(&self, _: &GuildId, _: &LogPositions) -> bool {
        false
    }
    fn missing_ops(
        &self,
        guild: &GuildId,
        have: &LogPositions,
        after: Option<(Hlc, OpId)>,
    ) -> Option<Batch> {
        self.honest.missing_ops(guild, have, after)
    }
    fn join_ops(
        &self,
        guild: &GuildId,
        invite: &InviteId,
        requester: &guildhall_proto::id::NodeId,
        proof: &[u8; 64],
        after: Option<(Hlc, OpId)>,
        recent: Option<usize>,
    ) -> Result<Batch, Refusal> {
        self.honest
            .join_ops(guild, invite, requester, proof, after, recent)
    }
    fn backfill_ops(&self, guild: &GuildId, before: (Hlc, OpId)) -> Option<Batch> {
        self.asked.fetch_add(1, Ordering::Relaxed);
        let g = self.honest.guild(guild).ok()?;
        let g = g.lock().unwrap();
        let lie = match self.lie {
            BackfillLie::ControlOp => g.op(guild)?,
            BackfillLie::NotBefore => g.op(&before.1)?,
        };
        Some(encoded(vec![lie], true))
    }
    ignores_signals_ops_and_dms!();
}

/// A guild joined through a node that lies about its older history: the lie is refused with
/// its code and struck, the liar is asked no more, and the history comes from another node
/// serving the guild.
async fn back_fill_through_a_liar(lie: BackfillLie, code: &str) {
    let home = TestNode::federated(&[]).await;
    let (alice, guild, general, sent) = guild_with_history(&home, 60).await;
    let gid: GuildId = guild.id.parse().unwrap();
    let source = Arc::new(LyingSource {
        honest: home.node.clone(),
        lie,
        asked: AtomicUsize::new(0),
    });
    let liar = start_host(Arc::clone(&source), &[&home], |_| {}).await;
    liar.serve(gid);
    let joiner = TestNode::federated_node(&[&home], |c| {
        c.join_recent = 10;
        c.backfill_in_background = false;
    })
    .await;
    let (bea, _) = joiner.user("bea").await;
    let invite = alice.create_invite(&guild.id, 0, 0).await.unwrap().code;
    bea.accept_invite(&invite_via(&invite, &liar))
        .await
        .unwrap();
    assert!(joiner.node.backfilling(&gid));
    let home_id = home.net().peer_id();
    eventually("the joiner sees the guild's home serving it", async || {
        joiner.net().peers_entitled(gid).await.contains(&home_id)
    })
    .await;

    let expected = whole_history(&alice, &guild.id, &general).await;
    assert_eq!(expected.len(), sent.len());
    assert_eq!(whole_history(&bea, &guild.id, &general).await, expected);
    assert!(!joiner.node.backfilling(&gid));
    eventually("the lie is struck with its code", async || {
        joiner.net().faults().await.get(code) == Some(&1)
    })
    .await;
    assert_eq!(
        source.asked.load(Ordering::Relaxed),
        1,
        "a source caught lying is not asked again"
    );
    converged(&[&home, &joiner], &guild.id).await;

    // The guild joined that way works both ways.
    let mut alice_gw = Gateway::connect(&alice).await.unwrap();
    let hello = bea.send(&guild.id, &general, "hello").await.unwrap();
    dispatch_where(&mut alice_gw, "MESSAGE_CREATE", "id", &hello.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_back_fill_source_sending_control_ops_is_refused_and_history_comes_from_another() {
    back_fill_through_a_liar(BackfillLie::ControlOp, "backfill_not_content").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_back_fill_source_sending_ops_not_before_the_cursor_is_refused() {
    back_fill_through_a_liar(BackfillLie::NotBefore, "backfill_out_of_order").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_brings_news_while_a_back_fill_runs_and_no_old_history_as_news() {
    let home = TestNode::federated(&[]).await;
    let (alice, guild, general, sent) = guild_with_history(&home, 60).await;
    let invite = alice.create_invite(&guild.id, 0, 0).await.unwrap().code;
    let joiner = TestNode::federated_node(&[&home], |c| {
        c.join_recent = 10;
        c.backfill_in_background = false;
    })
    .await;
    let (bea, _) = joiner.user("bea").await;
    bea.accept_invite(&invite).await.unwrap();
    let gid: GuildId = guild.id.parse().unwrap();
    let mut bea_gw = Gateway::connect(&bea).await.unwrap();
    let held = |n: &TestNode| n.node.guild(&gid).unwrap().lock().unwrap().len();
    let held_at_join = held(&joiner);

    // Messages the joiner cannot get by gossip: sent while the two are apart.
    home.net().block(joiner.net().peer_id());
    joiner.net().block(home.net().peer_id());
    eventually("the nodes are apart", async || {
        joiner.net().peers().await.is_empty()
    })
    .await;
    let mut missed = Vec::new();
    for i in 0..3 {
        let content = format!("while apart {i}");
        missed.push(alice.send(&guild.id, &general, &content).await.unwrap().id);
    }
    home.net().unblock(joiner.net().peer_id());
    joiner.net().unblock(home.net().peer_id());
    for id in &missed {
        dispatch_where(&mut bea_gw, "MESSAGE_CREATE", "id", id).await;
    }
    assert!(
        joiner.node.backfilling(&gid),
        "the back-fill is still to run"
    );
    assert!(
        held(&joiner) < held_at_join + 3 + 10,
        "the catch-up brought the news, not the old history"
    );

    // The back-fill still completes, and what it brings is history, not news.
    let expected = whole_history(&alice, &guild.id, &general).await;
    assert_eq!(whole_history(&bea, &guild.id, &general).await, expected);
    assert!(!joiner.node.backfilling(&gid));
    converged(&[&home, &joiner], &guild.id).await;
    assert!(bea_gw.pending().all(|d| d.name != "MESSAGE_CREATE"
        || !sent.contains(&d.data["id"].as_str().unwrap().to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_flooding_sync_requests_are_refused_then_blocked_while_honest_catch_up_completes() {
    let a = TestNode::federated_with(&[], |c| {
        c.catchup_budget = Budget::new(20.0, 20.0);
        c.backfill_budget = Budget::new(2.0, 5.0);
    })
    .await;
    let b = TestNode::federated(&[&a]).await;
    let Shared {
        alice,
        guild,
        gid,
        channel,
        mut members,
        ..
    } = shared_guild(&a, "Hammered", &[("bob", &b)]).await;
    let (bob, _) = members.pop().unwrap();
    let a_id = a.net().peer_id();
    let cursor = {
        let g = a.node.guild(&gid).unwrap();
        let g = g.lock().unwrap();
        let newest = g
            .ops()
            .max_by_key(|op| (op.envelope().hlc, op.id()))
            .unwrap();
        (newest.envelope().hlc, newest.id())
    };

    // Back-fill requests beyond the budget are refused with `rate_limited`; a peer that keeps
    // asking is blocked. Those within it are judged, and refused too: the rogue is home to no
    // member.
    let rogue = rogue_peer(&a, gid).await;
    let mut answered = 0;
    let mut refused = 0;
    loop {
        match rogue.backfill(a_id, None, gid, cursor).await {
            Ok(_) => panic!("a node home to no member was sent the guild's history"),
            Err(NetError::Refused(r)) if r.code == "not_entitled" => answered += 1,
            Err(NetError::Refused(r)) => {
                assert_eq!(r.code, "rate_limited");
                refused += 1;
            }
            Err(_) => break,
        }
        assert!(refused < 1_000, "the flooding peer was never blocked");
    }
    assert!((5..10).contains(&answered), "{answered} answered");
    assert!(refused >= 64, "{refused} refused before the block");
    // The rogue may see its stream fail before A's swarm has handled the disconnect.
    eventually("A drops the blocked rogue", async || {
        !a.net().peers().await.contains(&rogue.peer_id())
    })
    .await;

    // Bob's messages that A has not seen: an honest catch-up is to bring them.
    a.net().block(b.net().peer_id());
    b.net().block(a.net().peer_id());
    eventually("the honest nodes are apart", async || {
        !a.net().peers().await.contains(&b.net().peer_id())
    })
    .await;
    for i in 0..5 {
        let content = format!("m{i}");
        bob.send(&guild.id, &channel, &content).await.unwrap();
    }
    // A node asking for catch-ups as fast as it gets answers, on the same guild.
    let c =
        TestNode::federated_with(&[&a], |c| c.catchup_interval = Duration::from_millis(2)).await;
    let (carol, _) = c.user("carol").await;
    let invite = alice.create_invite(&guild.id, 0, 0).await.unwrap().code;
    carol.accept_invite(&invite).await.unwrap();
    a.net().unblock(b.net().peer_id());
    b.net().unblock(a.net().peer_id());
    converged(&[&a, &b], &guild.id).await;
    let c_id = c.net().peer_id();
    eventually("the node hammering catch-ups is blocked", async || {
        !a.net().peers().await.contains(&c_id)
    })
    .await;
    let faults = a.net().faults().await;
    assert!(faults["rate_limited"] >= 2 * 64, "{faults:?}");
    assert!(faults["request_flood"] >= 6, "{faults:?}");
    let page = alice
        .messages(&guild.id, &channel, &Page::default())
        .await
        .unwrap();
    assert_eq!(page.len(), 5, "the honest catch-up brought all of bob's");
}

const VIEW_CHANNEL: u64 = 1 << 10;

/// The channel key id a node's replica shows for a sealed message.
fn sealing_key(node: &TestNode, guild: &GuildId, message: &str) -> guildhall_proto::sealed::KeyId {
    let g = node.node.guild(guild).unwrap();
    let g = g.lock().unwrap();
    let view = g
        .message(&message.parse().unwrap())
        .expect("the message is held");
    view.content.sealed().expect("the text is sealed").key
}

/// Waits until `client` reads `text` as the content of `message` in `channel`.
async fn reads(client: &Client, guild: &str, channel: &str, message: &str, text: &str) {
    eventually(&format!("the message reads {text:?}"), async || {
        // Refused until the client's node has seen a grant of the channel.
        client
            .messages(guild, channel, &Page::default())
            .await
            .is_ok_and(|page| page.iter().any(|m| m.id == message && m.content == text))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_private_channel_is_sealed_from_nodes_with_no_viewer_until_one_is_granted() {
    let a = TestNode::federated(&[]).await;
    let b = TestNode::federated(&[&a]).await;
    let c = TestNode::federated(&[&a, &b]).await;
    let Shared {
        alice,
        guild,
        gid,
        mut members,
        ..
    } = shared_guild(&a, "Private", &[("bob", &b), ("carol", &c)]).await;
    let (carol, carol_user) = members.pop().unwrap();
    let (bob, _) = members.pop().unwrap();
    let staff = alice
        .create_channel(&guild.id, "staff", "text")
        .await
        .unwrap()
        .id;
    alice
        .set_member_overwrite(&guild.id, &staff, &carol_user.id, 0, VIEW_CHANNEL)
        .await
        .unwrap();
    converged(&[&a, &b, &c], &guild.id).await;

    let mut bob_gw = Gateway::connect(&bob).await.unwrap();
    let secret = "zebra plan 7731";
    let sent = alice.send(&guild.id, &staff, secret).await.unwrap();
    assert_eq!(sent.content, secret, "the author's node opens its own seal");
    // B fetches the key from A and shows the message as it reads, whichever comes first.
    loop {
        let d = bob_gw.next_dispatch(WAIT).await.unwrap();
        if d.data["id"] == sent.id.as_str() && d.data["content"] == secret {
            break;
        }
    }
    let reply = bob
        .send(&guild.id, &staff, "bob's sealed reply")
        .await
        .unwrap();
    reads(&alice, &guild.id, &staff, &reply.id, "bob's sealed reply").await;
    converged(&[&a, &b, &c], &guild.id).await;

    // C holds both ops (the same state hash) but can open neither, and is given no key.
    let first_key = sealing_key(&c, &gid, &sent.id);
    let reply_key = sealing_key(&c, &gid, &reply.id);
    assert_ne!(
        first_key, reply_key,
        "each node seals with a key of its own"
    );
    {
        let g = c.node.guild(&gid).unwrap();
        let g = g.lock().unwrap();
        assert!(g.keyring().get(&first_key).is_none());
        assert!(g.keyring().get(&reply_key).is_none());
    }
    assert!(
        c.net()
            .channel_keys(gid, &[first_key, reply_key])
            .await
            .is_empty(),
        "A and B give C no key of a channel its user may not view"
    );
    assert_eq!(
        b.net().channel_keys(gid, &[first_key]).await.len(),
        1,
        "a viewer node is given it"
    );
    let on_disk = std::fs::read(c.node.config.data_dir.join("guildhall.redb")).unwrap();
    assert!(
        !on_disk
            .windows(secret.len())
            .any(|w| w == secret.as_bytes()),
        "C's store holds no plaintext of the private channel"
    );
    assert!(
        carol
            .messages(&guild.id, &staff, &Page::default())
            .await
            .is_err(),
        "carol may not read #staff"
    );

    // Granted the channel, C fetches the keys and carol reads its history.
    alice
        .set_member_overwrite(&guild.id, &staff, &carol_user.id, VIEW_CHANNEL, 0)
        .await
        .unwrap();
    reads(&carol, &guild.id, &staff, &sent.id, secret).await;
    reads(&carol, &guild.id, &staff, &reply.id, "bob's sealed reply").await;

    // Shut out again, C cannot open what is sealed after it sees that.
    alice
        .set_member_overwrite(&guild.id, &staff, &carol_user.id, 0, VIEW_CHANNEL)
        .await
        .unwrap();
    converged(&[&a, &b, &c], &guild.id).await;
    let later = alice
        .send(&guild.id, &staff, "after carol left staff")
        .await
        .unwrap();
    reads(&bob, &guild.id, &staff, &later.id, "after carol left staff").await;
    converged(&[&a, &b, &c], &guild.id).await;
    let later_key = sealing_key(&c, &gid, &later.id);
    assert_ne!(later_key, first_key, "the key changed with the state");
    assert!(c.net().channel_keys(gid, &[later_key]).await.is_empty());
    let g = c.node.guild(&gid).unwrap();
    assert!(g.lock().unwrap().keyring().get(&later_key).is_none());
}

/// A federated node with one guild Alice made on it: the node, Alice, the guild and its id.
async fn lone_guild(
    name: &str,
    configure: impl FnOnce(&mut NetConfig),
) -> (TestNode, Client, guildhall_client::Guild, GuildId) {
    let a = TestNode::federated_with(&[], configure).await;
    let (alice, _) = a.user("alice").await;
    let guild = alice.create_guild(name).await.unwrap();
    let gid = guild.id.parse().unwrap();
    (a, alice, guild, gid)
}

/// Alice still chats in her guild's first channel.
async fn still_chats(alice: &Client, guild: &guildhall_client::Guild) {
    let channel = guild.first_text_channel().unwrap().id.clone();
    alice.send(&guild.id, &channel, "still here").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stranger_asking_for_channel_keys_is_refused_then_blocked() {
    let (a, alice, guild, gid) =
        lone_guild("Keys", |c| c.channel_key_budget = Budget::new(2.0, 10.0)).await;
    let a_id = a.net().peer_id();
    let rogue = rogue_peer(&a, gid).await;
    let ask = |count: usize| guildhall_net::protocol::Request::ChannelKeys {
        guild: gid,
        keys: vec![serde_bytes::ByteArray::new([7; 32]); count],
    };
    let refusal = |answer: Result<guildhall_net::protocol::Response, NetError>| match answer {
        Err(NetError::Refused(r)) => r.code,
        other => panic!("a stranger was answered: {other:?}"),
    };
    assert_eq!(refusal(rogue.request(a_id, ask(1)).await), "not_entitled");
    let too_many = guildhall_net::protocol::MAX_CHANNEL_KEYS + 1;
    assert_eq!(
        refusal(rogue.request(a_id, ask(too_many)).await),
        "too_many_keys"
    );
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    loop {
        match rogue.request(a_id, ask(1)).await {
            Err(NetError::Refused(r)) => *codes.entry(r.code).or_default() += 1,
            Err(_) => break,
            Ok(answer) => panic!("a stranger was answered: {answer:?}"),
        }
        assert!(
            codes.values().sum::<usize>() < 1_000,
            "never blocked: {codes:?}"
        );
    }
    assert!(codes["rate_limited"] >= 64, "{codes:?}");
    eventually("A drops the blocked stranger", async || {
        !a.net().peers().await.contains(&rogue.peer_id())
    })
    .await;
    let faults = a.net().faults().await;
    assert!(faults["too_many_keys"] >= 1, "{faults:?}");
    assert!(faults["not_entitled"] >= 2, "{faults:?}");
    still_chats(&alice, &guild).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_of_too_many_items_is_refused_and_struck_before_anything_is_judged() {
    let (a, alice, guild, gid) = lone_guild("Pushed", |_| {}).await;
    let a_id = a.net().peer_id();
    let held_before = a.node.guild(&gid).unwrap().lock().unwrap().len();
    let rogue = rogue_peer(&a, gid).await;
    let too_many = guildhall_net::protocol::MAX_PUSH_ITEMS + 1;
    let push = guildhall_net::protocol::Request::Push {
        guild: gid,
        ops: vec![serde_bytes::ByteBuf::from(vec![1u8; 8]); too_many],
        signals: Vec::new(),
    };
    for _ in 0..2 {
        match rogue.request(a_id, push.clone()).await {
            Err(NetError::Refused(r)) => assert_eq!(r.code, "push_too_large"),
            other => panic!("an oversized push was taken: {other:?}"),
        }
    }
    let faults = a.net().faults().await;
    assert_eq!(faults["push_too_large"], 2, "{faults:?}");
    assert_eq!(
        faults.get("malformed_op"),
        None,
        "nothing in the push was decoded"
    );
    // A third strike blocks the peer.
    let _ = rogue.request(a_id, push).await;
    eventually("A drops the stranger", async || {
        !a.net().peers().await.contains(&rogue.peer_id())
    })
    .await;
    assert_eq!(
        a.node.guild(&gid).unwrap().lock().unwrap().len(),
        held_before
    );
    still_chats(&alice, &guild).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_is_kept_about_strangers_that_left_is_dropped_after_a_while() {
    let (a, alice, guild, gid) = lone_guild("Forgetful", |c| {
        c.forget_peers_after = Duration::from_millis(300);
        c.catchup_interval = Duration::from_millis(100);
    })
    .await;
    let a_id = a.net().peer_id();
    let mut strangers = Vec::new();
    for _ in 0..20 {
        let rogue = rogue_peer(&a, gid).await;
        let ask = guildhall_net::protocol::Request::ChannelKeys {
            guild: gid,
            keys: vec![serde_bytes::ByteArray::new([7; 32])],
        };
        assert!(rogue.request(a_id, ask).await.is_err());
        strangers.push(rogue);
    }
    assert!(a.net().tracked_peers().await >= 20);
    drop(strangers);
    eventually("A forgets the strangers that left", async || {
        a.net().tracked_peers().await == 0
    })
    .await;
    still_chats(&alice, &guild).await;
}
