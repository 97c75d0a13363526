//! Gossip membership and failure detection: foca (SWIM) over a datagram socket.
