//! The node's metrics in Prometheus text format, and the HTTP endpoint that serves them.
//!
//! Counters and histograms are updated where the work happens (`NodeMetrics` by the service,
//! `LogMetrics` by the log); gauges that live elsewhere (the log's segments and offsets,
//! openraft's metrics, the gossip view) are read here, at scrape time, so the hot path never
//! pays for them.
//!
//! `loghouse_rpc_duration_seconds{rpc}`: a unary RPC observes the whole call, from the request
//! reaching the service to its answer. A streaming RPC observes each batch it handles, not the
//! call (a following stream lasts for ever): ProduceStream one append, from the first of its
//! messages being read to its acknowledgement; ConsumeStream and ConsumeBatchStream one read of
//! the log, up to the messages being queued for the client (not the wait for the client).

use crate::metrics::{Rpc, TextEncoder};

use super::node::Node;

/// Everything the node measures, in the Prometheus text exposition format 0.0.4.
pub fn render(node: &Node) -> String {
    let m = node.metrics();
    let mut e = TextEncoder::new();
    e.counter(
        "loghouse_produce_records_total",
        "Records acknowledged to producers by this node.",
        m.produce_records.get(),
    );
    e.counter(
        "loghouse_produce_bytes_total",
        "Value bytes of the records acknowledged to producers by this node.",
        m.produce_bytes.get(),
    );
    e.counter(
        "loghouse_consume_records_total",
        "Records sent to consumers by this node.",
        m.consume_records.get(),
    );
    e.counter(
        "loghouse_consume_bytes_total",
        "Value bytes of the records sent to consumers by this node.",
        m.consume_bytes.get(),
    );

    let name = "loghouse_rpc_duration_seconds";
    e.family(
        name,
        "histogram",
        "log.v1 RPC latency: per call for unary RPCs, per batch for streaming RPCs.",
    );
    for rpc in Rpc::ALL {
        e.histogram(name, &[("rpc", rpc.name())], &m.rpc_seconds(rpc).snapshot());
    }
    let name = "loghouse_rpc_errors_total";
    e.family(
        name,
        "counter",
        "log.v1 calls (streams: batches) answered with an error status.",
    );
    for rpc in Rpc::ALL {
        e.sample_u64(name, &[("rpc", rpc.name())], m.rpc_errors(rpc).get());
    }

    e.counter(
        "loghouse_fsync_total",
        "Successful fsyncs of the log's store files (on a member: data and Raft entry logs).",
        m.log.fsyncs.get(),
    );
    let name = "loghouse_fsync_duration_seconds";
    e.family(name, "histogram", "How long each log fsync took.");
    e.histogram(name, &[], &m.log.fsync_seconds.snapshot());

    let info = node.log().info();
    e.gauge(
        "loghouse_log_segments",
        "Segments in the log.",
        f64::from(info.segment_count),
    );
    e.gauge(
        "loghouse_log_bytes",
        "Bytes in the log's store files.",
        info.size_bytes as f64,
    );
    e.gauge(
        "loghouse_log_lowest_offset",
        "The lowest offset still in the log.",
        info.lowest_offset as f64,
    );
    e.gauge(
        "loghouse_log_next_offset",
        "One past the last record written to the log (committed or not).",
        info.next_offset as f64,
    );
    e.gauge(
        "loghouse_log_committed_offset",
        "One past the last committed record: consumers read below it.",
        node.committed_offset() as f64,
    );

    if let Some(raft) = node.raft_status() {
        e.gauge(
            "loghouse_raft_term",
            "The Raft term this member is in.",
            raft.term as f64,
        );
        e.gauge(
            "loghouse_raft_leader_id",
            "The leader this member knows of (0: none).",
            raft.leader.unwrap_or(0) as f64,
        );
        e.gauge(
            "loghouse_raft_is_leader",
            "1 on the leader, 0 elsewhere.",
            if raft.is_leader { 1.0 } else { 0.0 },
        );
        e.gauge(
            "loghouse_raft_last_log_index",
            "The last Raft index in this member's log.",
            raft.last_log_index as f64,
        );
        e.gauge(
            "loghouse_raft_commit_index",
            "The last Raft index this member knows to be committed.",
            raft.commit_index as f64,
        );
        e.gauge(
            "loghouse_raft_applied_index",
            "The last Raft index this member has applied.",
            raft.applied_index as f64,
        );
        let name = "loghouse_raft_replication_lag_entries";
        e.family(
            name,
            "gauge",
            "On the leader: Raft entries each follower is behind the leader's last entry.",
        );
        for (follower, lag) in &raft.replication_lag {
            e.sample_u64(name, &[("follower", &follower.to_string())], *lag);
        }
    }
    if let Some(gossip) = node.gossip_counts() {
        let name = "loghouse_gossip_members";
        e.family(
            name,
            "gauge",
            "Members (this one included) by gossip's opinion of them.",
        );
        e.sample_u64(name, &[("state", "up")], gossip.up);
        e.sample_u64(name, &[("state", "suspect")], gossip.suspect);
        e.sample_u64(name, &[("state", "down")], gossip.down);
    }
    e.finish()
}

/// Serves `GET /metrics` (and `GET /healthz`) over HTTP/1.1 on `listener` until the node begins
/// to shut down. Bounded: one request per connection, at most `CONNECTIONS_MAX` connections at a
/// time (further ones wait in the accept queue), each closed after `CONNECTION_TIMEOUT`.
#[cfg(not(madsim))]
pub async fn serve_metrics(node: Node, listener: tokio::net::TcpListener) {
    use std::sync::Arc;
    use std::time::Duration;

    const CONNECTIONS_MAX: usize = 16;
    const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

    let slots = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    let stopping = node.stopping();
    tokio::pin!(stopping);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics on http://{addr}/metrics");
    }
    loop {
        let slot = tokio::select! {
            biased;
            _ = &mut stopping => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            biased;
            _ = &mut stopping => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let response = endpoint::respond(&node, &request);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "metrics endpoint: connection failed"),
                Err(_) => tracing::debug!("metrics endpoint: connection timed out"),
            }
        });
    }
}

#[cfg(not(madsim))]
mod endpoint {
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{header, Method, Request, Response, StatusCode};

    use super::{render, Node};
    use crate::metrics::TextEncoder;

    pub(super) fn respond<B>(node: &Node, request: &Request<B>) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match (request.method(), request.uri().path()) {
            (&Method::GET, "/metrics") => (
                StatusCode::OK,
                TextEncoder::CONTENT_TYPE,
                Bytes::from(render(node)),
            ),
            (&Method::GET, "/healthz") if node.is_stopping() => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                Bytes::from_static(b"stopping\n"),
            ),
            (&Method::GET, "/healthz") => {
                (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n"))
            }
            (_, "/metrics" | "/healthz") => (
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                Bytes::from_static(b"only GET\n"),
            ),
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain",
                Bytes::from_static(b"not found: try /metrics\n"),
            ),
        };
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    }
}
