//! The test vectors of `spec/vectors/ops.json`: fixed keys and clocks give exact bytes, ids and
//! signatures. Regenerate after a deliberate format change with
//! `GUILDHALL_REGENERATE_VECTORS=1 cargo test -p guildhall-proto vectors`.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;
use crate::body::OverwriteTarget;
use crate::meta::MetaValue;
use crate::op::Op;
use crate::perm::Permissions;
use crate::wire::Writer;

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors/ops.json")
}

/// One op of every body kind, authored in a fixed order on one replica.
fn history() -> Vec<(&'static str, u8, VerifiedOp)> {
    let mut r = Replica::new(&key(1));
    let genesis = r.guild.op(&r.guild.id()).unwrap().clone();
    let mut out = vec![("genesis", 1, genesis)];
    let mut step = |r: &mut Replica, name: &'static str, who: u8, body: Body| -> OpId {
        let op = r.make(&key(who), body);
        let id = op.id();
        r.guild.insert(op.clone()).unwrap();
        out.push((name, who, op));
        id
    };
    let category = step(
        &mut r,
        "channel_create_category",
        1,
        Body::ChannelCreate {
            kind: ChannelKind::Category,
            name: "Text channels".into(),
            parent: None,
            position: 0,
        },
    );
    let general = step(
        &mut r,
        "channel_create_text",
        1,
        Body::ChannelCreate {
            kind: ChannelKind::Text,
            name: "general".into(),
            parent: Some(category),
            position: 1,
        },
    );
    let invite = step(
        &mut r,
        "invite_create",
        1,
        Body::InviteCreate {
            secret_hash: sha256(&[SECRET]),
            max_uses: 10,
            expires_at_ms: 86_400_000,
        },
    );
    step(
        &mut r,
        "join",
        2,
        Body::Join {
            invite,
            secret: SECRET.to_vec(),
        },
    );
    let mods = step(
        &mut r,
        "role_create",
        1,
        Body::RoleCreate {
            name: "mods".into(),
            permissions: (Permissions::KICK_MEMBERS | Permissions::MANAGE_MESSAGES).bits(),
            color: 0x3498db,
            position: 1,
        },
    );
    step(
        &mut r,
        "role_update",
        1,
        Body::RoleUpdate {
            role: mods,
            permissions: Permissions::KICK_MEMBERS.bits(),
            position: 2,
        },
    );
    step(
        &mut r,
        "member_role_grant",
        1,
        Body::MemberRoleGrant {
            member: user(2),
            role: mods,
        },
    );
    step(
        &mut r,
        "overwrite_set",
        1,
        Body::OverwriteSet {
            channel: general,
            target: OverwriteTarget::Role(mods),
            allow: Permissions::MANAGE_MESSAGES.bits(),
            deny: Permissions::MENTION_EVERYONE.bits(),
        },
    );
    let change = r
        .guild
        .meta()
        .make_change(
            &user(1),
            &[(
                "guild.description",
                Some(MetaValue::Str("A test guild".into())),
            )],
        )
        .expect("a change");
    step(&mut r, "meta_change", 1, Body::MetaChange { change });
    let hello = step(
        &mut r,
        "message_create",
        2,
        Body::MessageCreate {
            channel: general,
            content: "hello, world".into(),
            reply_to: None,
        },
    );
    step(
        &mut r,
        "message_reply",
        1,
        Body::MessageCreate {
            channel: general,
            content: "welcome!".into(),
            reply_to: Some(hello),
        },
    );
    step(
        &mut r,
        "message_edit",
        2,
        Body::MessageEdit {
            message: hello,
            content: "hello, everyone".into(),
        },
    );
    step(
        &mut r,
        "reaction_add",
        1,
        Body::ReactionAdd {
            message: hello,
            emoji: "👋".into(),
        },
    );
    step(
        &mut r,
        "reaction_remove",
        1,
        Body::ReactionRemove {
            message: hello,
            emoji: "👋".into(),
        },
    );
    step(&mut r, "pin", 1, Body::Pin { message: hello });
    step(&mut r, "unpin", 1, Body::Unpin { message: hello });
    step(
        &mut r,
        "thread_create",
        2,
        Body::ThreadCreate {
            channel: general,
            name: "greetings".into(),
            message: Some(hello),
        },
    );
    step(
        &mut r,
        "message_delete",
        2,
        Body::MessageDelete { message: hello },
    );
    step(
        &mut r,
        "member_role_revoke",
        1,
        Body::MemberRoleRevoke {
            member: user(2),
            role: mods,
            cutoff: 7,
        },
    );
    step(&mut r, "leave", 2, Body::Leave);
    step(
        &mut r,
        "kick",
        1,
        Body::Kick {
            member: user(2),
            cutoff: 7,
            reason: "cool down".into(),
        },
    );
    step(
        &mut r,
        "ban",
        1,
        Body::Ban {
            member: user(2),
            cutoff: 7,
            reason: "spam".into(),
        },
    );
    step(&mut r, "unban", 1, Body::Unban { member: user(2) });
    step(&mut r, "invite_revoke", 1, Body::InviteRevoke { invite });
    step(
        &mut r,
        "overwrite_clear",
        1,
        Body::OverwriteClear {
            channel: general,
            target: OverwriteTarget::Role(mods),
        },
    );
    step(&mut r, "role_delete", 1, Body::RoleDelete { role: mods });
    step(
        &mut r,
        "channel_delete",
        1,
        Body::ChannelDelete { channel: general },
    );
    step(&mut r, "guild_delete", 1, Body::GuildDelete);
    out
}

fn vector(name: &str, signer: u8, op: &VerifiedOp) -> Value {
    let env = op.envelope();
    let mut body = Writer::new();
    env.body.encode(&mut body);
    json!({
        "name": name,
        "secret_key": hex::encode([signer; 32]),
        "public_key": user(signer).to_string(),
        "envelope": {
            "version": 1,
            "guild": env.guild.to_string(),
            "author": env.author.to_string(),
            "seq": env.seq,
            "prev": env.prev.map(|p| p.to_string()),
            "hlc": env.hlc.0,
            "deps": env.deps.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "body_kind": env.body.kind(),
            "body": format!("{:?}", env.body),
            "body_hex": hex::encode(body.into_bytes()),
        },
        "unsigned_hex": hex::encode(op.unsigned_bytes()),
        "op_id": op.id().to_string(),
        "signature_hex": hex::encode(op.signature()),
        "wire_hex": hex::encode(op.encode()),
    })
}

#[test]
fn vectors() {
    let history = history();
    let kinds: std::collections::BTreeSet<u16> = history
        .iter()
        .map(|(_, _, op)| op.envelope().body.kind())
        .collect();
    assert_eq!(kinds.len(), 27, "every body kind has a vector");
    let generated: Vec<Value> = history
        .iter()
        .map(|(name, signer, op)| vector(name, *signer, op))
        .collect();
    let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
    let path = vectors_path();
    if std::env::var_os("GUILDHALL_REGENERATE_VECTORS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let stored = std::fs::read_to_string(&path).expect("spec/vectors/ops.json exists");
    assert_eq!(
        stored, text,
        "the vectors changed: was the format changed on purpose?"
    );

    // The stored bytes decode, verify and re-derive their ids on their own.
    let cases: Vec<Value> = serde_json::from_str(&stored).unwrap();
    for case in cases {
        let wire = hex::decode(case["wire_hex"].as_str().unwrap()).unwrap();
        let op = Op::decode(&wire).unwrap().verify().unwrap();
        assert_eq!(op.id().to_string(), case["op_id"].as_str().unwrap());
        assert_eq!(op.encode(), wire);
    }
}
