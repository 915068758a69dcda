//! End-to-end encrypted DMs over real nodes: round trips on one node and across two federated
//! nodes, every rejection, key rotation, and a search of the node's files for plaintext.

mod common;

use common::{PASSWORD, TestNode, WAIT, dispatch_where};
use guildhall_client::dm::{Conversation, DmKeyring, DmPayload, OpenedDm};
use guildhall_client::{Client, Gateway};
use guildhall_proto::dm::{DmEnvelope, pair_conversation};
use guildhall_proto::id::{Keypair, UserId};

/// A registered user with a published DM key.
struct Person {
    client: Client,
    user: UserId,
    keyring: DmKeyring,
}

async fn person(node: &TestNode, name: &str) -> Person {
    let (client, user) = node.user(name).await;
    let keyring = DmKeyring::new(&client.export_key(PASSWORD).await.unwrap()).unwrap();
    client.publish_dm_key(&keyring).await.unwrap();
    Person {
        client,
        user: user.id.parse().unwrap(),
        keyring,
    }
}

fn message(content: &str) -> DmPayload {
    DmPayload::Message {
        content: content.into(),
        reply_to: None,
    }
}

impl Person {
    async fn send(&self, conversation: [u8; 32], to: &[&Person], payload: DmPayload) -> String {
        let members: Vec<UserId> = to.iter().map(|p| p.user).collect();
        self.client
            .send_dm(&self.keyring, conversation, &members, &payload)
            .await
            .unwrap()
            .id
    }

    /// Waits for the `DM_CREATE` of DM `id` on `gateway` and opens it.
    async fn receive(&self, gateway: &mut Gateway, id: &str) -> OpenedDm {
        let dispatch = dispatch_where(gateway, "DM_CREATE", "id", id).await;
        let envelope = hex::decode(dispatch.data["envelope"].as_str().unwrap()).unwrap();
        self.client.open_dm(&self.keyring, &envelope).await.unwrap()
    }

    /// Everything in the inbox, opened, in arrival order.
    async fn inbox(&self) -> Vec<OpenedDm> {
        let mut opened = Vec::new();
        for dm in self.client.dm_inbox(0, 500).await.unwrap() {
            opened.push(
                self.client
                    .open_dm(&self.keyring, &dm.envelope)
                    .await
                    .unwrap(),
            );
        }
        opened
    }
}

fn conversation_of(dms: &[OpenedDm]) -> Conversation {
    let mut conversation = Conversation::default();
    for dm in dms {
        conversation.apply(dm).unwrap();
    }
    conversation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dms_and_group_dms_round_trip_and_the_node_stores_no_plaintext() {
    let node = TestNode::start().await;
    let (ada, bea, cal) = (
        person(&node, "ada").await,
        person(&node, "bea").await,
        person(&node, "cal").await,
    );
    let mut bea_gateway = Gateway::connect(&bea.client).await.unwrap();
    let pair = pair_conversation(&ada.user, &bea.user);

    let secret_phrase = "the owl flies at midnight 7f3a";
    let first = ada.send(pair, &[&bea], message(secret_phrase)).await;
    let got = bea.receive(&mut bea_gateway, &first).await;
    assert_eq!(got.sender, ada.user);
    assert_eq!(got.payload, message(secret_phrase));

    let reply = DmPayload::Message {
        content: "heard you".into(),
        reply_to: Some(first.clone()),
    };
    bea.send(pair, &[&ada], reply).await;
    let edit = DmPayload::Edit {
        target: first.clone(),
        content: format!("{secret_phrase} (edited)"),
    };
    ada.send(pair, &[&bea], edit).await;
    let reaction = DmPayload::Reaction {
        target: first.clone(),
        emoji: "🦉".into(),
        add: true,
    };
    bea.send(pair, &[&ada], reaction).await;
    let doomed = ada.send(pair, &[&bea], message("delete me")).await;
    ada.send(
        pair,
        &[&bea],
        DmPayload::Delete {
            target: doomed.clone(),
        },
    )
    .await;

    // Both sides rebuild the same conversation from their inboxes.
    for who in [&ada, &bea] {
        let c = conversation_of(&who.inbox().await);
        let m = c.message(&first).unwrap();
        assert_eq!(m.content, format!("{secret_phrase} (edited)"));
        assert!(m.edited);
        assert!(m.reactions["🦉"].contains(&bea.user));
        assert_eq!(c.messages[1].reply_to.as_deref(), Some(first.as_str()));
        assert!(c.message(&doomed).unwrap().deleted);
        assert_eq!(c.members, [ada.user, bea.user].into_iter().collect());
    }

    // A group DM; cal is offline (no gateway) and finds it in the inbox later.
    let group = [42; 32];
    let hello = ada
        .send(group, &[&bea, &cal], message("group hello ca5e"))
        .await;
    let got = bea.receive(&mut bea_gateway, &hello).await;
    assert_eq!(got.members.len(), 3);
    let cal_view = cal.inbox().await;
    assert_eq!(cal_view.len(), 1);
    assert_eq!(cal_view[0].payload, message("group hello ca5e"));
    assert_eq!(cal_view[0].members.len(), 3);
    // cal was not in the 1:1: its inbox holds nothing of it, and it cannot open it.
    let ada_inbox = ada.client.dm_inbox(0, 1).await.unwrap();
    let not_for_cal = cal
        .client
        .open_dm(&cal.keyring, &ada_inbox[0].envelope)
        .await
        .unwrap_err();
    assert_eq!(not_for_cal.code(), Some("dm_not_recipient"));

    // What the node wrote to disk: no plaintext anywhere in its files.
    for entry in std::fs::read_dir(&node.node.config.data_dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for needle in [secret_phrase, "group hello ca5e", "heard you"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "found {needle:?} in the node's files"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_replayed_truncated_and_misaddressed_dms_are_refused() {
    let node = TestNode::start().await;
    let (ada, bea, cal) = (
        person(&node, "ada").await,
        person(&node, "bea").await,
        person(&node, "cal").await,
    );
    let pair = pair_conversation(&ada.user, &bea.user);
    ada.send(pair, &[&bea], message("original")).await;
    let wire = ada.client.dm_inbox(0, 1).await.unwrap()[0].envelope.clone();
    let post = |client: &Client, bytes: Vec<u8>| {
        let client = client.clone();
        async move {
            client
                .post_dm_envelope(&bytes)
                .await
                .unwrap_err()
                .code()
                .map(str::to_owned)
        }
    };

    // The node refuses: a replay, a cut envelope, a flipped byte, and a DM posted by someone
    // other than its sender.
    assert_eq!(
        post(&ada.client, wire.clone()).await.as_deref(),
        Some("dm_replayed")
    );
    assert_eq!(
        post(&ada.client, wire[..wire.len() - 10].to_vec())
            .await
            .as_deref(),
        Some("dm_truncated")
    );
    let mut flipped = wire.clone();
    let middle = wire.len() / 2;
    flipped[middle] ^= 1;
    assert_eq!(
        post(&ada.client, flipped).await.as_deref(),
        Some("bad_signature")
    );
    let identity = Keypair::from_secret(
        hex::decode(ada.client.export_key(PASSWORD).await.unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
    );
    let mut fresh = DmEnvelope::verify(&wire).unwrap().envelope;
    fresh.sent_ms += 1;
    assert_eq!(
        post(&cal.client, fresh.sign(&identity)).await.as_deref(),
        Some("not_your_dm")
    );
    // The same new envelope sent twice at once: stored and acknowledged once.
    let mut twice = DmEnvelope::verify(&wire).unwrap().envelope;
    twice.sent_ms += 3;
    let twice = twice.sign(&identity);
    let (first, second) = tokio::join!(
        ada.client.post_dm_envelope(&twice),
        ada.client.post_dm_envelope(&twice)
    );
    let mut outcomes = [first.is_ok(), second.is_ok()];
    outcomes.sort();
    assert_eq!(outcomes, [false, true]);
    let refused = first.err().or(second.err()).unwrap();
    assert_eq!(refused.code(), Some("dm_replayed"));
    assert_eq!(bea.client.dm_inbox(0, 10).await.unwrap().len(), 2);
    // Stamped an hour ahead of the node's clock.
    let mut early = DmEnvelope::verify(&wire).unwrap().envelope;
    early.sent_ms += 3_600_000;
    assert_eq!(
        post(&ada.client, early.sign(&identity)).await.as_deref(),
        Some("dm_from_future")
    );
    // To someone this node has never heard of: no account here, no key record, no home.
    let stranger = Keypair::from_secret([77; 32]).user_id();
    let mut to_stranger = DmEnvelope::verify(&wire).unwrap().envelope;
    to_stranger.wraps[1].user = stranger;
    to_stranger.sent_ms += 2;
    assert_eq!(
        post(&ada.client, to_stranger.sign(&identity))
            .await
            .as_deref(),
        Some("dm_unreachable_member")
    );

    // The recipient refuses: ciphertext altered and re-signed by the sender (a node cannot
    // re-sign; a sender altering its own DM after the fact is what this models), and a replay
    // into the conversation.
    let mut altered = DmEnvelope::verify(&wire).unwrap().envelope;
    altered.body[3] ^= 0x20;
    let error = bea
        .client
        .open_dm(&bea.keyring, &altered.sign(&identity))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("dm_tampered"));
    let opened = bea.client.open_dm(&bea.keyring, &wire).await.unwrap();
    let mut conversation = Conversation::default();
    conversation.apply(&opened).unwrap();
    assert_eq!(
        conversation.apply(&opened).unwrap_err().code(),
        "dm_replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_dm_key_keeps_old_history_readable() {
    let node = TestNode::start().await;
    let (ada, mut bea) = (person(&node, "ada").await, person(&node, "bea").await);
    let pair = pair_conversation(&ada.user, &bea.user);
    ada.send(pair, &[&bea], message("before")).await;
    let old_key = bea.keyring.public_key();
    let mut fork = bea.keyring.clone();
    bea.keyring.rotate();
    bea.client.publish_dm_key(&bea.keyring).await.unwrap();
    assert_eq!(bea.client.dm_keys(&bea.user).await.unwrap().len(), 2);
    ada.send(pair, &[&bea], message("after")).await;

    let inbox = bea.client.dm_inbox(0, 10).await.unwrap();
    let wrapped_to: Vec<[u8; 32]> = inbox
        .iter()
        .map(|dm| {
            let envelope = DmEnvelope::verify(&dm.envelope).unwrap().envelope;
            envelope
                .wraps
                .iter()
                .find(|w| w.user == bea.user)
                .unwrap()
                .key
        })
        .collect();
    assert_eq!(wrapped_to, vec![old_key, bea.keyring.public_key()]);
    let contents: Vec<DmPayload> = bea.inbox().await.into_iter().map(|d| d.payload).collect();
    assert_eq!(contents, vec![message("before"), message("after")]);

    // A second key under a version already published is refused.
    fork.rotate();
    let taken = bea.client.publish_dm_key(&fork).await.unwrap_err();
    assert_eq!(taken.code(), Some("dm_key_version_taken"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dm_between_users_on_two_nodes() {
    let home_a = TestNode::federated(&[]).await;
    let home_b = TestNode::federated(&[&home_a]).await;
    let ada = person(&home_a, "ada").await;
    let bea = person(&home_b, "bea").await;
    let mut ada_gateway = Gateway::connect(&ada.client).await.unwrap();
    let mut bea_gateway = Gateway::connect(&bea.client).await.unwrap();
    // Node A learns bea's key from its peers (node B); wait until B is connected.
    let keys = wait_for_keys(&ada.client, &bea.user).await;
    assert_eq!(keys, 1);

    let pair = pair_conversation(&ada.user, &bea.user);
    let sent = ada.send(pair, &[&bea], message("across the network")).await;
    let got = bea.receive(&mut bea_gateway, &sent).await;
    assert_eq!(got.payload, message("across the network"));

    let reply = bea.send(pair, &[&ada], message("and back")).await;
    let back = ada.receive(&mut ada_gateway, &reply).await;
    assert_eq!((back.sender, back.payload), (bea.user, message("and back")));
    assert_eq!(ada.inbox().await.len(), 2);
    assert_eq!(bea.inbox().await.len(), 2);

    // What a peer hands over is checked like a client's send: junk, a forged signature, and a
    // DM for nobody on the receiving node are refused, and nothing of them is stored.
    let wire = ada.client.dm_inbox(0, 1).await.unwrap()[0].envelope.clone();
    let mut forged = wire.clone();
    let in_body = forged.len() - 64 - 8;
    forged[in_body] ^= 1;
    let cal = person(&home_b, "cal").await;
    let dee = person(&home_b, "dee").await;
    cal.send(
        pair_conversation(&cal.user, &dee.user),
        &[&dee],
        message("local"),
    )
    .await;
    let elsewhere = cal.client.dm_inbox(0, 10).await.unwrap();
    for (junk, code) in [
        (vec![1, 2, 3], "dm_truncated"),
        (forged, "bad_signature"),
        (elsewhere[0].envelope.clone(), "not_home"),
    ] {
        match home_b
            .net()
            .deliver_dms(home_a.p2p_addr(), vec![junk])
            .await
        {
            Err(guildhall_net::NetError::Refused(r)) => assert_eq!(r.code, code),
            other => panic!("expected a refusal {code}, got {other:?}"),
        }
    }
    assert_eq!(ada.client.dm_inbox(0, 10).await.unwrap().len(), 2);
}

async fn wait_for_keys(client: &Client, user: &UserId) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let keys = client.dm_keys(user).await.unwrap();
        if !keys.is_empty() {
            return keys.len();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node A never learned bea's DM key"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
