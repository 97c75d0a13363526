//! The gRPC service: the only module that knows proto types (with `client/`).
//!
//! `Node` opens a log and its group-commit writer; `serve` puts the `log.v1.Log` service (plus
//! grpc.health.v1 and reflection in production builds) on a listener until a shutdown signal, then
//! finishes in-flight appends, syncs and closes the log.

mod convert;
mod node;
mod service;

pub use convert::status_from_log_error;
pub use node::{Node, NodeError};
pub use service::LogService;

use std::future::Future;

use crate::proto::log_server::LogServer;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("gRPC transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("closing the log failed: {0}")]
    Close(#[from] crate::log::LogError),
    #[error("building the reflection service failed: {0}")]
    Reflection(String),
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
        .max_encoding_message_size(limits.message_bytes_max);
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let shutdown = stop_streams_on(node.clone(), shutdown);
    tracing::info!(node_id = %node.config().node_id, "serving");
    tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(log_server)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    tracing::info!("stopped accepting; draining appends and closing the log");
    node.shutdown().await?;
    Ok(())
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
    let shutdown = stop_streams_on(node.clone(), shutdown);
    tonic::transport::Server::builder()
        .add_service(LogServer::new(service))
        .serve_with_shutdown(addr, shutdown)
        .await?;
    node.shutdown().await?;
    Ok(())
}

/// `shutdown`, then tell the node's streams to end: the server waits for every open call before
/// it returns, and a following stream would otherwise never end.
fn stop_streams_on(
    node: Node,
    shutdown: impl Future<Output = ()> + Send,
) -> impl Future<Output = ()> + Send {
    async move {
        shutdown.await;
        node.begin_shutdown();
    }
}
