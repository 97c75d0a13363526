//! The driver: one task that owns the foca instance and feeds it datagrams and timer events,
//! then carries out what foca asked for (sends, timers, notifications) after every call.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use foca::{
    AccumulatingRuntime, Codec, Foca, Header, Message, NoCustomBroadcast, OwnedNotification,
    PostcardCodec, Timer,
};
use rand10::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::identity::NodeIdentity;
use super::transport::{decode_frame, encode_frame, send_datagram};
use super::view::ClusterView;
use super::{DATAGRAM_BYTES_MAX, JOIN_RETRY_INTERVAL_MS, RECV_ERROR_BACKOFF_MS};

pub(crate) type GossipFoca = Foca<NodeIdentity, PostcardCodec, StdRng, NoCustomBroadcast>;

/// What the [`super::Membership`] handle asks of the driver. Dropping the handle (closing the
/// channel) stops the driver without leaving, like a crash.
#[derive(Debug)]
pub(crate) enum Command {
    /// Leave the cluster, send the goodbyes, then stop; answer when done.
    Leave(oneshot::Sender<()>),
}

/// A received datagram: its bytes and its source.
pub(crate) type Inbound = (Bytes, SocketAddr);

/// `now` as a std `Instant`, read from `tokio::time` so the simulator controls it (under madsim
/// `tokio::time::Instant` *is* `std::time::Instant`).
pub(crate) fn now_std() -> std::time::Instant {
    #[cfg(madsim)]
    {
        Instant::now()
    }
    #[cfg(not(madsim))]
    {
        Instant::now().into_std()
    }
}

/// Aborts the task when dropped, so the receive loop (and its socket) never outlives the driver,
/// whichever way the driver ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) struct Driver {
    foca: GossipFoca,
    rt: AccumulatingRuntime<NodeIdentity>,
    /// Pending foca timers by deadline; `seq` keeps equal deadlines distinct and in the order
    /// foca asked for them.
    timers: BTreeMap<(Instant, u64), Timer<NodeIdentity>>,
    timer_seq: u64,
    sock: Arc<UdpSocket>,
    seeds: Vec<SocketAddr>,
    node_id: u64,
    view: ClusterView,
    view_tx: watch::Sender<ClusterView>,
    _receiver: AbortOnDrop,
}

impl Driver {
    pub(crate) fn new(
        foca: GossipFoca,
        sock: Arc<UdpSocket>,
        seeds: Vec<SocketAddr>,
        view: ClusterView,
        view_tx: watch::Sender<ClusterView>,
        receiver: JoinHandle<()>,
    ) -> Self {
        let node_id = foca.identity().node_id;
        Driver {
            foca,
            rt: AccumulatingRuntime::new(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            sock,
            seeds,
            node_id,
            view,
            view_tx,
            _receiver: AbortOnDrop(receiver),
        }
    }

    /// Runs until the handle leaves or is dropped. `biased` keeps the order of the branches
    /// fixed (an unbiased select draws from an unseeded RNG, which breaks replay in madsim):
    /// commands first, then timers, then the join retry, then datagrams.
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
    ) {
        let join_retry = Duration::from_millis(JOIN_RETRY_INTERVAL_MS);
        self.announce_to_seeds().await;
        let mut join_retry_at = Instant::now() + join_retry;
        loop {
            let next_timer = self.timers.first_key_value().map(|(&(at, _), _)| at);
            tokio::select! {
                biased;
                command = commands.recv() => {
                    match command {
                        Some(Command::Leave(done)) => {
                            self.leave().await;
                            let _ = done.send(());
                        }
                        None => debug!(node_id = self.node_id, "membership handle dropped: stopping without leaving"),
                    }
                    break;
                }
                () = tokio::time::sleep_until(next_timer.unwrap_or(join_retry_at)), if next_timer.is_some() => {
                    self.fire_due_timers().await;
                }
                () = tokio::time::sleep_until(join_retry_at), if !self.seeds.is_empty() => {
                    // foca's own periodic announces only go to members it knows: while it knows
                    // none (seeds not up yet, or this node was cut off), retry the seeds.
                    if self.foca.num_members() == 0 {
                        self.announce_to_seeds().await;
                    }
                    join_retry_at = Instant::now() + join_retry;
                }
                datagram = inbound.recv() => match datagram {
                    Some((data, from)) => self.handle_datagram(&data, from).await,
                    None => {
                        warn!(node_id = self.node_id, "gossip receive loop ended: stopping the membership driver");
                        break;
                    }
                },
            }
        }
    }

    async fn announce_to_seeds(&mut self) {
        for seed in self.seeds.clone() {
            let placeholder = NodeIdentity::seed_placeholder(seed);
            if let Err(e) = self.foca.announce(placeholder, &mut self.rt) {
                warn!(node_id = self.node_id, %seed, error = %e, "announce failed");
            }
            self.drain().await;
        }
    }

    async fn leave(&mut self) {
        if let Err(e) = self.foca.leave_cluster(&mut self.rt) {
            warn!(node_id = self.node_id, error = %e, "leave_cluster failed");
        }
        // Sends the goodbyes and publishes this node as not alive (foca reports Defunct).
        self.drain().await;
        info!(node_id = self.node_id, "left the cluster");
    }

    async fn fire_due_timers(&mut self) {
        let now = Instant::now();
        // Take exactly the timers due now: those foca schedules while handling them wait for
        // the next turn of the loop, so a zero-delay timer cannot spin this loop.
        let later = self.timers.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.timers, later);
        for (_, timer) in due {
            if let Err(e) = self.foca.handle_timer(timer, &mut self.rt) {
                warn!(node_id = self.node_id, error = %e, "foca timer failed");
            }
            self.drain().await;
        }
    }

    /// Feeds one datagram to foca. Nothing that arrives from the network can panic the node:
    /// invalid frames, undecodable packets and foca's errors are logged and dropped.
    async fn handle_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        let payload = match decode_frame(datagram) {
            Ok(payload) => payload,
            Err(e) => {
                debug!(node_id = self.node_id, %from, len = datagram.len(), error = ?e, "dropped a datagram that is not a gossip frame");
                return;
            }
        };
        let rewritten;
        let payload = match self.check_header(payload) {
            Err(reason) => {
                debug!(node_id = self.node_id, %from, reason, "dropped a gossip packet");
                return;
            }
            Ok(Some(buf)) => {
                rewritten = buf;
                &rewritten[..]
            }
            Ok(None) => payload,
        };
        if let Err(e) = self.foca.handle_data(payload, &mut self.rt) {
            match e {
                foca::Error::Decode(_)
                | foca::Error::MalformedPacket
                | foca::Error::DataTooBig
                | foca::Error::DataFromOurselves
                | foca::Error::IndirectForOurselves => {
                    debug!(node_id = self.node_id, %from, error = %e, "dropped a gossip packet")
                }
                _ => {
                    warn!(node_id = self.node_id, %from, error = %e, "foca could not handle a gossip packet")
                }
            }
        }
        self.drain().await;
    }

    /// Checks the packet's header before foca sees it. A joining node only knows its seeds'
    /// addresses, so it announces to a placeholder identity (node id 0), but foca accepts an
    /// announce only if `dst.addr()` is its own node id (`accept_payload`): rewrite such a
    /// `dst` to this node's identity. Returns the rewritten packet, if any; `Err` to drop it.
    fn check_header(&self, payload: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
        let mut rest = payload;
        let header: Header<NodeIdentity> = PostcardCodec
            .decode_header(&mut rest)
            .map_err(|_| "undecodable header")?;
        if header.src.node_id == NodeIdentity::PLACEHOLDER_NODE_ID {
            return Err("sender has the placeholder node id");
        }
        if header.message != Message::Announce
            || header.dst.node_id != NodeIdentity::PLACEHOLDER_NODE_ID
        {
            return Ok(None);
        }
        let header = Header {
            dst: self.foca.identity().clone(),
            ..header
        };
        let mut out = Vec::with_capacity(payload.len() + 64);
        PostcardCodec
            .encode_header(&header, &mut out)
            .map_err(|_| "cannot re-encode the announce header")?;
        out.extend_from_slice(rest);
        Ok(Some(out))
    }

    /// Carries out everything foca asked for during the last call: notifications (view update,
    /// published once), timers, then sends. Must run after every foca call.
    async fn drain(&mut self) {
        let now_std = now_std();
        let mut changed = false;
        while let Some(notification) = self.rt.to_notify() {
            log_notification(self.node_id, &notification);
            changed |= self.view.apply(&notification, self.node_id, now_std);
        }
        if changed {
            self.view_tx.send_replace(self.view.clone());
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.rt.to_schedule() {
            self.timers.insert((now + after, self.timer_seq), timer);
            self.timer_seq += 1;
        }
        while let Some((dst, data)) = self.rt.to_send() {
            let frame = encode_frame(&data);
            if let Err(e) = send_datagram(&self.sock, dst.gossip_addr, &frame).await {
                debug!(node_id = self.node_id, dst = %dst.gossip_addr, error = %e, "gossip send failed");
            }
        }
    }
}

fn log_notification(node_id: u64, notification: &OwnedNotification<NodeIdentity>) {
    match notification {
        OwnedNotification::MemberUp(id) => {
            info!(node_id, member = id.node_id, bump = id.bump, rpc_addr = %id.rpc_addr, "member up")
        }
        OwnedNotification::MemberDown(id) => {
            info!(node_id, member = id.node_id, bump = id.bump, "member down")
        }
        OwnedNotification::Rejoin(id) => {
            info!(
                node_id,
                bump = id.bump,
                "declared down by the cluster: rejoined with a new identity"
            )
        }
        OwnedNotification::Defunct => info!(node_id, "this node's identity is down"),
        other => debug!(node_id, notification = ?other, "gossip notification"),
    }
}

/// Reads datagrams and queues them for the driver. A separate task because madsim's
/// `recv_from` is not cancel-safe (it awaits a random delay after taking the message off the
/// queue), so it must not be a branch of the driver's `select!`. Datagrams larger than
/// [`DATAGRAM_BYTES_MAX`] (seen as filling the buffer) are dropped, and so are datagrams that
/// arrive while the queue is full (UDP may drop anyway).
pub(crate) async fn receive_loop(sock: Arc<UdpSocket>, queue: mpsc::Sender<Inbound>, node_id: u64) {
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX + 1];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((len, from)) if len > DATAGRAM_BYTES_MAX => {
                debug!(node_id, %from, "dropped an oversized datagram");
            }
            Ok((len, from)) => match queue.try_send((Bytes::copy_from_slice(&buf[..len]), from)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(node_id, %from, "gossip inbound queue full: dropped a datagram")
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            },
            Err(e) => {
                // E.g. an ICMP error reported on the socket: not fatal. Back off so a socket
                // that keeps failing does not spin.
                debug!(node_id, error = %e, "gossip recv failed");
                tokio::time::sleep(Duration::from_millis(RECV_ERROR_BACKOFF_MS)).await;
            }
        }
    }
}
