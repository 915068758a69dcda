//! End to end over real sockets: REST and gateway clients against a node on loopback.

mod common;

use std::time::Duration;

use common::*;
use guildhall_client::{Client, ClientError, Gateway, Page};
use serde_json::json;

const VIEW_CHANNEL: u64 = 1 << 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_with_every_message_feature() {
    let node = TestNode::start().await;
    let (guild, general, people) = guild_with(&node, &["bea"]).await;
    let (ada, bea) = (&people[0].0, &people[1].0);
    let bea_id = people[1].1.id.clone();
    let mut bea_gw = Gateway::connect(bea).await.unwrap();
    let ready = bea_gw.wait_for("READY", WAIT).await.unwrap();
    assert_eq!(ready.data["guilds"][0]["id"], guild.id.as_str());

    let hello = ada.send(&guild.id, &general, "hello bea").await.unwrap();
    let got = dispatch_where(&mut bea_gw, "MESSAGE_CREATE", "id", &hello.id).await;
    assert_eq!(got.data["content"], "hello bea");
    assert_eq!(got.data["author_id"], people[0].1.id.as_str());

    let reply_id = bea_gw
        .send_message(&guild.id, &general, "hi ada", "nonce-1")
        .await
        .unwrap();
    let reply = bea
        .send_with(&guild.id, &general, "replying", None, Some(&hello.id))
        .await
        .unwrap();
    assert_eq!(reply.reply_to.as_deref(), Some(hello.id.as_str()));
    let dangling = bea
        .send_with(
            &guild.id,
            &general,
            "to nothing",
            None,
            Some(&"ab".repeat(32)),
        )
        .await
        .unwrap_err();
    assert_eq!(dangling.code(), Some("unknown_message"));

    ada.edit(&guild.id, &general, &hello.id, "hello, bea!")
        .await
        .unwrap();
    let edited = dispatch_where(&mut bea_gw, "MESSAGE_UPDATE", "id", &hello.id).await;
    assert_eq!(edited.data["content"], "hello, bea!");
    assert!(edited.data["edited_at_ms"].is_u64());

    bea.react(&guild.id, &general, &hello.id, "👍")
        .await
        .unwrap();
    ada.react(&guild.id, &general, &hello.id, "👍")
        .await
        .unwrap();
    bea.unreact(&guild.id, &general, &hello.id, "👍")
        .await
        .unwrap();
    ada.pin(&guild.id, &general, &hello.id).await.unwrap();
    let pins = bea.pins(&guild.id, &general).await.unwrap();
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0].reactions.len(), 1);
    assert_eq!(pins[0].reactions[0].users, vec![people[0].1.id.clone()]);

    let thread = bea
        .create_thread(&guild.id, &general, "about hello", Some(&hello.id))
        .await
        .unwrap();
    let in_thread = ada.send(&guild.id, &thread, "in the thread").await.unwrap();
    let got = dispatch_where(&mut bea_gw, "MESSAGE_CREATE", "id", &in_thread.id).await;
    assert_eq!(got.data["channel_id"], thread.as_str());
    let with_thread = ada
        .messages(&guild.id, &general, &Page::default())
        .await
        .unwrap();
    assert_eq!(with_thread[0].thread_id.as_deref(), Some(thread.as_str()));

    bea.delete_message(&guild.id, &general, &reply_id)
        .await
        .unwrap();
    dispatch_where(&mut bea_gw, "MESSAGE_DELETE", "id", &reply_id).await;
    let forbidden = bea
        .delete_message(&guild.id, &general, &hello.id)
        .await
        .unwrap_err();
    assert_eq!(forbidden.code(), Some("missing_permission"));

    let history = ada
        .messages(&guild.id, &general, &Page::default())
        .await
        .unwrap();
    let ids: Vec<&str> = history.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, vec![hello.id.as_str(), reply.id.as_str()]);

    let found = bea.search(&guild.id, "THREAD").await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, in_thread.id);
    bea.mark_read(&guild.id, &general, &reply.id).await.unwrap();
    let read = bea.read_states().await.unwrap();
    assert_eq!(
        read,
        json!([{ "channel_id": general, "last_read_id": reply.id }])
    );
    let mut again = Gateway::connect(bea).await.unwrap();
    let ready = again.wait_for("READY", WAIT).await.unwrap();
    assert_eq!(ready.data["read_states"], read);
    let wrong = bea
        .mark_read(&guild.id, &general, &in_thread.id)
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Some("unknown_message"));
    let members = ada.guild(&guild.id).await.unwrap().member_count;
    assert_eq!(members, 2);
    assert!(!bea_id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_with_cursors() {
    let node = TestNode::start().await;
    let (guild, general, people) = guild_with(&node, &[]).await;
    let ada = &people[0].0;
    let mut sent = Vec::new();
    for i in 0..25 {
        sent.push(
            ada.send(&guild.id, &general, &format!("m{i}"))
                .await
                .unwrap()
                .id,
        );
    }
    let page = |before: Option<&str>, after: Option<&str>| Page {
        before: before.map(str::to_owned),
        after: after.map(str::to_owned),
        limit: Some(10),
    };
    let newest = ada
        .messages(&guild.id, &general, &page(None, None))
        .await
        .unwrap();
    let ids =
        |ms: &[guildhall_client::Message]| ms.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&newest), sent[15..].to_vec());
    let older = ada
        .messages(&guild.id, &general, &page(Some(&sent[15]), None))
        .await
        .unwrap();
    assert_eq!(ids(&older), sent[5..15].to_vec());
    let after = ada
        .messages(&guild.id, &general, &page(None, Some(&sent[2])))
        .await
        .unwrap();
    assert_eq!(ids(&after), sent[3..13].to_vec());
    let bad = ada
        .messages(
            &guild.id,
            &general,
            &Page {
                limit: Some(0),
                ..Page::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("invalid_limit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_view_channel_neither_receives_nor_fetches() {
    let node = TestNode::start().await;
    let (guild, general, people) = guild_with(&node, &["bea", "cal"]).await;
    let (ada, bea, cal) = (&people[0].0, &people[1].0, &people[2].0);
    let secret = ada
        .create_channel(&guild.id, "secret", "text")
        .await
        .unwrap();
    ada.set_member_overwrite(&guild.id, &secret.id, &people[2].1.id, 0, VIEW_CHANNEL)
        .await
        .unwrap();
    let mut bea_gw = Gateway::connect(bea).await.unwrap();
    let mut cal_gw = Gateway::connect(cal).await.unwrap();

    let hidden = ada
        .send(&guild.id, &secret.id, "not for cal")
        .await
        .unwrap();
    let open = ada.send(&guild.id, &general, "for everyone").await.unwrap();
    dispatch_where(&mut bea_gw, "MESSAGE_CREATE", "id", &hidden.id).await;
    // Dispatches are in commit order: once cal has the later message, the hidden one was skipped.
    dispatch_where(&mut cal_gw, "MESSAGE_CREATE", "id", &open.id).await;
    assert!(cal_gw.pending().all(|d| d.data["id"] != hidden.id.as_str()));
    let refused = cal
        .messages(&guild.id, &secret.id, &Page::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("missing_permission"));
    let channels = cal.channels(&guild.id).await.unwrap();
    assert!(channels.iter().all(|c| c.id != secret.id));
    let cannot_send = cal
        .send(&guild.id, &secret.id, "let me in")
        .await
        .unwrap_err();
    assert_eq!(cannot_send.code(), Some("missing_permission"));
    assert!(cal.search(&guild.id, "cal").await.unwrap().is_empty());

    // Subscriptions narrow further: bea asks for #secret only.
    bea_gw
        .subscribe(&guild.id, Some(vec![secret.id.clone()]))
        .await
        .unwrap();
    let skipped = ada
        .send(&guild.id, &general, "bea unsubscribed")
        .await
        .unwrap();
    let wanted = ada
        .send(&guild.id, &secret.id, "bea subscribed")
        .await
        .unwrap();
    dispatch_where(&mut bea_gw, "MESSAGE_CREATE", "id", &wanted.id).await;
    assert!(
        bea_gw
            .pending()
            .all(|d| d.data["id"] != skipped.id.as_str())
    );

    // Deleting #secret tells those who could see it, and does not reveal it to cal.
    ada.delete_channel(&guild.id, &secret.id).await.unwrap();
    let later = ada.send(&guild.id, &general, "after").await.unwrap();
    dispatch_where(&mut bea_gw, "CHANNEL_DELETE", "id", &secret.id).await;
    dispatch_where(&mut cal_gw, "MESSAGE_CREATE", "id", &later.id).await;
    assert!(cal_gw.pending().all(|d| d.name != "CHANNEL_DELETE"));
}

/// The invite code's secret is checked by the join's proof, and no op the node holds carries it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_secrets_stay_out_of_the_guilds_ops() {
    let node = TestNode::start().await;
    let (guild, _, people) = guild_with(&node, &[]).await;
    let ada = &people[0].0;
    let code = ada.create_invite(&guild.id, 0, 0).await.unwrap().code;
    let (bea, _) = node.user("bea").await;
    let parts: Vec<&str> = code.split('.').collect();
    let secret = hex::decode(parts[2]).unwrap();
    let wrong = format!("{}.{}.{}", parts[0], parts[1], "00".repeat(16));
    let refused = bea.accept_invite(&wrong).await.unwrap_err();
    assert_eq!(refused.code(), Some("invite_secret_mismatch"));
    bea.accept_invite(&code).await.unwrap();

    let gid: guildhall_proto::id::GuildId = guild.id.parse().unwrap();
    let g = node.node.guild(&gid).unwrap();
    let g = g.lock().unwrap();
    let mut joins = 0;
    for op in g.ops() {
        let wire = op.encode();
        assert!(!wire.windows(secret.len()).any(|w| w == secret));
        joins += matches!(op.envelope().body, guildhall_proto::body::Body::Join { .. }) as usize;
    }
    assert_eq!(joins, 1, "bea's join, and no other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_stops_everything() {
    let node = TestNode::start().await;
    let (guild, general, people) = guild_with(&node, &["bea"]).await;
    let (ada, bea) = (&people[0].0, &people[1].0);
    let bea_id = people[1].1.id.clone();
    let mut bea_gw = Gateway::connect(bea).await.unwrap();
    bea.send(&guild.id, &general, "before").await.unwrap();
    ada.ban(&guild.id, &bea_id).await.unwrap();
    dispatch_where(&mut bea_gw, "GUILD_BAN_ADD", "user_id", &bea_id).await;
    let after = ada
        .send(&guild.id, &general, "after the ban")
        .await
        .unwrap();
    let refused = bea
        .send(&guild.id, &general, "still here?")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some("banned"));
    let gone = bea
        .messages(&guild.id, &general, &Page::default())
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Some("banned"));
    assert!(bea.guilds().await.unwrap().is_empty());
    // A later event for the guild never reaches the banned member.
    ada.send(&guild.id, &general, "marker").await.unwrap();
    assert!(matches!(
        bea_gw
            .wait_for("MESSAGE_CREATE", Duration::from_millis(300))
            .await,
        Err(ClientError::Timeout(_))
    ));
    assert!(bea_gw.pending().all(|d| d.data["id"] != after.id.as_str()));
    ada.unban(&guild.id, &bea_id).await.unwrap();
    let rejoin = bea
        .accept_invite(&ada.create_invite(&guild.id, 1, 60).await.unwrap().code)
        .await;
    assert!(rejoin.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_what_was_missed_without_gaps_or_duplicates() {
    let node = TestNode::start().await;
    let (guild, general, people) = guild_with(&node, &["bea"]).await;
    let (ada, bea) = (&people[0].0, &people[1].0);
    let mut gw = Gateway::connect(bea).await.unwrap();
    let first = ada.send(&guild.id, &general, "first").await.unwrap();
    dispatch_where(&mut gw, "MESSAGE_CREATE", "id", &first.id).await;
    // The heartbeat tells the node what we have; it may forget that, and resume still works.
    gw.heartbeat().await.unwrap();

    gw.drop_connection().await;
    let mut missed = Vec::new();
    for i in 0..5 {
        missed.push(
            ada.send(&guild.id, &general, &format!("missed {i}"))
                .await
                .unwrap()
                .id,
        );
    }
    assert!(gw.reconnect().await.unwrap(), "the session resumed");
    let after = ada.send(&guild.id, &general, "after").await.unwrap();
    let mut seen = Vec::new();
    loop {
        let d = gw.wait_for("MESSAGE_CREATE", WAIT).await.unwrap();
        let id = d.data["id"].as_str().unwrap().to_owned();
        seen.push(id.clone());
        if id == after.id {
            break;
        }
    }
    missed.push(after.id);
    assert_eq!(seen, missed);

    // A session nobody resumes in time is gone: resume falls back to identify.
    let stale = TestNode::start_with(|c| c.session_ttl = Duration::from_millis(200)).await;
    let (carl, _) = stale.user("carl").await;
    let mut gw = Gateway::connect(&carl).await.unwrap();
    gw.drop_connection().await;
    let resumed = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stale.node.sessions.is_empty() {
            break gw.reconnect().await.unwrap();
        }
    };
    assert!(!resumed, "an expired session cannot resume");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_nonce_never_duplicates() {
    let node = TestNode::start().await;
    let (guild, general, people) = guild_with(&node, &[]).await;
    let ada = &people[0].0;
    let (a, b) = tokio::join!(
        ada.send_with(&guild.id, &general, "once", Some("n-1"), None),
        ada.send_with(&guild.id, &general, "once", Some("n-1"), None),
    );
    assert_eq!(a.unwrap().id, b.unwrap().id);
    let mut gw = Gateway::connect(ada).await.unwrap();
    let x = gw
        .send_message(&guild.id, &general, "twice?", "n-2")
        .await
        .unwrap();
    let y = gw
        .send_message(&guild.id, &general, "twice?", "n-2")
        .await
        .unwrap();
    assert_eq!(x, y);
    let history = ada
        .messages(&guild.id, &general, &Page::default())
        .await
        .unwrap();
    assert_eq!(history.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_is_forgotten_after_its_retention() {
    let node = TestNode::start_with(|c| c.nonce_retention = Duration::from_millis(50)).await;
    let (guild, general, people) = guild_with(&node, &[]).await;
    let ada = &people[0].0;
    let send = || ada.send_with(&guild.id, &general, "again", Some("n-old"), None);
    let first = send().await.unwrap().id;
    let later = tokio::time::timeout(WAIT, async {
        loop {
            let id = send().await.unwrap().id;
            if id != first {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the nonce expires");
    assert_ne!(later, first);
}

async fn raw(
    node: &TestNode,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(method.parse().unwrap(), format!("{}{path}", node.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_codes_and_the_node_keeps_serving() {
    let node = TestNode::start_with(|c| {
        c.user_rate = 1.0;
        c.user_burst = 40.0;
    })
    .await;
    let (guild, general, people) = guild_with(&node, &[]).await;
    let ada = &people[0].0;
    let token = ada.token().unwrap().to_owned();
    let path = format!("/api/v1/guilds/{}/channels/{general}/messages", guild.id);
    let t = Some(token.as_str());
    let bad_query = format!("{path}?limit=lots");
    let cases = [
        (
            "POST",
            path.as_str(),
            t,
            "{\"content\": ",
            400,
            "invalid_json",
        ),
        (
            "POST",
            path.as_str(),
            t,
            "{\"content\": 5}",
            400,
            "invalid_payload",
        ),
        (
            "POST",
            path.as_str(),
            t,
            "{\"content\": \"\"}",
            400,
            "invalid_content",
        ),
        ("GET", "/api/v1/guilds/xyz", t, "", 400, "invalid_id"),
        ("GET", "/api/v1/nope", t, "", 404, "unknown_endpoint"),
        ("GET", bad_query.as_str(), t, "", 400, "invalid_query"),
        (
            "GET",
            "/api/v1/guilds",
            Some("forged"),
            "",
            401,
            "invalid_token",
        ),
        (
            "POST",
            "/api/v1/auth/register",
            None,
            "{\"username\": \"A!\", \"password\": \"long enough\"}",
            400,
            "invalid_username",
        ),
        (
            "POST",
            "/api/v1/auth/login",
            None,
            "{\"username\": \"owner\", \"password\": \"wrong password\"}",
            401,
            "invalid_credentials",
        ),
    ];
    for (method, path, token, body, status, code) in cases {
        let (got_status, got) = raw(&node, method, path, token, body).await;
        assert_eq!(
            (got_status, got["code"].as_str()),
            (status, Some(code)),
            "{method} {path} {body}"
        );
        assert!(got["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let nowhere = ada
        .send(&guild.id, &"cd".repeat(32), "hello?")
        .await
        .unwrap_err();
    assert_eq!(nowhere.code(), Some("unknown_channel"));
    let guild_path = format!("/api/v1/guilds/{}", guild.id);
    let (status, body) = raw(&node, "PATCH", &guild_path, t, "{\"description\": \"\"}").await;
    assert_eq!((status, body["code"].as_str()), (400, Some("empty_update")));
    let mut gw = Gateway::connect(ada).await.unwrap();
    let blank = gw
        .send_message(&guild.id, &general, "", "blank")
        .await
        .unwrap_err();
    assert_eq!(blank.code(), Some("invalid_content"));
    let long = json!({ "content": "x".repeat(4_001) }).to_string();
    assert_eq!(
        raw(&node, "POST", &path, t, &long).await.1["code"],
        "invalid_content"
    );
    let huge = json!({ "content": "x".repeat(100_000) }).to_string();
    let (status, body) = raw(&node, "POST", &path, t, &huge).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    // A flood is refused with retry_after, and the node still serves everyone else.
    let mut limited = None;
    for i in 0..60 {
        if let Err(e) = ada.send(&guild.id, &general, &format!("flood {i}")).await {
            limited = Some(e);
            break;
        }
    }
    match limited {
        Some(ClientError::Api {
            status: 429,
            code,
            retry_after: Some(r),
            ..
        }) => {
            assert_eq!(code, "rate_limited");
            assert!(r > 0.0);
        }
        other => panic!("expected a rate limit, got {other:?}"),
    }
    let (bea, _) = node.user("bea").await;
    assert!(bea.me().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_address_is_throttled_before_authentication() {
    let node = TestNode::start_with(|c| {
        c.ip_rate = 1.0;
        c.ip_burst = 5.0;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(raw(&node, "GET", "/health", None, "").await.0);
    }
    assert_eq!(statuses[..5], [200; 5]);
    let (status, body) = raw(&node, "GET", "/api/v1/guilds", Some("x"), "").await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")));
    assert!(body["retry_after"].as_f64().is_some_and(|r| r > 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_close_codes_say_why() {
    let node = TestNode::start_with(|c| c.heartbeat_interval = Duration::from_millis(300)).await;
    let (client, _) = node.user("ada").await;
    let expect_close = async |frame: Option<&str>, code: u16| {
        let mut gw = Gateway::connect(&client).await.unwrap();
        if let Some(f) = frame {
            gw.send_raw(f).await.unwrap();
        }
        assert_eq!(gw.closed(WAIT).await.unwrap(), code, "{frame:?}");
    };
    expect_close(Some("{\"op\": \"dance\"}"), 4001).await;
    expect_close(Some("not json"), 4002).await;
    expect_close(
        Some("{\"op\": \"identify\", \"d\": {\"token\": \"x\"}}"),
        4005,
    )
    .await;
    let big = format!(
        "{{\"op\": \"heartbeat\", \"pad\": \"{}\"}}",
        "x".repeat(70_000)
    );
    expect_close(Some(&big), 4010).await;
    // No heartbeat within 1.5 intervals.
    expect_close(None, 4009).await;
    let bad = Client::new(&node.base).with_token("forged");
    assert!(matches!(
        Gateway::connect(&bad).await,
        Err(ClientError::Closed { code: 4004, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_typing_reach_guild_members() {
    let node = TestNode::start().await;
    let (guild, general, people) = guild_with(&node, &["bea"]).await;
    let (ada, bea) = (&people[0].0, &people[1].0);
    let ada_id = people[0].1.id.clone();
    let mut bea_gw = Gateway::connect(bea).await.unwrap();
    let mut ada_gw = Gateway::connect(ada).await.unwrap();
    let online = dispatch_where(&mut bea_gw, "PRESENCE_UPDATE", "user_id", &ada_id).await;
    assert_eq!(online.data["status"], "online");
    ada_gw.set_presence("dnd").await.unwrap();
    let dnd = dispatch_where(&mut bea_gw, "PRESENCE_UPDATE", "user_id", &ada_id).await;
    assert_eq!(dnd.data["status"], "dnd");
    ada_gw.set_presence("offline").await.unwrap();
    let invisible = dispatch_where(&mut bea_gw, "PRESENCE_UPDATE", "user_id", &ada_id).await;
    assert_eq!(
        invisible.data["status"], "offline",
        "offline while connected is invisible"
    );
    ada_gw.set_presence("idle").await.unwrap();
    let idle = dispatch_where(&mut bea_gw, "PRESENCE_UPDATE", "user_id", &ada_id).await;
    assert_eq!(idle.data["status"], "idle");
    ada_gw.typing(&guild.id, &general).await.unwrap();
    let typing = dispatch_where(&mut bea_gw, "TYPING_START", "user_id", &ada_id).await;
    assert_eq!(typing.data["channel_id"], general.as_str());
    let thread = ada
        .create_thread(&guild.id, &general, "side", None)
        .await
        .unwrap();
    ada_gw.typing(&guild.id, &thread).await.unwrap();
    let in_thread = dispatch_where(&mut bea_gw, "TYPING_START", "channel_id", &thread).await;
    assert_eq!(in_thread.data["user_id"], ada_id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_moves_between_nodes_with_key_export() {
    let a = TestNode::start().await;
    let b = TestNode::start().await;
    let (ada, me) = a.user("ada").await;
    let secret_key = ada.export_key(PASSWORD).await.unwrap();
    let (status, moved) = raw(
        &b,
        "POST",
        "/api/v1/auth/register",
        None,
        &json!({ "username": "ada2", "password": PASSWORD, "secret_key": secret_key }).to_string(),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(moved["user"]["id"], me.id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_deletes_a_guild_for_everyone() {
    let node = TestNode::start().await;
    let (guild, general, people) = guild_with(&node, &["bea"]).await;
    let (ada, bea) = (&people[0].0, &people[1].0);
    let mut bea_gw = Gateway::connect(bea).await.unwrap();
    let refused = bea.delete_guild(&guild.id).await.unwrap_err();
    assert_eq!(refused.code(), Some("owner_only"));
    ada.delete_guild(&guild.id).await.unwrap();
    dispatch_where(&mut bea_gw, "GUILD_DELETE", "id", &guild.id).await;
    assert!(bea.guilds().await.unwrap().is_empty());
    assert!(ada.guilds().await.unwrap().is_empty());
    let gone = ada.send(&guild.id, &general, "echo?").await.unwrap_err();
    assert_eq!(gone.code(), Some("guild_deleted"));
    assert!(matches!(gone, ClientError::Api { status: 410, .. }));
    let gone = ada.guild(&guild.id).await.unwrap_err();
    assert_eq!(gone.code(), Some("guild_deleted"));
    // Outsiders find no such guild, deleted or not, on reads and writes alike.
    let (stranger, _) = node.user("stranger").await;
    for refused in [
        stranger.guild(&guild.id).await.unwrap_err(),
        stranger.send(&guild.id, &general, "hi").await.unwrap_err(),
    ] {
        assert_eq!(refused.code(), Some("unknown_guild"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_ends_the_gateway_session() {
    let node = TestNode::start().await;
    let (ada, _) = node.user("ada").await;
    let mut gw = Gateway::connect(&ada).await.unwrap();
    ada.logout().await.unwrap();
    assert_eq!(gw.closed(WAIT).await.unwrap(), 4004);
    assert!(!gw.reconnect().await.is_ok_and(|resumed| resumed));
    assert_eq!(ada.me().await.unwrap_err().code(), Some("invalid_token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_renamed_recolored_and_moved_by_patch() {
    let node = TestNode::start().await;
    let (guild, _, people) = guild_with(&node, &[]).await;
    let token = people[0].0.token().unwrap().to_owned();
    let roles = format!("/api/v1/guilds/{}/roles", guild.id);
    let (status, created) = raw(
        &node,
        "POST",
        &roles,
        Some(&token),
        &json!({ "name": "mods", "permissions": "8192", "color": 255, "position": 1 }).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let role = format!("{roles}/{}", created["id"].as_str().unwrap());
    let patch = |body: serde_json::Value| {
        let (node, role, token) = (&node, &role, &token);
        async move { raw(node, "PATCH", role, Some(token), &body.to_string()).await }
    };
    assert_eq!(
        patch(json!({ "name": "moderators", "color": 0x00ff00 }))
            .await
            .0,
        204
    );
    assert_eq!(patch(json!({ "position": 2 })).await.0, 204);
    let shown: serde_json::Value = {
        let (_, g) = raw(
            &node,
            "GET",
            &format!("/api/v1/guilds/{}", guild.id),
            Some(&token),
            "",
        )
        .await;
        g["roles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == created["id"])
            .cloned()
            .unwrap()
    };
    assert_eq!(shown["name"], "moderators");
    assert_eq!(shown["color"], 0x00ff00);
    assert_eq!(shown["position"], 2);
    assert_eq!(
        shown["permissions"], "8192",
        "permissions kept when only the position moves"
    );

    let code = |r: (u16, serde_json::Value)| (r.0, r.1["code"].as_str().unwrap_or("").to_owned());
    assert_eq!(code(patch(json!({})).await), (400, "empty_update".into()));
    assert_eq!(
        code(patch(json!({ "color": 0x1000000 })).await),
        (400, "invalid_payload".into())
    );
    assert_eq!(
        code(patch(json!({ "name": " " })).await),
        (400, "invalid_name".into())
    );
    let unknown = format!("{roles}/{}", "ab".repeat(32));
    assert_eq!(
        code(
            raw(
                &node,
                "PATCH",
                &unknown,
                Some(&token),
                &json!({ "position": 1 }).to_string()
            )
            .await
        ),
        (404, "unknown_role".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_taken_over_elsewhere_closes_the_old_connection_with_4012() {
    let node = TestNode::start().await;
    let (guild, general, people) = guild_with(&node, &["bea"]).await;
    let (ada, bea) = (&people[0].0, &people[1].0);
    let mut old = Gateway::connect(bea).await.unwrap();
    let first = ada.send(&guild.id, &general, "first").await.unwrap();
    dispatch_where(&mut old, "MESSAGE_CREATE", "id", &first.id).await;

    let (mut new, resumed) = Gateway::resume(bea, &old.session_id, old.seq)
        .await
        .unwrap();
    assert!(resumed, "a live session can be taken over");
    assert_eq!(old.closed(WAIT).await.unwrap(), 4012);
    let next = ada.send(&guild.id, &general, "next").await.unwrap();
    dispatch_where(&mut new, "MESSAGE_CREATE", "id", &next.id).await;

    let (_, resumed) = Gateway::resume(bea, &"00".repeat(16), 0).await.unwrap();
    assert!(!resumed, "an unknown session falls back to a fresh one");
}
