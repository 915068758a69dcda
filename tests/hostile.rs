//! A stranger's node attacks a guild it knows the id of, over real libp2p on loopback: every
//! attack is refused with a stable code, the attacker is blocked or bounded, nothing it sent is
//! stored or forwarded, and honest members keep chatting across nodes.

mod common;

use common::attacker::{op_on_top, rogue_peer, stranger_peer, throwaway_key};
use common::{TestNode, dispatch_where, eventually};
use guildhall_client::{Client, Gateway, Page};
use guildhall_gateway::federation::InviteCode;
use guildhall_gateway::node::now_ms;
use guildhall_net::{NetError, NetHandle};
use guildhall_proto::body::Body;
use guildhall_proto::guild::MAX_PENDING_BYTES_PER_PEER;
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::{GuildId, OpId};

struct Guild {
    gid: GuildId,
    id: String,
    channel: String,
    alice: Client,
    bob: Client,
}

/// Alice's guild on `a`, which Bob on `b` joined.
async fn guild_on_two(a: &TestNode, b: &TestNode) -> Guild {
    let (alice, _) = a.user("alice").await;
    let guild = alice.create_guild("Under attack").await.unwrap();
    let channel = guild.first_text_channel().unwrap().id.clone();
    let invite = alice.create_invite(&guild.id, 0, 0).await.unwrap().code;
    let (bob, _) = b.user("bob").await;
    bob.accept_invite(&invite).await.unwrap();
    let gid: GuildId = guild.id.parse().unwrap();
    eventually("both nodes hold the guild alike", async || {
        let hash = |n: &TestNode| {
            n.node
                .guild(&gid)
                .ok()
                .map(|g| g.lock().unwrap().state_hash())
        };
        hash(a).is_some() && hash(a) == hash(b)
    })
    .await;
    Guild {
        gid,
        id: guild.id,
        channel,
        alice,
        bob,
    }
}

fn held(node: &TestNode, gid: &GuildId) -> usize {
    node.node.guild(gid).unwrap().lock().unwrap().len()
}

/// Publishes what `craft` makes for round 0, 1, … until `target` blocks the rogue.
async fn until_blocked(
    target: &TestNode,
    rogue: &NetHandle,
    gid: GuildId,
    craft: impl Fn(u64) -> Vec<u8>,
) {
    let rogue_id = rogue.peer_id();
    let mut round = 0;
    eventually("the target blocks the rogue", async || {
        round += 1;
        rogue.publish(gid, craft(round));
        !target.net().peers().await.contains(&rogue_id)
    })
    .await;
}

/// Alice's message reaches Bob on the other node, and a guild-state op of hers is valid on
/// both: nobody was forked by what the attacker sent.
async fn honest_members_still_chat(a: &TestNode, b: &TestNode, g: &Guild) {
    let mut bob_gw = Gateway::connect(&g.bob).await.unwrap();
    let sent = g.alice.send(&g.id, &g.channel, "still here").await.unwrap();
    dispatch_where(&mut bob_gw, "MESSAGE_CREATE", "id", &sent.id).await;
    let room = g
        .alice
        .create_channel(&g.id, "after the attack", "text")
        .await
        .unwrap();
    let room_id: OpId = room.id.parse().unwrap();
    eventually("the new channel is valid on both nodes", async || {
        [a, b].iter().all(|n| {
            let g = n.node.guild(&g.gid).unwrap();
            let g = g.lock().unwrap();
            g.verdict(&room_id).is_some_and(|v| v.is_valid())
        })
    })
    .await;
    let reply = g.bob.send(&g.id, &g.channel, "me too").await.unwrap();
    eventually("Bob's reply reaches Alice's node", async || {
        let page = g
            .alice
            .messages(&g.id, &g.channel, &Page::default())
            .await
            .unwrap();
        page.iter().any(|m| m.id == reply.id)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strangers_ops_are_refused_unstored_and_their_sender_blocked() {
    let a = TestNode::federated(&[]).await;
    let b = TestNode::federated(&[&a]).await;
    let g = guild_on_two(&a, &b).await;
    let (on_a, on_b) = (held(&a, &g.gid), held(&b, &g.gid));
    let invite = {
        let guild = a.node.guild(&g.gid).unwrap();
        let guild = guild.lock().unwrap();
        *guild.state().invites.keys().next().unwrap()
    };

    // Leaves signed by throwaway keys, on top of the newest heads: once, sixteen of these
    // steered every member's next op into a fork.
    let rogue = rogue_peer(&a, g.gid).await;
    until_blocked(&a, &rogue, g.gid, |n| {
        op_on_top(&a, g.gid, &throwaway_key(n), Body::Leave)
    })
    .await;
    // Bans of the owner by strangers, and joins with a guessed secret.
    let rogue = rogue_peer(&a, g.gid).await;
    let owner = a.node.guild(&g.gid).unwrap().lock().unwrap().state().owner;
    until_blocked(&a, &rogue, g.gid, |n| {
        let key = throwaway_key(1_000 + n);
        let body = if n % 2 == 0 {
            Body::Ban {
                member: owner,
                cutoff: 0,
                reason: String::new(),
            }
        } else {
            Body::join(&g.gid, invite, &key.user_id(), b"guess")
        };
        op_on_top(&a, g.gid, &key, body)
    })
    .await;

    let faults = a.net().faults().await;
    assert!(
        faults.get("author_not_member").is_some_and(|n| *n >= 3),
        "{faults:?}"
    );
    assert!(faults.contains_key("invite_unusable"), "{faults:?}");
    assert_eq!(
        (held(&a, &g.gid), held(&b, &g.gid)),
        (on_a, on_b),
        "nothing the rogues sent was stored here or forwarded there"
    );
    honest_members_still_chat(&a, &b, &g).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ops_parked_on_missing_deps_stay_under_the_senders_share_of_the_pending_cap() {
    let a = TestNode::federated(&[]).await;
    let b = TestNode::federated(&[&a]).await;
    let g = guild_on_two(&a, &b).await;
    let rogue = rogue_peer(&a, g.gid).await;

    // Big messages citing a guild-state op nobody has: they can only wait for it. More of
    // them than one peer's share holds.
    let content = "😀".repeat(guildhall_proto::limits::MAX_CONTENT_CHARS);
    let parked = |n: u64| {
        let key = throwaway_key(n);
        let mut env = {
            let guild = a.node.guild(&g.gid).unwrap();
            let guild = guild.lock().unwrap();
            guild.next_envelope(
                key.user_id(),
                guildhall_gateway::node::now_ms(),
                Body::MessageCreate {
                    channel: g.channel.parse().unwrap(),
                    content: content.clone().into(),
                    reply_to: None,
                },
            )
        };
        env.deps = vec![OpId(guildhall_proto::id::sha256(&[&n.to_le_bytes()]))];
        env.sign(&key).unwrap().encode()
    };
    let count = (MAX_PENDING_BYTES_PER_PEER / content.len() + 50) as u64;
    for n in 0..count {
        rogue.publish(g.gid, parked(n));
    }
    // Pushes from one peer are judged in order: once a refused op behind them is counted,
    // every parked op before it has been judged.
    let marker = op_on_top(&a, g.gid, &throwaway_key(u64::MAX), Body::Leave);
    rogue.publish(g.gid, marker);
    eventually("the marker behind the flood is refused", async || {
        a.net().faults().await.contains_key("author_not_member")
    })
    .await;
    let (pending, bytes) = {
        let guild = a.node.guild(&g.gid).unwrap();
        let guild = guild.lock().unwrap();
        (guild.pending_len(), guild.pending_bytes())
    };
    assert!(bytes <= MAX_PENDING_BYTES_PER_PEER, "{bytes} bytes pending");
    let forwarded = b.node.guild(&g.gid).unwrap().lock().unwrap().pending_len();
    assert_eq!(forwarded, 0, "what waits is not forwarded");
    assert!(
        pending < count as usize && bytes > MAX_PENDING_BYTES_PER_PEER / 2,
        "the peer's share, not the flood, ended it: {pending} of {count} pending, {bytes} bytes"
    );
    honest_members_still_chat(&a, &b, &g).await;
}

/// Whether `node` holds the op `id` of `gid`.
fn holds(node: &TestNode, gid: &GuildId, id: &str) -> bool {
    let id: OpId = id.parse().unwrap();
    node.node
        .guild(gid)
        .unwrap()
        .lock()
        .unwrap()
        .op(&id)
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stranger_is_sent_nothing_and_a_banned_members_node_stops_receiving() {
    let a = TestNode::federated(&[]).await;
    let b = TestNode::federated(&[&a]).await;
    let c = TestNode::federated(&[&a]).await;
    let g = guild_on_two(&a, &b).await;
    let code = g.alice.create_invite(&g.id, 0, 0).await.unwrap().code;
    let (carol, _) = c.user("carol").await;
    carol.accept_invite(&code).await.unwrap();
    eventually("Carol's node is entitled on Alice's", async || {
        a.net()
            .peers_entitled(g.gid)
            .await
            .contains(&c.net().peer_id())
    })
    .await;

    // A stranger that knows the guild id and dials a node holding it: its catch-ups and
    // back-fills are refused, a join without the invite's secret too, and it is sent nothing.
    let (stranger_net, stranger) = stranger_peer(&a, g.gid).await;
    let a_id = a.net().peer_id();
    eventually("the stranger's catch-up is refused", async || {
        a.net()
            .faults()
            .await
            .get("not_entitled")
            .is_some_and(|n| *n >= 1)
    })
    .await;
    let latest = (Hlc::from_parts(now_ms() + 60_000, 0), OpId([0xff; 32]));
    let refusal = |r: Result<_, NetError>| match r {
        Err(NetError::Refused(r)) => r.code,
        other => panic!("not refused: {other:?}"),
    };
    let asked = stranger_net.backfill(a_id, None, g.gid, latest).await;
    assert_eq!(refusal(asked), "not_entitled");
    let invite = InviteCode::parse(&code).unwrap().invite;
    let joined = stranger_net
        .join(a.p2p_addr(), g.gid, invite, b"a guess", None, Some(10))
        .await;
    assert_eq!(refusal(joined), "invite_secret_mismatch");
    let mut bob_gw = Gateway::connect(&g.bob).await.unwrap();
    let sent = g
        .alice
        .send(&g.id, &g.channel, "members only")
        .await
        .unwrap();
    dispatch_where(&mut bob_gw, "MESSAGE_CREATE", "id", &sent.id).await;
    eventually("Carol's node has it", async || holds(&c, &g.gid, &sent.id)).await;
    assert_eq!(stranger.received(), 0, "the stranger was sent guild ops");

    // Bob is banned: his node is sent the ban, and nothing the guild says after it.
    let bob_id = g.bob.me().await.unwrap().id;
    g.alice.ban(&g.id, &bob_id).await.unwrap();
    let bob_user = bob_id.parse().unwrap();
    eventually("Bob's node learns of the ban", async || {
        let g = b.node.guild(&g.gid).unwrap();
        let g = g.lock().unwrap();
        g.state().bans.contains_key(&bob_user)
    })
    .await;
    let after = g
        .alice
        .send(&g.id, &g.channel, "after the ban")
        .await
        .unwrap();
    eventually("Carol's node has it", async || holds(&c, &g.gid, &after.id)).await;
    let asked = b.net().backfill(a_id, None, g.gid, latest).await;
    assert_eq!(refusal(asked), "not_entitled");
    assert!(
        !holds(&b, &g.gid, &after.id),
        "the banned member's node was sent the guild's news"
    );
    let from_carol = carol.send(&g.id, &g.channel, "also private").await.unwrap();
    eventually("Alice's node has Carol's", async || {
        holds(&a, &g.gid, &from_carol.id)
    })
    .await;
    assert!(!holds(&b, &g.gid, &from_carol.id));
}
