//! The Raft network: openraft's `RaftNetwork` over a byte transport.
//!
//! This module encodes openraft requests and results with postcard; a `RaftTransport` (the gRPC
//! one lives in `server/`, which alone knows proto types) only moves bytes to a member's address.
//! Every call has a deadline (`RPCOption::hard_ttl`): a crashed member never answers, and in the
//! simulation nothing else would end the wait.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{BasicNode, LogId, NodeId, Raft, TypeConfig};
use super::vote_guard::{VoteGuard, PROBE_TERM};

/// Which Raft RPC a payload carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftRpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl RaftRpc {
    fn rpc_type(self) -> RPCTypes {
        match self {
            RaftRpc::AppendEntries => RPCTypes::AppendEntries,
            RaftRpc::Vote => RPCTypes::Vote,
            RaftRpc::InstallSnapshot => RPCTypes::InstallSnapshot,
        }
    }
}

/// Why a transport call failed (the remote Raft's own errors travel inside the payload).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing answered at the address (connection refused, reset, no route): openraft backs off.
    #[error("member at {addr} is unreachable: {message}")]
    Unreachable { addr: String, message: String },
    /// The call reached the member but failed (status, decode error).
    #[error("call to {addr} failed: {message}")]
    Failed { addr: String, message: String },
}

/// A payload that could not be decoded: network input, so an error and never a panic.
#[derive(Debug, thiserror::Error)]
#[error("malformed {rpc:?} payload: {message}")]
pub struct DecodeError {
    pub rpc: RaftRpc,
    pub message: String,
}

pub type TransportFuture = Pin<Box<dyn Future<Output = Result<Vec<u8>, TransportError>> + Send>>;

/// Moves one encoded request to the member at `addr` and returns its encoded answer.
pub trait RaftTransport: Send + Sync + 'static {
    /// `target` is the node id expected at `addr`: the receiver refuses requests meant for
    /// another id.
    fn call(&self, target: NodeId, addr: &str, rpc: RaftRpc, payload: Vec<u8>) -> TransportFuture;
}

/// Creates one `Network` per target member; connections are made lazily by the transport.
#[derive(Clone)]
pub struct NetworkFactory {
    node_id: NodeId,
    transport: Arc<dyn RaftTransport>,
}

impl NetworkFactory {
    pub fn new(node_id: NodeId, transport: Arc<dyn RaftTransport>) -> Self {
        NetworkFactory { node_id, transport }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        Network {
            node_id: self.node_id,
            target,
            addr: node.addr.clone(),
            transport: self.transport.clone(),
        }
    }
}

/// The connection to one member.
pub struct Network {
    node_id: NodeId,
    target: NodeId,
    addr: String,
    transport: Arc<dyn RaftTransport>,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Network {
    /// Encodes `request`, sends it under the deadline and decodes the remote `Result`.
    async fn call<Req, Resp, E>(
        &self,
        rpc: RaftRpc,
        request: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let ttl = option.hard_ttl();
        let sent = self.transport.call(self.target, &self.addr, rpc, payload);
        let answer = match tokio::time::timeout(ttl, sent).await {
            Err(_) => return Err(RPCError::Timeout(self.timeout(rpc, ttl))),
            Ok(Err(e @ TransportError::Unreachable { .. })) => {
                return Err(RPCError::Unreachable(Unreachable::new(&e)))
            }
            Ok(Err(e)) => return Err(RPCError::Network(NetworkError::new(&e))),
            Ok(Ok(answer)) => answer,
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            decode(rpc, &answer).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn timeout(&self, rpc: RaftRpc, ttl: Duration) -> Timeout<NodeId> {
        Timeout {
            action: rpc.rpc_type(),
            id: self.node_id,
            target: self.target,
            timeout: ttl,
        }
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call(RaftRpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(RaftRpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call(RaftRpc::Vote, &rpc, &option).await
    }
}

/// Serves one encoded request on the local Raft and encodes its `Result` (the server side of
/// `Network::call`). A payload that does not decode is refused; it never reaches Raft.
/// A vote the `guard` refuses (a repaired replica's floor) is answered here, before Raft sees it.
pub async fn handle_rpc(
    raft: &Raft,
    rpc: RaftRpc,
    payload: &[u8],
    guard: &VoteGuard,
) -> Result<Vec<u8>, DecodeError> {
    let encoded = match rpc {
        RaftRpc::AppendEntries => encode(&raft.append_entries(decode(rpc, payload)?).await),
        RaftRpc::Vote => {
            let request: VoteRequest<NodeId> = decode(rpc, payload)?;
            if request.vote.leader_id().term == PROBE_TERM {
                let answer = VoteResponse {
                    vote: raft.metrics().borrow().vote,
                    vote_granted: false,
                    last_log_id: guard.probe_answer(),
                };
                return encode(&Ok::<_, RaftError<NodeId>>(answer)).map_err(|e| DecodeError {
                    rpc,
                    message: format!("encoding the answer: {e}"),
                });
            }
            let (me, voters): (NodeId, Vec<NodeId>) = {
                let metrics = raft.metrics();
                let metrics = metrics.borrow();
                let membership = metrics.membership_config.membership();
                (metrics.id, membership.voter_ids().collect())
            };
            let candidate = request.vote.leader_id().voted_for().unwrap_or_default();
            match guard.refuse(candidate, request.last_log_id, me, voters) {
                Some(floor) => {
                    let refusal = refuse_below_floor(raft, &request, floor);
                    encode(&Ok::<_, RaftError<NodeId>>(refusal))
                }
                None => encode(&raft.vote(request).await),
            }
        }
        RaftRpc::InstallSnapshot => encode(&raft.install_snapshot(decode(rpc, payload)?).await),
    };
    encoded.map_err(|e| DecodeError {
        rpc,
        message: format!("encoding the answer: {e}"),
    })
}

/// A refusal as Raft would give it to a candidate with a shorter log: our vote, not granted, and
/// the floor as our last log id (the candidate then waits before its next election).
fn refuse_below_floor(
    raft: &Raft,
    request: &VoteRequest<NodeId>,
    floor: LogId,
) -> VoteResponse<NodeId> {
    tracing::info!(candidate = %request.vote, %floor, "vote refused: this replica is repairing its log up to its vote floor");
    let vote = raft.metrics().borrow().vote;
    VoteResponse {
        vote,
        vote_granted: false,
        last_log_id: Some(floor),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    postcard::to_allocvec(value).map_err(EncodeError)
}

fn decode<T: DeserializeOwned>(rpc: RaftRpc, payload: &[u8]) -> Result<T, DecodeError> {
    postcard::from_bytes(payload).map_err(|e| DecodeError {
        rpc,
        message: e.to_string(),
    })
}

#[derive(Debug)]
struct EncodeError(postcard::Error);

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "encoding a Raft message: {}", self.0)
    }
}

impl std::error::Error for EncodeError {}
