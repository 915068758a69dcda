//! Federation over real libp2p on loopback: guilds joined by invite across nodes, live
//! replication, partitions that heal, and peers that lie.

mod common;

use std::time::{Duration, Instant};

use common::attacker::rogue_peer;
use common::{TestNode, WAIT, dispatch_where, eventually};
use guildhall_client::{Client, Gateway, Page, User};
use guildhall_proto::id::GuildId;

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

    // A replay is harmless and costs the sender nothing; an op of another guild pushed on this
    // guild's topic is refused.
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
        a.net().faults().await.contains_key("wrong_topic")
    })
    .await;
    assert_eq!(
        a.net().faults().await.into_iter().collect::<Vec<_>>(),
        vec![("wrong_topic", 1)],
        "the replay was not held against the sender"
    );
    assert!(a.node.guild(&other.id.parse().unwrap()).is_err());

    // Each round differs, or gossipsub would drop the repeats as already seen.
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
        "wrong_topic",
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
    for op in unseen {
        rogue.publish(gid, op);
    }
    eventually("the flooding peer is blocked", async || {
        !a.net().peers().await.contains(&rogue.peer_id())
    })
    .await;
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
            .map(|m| m.content)
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
