//! The gRPC service: the only module that knows proto types (with `client/`).
//!
//! `Node` opens a log and its group-commit writer; `serve` puts the `log.v1.Log` service (plus
//! grpc.health.v1 and reflection in production builds) on a listener until a shutdown signal, then
//! finishes in-flight appends, syncs and closes the log.

mod admission;
mod auth;
mod convert;
mod member;
mod metrics;
mod node;
pub mod partition;
mod raft_rpc;
pub mod repair;
mod service;
pub mod supervisor;
pub mod topics;

pub use auth::{decisions as auth_decisions, Decisions as AuthDecisions, Guard};
pub use convert::status_from_log_error;
pub use member::{start_member, Member, MemberError};
#[cfg(not(madsim))]
pub use metrics::serve_metrics;
pub use metrics::{render as render_metrics, render_scrape, PartitionGauges};
pub use node::{GossipCounts, PendingWrite, RaftStatus, ServerInfo};
pub use node::{Node, NodeError};
pub use raft_rpc::{GrpcRaftTransport, RaftRpcService};
pub use service::LogService;

use std::future::Future;
#[cfg(not(madsim))]
use std::time::Duration;

use self::admission::CallLimit;
use crate::proto::log_server::LogServer;
use crate::proto::raft::raft_server::RaftServer;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("gRPC transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("closing the node failed: {0}")]
    Close(#[from] NodeError),
    #[error("building the reflection service failed: {0}")]
    Reflection(String),
    /// Raft stopped on its own (damage found, a storage failure): the member served until it
    /// had drained, and should be started again (its store repairs damage when it opens).
    #[error("raft stopped: {0}")]
    RaftStopped(String),
}

/// Serves `node` on `listener` until `shutdown` completes, then drains and closes the log.
#[cfg(not(madsim))]
pub async fn serve(
    node: Node,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let limits = node.config().limits.clone();
    let service = LogService::new(node.clone());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<LogServer<LogService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServerError::Reflection(e.to_string()))?;
    let log_server = LogServer::new(service)
        .max_decoding_message_size(limits.message_bytes_max)
        .max_encoding_message_size(limits.response_bytes_max());
    // Node-wide cap on log.v1 calls (not on Raft, health or reflection): see server::admission.
    let log_server = CallLimit::new(log_server, node.admission().clone());
    // Without TCP_NODELAY every small response waits for the peer's delayed ACK (~40 ms). TCP
    // keepalive finds peers whose host went away; HTTP/2 PINGs (below) find the rest.
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_millis(limits.tcp_keepalive_ms)));
    let stop = StopReason::default();
    let shutdown = stop_streams_on(node.clone(), stop.until_raft_stops(&node, shutdown));
    let raft_server = raft_server(&node);
    let tls = node.config().secrets.tls.as_ref();
    tracing::info!(node_id = %node.config().node_id, replicated = raft_server.is_some(),
        tls = tls.is_some(), mutual_tls = tls.is_some_and(|t| t.requires_client_cert()),
        acl = node.config().secrets.acl.is_some(), "serving");
    // A connection whose PING goes unanswered is closed, ending its calls and streams: a
    // client that vanished (or paused) without closing releases its stream slots and windows.
    let mut builder = tonic::transport::Server::builder()
        .max_frame_size(crate::codec::HTTP2_FRAME_BYTES_MAX)
        .http2_keepalive_interval(Some(Duration::from_millis(
            limits.http2_keepalive_interval_ms,
        )))
        .http2_keepalive_timeout(Some(Duration::from_millis(
            limits.http2_keepalive_timeout_ms,
        )));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls.server_config())?;
    }
    builder
        .add_service(health_service)
        .add_service(reflection)
        .add_service(log_server)
        .add_optional_service(raft_server)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    tracing::info!("stopped accepting; draining appends and closing the log");
    stop.into_result(node.shutdown().await)
}

/// Serves `node` on `addr` inside the simulation (madsim-tonic has no listener-based serve, no
/// health and no reflection services).
#[cfg(madsim)]
pub async fn serve(
    node: Node,
    addr: std::net::SocketAddr,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let service = LogService::new(node.clone());
    let stop = StopReason::default();
    let shutdown = stop_streams_on(node.clone(), stop.until_raft_stops(&node, shutdown));
    tonic::transport::Server::builder()
        .add_service(CallLimit::new(
            LogServer::new(service),
            node.admission().clone(),
        ))
        // (madsim-tonic ignores message size limits and keepalive; it has no TCP.)
        .add_optional_service(node.raft().map(|raft| {
            RaftServer::new(RaftRpcService::new(
                raft.raft().clone(),
                raft.vote_guard().clone(),
                node.guard().clone(),
            ))
        }))
        .serve_with_shutdown(addr, shutdown)
        .await?;
    stop.into_result(node.shutdown().await)
}

/// The members-only Raft service, on a cluster member.
#[cfg(not(madsim))]
fn raft_server(node: &Node) -> Option<RaftServer<RaftRpcService>> {
    // Only a member has Raft; its messages are bounded by the settings' hard limits.
    let raft_node = node.raft()?;
    let (raft, vote_guard) = (raft_node.raft().clone(), raft_node.vote_guard().clone());
    let bytes_max = crate::config::RAFT_MESSAGE_BYTES_MAX;
    Some(
        RaftServer::new(RaftRpcService::new(raft, vote_guard, node.guard().clone()))
            .max_decoding_message_size(bytes_max)
            .max_encoding_message_size(bytes_max),
    )
}

/// Why serving ended, when it was Raft stopping on its own rather than a shutdown signal.
#[derive(Clone, Default)]
struct StopReason(std::sync::Arc<parking_lot::Mutex<Option<String>>>);

impl StopReason {
    /// `shutdown`, or Raft stopping on its own (recorded), whichever comes first.
    fn until_raft_stops(
        &self,
        node: &Node,
        shutdown: impl Future<Output = ()> + Send,
    ) -> impl Future<Output = ()> + Send {
        let stopped = node.raft().map(|raft| raft.stopped());
        let reason = self.0.clone();
        async move {
            let Some(stopped) = stopped else {
                return shutdown.await;
            };
            tokio::select! {
                biased;
                () = shutdown => {}
                why = stopped => {
                    tracing::error!(reason = %why, "raft stopped; draining and closing to start again");
                    *reason.lock() = Some(why);
                }
            }
        }
    }

    /// `closed`: how closing the node went (after Raft stopped, a failure there is only
    /// logged: the member is started again either way).
    fn into_result(self, closed: Result<(), NodeError>) -> Result<(), ServerError> {
        match (self.0.lock().take(), closed) {
            (Some(why), closed) => {
                if let Err(error) = closed {
                    tracing::warn!(%error, "closing the node after raft stopped");
                }
                Err(ServerError::RaftStopped(why))
            }
            (None, closed) => Ok(closed?),
        }
    }
}

/// `shutdown`, then tell the node's streams to end: the server waits for every open call before
/// it returns, and a following stream would otherwise never end.
async fn stop_streams_on(node: Node, shutdown: impl Future<Output = ()> + Send) {
    shutdown.await;
    node.begin_shutdown();
}
