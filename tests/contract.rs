//! The client contract, pinned: the status and JSON of every REST response, and the gateway
//! dispatches, of one scripted session against a real node, compared with
//! `tests/snapshots/contract.json`. Ids, tokens, secrets and times are replaced by
//! placeholders numbered in order of first appearance, so a run is the same every time; users
//! import fixed keys, so sorting by user id is too. A change to what clients see fails here;
//! when the change is meant, `GUILDHALL_REGENERATE_SNAPSHOTS=1` rewrites the snapshot, and the
//! diff is the contract's.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::{TestNode, WAIT};
use guildhall_client::{Client, Gateway};
use serde_json::{Value, json};

/// Replaces what differs between runs by placeholders, the same value by the same one.
#[derive(Default)]
struct Placeholders {
    seen: HashMap<String, String>,
}

/// Keys whose values are times or clocks.
const TIME_KEYS: &[&str] = &["hlc", "uptime_s"];

impl Placeholders {
    fn name(&mut self, raw: &str, kind: &str) -> String {
        let next = self.seen.len() + 1;
        self.seen
            .entry(raw.to_owned())
            .or_insert_with(|| format!("<{kind} {next}>"))
            .clone()
    }

    /// Every run of 32 or more hex digits in `text`, named.
    fn text(&mut self, text: &str) -> String {
        let mut out = String::new();
        let mut run = String::new();
        for c in text.chars().chain(std::iter::once(' ')) {
            if c.is_ascii_hexdigit() {
                run.push(c);
                continue;
            }
            if run.len() >= 32 {
                out.push_str(&self.name(&run, "hex"));
            } else {
                out.push_str(&run);
            }
            run.clear();
            out.push(c);
        }
        out.pop();
        out
    }

    fn value(&mut self, key: Option<&str>, value: &Value) -> Value {
        let is_time = key.is_some_and(|k| k.ends_with("_ms") || TIME_KEYS.contains(&k));
        // Clocks are milliseconds since 1970 (an HLC packs them in its high bits); small
        // numbers (a 0 for "never") are contract.
        let a_clock = match value {
            Value::Number(n) => n.as_u64().is_some_and(|n| n >= 100_000_000_000),
            Value::String(s) => s.parse::<u64>().is_ok_and(|n| n >= 100_000_000_000),
            _ => false,
        };
        match value {
            _ if is_time && a_clock => json!("<time>"),
            Value::String(s) => json!(self.text(s)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.value(key, v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.text(k), self.value(Some(k), v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

struct Recorder {
    http: reqwest::Client,
    base: String,
    placeholders: Placeholders,
    entries: Vec<Value>,
}

impl Recorder {
    /// One REST call as `who` (a token), recorded with the path as the script wrote it.
    async fn call(
        &mut self,
        who: Option<&str>,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let mut request = self
            .http
            .request(method.clone(), format!("{}/api/v1{path}", self.base));
        if let Some(token) = who {
            request = request.bearer_auth(token);
        }
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let answer: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| json!(text))
        };
        let entry = json!({
            "request": format!("{method} {}", self.placeholders.text(path)),
            "body": body.map(|b| self.placeholders.value(None, &b)),
            "status": status,
            "response": self.placeholders.value(None, &answer),
        });
        self.entries.push(entry);
        answer
    }

    fn dispatch(&mut self, to: &str, dispatch: &guildhall_client::Dispatch) {
        let entry = json!({
            "dispatch": format!("{} to {to}", dispatch.name),
            "data": self.placeholders.value(None, &dispatch.data),
        });
        self.entries.push(entry);
    }
}

/// The next dispatch named `name` about `id`, skipping others.
async fn dispatch_about(gw: &mut Gateway, name: &str, id: &str) -> guildhall_client::Dispatch {
    loop {
        let d = gw.wait_for(name, WAIT).await.unwrap();
        if d.data["id"] == id {
            return d;
        }
    }
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rest_responses_and_gateway_dispatches_keep_their_shape() {
    use reqwest::Method as M;
    let node = TestNode::start().await;
    let mut r = Recorder {
        http: reqwest::Client::new(),
        base: node.base.clone(),
        placeholders: Placeholders::default(),
        entries: Vec::new(),
    };
    let password = common::PASSWORD;

    // Accounts, with imported keys so that user ids (and orders by them) are fixed.
    let mut tokens = Vec::new();
    for (name, key) in [("ada", [1u8; 32]), ("bea", [2u8; 32])] {
        let body =
            json!({ "username": name, "password": password, "secret_key": hex::encode(key) });
        let answer = r.call(None, M::POST, "/auth/register", Some(body)).await;
        tokens.push(answer["token"].as_str().unwrap().to_owned());
    }
    let (ada, bea) = (tokens[0].clone(), tokens[1].clone());
    let ada_id = r.call(Some(&ada), M::GET, "/users/@me", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bea_id = r.call(Some(&bea), M::GET, "/users/@me", None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    r.call(
        None,
        M::POST,
        "/auth/register",
        Some(json!({ "username": "ada", "password": password })),
    )
    .await;
    r.call(
        None,
        M::POST,
        "/auth/login",
        Some(json!({ "username": "ada", "password": "wrong password" })),
    )
    .await;
    r.call(None, M::GET, "/users/@me", None).await;

    // A guild, its channels and an invite bea accepts, watched on bea's gateway.
    let guild = r
        .call(
            Some(&ada),
            M::POST,
            "/guilds",
            Some(json!({ "name": "Contract" })),
        )
        .await;
    let g = id_of(&guild);
    let bea_client = Client::login(&node.base, "bea", password).await.unwrap().0;
    let mut bea_gw = Gateway::connect(&bea_client).await.unwrap();
    let ready = bea_gw.wait_for("READY", WAIT).await.unwrap();
    r.dispatch("bea", &ready);
    let invite = r
        .call(
            Some(&ada),
            M::POST,
            &format!("/guilds/{g}/invites"),
            Some(json!({})),
        )
        .await;
    let code = invite["code"].as_str().unwrap().to_owned();
    r.call(
        Some(&bea),
        M::POST,
        &format!("/invites/{code}/accept"),
        Some(json!({})),
    )
    .await;
    let ada_client = Client::login(&node.base, "ada", password).await.unwrap().0;
    let mut ada_gw = Gateway::connect(&ada_client).await.unwrap();
    ada_gw.wait_for("READY", WAIT).await.unwrap();
    r.call(Some(&ada), M::GET, &format!("/guilds/{g}/invites"), None)
        .await;
    r.call(Some(&ada), M::GET, "/guilds", None).await;
    r.call(Some(&bea), M::GET, &format!("/guilds/{g}"), None)
        .await;
    let category = r
        .call(
            Some(&ada),
            M::POST,
            &format!("/guilds/{g}/channels"),
            Some(json!({ "name": "Talk", "kind": "category", "position": 5 })),
        )
        .await;
    let d = bea_gw.wait_for("CHANNEL_CREATE", WAIT).await.unwrap();
    r.dispatch("bea", &d);
    let topics = r
        .call(
            Some(&ada),
            M::POST,
            &format!("/guilds/{g}/channels"),
            Some(json!({ "name": "topics", "parent_id": id_of(&category), "position": 6 })),
        )
        .await;
    let c = id_of(&topics);
    r.call(
        Some(&ada),
        M::PATCH,
        &format!("/guilds/{g}/channels/{c}"),
        Some(json!({ "topic": "what we talk about" })),
    )
    .await;
    r.call(Some(&bea), M::GET, &format!("/guilds/{g}/channels"), None)
        .await;

    // Messages and everything done to them.
    let sent = r
        .call(
            Some(&ada),
            M::POST,
            &format!("/guilds/{g}/channels/{c}/messages"),
            Some(json!({ "content": "hello, bea", "nonce": "n1" })),
        )
        .await;
    let m = id_of(&sent);
    let d = bea_gw.wait_for("MESSAGE_CREATE", WAIT).await.unwrap();
    r.dispatch("bea", &d);
    let path = format!("/guilds/{g}/channels/{c}/messages/{m}");
    r.call(
        Some(&ada),
        M::PATCH,
        &path,
        Some(json!({ "content": "hello, bea!" })),
    )
    .await;
    let d = bea_gw.wait_for("MESSAGE_UPDATE", WAIT).await.unwrap();
    r.dispatch("bea", &d);
    r.call(
        Some(&bea),
        M::PATCH,
        &path,
        Some(json!({ "content": "not mine" })),
    )
    .await;
    r.call(
        Some(&bea),
        M::PUT,
        &format!("{path}/reactions/%F0%9F%91%8D"),
        None,
    )
    .await;
    r.call(
        Some(&ada),
        M::PUT,
        &format!("/guilds/{g}/channels/{c}/pins/{m}"),
        None,
    )
    .await;
    r.call(
        Some(&bea),
        M::GET,
        &format!("/guilds/{g}/channels/{c}/pins"),
        None,
    )
    .await;
    let reply = r
        .call(
            Some(&bea),
            M::POST,
            &format!("/guilds/{g}/channels/{c}/messages"),
            Some(json!({ "content": "hi ada", "reply_to": m })),
        )
        .await;
    let d = dispatch_about(&mut ada_gw, "MESSAGE_CREATE", &id_of(&reply)).await;
    r.dispatch("ada", &d);
    let thread = r
        .call(
            Some(&bea),
            M::POST,
            &format!("/guilds/{g}/channels/{c}/threads"),
            Some(json!({ "name": "a side thread", "message_id": m })),
        )
        .await;
    let d = ada_gw.wait_for("THREAD_CREATE", WAIT).await.unwrap();
    r.dispatch("ada", &d);
    let t = id_of(&thread);
    r.call(
        Some(&ada),
        M::POST,
        &format!("/guilds/{g}/channels/{t}/messages"),
        Some(json!({ "content": "in the thread" })),
    )
    .await;
    r.call(
        Some(&bea),
        M::GET,
        &format!("/guilds/{g}/channels/{c}/threads"),
        None,
    )
    .await;
    r.call(
        Some(&bea),
        M::GET,
        &format!("/guilds/{g}/channels/{c}/messages?limit=10"),
        None,
    )
    .await;
    r.call(
        Some(&bea),
        M::GET,
        &format!("/guilds/{g}/search?q=hello"),
        None,
    )
    .await;
    r.call(
        Some(&bea),
        M::PUT,
        &format!("/guilds/{g}/channels/{c}/read"),
        Some(json!({ "message_id": id_of(&reply) })),
    )
    .await;
    r.call(Some(&bea), M::GET, "/users/@me/read-states", None)
        .await;
    r.call(
        Some(&bea),
        M::DELETE,
        &format!("/guilds/{g}/channels/{c}/messages/{}", id_of(&reply)),
        None,
    )
    .await;
    let d = ada_gw.wait_for("MESSAGE_DELETE", WAIT).await.unwrap();
    r.dispatch("ada", &d);

    // Roles, overwrites, members and bans.
    let role = r
        .call(
            Some(&ada),
            M::POST,
            &format!("/guilds/{g}/roles"),
            Some(json!({ "name": "mods", "permissions": "8192", "color": 255, "position": 1 })),
        )
        .await;
    let role_id = id_of(&role);
    r.call(
        Some(&ada),
        M::PUT,
        &format!("/guilds/{g}/members/{bea_id}/roles/{role_id}"),
        None,
    )
    .await;
    let d = bea_gw.wait_for("GUILD_MEMBER_UPDATE", WAIT).await.unwrap();
    r.dispatch("bea", &d);
    r.call(
        Some(&ada),
        M::PUT,
        &format!("/guilds/{g}/channels/{c}/overwrites/role/{role_id}"),
        Some(json!({ "allow": "64", "deny": "0" })),
    )
    .await;
    r.call(
        Some(&bea),
        M::PATCH,
        &format!("/guilds/{g}/members/@me"),
        Some(json!({ "nick": "B" })),
    )
    .await;
    r.call(Some(&ada), M::GET, &format!("/guilds/{g}/members"), None)
        .await;
    r.call(Some(&ada), M::GET, &format!("/users/{bea_id}"), None)
        .await;
    r.call(
        Some(&bea),
        M::PUT,
        &format!("/guilds/{g}/bans/{ada_id}"),
        None,
    )
    .await;
    r.call(
        Some(&ada),
        M::PUT,
        &format!("/guilds/{g}/bans/{bea_id}"),
        None,
    )
    .await;
    let d = ada_gw.wait_for("GUILD_BAN_ADD", WAIT).await.unwrap();
    r.dispatch("ada", &d);
    r.call(Some(&ada), M::GET, &format!("/guilds/{g}/bans"), None)
        .await;
    r.call(Some(&bea), M::GET, &format!("/guilds/{g}"), None)
        .await;
    r.call(
        Some(&ada),
        M::DELETE,
        &format!("/guilds/{g}/bans/{bea_id}"),
        None,
    )
    .await;

    // The rest of the guild's settings, then the guild itself.
    r.call(
        Some(&ada),
        M::PATCH,
        &format!("/guilds/{g}/roles/{role_id}"),
        Some(json!({ "name": "moderators", "permissions": "8256" })),
    )
    .await;
    r.call(
        Some(&ada),
        M::PATCH,
        &format!("/guilds/{g}/channels"),
        Some(json!([{ "id": c, "position": 9 }])),
    )
    .await;
    r.call(
        Some(&ada),
        M::PATCH,
        &format!("/guilds/{g}/channels"),
        Some(json!([])),
    )
    .await;
    r.call(
        Some(&ada),
        M::DELETE,
        &format!("/guilds/{g}/channels/{c}/overwrites/role/{role_id}"),
        None,
    )
    .await;
    r.call(
        Some(&ada),
        M::DELETE,
        &format!("/guilds/{g}/roles/{role_id}"),
        None,
    )
    .await;
    let invite_id = invite["id"].as_str().unwrap().to_owned();
    r.call(
        Some(&ada),
        M::DELETE,
        &format!("/guilds/{g}/invites/{invite_id}"),
        None,
    )
    .await;
    r.call(
        Some(&ada),
        M::PATCH,
        &format!("/guilds/{g}"),
        Some(json!({ "name": "Contract, renamed", "description": "pinned shapes" })),
    )
    .await;
    let d = ada_gw.wait_for("GUILD_UPDATE", WAIT).await.unwrap();
    r.dispatch("ada", &d);
    r.call(
        Some(&ada),
        M::GET,
        &format!("/guilds/{g}/voice-states"),
        None,
    )
    .await;
    r.call(
        Some(&ada),
        M::DELETE,
        &format!("/guilds/{g}/channels/{c}"),
        None,
    )
    .await;
    r.call(Some(&ada), M::DELETE, &format!("/guilds/{g}"), None)
        .await;
    r.call(Some(&ada), M::GET, &format!("/guilds/{g}"), None)
        .await;
    r.call(
        Some(&ada),
        M::POST,
        "/users/@me/key",
        Some(json!({ "password": "wrong password" })),
    )
    .await;
    r.call(
        Some(&ada),
        M::POST,
        "/users/@me/key",
        Some(json!({ "password": password })),
    )
    .await;
    r.call(None, M::GET, "/unknown-endpoint", None).await;
    r.call(Some(&ada), M::POST, "/auth/logout", Some(json!({})))
        .await;
    r.call(Some(&ada), M::GET, "/users/@me", None).await;

    let snapshot =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/snapshots/contract.json");
    let actual = serde_json::to_string_pretty(&r.entries).unwrap() + "\n";
    if std::env::var_os("GUILDHALL_REGENERATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
        std::fs::write(&snapshot, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&snapshot).expect(
        "tests/snapshots/contract.json is missing: run with GUILDHALL_REGENERATE_SNAPSHOTS=1",
    );
    let (expected, actual): (Vec<Value>, Vec<Value>) = (
        serde_json::from_str(&expected).unwrap(),
        serde_json::from_str(&actual).unwrap(),
    );
    for (i, (want, got)) in expected.iter().zip(&actual).enumerate() {
        assert_eq!(got, want, "entry {i} of the contract changed");
    }
    assert_eq!(
        actual.len(),
        expected.len(),
        "the script's entries changed in number"
    );
}
