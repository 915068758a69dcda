//! Guildhall's client-facing service: accounts, the REST API and the WebSocket gateway, a thin
//! shell that sends every write through the core (`guildhall-proto`) and the store.

pub mod accounts;
mod backfill;
mod channel_keys;
pub mod dm;
pub mod error;
pub mod federation;
mod history;
pub mod node;
pub mod rest;
mod views;
pub mod voice;
mod web;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch, post, put};
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use node::{Node, NodeConfig};

/// Request bodies above this are refused with `payload_too_large`.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// A DM send carries a hex envelope of up to twice `dm::MAX_DM_ENVELOPE_BYTES`.
pub const MAX_DM_BODY_BYTES: usize = 2 * guildhall_proto::dm::MAX_DM_ENVELOPE_BYTES + 1024;

pub fn router(node: Arc<Node>) -> Router {
    use rest::*;
    let api = Router::new()
        .route("/auth/register", post(register))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/logout-all", post(logout_all))
        .route("/users/@me", get(me))
        .route("/users/@me/key", post(export_key))
        .route("/users/@me/read-states", get(read_states))
        .route("/users/{user}", get(user_profile))
        .route("/guilds", get(list_guilds).post(create_guild))
        .route(
            "/guilds/{g}",
            get(get_guild).patch(update_guild).delete(delete_guild),
        )
        .route(
            "/guilds/{g}/channels",
            get(list_channels)
                .post(create_channel)
                .patch(reorder_channels),
        )
        .route(
            "/guilds/{g}/channels/{c}",
            patch(update_channel).delete(delete_channel),
        )
        .route(
            "/guilds/{g}/channels/{c}/overwrites/{kind}/{target}",
            put(set_overwrite).delete(clear_overwrite),
        )
        .route(
            "/guilds/{g}/channels/{c}/messages",
            get(list_messages).post(create_message),
        )
        .route(
            "/guilds/{g}/channels/{c}/messages/{m}",
            get(get_message).patch(edit_message).delete(delete_message),
        )
        .route(
            "/guilds/{g}/channels/{c}/messages/{m}/reactions/{emoji}",
            put(add_reaction).delete(remove_reaction),
        )
        .route("/guilds/{g}/channels/{c}/read", put(mark_read))
        .route("/guilds/{g}/channels/{c}/pins", get(list_pins))
        .route("/guilds/{g}/channels/{c}/pins/{m}", put(pin).delete(unpin))
        .route(
            "/guilds/{g}/channels/{c}/threads",
            get(list_threads).post(create_thread),
        )
        .route("/guilds/{g}/roles", post(create_role))
        .route(
            "/guilds/{g}/roles/{r}",
            patch(update_role).delete(delete_role),
        )
        .route("/guilds/{g}/members", get(list_members))
        .route("/guilds/{g}/voice-states", get(voice::routes::list))
        .route(
            "/guilds/{g}/members/{u}/voice",
            patch(voice::routes::moderate),
        )
        .route(
            "/guilds/{g}/members/{u}",
            patch(update_member).delete(remove_member),
        )
        .route(
            "/guilds/{g}/members/{u}/roles/{r}",
            put(grant_role).delete(revoke_role),
        )
        .route("/guilds/{g}/bans", get(list_bans))
        .route("/guilds/{g}/bans/{u}", put(ban).delete(unban))
        .route("/guilds/{g}/invites", get(list_invites).post(create_invite))
        .route(
            "/guilds/{g}/invites/{i}",
            axum::routing::delete(revoke_invite),
        )
        .route("/invites/{code}/accept", post(accept_invite))
        .route("/guilds/{g}/search", get(search))
        .route(
            "/users/@me/dm-keys",
            get(dm::routes::keys).put(dm::routes::publish_key),
        )
        .route("/users/{user}/dm-keys", get(dm::routes::keys))
        .route("/dms/home", get(dm::routes::home))
        .route(
            "/dms",
            get(dm::routes::inbox)
                .post(dm::routes::send)
                .layer(DefaultBodyLimit::max(MAX_DM_BODY_BYTES)),
        )
        .route("/gateway", get(ws::upgrade))
        .fallback(|| async {
            ApiError::not_found("unknown_endpoint", "no such endpoint; see spec/rest.md")
        });
    Router::new()
        .nest("/api/v1", api)
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .merge(web::routes())
        .layer(axum::middleware::from_fn_with_state(
            node.clone(),
            ip_rate_limit,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(node)
}

/// Refuses requests beyond the per-IP budget before any other work.
async fn ip_rate_limit(
    axum::extract::State(node): axum::extract::State<Arc<Node>>,
    rest::ClientIp(ip): rest::ClientIp,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match node.rate_check(ip, node.config.ip_rate, node.config.ip_burst) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Serves the node on `listener` until the process ends.
pub async fn serve(node: Arc<Node>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    node.spawn_nonce_expiry();
    // Small frames must leave at once: Nagle's algorithm with delayed ACKs adds 40 ms stalls.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        router(node).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// Raises this process's soft limit on open files to its hard limit (each client is a socket;
/// the usual soft limit of 1,024 caps a node, or a load generator, far below 10,000 clients).
/// Returns the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_open_file_limit_is_raised_to_the_hard_limit() {
        let raised = super::raise_fd_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct passed to it.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(raised, limit.rlim_cur);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }
}
