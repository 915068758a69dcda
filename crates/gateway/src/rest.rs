//! REST handlers under `/api/v1` (`spec/rest.md`). Every write goes through `Node::submit`,
//! which authorizes in the core; reads check VIEW_CHANNEL the same way dispatches do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use guildhall_proto::access;
use guildhall_proto::body::{Body, ChannelKind, OverwriteTarget};
use guildhall_proto::guild::Guild;
use guildhall_proto::history::MessageView;
use guildhall_proto::hlc::Hlc;
use guildhall_proto::id::{ChannelId, GuildId, Keypair, MessageId, OpId, RoleId, UserId};
use guildhall_proto::meta::{MetaKey, MetaValue};
use guildhall_proto::perm::Permissions;
use guildhall_store::{AccountRecord, TokenRecord, Write};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::accounts;
use crate::error::ApiError;
use crate::federation::InviteCode;
use crate::node::{Node, now_ms};
use crate::views;

type Result<T> = std::result::Result<T, ApiError>;

/// A JSON request body whose rejections are API errors with codes.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(JsonRejection::JsonDataError(e)) => {
                Err(ApiError::bad_request("invalid_payload", e.body_text()))
            }
            Err(JsonRejection::JsonSyntaxError(e)) => {
                Err(ApiError::bad_request("invalid_json", e.body_text()))
            }
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_content_type",
                "send the body as application/json",
            )),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                e.body_text(),
            )),
            Err(e) => Err(ApiError::bad_request("invalid_body", e.body_text())),
        }
    }
}

/// Query parameters whose rejections are API errors with codes.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| QueryParams(v))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// The token of `Authorization: Bearer <token>`.
fn bearer(headers: &axum::http::HeaderMap) -> Result<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)
}

/// The caller, from `Authorization: Bearer <token>`; also charges the per-user rate limit.
pub struct Authed(pub TokenRecord);

impl FromRequestParts<Arc<Node>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self> {
        node.metrics.requests.fetch_add(1, Ordering::Relaxed);
        let record = node.authenticate(bearer(&parts.headers)?)?;
        node.user_rate_check(&record.user_id)?;
        Ok(Authed(record))
    }
}

pub(crate) fn id<T: std::str::FromStr>(text: &str, what: &str) -> Result<T> {
    text.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_id",
            format!("{what} must be 64 lowercase hex digits"),
        )
    })
}

/// The rate-limit key of the peer's IP address.
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".into(), |ConnectInfo(a)| a.ip().to_string());
        Ok(ClientIp(format!("ip:{ip}")))
    }
}

fn created(value: Value) -> Response {
    (StatusCode::CREATED, Json(value)).into_response()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// ---- accounts ----

#[derive(Deserialize)]
pub struct Register {
    username: String,
    password: String,
    /// Import an identity exported from another node (64 hex digits).
    secret_key: Option<String>,
}

pub async fn register(
    State(node): State<Arc<Node>>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<Register>,
) -> Result<Response> {
    node.rate_check(
        format!("auth:{ip}"),
        node.config.auth_rate,
        node.config.auth_burst,
    )?;
    let account = create_account(
        &node,
        &req.username,
        &req.password,
        req.secret_key.as_deref(),
    )
    .await?;
    let token = issue_token(&node, &account).await?;
    Ok(created(json!({
        "token": token,
        "user": { "id": account.user_id, "username": account.username },
    })))
}

/// Creates an account (also used by `guildhall admin create-user`).
pub async fn create_account(
    node: &Node,
    username: &str,
    password: &str,
    secret_key: Option<&str>,
) -> Result<AccountRecord> {
    accounts::check_username(username)?;
    accounts::check_password(password)?;
    let secret: [u8; 32] = match secret_key {
        Some(hex_key) => hex::decode(hex_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                ApiError::bad_request("invalid_secret_key", "secret_key is 64 hex digits")
            })?,
        None => rand::random(),
    };
    let key = Keypair::from_secret(secret);
    let user_id = key.user_id();
    if node.store.username_of(&user_id)?.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "identity_taken",
            "an account on this node already holds that key",
        ));
    }
    let password_hash = {
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || accounts::hash_password(&password))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??
    };
    let account = AccountRecord {
        username: username.to_owned(),
        user_id,
        password_hash,
        sealed_secret: accounts::seal_secret(node.storage_key(), &user_id, &secret),
        created_ms: now_ms(),
    };
    node.store
        .write(vec![Write::CreateAccount(account.clone())])
        .await?;
    node.remember_key(user_id, key);
    Ok(account)
}

async fn issue_token(node: &Node, account: &AccountRecord) -> Result<String> {
    let (token, hash) = accounts::new_token();
    let record = TokenRecord {
        username: account.username.clone(),
        user_id: account.user_id,
        created_ms: now_ms(),
    };
    node.store
        .write(vec![Write::Token { hash, record }])
        .await?;
    Ok(token)
}

#[derive(Deserialize)]
pub struct Login {
    username: String,
    password: String,
}

async fn check_login(node: &Node, username: &str, password: &str) -> Result<AccountRecord> {
    let refused = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong username or password",
        )
    };
    let account = node.store.account(username)?.ok_or_else(refused)?;
    let (password, phc) = (password.to_owned(), account.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || accounts::password_matches(&password, &phc))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if ok { Ok(account) } else { Err(refused()) }
}

pub async fn login(
    State(node): State<Arc<Node>>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<Login>,
) -> Result<Response> {
    node.rate_check(
        format!("auth:{ip}"),
        node.config.auth_rate,
        node.config.auth_burst,
    )?;
    let account = check_login(&node, &req.username, &req.password).await?;
    let token = issue_token(&node, &account).await?;
    Ok(Json(json!({
        "token": token,
        "user": { "id": account.user_id, "username": account.username },
    }))
    .into_response())
}

pub async fn logout(
    State(node): State<Arc<Node>>,
    parts: axum::http::HeaderMap,
) -> Result<Response> {
    let token = bearer(&parts)?;
    let record = node.authenticate(token)?;
    let hash = accounts::token_hash(token);
    node.store.write(vec![Write::RevokeToken { hash }]).await?;
    node.sessions.revoke(&record.user_id, Some(&hash));
    Ok(no_content())
}

pub async fn logout_all(State(node): State<Arc<Node>>, Authed(me): Authed) -> Result<Response> {
    node.store
        .write(vec![Write::RevokeTokensOf { user: me.user_id }])
        .await?;
    node.sessions.revoke(&me.user_id, None);
    Ok(no_content())
}

pub async fn me(State(node): State<Arc<Node>>, Authed(me): Authed) -> Result<Json<Value>> {
    Ok(Json(json!({
        "id": me.user_id,
        "username": me.username,
        "status": node.presence_of(&me.user_id),
    })))
}

#[derive(Deserialize)]
pub struct Password {
    password: String,
}

/// Key export: the secret key, against the password, so a user can move to another node.
pub async fn export_key(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    JsonBody(req): JsonBody<Password>,
) -> Result<Json<Value>> {
    let account = check_login(&node, &me.username, &req.password).await?;
    let key = accounts::open_secret(node.storage_key(), &account.user_id, &account.sealed_secret)?;
    Ok(Json(
        json!({ "user_id": account.user_id, "secret_key": hex::encode(key.secret()) }),
    ))
}

pub async fn user_profile(
    State(node): State<Arc<Node>>,
    Authed(_): Authed,
    Path(user): Path<String>,
) -> Result<Json<Value>> {
    let user: UserId = id(&user, "user id")?;
    Ok(Json(json!({
        "id": user,
        "username": node.store.username_of(&user)?,
        "status": node.presence_of(&user),
    })))
}

// ---- guilds ----

#[derive(Deserialize)]
pub struct CreateGuild {
    name: String,
}

pub async fn create_guild(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    JsonBody(req): JsonBody<CreateGuild>,
) -> Result<Response> {
    guildhall_proto::validate::check_body(&Body::Genesis {
        name: req.name.clone(),
    })
    .map_err(|why| ApiError::bad_request("invalid_name", why))?;
    let gid = node.create_guild(&me.user_id, &req.name).await?;
    let view =
        node.with_member_guild(&me.user_id, &gid, |g| Ok(views::guild_json(g, &me.user_id)))?;
    Ok(created(view))
}

pub async fn list_guilds(State(node): State<Arc<Node>>, Authed(me): Authed) -> Result<Json<Value>> {
    let guilds: Vec<Value> = node
        .guilds_of(&me.user_id)
        .iter()
        .filter_map(|g| {
            node.with_member_guild(&me.user_id, g, |g| Ok(views::guild_json(g, &me.user_id)))
                .ok()
        })
        .collect();
    Ok(Json(json!(guilds)))
}

pub async fn get_guild(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path(g): Path<String>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        Ok(Json(node.guild_view(g, &me.user_id)))
    })
}

/// Builds a metadata change from the fields given, on the guild's current document.
fn meta_change(
    node: &Node,
    me: &UserId,
    gid: &GuildId,
    edits: &[(MetaKey, Option<MetaValue>)],
) -> Result<Body> {
    if edits.is_empty() {
        return Err(ApiError::bad_request("empty_update", "nothing to change"));
    }
    node.with_member_guild(me, gid, |g| {
        let change = g
            .meta()
            .make_change(me, edits)
            .ok_or_else(|| ApiError::bad_request("empty_update", "nothing would change"))?;
        Ok(Body::MetaChange { change })
    })
}

fn text_edit(key: MetaKey, value: Option<String>) -> Option<(MetaKey, Option<MetaValue>)> {
    value.map(|v| {
        let v = (!v.is_empty()).then_some(MetaValue::Str(v));
        (key, v)
    })
}

#[derive(Deserialize)]
pub struct UpdateGuild {
    name: Option<String>,
    description: Option<String>,
    icon: Option<String>,
}

pub async fn update_guild(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path(g): Path<String>,
    JsonBody(req): JsonBody<UpdateGuild>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    if req.name.as_ref().is_some_and(String::is_empty) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "a guild needs a name",
        ));
    }
    let edits: Vec<_> = [
        text_edit(MetaKey::GuildName, req.name),
        text_edit(MetaKey::GuildDescription, req.description),
        text_edit(MetaKey::GuildIcon, req.icon),
    ]
    .into_iter()
    .flatten()
    .collect();
    let body = meta_change(&node, &me.user_id, &gid, &edits)?;
    node.submit(&me.user_id, &gid, body).await?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        Ok(Json(views::guild_json(g, &me.user_id)))
    })
}

/// Deletes the guild for everyone (owner only); its ops stay stored.
pub async fn delete_guild(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path(g): Path<String>,
) -> Result<Response> {
    let gid: GuildId = id(&g, "guild id")?;
    node.with_member_guild(&me.user_id, &gid, |_| Ok(()))?;
    node.submit(&me.user_id, &gid, Body::GuildDelete).await?;
    Ok(no_content())
}

// ---- channels ----

pub async fn list_channels(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path(g): Path<String>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        Ok(Json(json!(views::visible_channels(g, &me.user_id))))
    })
}

#[derive(Deserialize)]
pub struct CreateChannel {
    name: String,
    #[serde(default = "text_kind")]
    kind: ChannelKind,
    parent_id: Option<ChannelId>,
    #[serde(default)]
    position: u32,
}

fn text_kind() -> ChannelKind {
    ChannelKind::Text
}

pub async fn create_channel(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path(g): Path<String>,
    JsonBody(req): JsonBody<CreateChannel>,
) -> Result<Response> {
    let gid: GuildId = id(&g, "guild id")?;
    let body = Body::ChannelCreate {
        kind: req.kind,
        name: req.name,
        parent: req.parent_id,
        position: req.position,
    };
    let cid = submit_checked(&node, &me.user_id, &gid, body).await?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        let c = g
            .state()
            .channels
            .get(&cid)
            .ok_or_else(|| ApiError::internal("channel vanished"))?;
        Ok(created(views::channel_json(g, &cid, c)))
    })
}

/// Submits `body` (if its ids parsed) to guild `g`; answers 204.
async fn no_content_op(node: &Node, me: &UserId, g: &str, body: Result<Body>) -> Result<Response> {
    let gid: GuildId = id(g, "guild id")?;
    node.submit(me, &gid, body?).await?;
    Ok(no_content())
}

/// Validates a body's shape with the core's limits (a clear 400) before submitting it.
async fn submit_checked(node: &Node, me: &UserId, gid: &GuildId, body: Body) -> Result<OpId> {
    guildhall_proto::validate::check_body(&body)
        .map_err(|why| ApiError::bad_request("invalid_payload", why))?;
    node.submit(me, gid, body).await
}

#[derive(Deserialize)]
pub struct UpdateChannel {
    name: Option<String>,
    topic: Option<String>,
    position: Option<i64>,
}

pub async fn update_channel(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c)): Path<(String, String)>,
    JsonBody(req): JsonBody<UpdateChannel>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    let cid: ChannelId = id(&c, "channel id")?;
    if req.name.as_ref().is_some_and(String::is_empty) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "a channel needs a name",
        ));
    }
    let mut edits: Vec<_> = [
        text_edit(MetaKey::ChannelName(cid), req.name),
        text_edit(MetaKey::ChannelTopic(cid), req.topic),
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(p) = req.position {
        edits.push((MetaKey::ChannelPosition(cid), Some(MetaValue::Int(p))));
    }
    let body = meta_change(&node, &me.user_id, &gid, &edits)?;
    node.submit(&me.user_id, &gid, body).await?;
    channel_view(&node, &me.user_id, &gid, &cid).map(Json)
}

fn channel_view(node: &Node, me: &UserId, gid: &GuildId, cid: &ChannelId) -> Result<Value> {
    node.with_member_guild(me, gid, |g| {
        let c = g
            .state()
            .channels
            .get(cid)
            .ok_or_else(|| ApiError::not_found("unknown_channel", "no such channel"))?;
        Ok(views::channel_json(g, cid, c))
    })
}

#[derive(Deserialize)]
pub struct Reorder {
    id: ChannelId,
    position: i64,
}

/// Moves many channels in one change.
pub async fn reorder_channels(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path(g): Path<String>,
    JsonBody(req): JsonBody<Vec<Reorder>>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    let edits: Vec<_> = req
        .iter()
        .map(|r| {
            (
                MetaKey::ChannelPosition(r.id),
                Some(MetaValue::Int(r.position)),
            )
        })
        .collect();
    let body = meta_change(&node, &me.user_id, &gid, &edits)?;
    node.submit(&me.user_id, &gid, body).await?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        Ok(Json(json!(views::visible_channels(g, &me.user_id))))
    })
}

pub async fn delete_channel(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c)): Path<(String, String)>,
) -> Result<Response> {
    let body = id(&c, "channel id").map(|channel| Body::ChannelDelete { channel });
    no_content_op(&node, &me.user_id, &g, body).await
}

#[derive(Deserialize)]
pub struct SetOverwrite {
    #[serde(default)]
    allow: Permissions,
    #[serde(default)]
    deny: Permissions,
}

fn overwrite_target(kind: &str, target: &str) -> Result<OverwriteTarget> {
    match kind {
        "role" => Ok(OverwriteTarget::Role(id(target, "role id")?)),
        "member" => Ok(OverwriteTarget::Member(id(target, "user id")?)),
        _ => Err(ApiError::bad_request(
            "invalid_target",
            "overwrite targets are role or member",
        )),
    }
}

pub async fn set_overwrite(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c, kind, target)): Path<(String, String, String, String)>,
    JsonBody(req): JsonBody<SetOverwrite>,
) -> Result<Response> {
    let gid: GuildId = id(&g, "guild id")?;
    let body = Body::OverwriteSet {
        channel: id(&c, "channel id")?,
        target: overwrite_target(&kind, &target)?,
        allow: req.allow.bits(),
        deny: req.deny.bits(),
    };
    node.submit(&me.user_id, &gid, body).await?;
    Ok(no_content())
}

pub async fn clear_overwrite(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c, kind, target)): Path<(String, String, String, String)>,
) -> Result<Response> {
    let gid: GuildId = id(&g, "guild id")?;
    let body = Body::OverwriteClear {
        channel: id(&c, "channel id")?,
        target: overwrite_target(&kind, &target)?,
    };
    node.submit(&me.user_id, &gid, body).await?;
    Ok(no_content())
}

// ---- roles and members ----

#[derive(Deserialize)]
pub struct CreateRole {
    name: String,
    #[serde(default)]
    permissions: Permissions,
    #[serde(default)]
    color: u32,
    position: u32,
}

pub async fn create_role(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path(g): Path<String>,
    JsonBody(req): JsonBody<CreateRole>,
) -> Result<Response> {
    let gid: GuildId = id(&g, "guild id")?;
    let body = Body::RoleCreate {
        name: req.name,
        permissions: req.permissions.bits(),
        color: req.color,
        position: req.position,
    };
    let role = submit_checked(&node, &me.user_id, &gid, body).await?;
    Ok(created(json!({ "id": role })))
}

#[derive(Deserialize)]
pub struct UpdateRole {
    permissions: Option<Permissions>,
    position: Option<u32>,
    name: Option<String>,
    color: Option<u32>,
}

/// Changes a role's permissions and position (a guild-state op) and its name and color (the
/// metadata document): one op for each group of fields given.
pub async fn update_role(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, r)): Path<(String, String)>,
    JsonBody(req): JsonBody<UpdateRole>,
) -> Result<Response> {
    let gid: GuildId = id(&g, "guild id")?;
    let rid: RoleId = id(&r, "role id")?;
    if req.name.as_ref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ApiError::bad_request("invalid_name", "a role needs a name"));
    }
    if req.color.is_some_and(|c| c > 0xff_ffff) {
        return Err(ApiError::bad_request(
            "invalid_payload",
            "color is an RGB value up to 16777215",
        ));
    }
    let edits: Vec<_> = [
        text_edit(MetaKey::RoleName(rid), req.name),
        req.color
            .map(|c| (MetaKey::RoleColor(rid), Some(MetaValue::Int(i64::from(c))))),
    ]
    .into_iter()
    .flatten()
    .collect();
    if req.permissions.is_none() && req.position.is_none() && edits.is_empty() {
        return Err(ApiError::bad_request("empty_update", "nothing to change"));
    }
    if req.permissions.is_some() || req.position.is_some() {
        let (permissions, position) = node.with_member_guild(&me.user_id, &gid, |g| {
            let role = g
                .state()
                .roles
                .get(&rid)
                .ok_or_else(|| ApiError::not_found("unknown_role", "no such role"))?;
            Ok((
                req.permissions.unwrap_or(role.permissions).bits(),
                req.position.unwrap_or(role.position),
            ))
        })?;
        let body = Body::RoleUpdate {
            role: rid,
            permissions,
            position,
        };
        node.submit(&me.user_id, &gid, body).await?;
    }
    if !edits.is_empty() {
        let body = meta_change(&node, &me.user_id, &gid, &edits)?;
        node.submit(&me.user_id, &gid, body).await?;
    }
    Ok(no_content())
}

pub async fn delete_role(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, r)): Path<(String, String)>,
) -> Result<Response> {
    let body = id(&r, "role id").map(|role| Body::RoleDelete { role });
    no_content_op(&node, &me.user_id, &g, body).await
}

fn member_cutoff(node: &Node, me: &UserId, gid: &GuildId, member: &UserId) -> Result<u64> {
    node.with_member_guild(me, gid, |g| {
        Ok(g.chain_head(member).map_or(0, |(seq, _, _)| seq))
    })
}

pub async fn grant_role(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, u, r)): Path<(String, String, String)>,
) -> Result<Response> {
    let body = Body::MemberRoleGrant {
        member: id(&u, "user id")?,
        role: id(&r, "role id")?,
    };
    no_content_op(&node, &me.user_id, &g, Ok(body)).await
}

pub async fn revoke_role(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, u, r)): Path<(String, String, String)>,
) -> Result<Response> {
    let gid: GuildId = id(&g, "guild id")?;
    let member: UserId = id(&u, "user id")?;
    let body = Body::MemberRoleRevoke {
        member,
        role: id(&r, "role id")?,
        cutoff: member_cutoff(&node, &me.user_id, &gid, &member)?,
    };
    node.submit(&me.user_id, &gid, body).await?;
    Ok(no_content())
}

pub async fn list_members(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path(g): Path<String>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        let members: Vec<Value> = g
            .state()
            .members
            .keys()
            .filter_map(|u| {
                let mut m = views::member_json(g, u)?;
                m["username"] = json!(node.store.username_of(u).ok().flatten());
                m["status"] = json!(node.presence_of(u));
                Some(m)
            })
            .collect();
        Ok(Json(json!(members)))
    })
}

fn member_param(me: &UserId, u: &str) -> Result<UserId> {
    if u == "@me" {
        Ok(*me)
    } else {
        id(u, "user id")
    }
}

#[derive(Deserialize)]
pub struct UpdateMember {
    nick: Option<String>,
}

pub async fn update_member(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, u)): Path<(String, String)>,
    JsonBody(req): JsonBody<UpdateMember>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    let member = member_param(&me.user_id, &u)?;
    let edits: Vec<_> = text_edit(MetaKey::MemberNick(member), req.nick)
        .into_iter()
        .collect();
    let body = meta_change(&node, &me.user_id, &gid, &edits)?;
    node.submit(&me.user_id, &gid, body).await?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        views::member_json(g, &member)
            .map(Json)
            .ok_or_else(|| ApiError::not_found("unknown_member", "no such member"))
    })
}

#[derive(Deserialize, Default)]
pub struct Reason {
    #[serde(default)]
    reason: String,
}

/// Kicks a member, or leaves the guild when the member is `@me`.
pub async fn remove_member(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, u)): Path<(String, String)>,
    QueryParams(reason): QueryParams<Reason>,
) -> Result<Response> {
    let gid: GuildId = id(&g, "guild id")?;
    let member = member_param(&me.user_id, &u)?;
    let body = if member == me.user_id {
        Body::Leave
    } else {
        Body::Kick {
            member,
            cutoff: member_cutoff(&node, &me.user_id, &gid, &member)?,
            reason: reason.reason,
        }
    };
    submit_checked(&node, &me.user_id, &gid, body).await?;
    Ok(no_content())
}

pub async fn ban(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, u)): Path<(String, String)>,
    QueryParams(reason): QueryParams<Reason>,
) -> Result<Response> {
    let gid: GuildId = id(&g, "guild id")?;
    let member: UserId = id(&u, "user id")?;
    let body = Body::Ban {
        member,
        cutoff: member_cutoff(&node, &me.user_id, &gid, &member)?,
        reason: reason.reason,
    };
    submit_checked(&node, &me.user_id, &gid, body).await?;
    Ok(no_content())
}

pub async fn unban(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, u)): Path<(String, String)>,
) -> Result<Response> {
    let body = id(&u, "user id").map(|member| Body::Unban { member });
    no_content_op(&node, &me.user_id, &g, body).await
}

pub async fn list_bans(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path(g): Path<String>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        if !g
            .state()
            .permissions(&me.user_id)
            .contains(Permissions::BAN_MEMBERS)
        {
            return Err(ApiError::forbidden("listing bans needs BAN_MEMBERS"));
        }
        let bans: Vec<Value> = g
            .state()
            .bans
            .iter()
            .map(|(u, b)| json!({ "user_id": u, "by": b.by, "reason": b.reason }))
            .collect();
        Ok(Json(json!(bans)))
    })
}

// ---- invites ----

#[derive(Deserialize)]
pub struct CreateInvite {
    #[serde(default)]
    max_uses: u32,
    /// Seconds until the invite expires; 0 or absent for never.
    #[serde(default)]
    max_age_secs: u64,
}

pub async fn create_invite(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path(g): Path<String>,
    JsonBody(req): JsonBody<CreateInvite>,
) -> Result<Response> {
    let gid: GuildId = id(&g, "guild id")?;
    invite(&node, &me.user_id, &gid, req.max_uses, req.max_age_secs)
        .await
        .map(created)
}

/// Creates an invite (also used by `guildhall admin create-invite`).
pub async fn invite(
    node: &Node,
    me: &UserId,
    gid: &GuildId,
    max_uses: u32,
    max_age_secs: u64,
) -> Result<Value> {
    let secret: [u8; 16] = rand::random();
    let expires_at_ms = match max_age_secs {
        0 => 0,
        secs => now_ms().saturating_add(secs.saturating_mul(1000)),
    };
    // The op carries only the public key the secret derives; the secret is in the code alone.
    let body = Body::invite_create(&secret, max_uses, expires_at_ms);
    let invite = node.submit(me, gid, body).await?;
    Ok(json!({
        "id": invite,
        "code": InviteCode {
            guild: *gid,
            invite,
            secret: secret.to_vec(),
            addr: node.federation_addr(),
        }
        .encode(),
        "guild_id": gid,
        "max_uses": max_uses,
        "expires_at_ms": (expires_at_ms != 0).then_some(expires_at_ms),
    }))
}

pub async fn list_invites(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path(g): Path<String>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        if !g.state().permissions(&me.user_id).contains(Permissions::MANAGE_GUILD) {
            return Err(ApiError::forbidden("listing invites needs MANAGE_GUILD"));
        }
        let invites: Vec<Value> = g
            .state()
            .invites
            .iter()
            .map(|(id, i)| json!({ "id": id, "creator": i.creator, "max_uses": i.max_uses, "uses": i.uses, "expires_at_ms": i.expires_at_ms }))
            .collect();
        Ok(Json(json!(invites)))
    })
}

pub async fn revoke_invite(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, i)): Path<(String, String)>,
) -> Result<Response> {
    let body = id(&i, "invite id").map(|invite| Body::InviteRevoke { invite });
    no_content_op(&node, &me.user_id, &g, body).await
}

pub async fn accept_invite(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path(code): Path<String>,
) -> Result<Json<Value>> {
    let code = InviteCode::parse(&code)?;
    let gid = code.guild;
    if let Err(unknown) = node.guild(&gid) {
        match code.addr.clone() {
            Some(addr) => node.fetch_guild(&code, addr).await?,
            None => return Err(unknown),
        }
    }
    // The node holds the secret from the code: it signs the invite key's proof for this user,
    // and the op carries the proof, never the secret.
    let body = Body::join(&gid, code.invite, &me.user_id, &code.secret);
    node.submit(&me.user_id, &gid, body).await?;
    node.claim_home(&me.user_id, &gid).await?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        Ok(Json(views::guild_json(g, &me.user_id)))
    })
}

// ---- messages ----

#[derive(Deserialize)]
pub struct Page {
    before: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

fn cursor(g: &Guild, text: &Option<String>) -> Result<Option<(Hlc, MessageId)>> {
    let Some(text) = text else { return Ok(None) };
    let mid: MessageId = id(text, "cursor")?;
    let op = g
        .op(&mid)
        .ok_or_else(|| ApiError::not_found("unknown_message", "the cursor names no message"))?;
    Ok(Some((op.envelope().hlc, mid)))
}

/// How long a search waits for the history a restart is still loading.
const SEARCH_HISTORY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long, at most, a history page waits for older history to be loaded or fetched.
const PAGE_HISTORY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn list_messages(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c)): Path<(String, String)>,
    QueryParams(page): QueryParams<Page>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    let cid: ChannelId = id(&c, "channel id")?;
    let limit = page.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", "limit is 1 to 100"));
    }
    let read = || {
        node.with_member_guild(&me.user_id, &gid, |g| {
            access::read(g, &me.user_id, &cid)?;
            let before = cursor(g, &page.before)?;
            let after = cursor(g, &page.after)?;
            let messages: Vec<Value> = g
                .messages(&cid, before, after, limit)
                .iter()
                .map(|m| views::message_json(g, m))
                .collect();
            Ok(messages)
        })
    };
    let mut messages = read()?;
    // Paging back past the history held: wait for what a restart is still loading, fetch what
    // a guild joined with recent history lacks, until the page fills or history begins.
    // Paging forward (`after` alone) never needs either.
    let backward = page.after.is_none() || page.before.is_some();
    let deadline = tokio::time::Instant::now() + PAGE_HISTORY_WAIT;
    while backward && messages.len() < limit {
        if node.loading_history(&gid) {
            if !node.loaded_more(&gid, deadline).await {
                break;
            }
        } else if node.backfilling(&gid) {
            // A source that is down must not hold the page for a whole request timeout.
            match tokio::time::timeout_at(deadline, node.backfill_once(&gid)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(guild = %gid, error = %e.body(), "back-fill for a page failed");
                    break;
                }
                Err(_) => break,
            }
        } else {
            break;
        }
        messages = read()?;
    }
    Ok(Json(json!(messages)))
}

#[derive(Deserialize)]
pub struct CreateMessage {
    content: String,
    nonce: Option<String>,
    reply_to: Option<MessageId>,
}

pub async fn create_message(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c)): Path<(String, String)>,
    JsonBody(req): JsonBody<CreateMessage>,
) -> Result<Response> {
    let gid: GuildId = id(&g, "guild id")?;
    let channel: ChannelId = id(&c, "channel id")?;
    let body = Body::MessageCreate {
        channel,
        content: req.content.into(),
        reply_to: req.reply_to,
    };
    let mid = send_message(&node, &me.user_id, &gid, body, req.nonce.as_deref()).await?;
    message_view(&node, &me.user_id, &gid, &channel, &mid).map(|mut m| {
        m["nonce"] = json!(req.nonce);
        created(m)
    })
}

/// Checks and sends a `MessageCreate` (REST and gateway): the nonce's size, the content, that a
/// reply points at a message in the same channel (the core accepts any id, so a remote node's
/// reply to a message this node lacks still replicates), then the write path.
pub async fn send_message(
    node: &Node,
    me: &UserId,
    gid: &GuildId,
    body: Body,
    nonce: Option<&str>,
) -> Result<OpId> {
    if nonce.is_some_and(|n| n.is_empty() || n.len() > 64) {
        return Err(ApiError::bad_request(
            "invalid_nonce",
            "nonces are 1 to 64 bytes",
        ));
    }
    if let Body::MessageCreate {
        channel,
        reply_to: Some(reply_to),
        ..
    } = &body
    {
        node.with_member_guild(me, gid, |g| in_channel(g, channel, reply_to).map(drop))?;
    }
    check_content(&body)?;
    node.submit_with(me, gid, body, nonce).await
}

/// The core's shape rules for a message's content, as `invalid_content`.
fn check_content(body: &Body) -> Result<()> {
    guildhall_proto::validate::check_body(body)
        .map_err(|why| ApiError::bad_request("invalid_content", why))
}

/// `message` if it is shown (not deleted or invalid) in `channel`, a channel or thread.
fn in_channel(g: &Guild, channel: &ChannelId, message: &MessageId) -> Result<MessageView> {
    match g.message(message) {
        Some(m) if m.channel == *channel => Ok(m),
        _ => Err(ApiError::not_found(
            "unknown_message",
            "no such message in this channel",
        )),
    }
}

/// `message` as `me` sees it in `channel`: shown there, and the channel readable.
fn shown(g: &Guild, me: &UserId, channel: &ChannelId, message: &MessageId) -> Result<MessageView> {
    let m = in_channel(g, channel, message)?;
    access::read(g, me, channel)?;
    Ok(m)
}

fn message_view(
    node: &Node,
    me: &UserId,
    gid: &GuildId,
    channel: &ChannelId,
    message: &MessageId,
) -> Result<Value> {
    node.with_member_guild(me, gid, |g| {
        shown(g, me, channel, message).map(|m| views::message_json(g, &m))
    })
}

pub async fn get_message(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c, m)): Path<(String, String, String)>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    let channel: ChannelId = id(&c, "channel id")?;
    message_view(&node, &me.user_id, &gid, &channel, &id(&m, "message id")?).map(Json)
}

#[derive(Deserialize)]
pub struct EditMessage {
    content: String,
}

pub async fn edit_message(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c, m)): Path<(String, String, String)>,
    JsonBody(req): JsonBody<EditMessage>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    let channel: ChannelId = id(&c, "channel id")?;
    let message: MessageId = id(&m, "message id")?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        shown(g, &me.user_id, &channel, &message).map(drop)
    })?;
    let body = Body::MessageEdit {
        message,
        content: req.content.into(),
    };
    check_content(&body)?;
    node.submit(&me.user_id, &gid, body).await?;
    message_view(&node, &me.user_id, &gid, &channel, &message).map(Json)
}

/// The message ops that name only a message: delete, reactions, pins.
async fn message_op(
    node: &Node,
    me: &UserId,
    (g, c, m): (&str, &str, &str),
    body: impl FnOnce(MessageId) -> Body,
) -> Result<Response> {
    let gid: GuildId = id(g, "guild id")?;
    let channel: ChannelId = id(c, "channel id")?;
    let message: MessageId = id(m, "message id")?;
    node.with_member_guild(me, &gid, |g| shown(g, me, &channel, &message).map(drop))?;
    submit_checked(node, me, &gid, body(message)).await?;
    Ok(no_content())
}

pub async fn delete_message(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c, m)): Path<(String, String, String)>,
) -> Result<Response> {
    message_op(&node, &me.user_id, (&g, &c, &m), |message| {
        Body::MessageDelete { message }
    })
    .await
}

pub async fn add_reaction(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c, m, emoji)): Path<(String, String, String, String)>,
) -> Result<Response> {
    message_op(&node, &me.user_id, (&g, &c, &m), |message| {
        Body::ReactionAdd { message, emoji }
    })
    .await
}

pub async fn remove_reaction(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c, m, emoji)): Path<(String, String, String, String)>,
) -> Result<Response> {
    message_op(&node, &me.user_id, (&g, &c, &m), |message| {
        Body::ReactionRemove { message, emoji }
    })
    .await
}

pub async fn pin(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c, m)): Path<(String, String, String)>,
) -> Result<Response> {
    message_op(&node, &me.user_id, (&g, &c, &m), |message| Body::Pin {
        message,
    })
    .await
}

pub async fn unpin(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c, m)): Path<(String, String, String)>,
) -> Result<Response> {
    message_op(&node, &me.user_id, (&g, &c, &m), |message| Body::Unpin {
        message,
    })
    .await
}

pub async fn list_pins(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    let cid: ChannelId = id(&c, "channel id")?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        access::read(g, &me.user_id, &cid)?;
        let pins: Vec<Value> = g
            .messages(&cid, None, None, usize::MAX)
            .iter()
            .filter(|m| m.pinned)
            .map(|m| views::message_json(g, m))
            .collect();
        Ok(Json(json!(pins)))
    })
}

#[derive(Deserialize)]
pub struct MarkRead {
    message_id: MessageId,
}

/// Records where the caller stopped reading a channel (kept on this node only).
pub async fn mark_read(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c)): Path<(String, String)>,
    JsonBody(req): JsonBody<MarkRead>,
) -> Result<Response> {
    let gid: GuildId = id(&g, "guild id")?;
    let channel: ChannelId = id(&c, "channel id")?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        access::read(g, &me.user_id, &channel)?;
        in_channel(g, &channel, &req.message_id).map(drop)
    })?;
    node.store
        .write(vec![Write::ReadState {
            user: me.user_id,
            channel,
            message: req.message_id,
        }])
        .await?;
    Ok(no_content())
}

pub async fn read_states(State(node): State<Arc<Node>>, Authed(me): Authed) -> Result<Json<Value>> {
    Ok(Json(views::read_states_json(
        &node.store.read_states(&me.user_id)?,
    )))
}

#[derive(Deserialize)]
pub struct CreateThread {
    name: String,
    message_id: Option<MessageId>,
}

pub async fn create_thread(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c)): Path<(String, String)>,
    JsonBody(req): JsonBody<CreateThread>,
) -> Result<Response> {
    let gid: GuildId = id(&g, "guild id")?;
    let channel: ChannelId = id(&c, "channel id")?;
    let body = Body::ThreadCreate {
        channel,
        name: req.name.clone().into(),
        message: req.message_id,
    };
    let thread = submit_checked(&node, &me.user_id, &gid, body).await?;
    Ok(created(json!({
        "id": thread,
        "channel_id": channel,
        "name": req.name,
        "message_id": req.message_id,
    })))
}

pub async fn list_threads(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path((g, c)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    let cid: ChannelId = id(&c, "channel id")?;
    node.with_member_guild(&me.user_id, &gid, |g| {
        access::read(g, &me.user_id, &cid)?;
        let threads: Vec<Value> = g
            .threads(&cid)
            .iter()
            .filter_map(|(id, _)| views::thread_json(g, id))
            .collect();
        Ok(Json(json!(threads)))
    })
}

#[derive(Deserialize)]
pub struct Search {
    q: String,
    limit: Option<usize>,
}

/// Case-insensitive substring search over the channels (and their threads) `me` can read,
/// newest first.
pub async fn search(
    State(node): State<Arc<Node>>,
    Authed(me): Authed,
    Path(g): Path<String>,
    QueryParams(req): QueryParams<Search>,
) -> Result<Json<Value>> {
    let gid: GuildId = id(&g, "guild id")?;
    let needle = req.q.trim().to_lowercase();
    if needle.is_empty() || needle.len() > 200 {
        return Err(ApiError::bad_request(
            "invalid_query",
            "q is 1 to 200 bytes",
        ));
    }
    let limit = req.limit.unwrap_or(25).clamp(1, 100);
    // Right after a restart, older history may still be loading: search all of it.
    node.history_loaded(&gid, SEARCH_HISTORY_WAIT).await;
    node.with_member_guild(&me.user_id, &gid, |g| {
        let mut hits = Vec::new();
        for cid in g.state().channels.keys() {
            if access::read(g, &me.user_id, cid).is_err() {
                continue;
            }
            let threads = g.threads(cid).into_iter().map(|(t, _)| t);
            for channel in std::iter::once(*cid).chain(threads) {
                hits.extend(
                    g.messages(&channel, None, None, usize::MAX)
                        .into_iter()
                        .filter(|m| {
                            g.open_text(&m.author, &m.content, &m.channel)
                                .is_some_and(|text| text.to_lowercase().contains(&needle))
                        }),
                );
            }
        }
        hits.sort_by_key(|m| std::cmp::Reverse((m.hlc, m.id)));
        hits.truncate(limit);
        Ok(Json(json!(
            hits.iter()
                .map(|m| views::message_json(g, m))
                .collect::<Vec<_>>()
        )))
    })
}

// ---- operations ----

pub async fn health(State(node): State<Arc<Node>>) -> Json<Value> {
    Json(json!({
        "status": if node.writes_refused() { "read_only" } else { "ok" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": node.started.elapsed().as_secs(),
        "guilds": node.guild_count(),
        "schema_version": node.store.schema_version().ok(),
    }))
}

pub async fn metrics(State(node): State<Arc<Node>>) -> String {
    let m = &node.metrics;
    let mut lines = vec![
        (
            "guildhall_ops_committed_total",
            "counter",
            "Ops committed durably.",
            m.ops_committed.load(Ordering::Relaxed),
        ),
        (
            "guildhall_requests_total",
            "counter",
            "Authenticated REST requests.",
            m.requests.load(Ordering::Relaxed),
        ),
        (
            "guildhall_gateway_connections_total",
            "counter",
            "Gateway connections accepted.",
            m.gateway_sessions.load(Ordering::Relaxed),
        ),
        (
            "guildhall_dispatches_total",
            "counter",
            "Gateway dispatches queued.",
            m.dispatches.load(Ordering::Relaxed),
        ),
        (
            "guildhall_gateway_sessions",
            "gauge",
            "Gateway sessions held (attached or resumable).",
            node.sessions.len() as u64,
        ),
        (
            "guildhall_guilds",
            "gauge",
            "Guild replicas held.",
            node.guild_count() as u64,
        ),
    ];
    if let Some(net) = node.net() {
        lines.push((
            "guildhall_peers",
            "gauge",
            "Federation peers connected now.",
            net.peers().await.len() as u64,
        ));
    }
    if let Some(voice) = node.voice_stats().await {
        lines.extend([
            (
                "guildhall_voice_participants",
                "gauge",
                "Voice connections held by the SFU.",
                voice.participants as u64,
            ),
            (
                "guildhall_voice_packets_received_total",
                "counter",
                "Audio frames received from participants.",
                voice.packets_in,
            ),
            (
                "guildhall_voice_packets_forwarded_total",
                "counter",
                "Audio frames forwarded to listeners.",
                voice.packets_forwarded,
            ),
            (
                "guildhall_voice_packets_silenced_total",
                "counter",
                "Audio frames dropped because their sender may not speak (muted or no SPEAK).",
                voice.packets_silenced,
            ),
        ]);
    }
    lines
        .iter()
        .map(|(name, kind, help, value)| {
            format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n")
        })
        .collect()
}
