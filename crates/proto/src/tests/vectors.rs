//! The test vectors of `spec/vectors/ops.json`: fixed keys and clocks give exact bytes, ids and
//! signatures. Regenerate after a deliberate format change with
//! `GUILDHALL_REGENERATE_VECTORS=1 cargo test -p guildhall-proto vectors`.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;
use sha2::Digest;

use crate::body::OverwriteTarget;
use crate::id::{
    FETCH_PROOF_DOMAIN, INVITE_KEY_DOMAIN, InviteKey, JOIN_PROOF_DOMAIN, fetch_proof_bytes,
    join_proof_bytes,
};
use crate::meta::MetaValue;
use crate::op::Op;
use crate::perm::Permissions;
use crate::sealed::{ChannelKey, KEY_ID_DOMAIN, SEALED_AAD_DOMAIN, SEALED_PADDING, Sealed, Text};
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
        Body::invite_create(SECRET, 10, 86_400_000),
    );
    let join = Body::join(&r.guild.id(), invite, &user(2), SECRET);
    step(&mut r, "join", 2, join);
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
    let channel_key = vector_channel_key(&r.guild.id(), general);
    let sealed =
        |text: &str, nonce: u8| Text::Sealed(channel_key.seal(&user(2), text, [nonce; 24]));
    let secret = step(
        &mut r,
        "message_create_sealed",
        2,
        Body::MessageCreate {
            channel: general,
            content: sealed("for those who may view", 1),
            reply_to: None,
        },
    );
    step(
        &mut r,
        "message_edit_sealed",
        2,
        Body::MessageEdit {
            message: secret,
            content: sealed("for those who may view, edited", 2),
        },
    );
    step(
        &mut r,
        "thread_create_sealed",
        2,
        Body::ThreadCreate {
            channel: general,
            name: sealed("a sealed thread", 3),
            message: Some(secret),
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
    step(&mut r, "home", 1, Body::home([node(1), node(2)]));
    step(&mut r, "guild_delete", 1, Body::GuildDelete);
    out
}

fn vector(name: &str, signer: u8, op: &VerifiedOp) -> Value {
    let env = op.envelope();
    let mut body = Writer::new();
    env.body.encode(&mut body);
    let mut case = json!({
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
    });
    if let Body::Join { invite, proof } = &env.body {
        case["join_proof"] = join_proof(&env.guild, invite, &env.author, proof);
        case["fetch_proof"] = fetch_proof(&env.guild, invite);
    }
    if let Body::Home { nodes } = &env.body {
        case["home_nodes"] = json!(nodes.iter().map(ToString::to_string).collect::<Vec<_>>());
    }
    case
}

/// The channel key of the sealed cases: a fixed key for the vectors' text channel.
fn vector_channel_key(guild: &OpId, channel: ChannelId) -> ChannelKey {
    ChannelKey {
        guild: *guild,
        channel,
        key: [0x5a; 32],
    }
}

/// How a sealed case's text follows from the channel key (`spec/ops.md` §5.4): the key id's
/// preimage, the associated data, the padded plaintext and the text.
fn sealed_case(key: &ChannelKey, author: &UserId, sealed: &Sealed) -> Value {
    let text = key.open(author, sealed).expect("the vector's key opens it");
    json!({
        "channel_key_hex": hex::encode(key.key),
        "key_id_preimage_hex": hex::encode(
            [KEY_ID_DOMAIN, &key.guild.0, &key.channel.0, &key.key].concat()
        ),
        "key_id": key.id().to_string(),
        "nonce_hex": hex::encode(sealed.nonce),
        "aad_hex": hex::encode([SEALED_AAD_DOMAIN, &sealed.key.0, &author.0].concat()),
        "padded_plaintext_hex": hex::encode(crate::dm::pad(text.as_bytes(), SEALED_PADDING)),
        "plaintext": text,
    })
}

/// The node that fetched the guild for the join case's author (`spec/ops.md` §6.1): the
/// requester of the fetch proof.
const FETCH_REQUESTER: u8 = 2;

/// How a fetch proof for the join case's guild and invite follows from the invite secret and
/// the requesting node's key: the bytes it signs, and the proof.
fn fetch_proof(guild: &OpId, invite: &OpId) -> Value {
    let requester = node(FETCH_REQUESTER);
    let signed = [
        FETCH_PROOF_DOMAIN,
        &fetch_proof_bytes(guild, invite, &requester),
    ]
    .concat();
    json!({
        "requester_secret_key": hex::encode(node_key(FETCH_REQUESTER).secret()),
        "requester": requester.to_string(),
        "proof_prefix_hex": hex::encode(FETCH_PROOF_DOMAIN),
        "proof_message_hex": hex::encode(signed),
        "proof_hex": hex::encode(InviteKey::prove_fetch(SECRET, guild, invite, &requester)),
    })
}

/// How the join case's proof follows from the invite secret (`spec/ops.md` §6.1): the invite
/// key's seed and public key, the bytes the proof signs, and the proof.
fn join_proof(guild: &OpId, invite: &OpId, author: &UserId, proof: &[u8; 64]) -> Value {
    let seed = sha256(&[INVITE_KEY_DOMAIN, SECRET]);
    let signed = [JOIN_PROOF_DOMAIN, &join_proof_bytes(guild, invite, author)].concat();
    json!({
        "invite_secret_hex": hex::encode(SECRET),
        "invite_key_seed_prefix_hex": hex::encode(INVITE_KEY_DOMAIN),
        "invite_key_seed_hex": hex::encode(seed),
        "invite_key": InviteKey::from_secret(SECRET).to_string(),
        "proof_message_hex": hex::encode(signed),
        "proof_hex": hex::encode(proof),
    })
}

/// Checks the join case's proof from its secret alone, with the ed25519 of the `ed25519-dalek`
/// crate directly, as an independent implementation would.
fn check_join_proof(case: &Value, invite_create: &Op) {
    use ed25519_dalek::{Signer, SigningKey, Verifier};
    let hex_field = |k: &str| hex::decode(case["join_proof"][k].as_str().unwrap()).unwrap();
    let secret = hex_field("invite_secret_hex");
    let mut seed_input = b"guildhall/invite-key/v1\0".to_vec();
    seed_input.extend_from_slice(&secret);
    let seed: [u8; 32] = sha2::Sha256::digest(&seed_input).into();
    assert_eq!(seed.to_vec(), hex_field("invite_key_seed_hex"));
    let signing = SigningKey::from_bytes(&seed);
    let public = signing.verifying_key().to_bytes();
    assert_eq!(hex::encode(public), case["join_proof"]["invite_key"]);
    let Body::InviteCreate { key, .. } = &invite_create.envelope().body else {
        panic!("the invite_create case is an InviteCreate")
    };
    assert_eq!(
        key.0, public,
        "the InviteCreate carries the derived public key"
    );

    let join = Op::decode(&hex::decode(case["wire_hex"].as_str().unwrap()).unwrap()).unwrap();
    let env = join.envelope();
    let Body::Join { invite, proof } = &env.body else {
        panic!("the join case is a Join")
    };
    assert_eq!(*invite, invite_create.id());
    let mut signed = b"guildhall/join-proof/v1\0".to_vec();
    signed.extend_from_slice(&env.guild.0);
    signed.extend_from_slice(&invite.0);
    signed.extend_from_slice(&env.author.0);
    assert_eq!(signed.len(), 24 + 96);
    assert_eq!(signed, hex_field("proof_message_hex"));
    assert_eq!(
        signing.sign(&signed).to_bytes(),
        *proof,
        "ed25519 is deterministic"
    );
    assert_eq!(proof.to_vec(), hex_field("proof_hex"));
    let sig = ed25519_dalek::Signature::from_bytes(proof);
    assert!(signing.verifying_key().verify(&signed, &sig).is_ok());
}

/// Checks the join case's fetch proof from the secret and the requester's key alone, with
/// `ed25519-dalek` directly, as an independent implementation would; and that the reference
/// accepts it for that node only.
fn check_fetch_proof(case: &Value) {
    use ed25519_dalek::{Signer, SigningKey, Verifier};
    let hex_field = |k: &str| hex::decode(case["fetch_proof"][k].as_str().unwrap()).unwrap();
    let invite_secret = hex::decode(case["join_proof"]["invite_secret_hex"].as_str().unwrap());
    let mut seed_input = b"guildhall/invite-key/v1\0".to_vec();
    seed_input.extend_from_slice(&invite_secret.unwrap());
    let signing = SigningKey::from_bytes(&sha2::Sha256::digest(&seed_input).into());
    let requester_secret: [u8; 32] = hex_field("requester_secret_key").try_into().unwrap();
    let requester = SigningKey::from_bytes(&requester_secret)
        .verifying_key()
        .to_bytes();
    assert_eq!(hex::encode(requester), case["fetch_proof"]["requester"]);

    let join = Op::decode(&hex::decode(case["wire_hex"].as_str().unwrap()).unwrap()).unwrap();
    let env = join.envelope();
    let Body::Join { invite, .. } = &env.body else {
        panic!("the join case is a Join")
    };
    let mut signed = b"guildhall/join-fetch/v1\0".to_vec();
    assert_eq!(signed, hex_field("proof_prefix_hex"));
    signed.extend_from_slice(&env.guild.0);
    signed.extend_from_slice(&invite.0);
    signed.extend_from_slice(&requester);
    assert_eq!(signed.len(), 24 + 96);
    assert_eq!(signed, hex_field("proof_message_hex"));
    let proof: [u8; 64] = hex_field("proof_hex").try_into().unwrap();
    assert_eq!(signing.sign(&signed).to_bytes(), proof, "deterministic");
    let sig = ed25519_dalek::Signature::from_bytes(&proof);
    assert!(signing.verifying_key().verify(&signed, &sig).is_ok());

    let key = InviteKey(signing.verifying_key().to_bytes());
    assert!(key.opens_fetch(&env.guild, invite, &NodeId(requester), &proof));
    assert!(!key.opens_fetch(&env.guild, invite, &node(FETCH_REQUESTER + 1), &proof));
}

#[test]
fn vectors() {
    let history = history();
    let kinds: std::collections::BTreeSet<u16> = history
        .iter()
        .map(|(_, _, op)| op.envelope().body.kind())
        .collect();
    assert_eq!(kinds.len(), 31, "every body kind has a vector");
    let general = history
        .iter()
        .find(|(name, _, _)| *name == "channel_create_text")
        .map(|(_, _, op)| op.id())
        .unwrap();
    let channel_key = vector_channel_key(&history[0].2.id(), general);
    let generated: Vec<Value> = history
        .iter()
        .map(|(name, signer, op)| {
            let mut case = vector(name, *signer, op);
            let env = op.envelope();
            if let Some(Text::Sealed(sealed)) = env.body.text() {
                case["sealed"] = sealed_case(&channel_key, &env.author, sealed);
            }
            case
        })
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
    for case in &cases {
        let wire = hex::decode(case["wire_hex"].as_str().unwrap()).unwrap();
        let op = Op::decode(&wire).unwrap().verify().unwrap();
        assert_eq!(op.id().to_string(), case["op_id"].as_str().unwrap());
        assert_eq!(op.encode(), wire);
    }
    let case = |name: &str| cases.iter().find(|c| c["name"] == name).unwrap();
    let invite_create = hex::decode(case("invite_create")["wire_hex"].as_str().unwrap()).unwrap();
    check_join_proof(case("join"), &Op::decode(&invite_create).unwrap());
    check_fetch_proof(case("join"));
}
