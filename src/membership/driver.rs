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
use super::transport::{send_datagram, Framer};
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
struct AbortOnDrop(Option<JoinHandle<()>>);

impl AbortOnDrop {
    /// Aborts the task and waits until it is gone (its socket closed).
    async fn abort_and_wait(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
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
    receiver: AbortOnDrop,
    /// Frames (and, with a cluster key, authenticates) every datagram.
    framer: Framer,
    /// Datagrams dropped for a bad frame or tag (logged at debug only, so a flood cannot fill
    /// the log).
    dropped_frames: u64,
}

impl Driver {
    pub(crate) fn new(
        foca: GossipFoca,
        sock: Arc<UdpSocket>,
        seeds: Vec<SocketAddr>,
        view: ClusterView,
        view_tx: watch::Sender<ClusterView>,
        receiver: JoinHandle<()>,
        framer: Framer,
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
            receiver: AbortOnDrop(Some(receiver)),
            framer,
            dropped_frames: 0,
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
                    // foca's own periodic announces only go to members it knows: retry every
                    // seed it does not know as a live member (seeds not up yet, this node cut
                    // off, or a seed in another gossip island: a node whose seeds were partly
                    // unreachable at its start, and that met the others first, would otherwise
                    // never find that seed; the simulation's formation scenario did this).
                    self.announce_to_unknown_seeds().await;
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
        // Release the socket before the driver task completes, so whoever awaited it (e.g.
        // `Membership::shutdown`) can bind the address again.
        self.receiver.abort_and_wait().await;
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

    /// `announce_to_seeds`, to the seeds that are not the address of a live member (nor this
    /// node's own).
    async fn announce_to_unknown_seeds(&mut self) {
        let own = self.foca.identity().gossip_addr;
        let known: Vec<std::net::SocketAddr> = (self.foca.iter_members())
            .map(|m| m.id().gossip_addr)
            .collect();
        for seed in self.seeds.clone() {
            if seed == own || known.contains(&seed) {
                continue;
            }
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
        let payload = match self.framer.decode(datagram) {
            Ok(payload) => payload,
            Err(e) => {
                self.dropped_frames += 1;
                debug!(node_id = self.node_id, %from, len = datagram.len(), error = ?e, dropped = self.dropped_frames, "dropped a datagram that is not a valid gossip frame");
                return;
            }
        };
        let rewritten;
        let payload = match check_header(self.foca.identity(), payload) {
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

    /// Carries out everything foca asked for during the last call: notifications (view update,
    /// published once), timers, then sends. Must run after every foca call.
    async fn drain(&mut self) {
        let now_std = now_std();
        let mut changed = false;
        while let Some(notification) = self.rt.to_notify() {
            log_notification(self.node_id, &notification);
            changed |= self.view.apply(&notification, self.node_id, now_std);
        }
        let suspects: Vec<u64> = self
            .foca
            .iter_members()
            .filter(|m| m.state() == foca::State::Suspect)
            .map(|m| m.id().node_id)
            .collect();
        changed |= self.view.set_suspects(&suspects);
        if changed {
            self.view_tx.send_replace(self.view.clone());
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.rt.to_schedule() {
            self.timers.insert((now + after, self.timer_seq), timer);
            self.timer_seq += 1;
        }
        while let Some((dst, data)) = self.rt.to_send() {
            let frame = self.framer.encode(&data);
            if let Err(e) = send_datagram(&self.sock, dst.gossip_addr, &frame).await {
                debug!(node_id = self.node_id, dst = %dst.gossip_addr, error = %e, "gossip send failed");
            }
        }
    }
}

/// Checks the packet's header before foca sees it. A joining node only knows its seeds'
/// addresses, so it announces to a placeholder identity (node id 0), but foca accepts an
/// announce only if `dst.addr()` is its own node id (`accept_payload`): rewrite such a
/// `dst` to this node's identity. Returns the rewritten packet, if any; `Err` to drop it.
fn check_header(local: &NodeIdentity, payload: &[u8]) -> Result<Option<Vec<u8>>, &'static str> {
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
        dst: local.clone(),
        ..header
    };
    let mut out = Vec::with_capacity(payload.len() + 64);
    PostcardCodec
        .encode_header(&header, &mut out)
        .map_err(|_| "cannot re-encode the announce header")?;
    out.extend_from_slice(rest);
    Ok(Some(out))
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

#[cfg(test)]
mod tests {
    use foca::{Config, Identity, Member, State};
    use rand10::SeedableRng;

    use super::*;

    fn id(node_id: u64) -> NodeIdentity {
        NodeIdentity {
            node_id,
            gossip_addr: format!("127.0.0.1:{}", 7000 + node_id).parse().unwrap(),
            rpc_addr: format!("rpc-{node_id}"),
            bump: 0,
        }
    }

    fn foca(node_id: u64) -> GossipFoca {
        let config = Config::new_lan(std::num::NonZeroU32::new(3).unwrap());
        Foca::new(
            id(node_id),
            config,
            StdRng::seed_from_u64(node_id),
            PostcardCodec,
        )
    }

    /// The packet node 2 sends to announce itself to the seed at node 1's address.
    fn placeholder_announce() -> Vec<u8> {
        let mut joiner = foca(2);
        let mut rt = AccumulatingRuntime::new();
        joiner
            .announce(NodeIdentity::seed_placeholder(id(1).gossip_addr), &mut rt)
            .unwrap();
        let (dst, data) = rt.to_send().expect("an announce");
        assert_eq!(dst.addr(), NodeIdentity::PLACEHOLDER_NODE_ID);
        data.to_vec()
    }

    fn member_ups(rt: &mut AccumulatingRuntime<NodeIdentity>) -> Vec<u64> {
        let mut ups = Vec::new();
        while let Some(n) = rt.to_notify() {
            if let OwnedNotification::MemberUp(m) = n {
                ups.push(m.node_id);
            }
        }
        ups
    }

    #[test]
    fn foca_ignores_an_announce_to_the_placeholder_unless_rewritten() {
        let packet = placeholder_announce();

        // The trap: as sent, foca drops it silently (Ok, but nobody joins and no Feed back).
        let mut seed = foca(1);
        let mut rt = AccumulatingRuntime::new();
        seed.handle_data(&packet, &mut rt).unwrap();
        assert!(member_ups(&mut rt).is_empty());
        assert!(rt.to_send().is_none());

        // Rewritten to the seed's identity: the joiner is up and gets the Feed.
        let rewritten = check_header(&id(1), &packet).unwrap().expect("rewritten");
        let mut seed = foca(1);
        let mut rt = AccumulatingRuntime::new();
        seed.handle_data(&rewritten, &mut rt).unwrap();
        assert_eq!(member_ups(&mut rt), vec![2]);
        let (dst, _feed) = rt.to_send().expect("a feed to the joiner");
        assert_eq!(dst, id(2));
    }

    #[test]
    fn leaves_other_packets_alone_and_drops_placeholder_senders() {
        // A ping-like packet between real identities is passed through unchanged.
        let header = Header {
            src: id(2),
            src_incarnation: 0,
            dst: id(1),
            message: Message::Ping(7),
        };
        let mut packet = Vec::new();
        PostcardCodec.encode_header(&header, &mut packet).unwrap();
        assert_eq!(check_header(&id(1), &packet), Ok(None));

        // An announce addressed to a real identity is not rewritten either.
        let header = Header {
            message: Message::Announce,
            ..header
        };
        let mut packet = Vec::new();
        PostcardCodec.encode_header(&header, &mut packet).unwrap();
        assert_eq!(check_header(&id(1), &packet), Ok(None));

        // No real node has id 0: such a sender would become a member foca cannot address.
        let header = Header {
            src: NodeIdentity::seed_placeholder(id(9).gossip_addr),
            ..header
        };
        let mut packet = Vec::new();
        PostcardCodec.encode_header(&header, &mut packet).unwrap();
        assert!(check_header(&id(1), &packet).is_err());

        assert!(check_header(&id(1), &[]).is_err());
        assert!(check_header(&id(1), &[0xff; 3]).is_err());
    }

    #[test]
    fn a_member_declared_down_renews_and_rejoins() {
        // Node 1 hears (from node 3) that node 1 itself is down: it renews (bump 1) instead of
        // going defunct, so it needs no operator to come back.
        let mut me = foca(1);
        let mut rt = AccumulatingRuntime::new();
        me.apply_many(
            [
                Member::new(id(3), 0, State::Alive),
                Member::new(id(1), 0, State::Down),
            ]
            .into_iter(),
            true,
            &mut rt,
        )
        .unwrap();
        let mut rejoined = None;
        while let Some(n) = rt.to_notify() {
            assert_ne!(n, OwnedNotification::Defunct);
            if let OwnedNotification::Rejoin(new) = n {
                rejoined = Some(new);
            }
        }
        let new = rejoined.expect("a rejoin");
        assert_eq!((new.node_id, new.bump), (1, 1));
        assert_eq!(me.identity(), &new);
    }
}
