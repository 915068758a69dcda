//! Direct messages on the node: users' DM key records, and DM envelopes stored, delivered to
//! local members' sessions and handed to other members' home nodes. The node only ever holds
//! ciphertext; DM secrets stay with clients (`spec/dm.md`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use guildhall_net::protocol::{MAX_DM_REQUEST_BYTES, MAX_DMS_PER_REQUEST};
use guildhall_net::{Multiaddr, NetError, Refusal};
use guildhall_proto::dm::{DmEnvelope, DmError, DmKeyRecord, VerifiedDm};
use guildhall_proto::id::UserId;
use guildhall_store::{PendingDm, Write};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::node::{Node, now_ms};

/// How often DMs for other nodes are retried when nothing prompts a delivery sooner.
const DELIVERY_RETRY: Duration = Duration::from_secs(2);
/// A DM's id and its envelope's bytes.
type StoredDm = ([u8; 32], Vec<u8>);

/// DMs in one inbox page at most.
pub const MAX_INBOX_PAGE: usize = 500;

/// A key record's `home` as a dialable address: a multiaddr naming its peer.
fn home_addr(home: &[u8]) -> Option<Multiaddr> {
    let addr = Multiaddr::try_from(home.to_vec()).ok()?;
    guildhall_net::peer_of(&addr).map(|_| addr)
}

impl From<DmError> for ApiError {
    fn from(e: DmError) -> Self {
        ApiError::bad_request(e.code(), e.to_string())
    }
}

impl Node {
    /// Publishes a DM key record the caller signed for itself; versions only go up.
    pub async fn publish_dm_key(&self, caller: &UserId, bytes: &[u8]) -> Result<u64, ApiError> {
        let record = DmKeyRecord::verify(bytes)?;
        if record.user != *caller {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_your_key",
                "the record is for another user",
            ));
        }
        if let Some(newest) = self.newest_dm_key(caller)?
            && newest.version >= record.version
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "dm_key_version_taken",
                format!(
                    "version {} is published already; rotate with a version above it",
                    newest.version
                ),
            ));
        }
        self.store
            .write(vec![Write::DmKey {
                user: record.user,
                version: record.version,
                bytes: bytes.to_vec(),
            }])
            .await?;
        Ok(record.version)
    }

    /// A user's DM key records, oldest version first. For a user of another node, asks the
    /// connected peers first and keeps what verifies.
    pub async fn dm_keys(&self, user: &UserId) -> Result<Vec<Vec<u8>>, ApiError> {
        if !self.has_account(user)?
            && let Some(net) = self.net()
        {
            let fetched: Vec<Write> = net
                .dm_keys(*user)
                .await
                .into_iter()
                .filter_map(|bytes| {
                    let record = DmKeyRecord::verify(&bytes).ok()?;
                    (record.user == *user).then_some(Write::DmKey {
                        user: record.user,
                        version: record.version,
                        bytes,
                    })
                })
                .collect();
            if !fetched.is_empty() {
                self.store.write(fetched).await?;
            }
        }
        Ok(self.store.dm_keys(user)?)
    }

    fn newest_dm_key(&self, user: &UserId) -> Result<Option<DmKeyRecord>, ApiError> {
        Ok(self
            .store
            .dm_keys(user)?
            .last()
            .and_then(|bytes| DmKeyRecord::verify(bytes).ok()))
    }

    /// Stores a DM the caller sent, hands it to its local members' sessions, and queues it
    /// for the home nodes of the others. Returns its id and its place in the caller's inbox.
    pub async fn send_dm(&self, caller: &UserId, bytes: &[u8]) -> Result<Value, ApiError> {
        let dm = DmEnvelope::verify(bytes)?;
        if dm.envelope.sender != *caller {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_your_dm",
                "the envelope's sender is another user",
            ));
        }
        self.check_dm_fresh(&dm)?;
        let mut local = Vec::new();
        let mut writes = Vec::new();
        for member in dm.envelope.members() {
            if self.has_account(member)? {
                local.push(*member);
                continue;
            }
            let home = self
                .newest_dm_key(member)?
                .map(|r| r.home)
                .filter(|home| self.net().is_some() && home_addr(home).is_some())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "dm_unreachable_member",
                        format!(
                            "member {member} is not on this node and no reachable home node is \
                             known for them; fetch their DM keys first"
                        ),
                    )
                })?;
            writes.push(Write::DmOutbox {
                id: dm.id,
                member: *member,
                home,
            });
        }
        let remote = !writes.is_empty();
        writes.insert(
            0,
            Write::Dm {
                id: dm.id,
                bytes: dm.bytes.clone(),
                local_members: local.clone(),
            },
        );
        self.store.write(writes).await?;
        let position = self.dispatch_dm(&dm, &local, Some(caller));
        if remote {
            self.dm_delivery.notify_one();
        }
        Ok(json!({ "id": hex::encode(dm.id), "position": position }))
    }

    fn check_dm_fresh(&self, dm: &VerifiedDm) -> Result<(), ApiError> {
        let limit = now_ms() + self.config.max_clock_skew.as_millis() as u64;
        if dm.envelope.sent_ms > limit {
            return Err(ApiError::bad_request(
                "dm_from_future",
                "the DM's sent time is ahead of this node's clock",
            ));
        }
        Ok(())
    }

    /// Sends `DM_CREATE` to the sessions of each local member; returns `caller`'s inbox
    /// position for the DM. The DM is durable by now, so a failed read only costs the
    /// position (clients catch up from the inbox).
    fn dispatch_dm(&self, dm: &VerifiedDm, local: &[UserId], caller: Option<&UserId>) -> u64 {
        let envelope = hex::encode(&dm.bytes);
        let mut caller_position = 0;
        for member in local {
            let position = match self.store.dm_position(member, &dm.id) {
                Ok(position) => position.unwrap_or(0),
                Err(e) => {
                    tracing::warn!(error = %e, "reading a DM's inbox position");
                    0
                }
            };
            if Some(member) == caller {
                caller_position = position;
            }
            self.sessions.push_to_user(
                member,
                "DM_CREATE",
                &json!({ "id": hex::encode(dm.id), "position": position, "envelope": envelope }),
            );
        }
        caller_position
    }

    /// DMs a peer hands over: every one must verify and have a member with an account here.
    pub async fn take_dms(&self, envelopes: Vec<Vec<u8>>) -> Result<u32, Refusal> {
        self.store_handed_over(&envelopes)
            .await
            .map(|()| envelopes.len() as u32)
            .map_err(|e| Refusal::new(e.code, e.message))
    }

    async fn store_handed_over(&self, envelopes: &[Vec<u8>]) -> Result<(), ApiError> {
        let mut accepted: Vec<(VerifiedDm, Vec<UserId>)> = Vec::with_capacity(envelopes.len());
        let mut writes = Vec::with_capacity(envelopes.len());
        for bytes in envelopes {
            let dm = DmEnvelope::verify(bytes)?;
            self.check_dm_fresh(&dm)?;
            let mut local = Vec::new();
            for member in dm.envelope.members() {
                if self.has_account(member)? {
                    local.push(*member);
                }
            }
            if local.is_empty() {
                return Err(ApiError::bad_request(
                    "not_home",
                    "no member of this DM has an account on this node",
                ));
            }
            let repeated = accepted.iter().any(|(earlier, _)| earlier.id == dm.id);
            if !repeated && self.store.dm(&dm.id)?.is_none() {
                writes.push(Write::Dm {
                    id: dm.id,
                    bytes: dm.bytes.clone(),
                    local_members: local.clone(),
                });
                accepted.push((dm, local));
            }
        }
        self.store.write(writes).await?;
        for (dm, local) in &accepted {
            self.dispatch_dm(dm, local, None);
        }
        Ok(())
    }

    /// Whether `user` has an account on this node (so this node is their home).
    fn has_account(&self, user: &UserId) -> Result<bool, ApiError> {
        Ok(self.store.username_of(user)?.is_some())
    }

    /// A page of the caller's DMs after inbox position `after`.
    pub fn dm_inbox(&self, user: &UserId, after: u64, limit: usize) -> Result<Value, ApiError> {
        let page = self
            .store
            .dm_inbox(user, after, limit.min(MAX_INBOX_PAGE))?;
        let next = page.last().map_or(after, |entry| entry.position);
        let dms: Vec<Value> = page
            .into_iter()
            .map(|entry| {
                json!({
                    "id": hex::encode(entry.id),
                    "position": entry.position,
                    "envelope": hex::encode(entry.envelope),
                })
            })
            .collect();
        Ok(json!({ "dms": dms, "next": next }))
    }

    /// Hands queued DMs to other members' home nodes until the node is dropped: at once when
    /// a send queues one, and every `DELIVERY_RETRY` for those whose home was unreachable.
    pub(crate) fn spawn_dm_delivery(self: &Arc<Self>) {
        let node = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(strong) = node.upgrade() else { return };
                if let Err(e) = strong.deliver_pending_dms().await {
                    tracing::warn!(error = %e.message, "DM delivery");
                }
                let wake = strong.dm_delivery.clone();
                drop(strong);
                let _ = tokio::time::timeout(DELIVERY_RETRY, wake.notified()).await;
            }
        });
    }

    async fn deliver_pending_dms(&self) -> Result<(), ApiError> {
        let Some(net) = self.net() else {
            return Ok(());
        };
        let mut by_home: BTreeMap<Vec<u8>, Vec<PendingDm>> = BTreeMap::new();
        for pending in self.store.dm_outbox()? {
            by_home
                .entry(pending.home.clone())
                .or_default()
                .push(pending);
        }
        for (home, pending) in by_home {
            let Some(addr) = home_addr(&home) else {
                tracing::warn!("dropping queued DMs for a home that is not a /p2p/ address");
                self.hand_over(&pending, |_| true).await?;
                continue;
            };
            let mut ids: Vec<[u8; 32]> = pending.iter().map(|p| p.id).collect();
            ids.dedup();
            for chunk in self.dm_chunks(&ids)? {
                let (chunk_ids, envelopes): (Vec<[u8; 32]>, Vec<Vec<u8>>) =
                    chunk.into_iter().unzip();
                match net.deliver_dms(addr.clone(), envelopes.clone()).await {
                    Ok(_) => {
                        self.hand_over(&pending, |id| chunk_ids.contains(id))
                            .await?
                    }
                    // The home refused the batch for good: retry each alone and drop the ones
                    // it refuses, so one bad DM cannot hold up the others forever.
                    Err(NetError::Refused(_)) => {
                        for (id, envelope) in chunk_ids.iter().zip(envelopes) {
                            match net.deliver_dms(addr.clone(), vec![envelope]).await {
                                Ok(_) => {}
                                Err(NetError::Refused(r)) => {
                                    tracing::warn!(%addr, code = r.code, "a home node refused a DM; dropped");
                                }
                                Err(_) => break,
                            }
                            self.hand_over(&pending, |p| p == id).await?;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "DM delivery failed; will retry");
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Takes the queued DMs `which` selects off the outbox.
    async fn hand_over(
        &self,
        pending: &[PendingDm],
        which: impl Fn(&[u8; 32]) -> bool,
    ) -> Result<(), ApiError> {
        let handed: Vec<Write> = pending
            .iter()
            .filter(|p| which(&p.id))
            .map(|p| Write::DmHandedOver {
                id: p.id,
                member: p.member,
            })
            .collect();
        self.store.write(handed).await?;
        Ok(())
    }

    /// The stored envelopes of `ids`, cut into requests within the protocol's limits.
    fn dm_chunks(&self, ids: &[[u8; 32]]) -> Result<Vec<Vec<StoredDm>>, ApiError> {
        let mut chunks: Vec<Vec<StoredDm>> = vec![Vec::new()];
        let mut bytes = 0;
        for id in ids {
            let Some(envelope) = self.store.dm(id)? else {
                continue;
            };
            let current = chunks.last_mut().expect("never empty");
            if current.len() == MAX_DMS_PER_REQUEST || bytes + envelope.len() > MAX_DM_REQUEST_BYTES
            {
                bytes = 0;
                chunks.push(Vec::new());
            }
            bytes += envelope.len();
            chunks
                .last_mut()
                .expect("never empty")
                .push((*id, envelope));
        }
        chunks.retain(|c| !c.is_empty());
        Ok(chunks)
    }
}

/// The REST endpoints of `spec/rest.md` §4.11.
pub mod routes {
    use std::sync::Arc;

    use axum::Json;
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};
    use guildhall_proto::id::UserId;
    use serde::Deserialize;
    use serde_json::{Value, json};

    use crate::error::ApiError;
    use crate::node::Node;
    use crate::rest::{Authed, JsonBody, QueryParams};

    type Result<T> = std::result::Result<T, ApiError>;

    fn unhex(text: &str, what: &str) -> Result<Vec<u8>> {
        let lowercase = !text.bytes().any(|b| b.is_ascii_uppercase());
        hex::decode(text).ok().filter(|_| lowercase).ok_or_else(|| {
            ApiError::bad_request("invalid_hex", format!("{what} must be lowercase hex"))
        })
    }

    #[derive(Deserialize)]
    pub struct PublishKey {
        record: String,
    }

    pub async fn publish_key(
        State(node): State<Arc<Node>>,
        Authed(me): Authed,
        JsonBody(req): JsonBody<PublishKey>,
    ) -> Result<Response> {
        let version = node
            .publish_dm_key(&me.user_id, &unhex(&req.record, "record")?)
            .await?;
        Ok((StatusCode::CREATED, Json(json!({ "version": version }))).into_response())
    }

    pub async fn keys(
        State(node): State<Arc<Node>>,
        Authed(me): Authed,
        Path(user): Path<String>,
    ) -> Result<Json<Value>> {
        let user = if user == "@me" {
            me.user_id
        } else {
            user.parse::<UserId>().map_err(|_| {
                ApiError::bad_request("invalid_id", "user id must be 64 lowercase hex digits")
            })?
        };
        let records: Vec<String> = node.dm_keys(&user).await?.iter().map(hex::encode).collect();
        Ok(Json(json!({ "records": records })))
    }

    /// Where this node is reached, for the `home` of its users' DM key records.
    pub async fn home(State(node): State<Arc<Node>>, Authed(_): Authed) -> Json<Value> {
        let home = node
            .federation_addr()
            .map(|a| a.to_vec())
            .unwrap_or_default();
        Json(json!({ "home": hex::encode(home) }))
    }

    #[derive(Deserialize)]
    pub struct SendDm {
        envelope: String,
    }

    pub async fn send(
        State(node): State<Arc<Node>>,
        Authed(me): Authed,
        JsonBody(req): JsonBody<SendDm>,
    ) -> Result<Response> {
        let sent = node
            .send_dm(&me.user_id, &unhex(&req.envelope, "envelope")?)
            .await?;
        Ok((StatusCode::CREATED, Json(sent)).into_response())
    }

    #[derive(Deserialize)]
    pub struct InboxQuery {
        #[serde(default)]
        after: u64,
        limit: Option<usize>,
    }

    pub async fn inbox(
        State(node): State<Arc<Node>>,
        Authed(me): Authed,
        QueryParams(q): QueryParams<InboxQuery>,
    ) -> Result<Json<Value>> {
        Ok(Json(node.dm_inbox(
            &me.user_id,
            q.after,
            q.limit.unwrap_or(100),
        )?))
    }
}
