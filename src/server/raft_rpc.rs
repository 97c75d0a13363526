//! The members-only `raft.v1.Raft` service and the gRPC `RaftTransport`: proto in, bytes out.
//! Encoding and the calls into openraft live in `raft::network`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::proto::raft::raft_client::RaftClient;
use crate::proto::raft::raft_server;
use crate::proto::raft::RaftMessage;
use crate::raft::network::{handle_rpc, RaftRpc, RaftTransport, TransportError, TransportFuture};
use crate::raft::types::Raft;
use crate::raft::vote_guard::VoteGuard;
use crate::security::{Action, ClientTls};

use super::auth::Guard;

/// How long a connection attempt to a member may take before the call counts as unreachable.
const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// Serves Raft RPCs from other members on the local Raft. Callers need the `raft` action
/// (with an ACL, only the members' certificate CNs should have it).
pub struct RaftRpcService {
    raft: Raft,
    guard: Arc<VoteGuard>,
    /// Who may call (the `raft` action).
    access: Arc<Guard>,
}

impl RaftRpcService {
    /// `vote_guard`: the replica's (`RaftNode::vote_guard`); `access`: the node's
    /// (`Node::guard`).
    pub fn new(raft: Raft, vote_guard: Arc<VoteGuard>, access: Arc<Guard>) -> Self {
        RaftRpcService {
            raft,
            guard: vote_guard,
            access,
        }
    }

    async fn handle(
        &self,
        rpc: RaftRpc,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.access.authorize(&request, Action::Raft)?;
        let request = request.into_inner();
        let own_id = self.raft.metrics().borrow().id;
        if request.target_id != own_id {
            return Err(Status::failed_precondition(format!(
                "this is node {own_id}, not node {}: the member's address is wrong or reused",
                request.target_id
            )));
        }
        let payload = request.payload;
        let answer = handle_rpc(&self.raft, rpc, &payload, &self.guard)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(RaftMessage {
            payload: answer.into(),
            target_id: 0,
        }))
    }
}

#[tonic::async_trait]
impl raft_server::Raft for RaftRpcService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.handle(RaftRpc::AppendEntries, request).await
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.handle(RaftRpc::Vote, request).await
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.handle(RaftRpc::InstallSnapshot, request).await
    }
}

/// Sends Raft RPCs over gRPC, one lazily connected channel per member address.
pub struct GrpcRaftTransport {
    channels: Mutex<BTreeMap<String, Channel>>,
    message_bytes_max: usize,
    /// With TLS: the CA members are verified with, and this member's certificate.
    tls: Option<ClientTls>,
}

impl GrpcRaftTransport {
    /// `message_bytes_max` bounds encoded requests and answers (AppendEntries carry batches).
    pub fn new(message_bytes_max: usize) -> Self {
        GrpcRaftTransport {
            channels: Mutex::new(BTreeMap::new()),
            message_bytes_max,
            tls: None,
        }
    }

    /// Calls members over TLS (https), presenting `tls.identity` (ignored under madsim).
    pub fn with_tls(mut self, tls: Option<ClientTls>) -> Self {
        self.tls = tls;
        self
    }

    fn channel(&self, addr: &str) -> Result<Channel, TransportError> {
        if let Some(channel) = self.channels.lock().get(addr) {
            return Ok(channel.clone());
        }
        let failed = |e: &dyn std::fmt::Display| TransportError::Failed {
            addr: addr.to_string(),
            message: format!("invalid member address: {e}"),
        };
        let tls = cfg!(not(madsim)) && self.tls.is_some();
        let scheme = if tls { "https" } else { "http" };
        let endpoint =
            Endpoint::from_shared(format!("{scheme}://{addr}")).map_err(|e| failed(&e))?;
        #[cfg(not(madsim))]
        let endpoint = endpoint.max_frame_size(crate::codec::HTTP2_FRAME_BYTES_MAX);
        #[cfg(not(madsim))]
        let endpoint = match &self.tls {
            Some(tls) => endpoint
                .tls_config(tls.client_config())
                .map_err(|e| failed(&e))?,
            None => endpoint,
        };
        let channel = endpoint
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .connect_lazy();
        self.channels
            .lock()
            .insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}

impl RaftTransport for GrpcRaftTransport {
    fn call(&self, target: u64, addr: &str, rpc: RaftRpc, payload: Vec<u8>) -> TransportFuture {
        let channel = self.channel(addr);
        let addr = addr.to_string();
        let bytes_max = self.message_bytes_max;
        Box::pin(async move {
            let mut client = RaftClient::new(channel?)
                .max_decoding_message_size(bytes_max)
                .max_encoding_message_size(bytes_max);
            let request = Request::new(RaftMessage {
                payload: payload.into(),
                target_id: target,
            });
            let answer = match rpc {
                RaftRpc::AppendEntries => client.append_entries(request).await,
                RaftRpc::Vote => client.vote(request).await,
                RaftRpc::InstallSnapshot => client.install_snapshot(request).await,
            };
            answer
                .map(|response| response.into_inner().payload.to_vec())
                .map_err(|status| transport_error(addr, status))
        })
    }
}

/// UNAVAILABLE (connection refused or lost) means unreachable, so openraft backs off; anything
/// else is a failed call.
fn transport_error(addr: String, status: Status) -> TransportError {
    let message = format!("{:?}: {}", status.code(), status.message());
    if status.code() == tonic::Code::Unavailable {
        TransportError::Unreachable { addr, message }
    } else {
        TransportError::Failed { addr, message }
    }
}
