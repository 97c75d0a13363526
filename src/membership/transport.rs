//! The datagram transport: a frame around foca's packets, and a shim over the two socket APIs
//! (tokio's and madsim's `UdpSocket`, which differ in `send_to`).
//!
//! Frame without a cluster key: `FRAME_MAGIC` (4 bytes) | crc32c of the payload (4 bytes, little
//! endian) | payload. foca's postcard packets have no magic or checksum, and random bytes can
//! decode as a valid header (a phantom member would then join the view); the frame makes stray
//! or corrupted datagrams fail before foca sees them. It is not authentication.
//!
//! Frame with a cluster key: `KEYED_FRAME_MAGIC` (4 bytes) | HMAC-SHA256(key, magic | payload)
//! (32 bytes) | payload. A datagram from a node without the key, or with another key, fails the
//! tag check and is dropped, so a stranger can neither join nor forge membership. (A captured
//! datagram can be replayed; foca's incarnation numbers make a stale one harmless.) A keyed node
//! never accepts an unkeyed frame, and the other way round.

use std::io;
use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::net::UdpSocket;

use crate::security::GossipKey;

/// Identifies a Loghouse gossip datagram, version 1 of the frame.
pub(crate) const FRAME_MAGIC: [u8; 4] = *b"LHg1";
/// Bytes the frame adds in front of foca's packet.
pub(crate) const FRAME_HEADER_BYTES: usize = 8;
/// Identifies an authenticated Loghouse gossip datagram.
pub(crate) const KEYED_FRAME_MAGIC: [u8; 4] = *b"LHa1";
/// Bytes the authenticated frame adds: magic and an HMAC-SHA256 tag.
pub(crate) const KEYED_FRAME_HEADER_BYTES: usize = 4 + 32;
/// The most any frame adds.
pub(crate) const FRAME_HEADER_BYTES_MAX: usize = KEYED_FRAME_HEADER_BYTES;

type HmacSha256 = Hmac<Sha256>;

/// Frames and unframes datagrams, authenticated when the cluster has a key.
#[derive(Clone)]
pub(crate) struct Framer {
    mac: Option<HmacSha256>,
}

impl Framer {
    pub(crate) fn new(key: Option<&GossipKey>) -> Framer {
        // HMAC takes keys of any length: new_from_slice cannot fail.
        let mac = key.and_then(|k| HmacSha256::new_from_slice(k.as_bytes()).ok());
        Framer { mac }
    }

    pub(crate) fn encode(&self, payload: &[u8]) -> Vec<u8> {
        let Some(mac) = &self.mac else {
            return encode_frame(payload);
        };
        let mut mac = mac.clone();
        mac.update(&KEYED_FRAME_MAGIC);
        mac.update(payload);
        let tag = mac.finalize().into_bytes();
        let mut out = Vec::with_capacity(KEYED_FRAME_HEADER_BYTES + payload.len());
        out.extend_from_slice(&KEYED_FRAME_MAGIC);
        out.extend_from_slice(&tag);
        out.extend_from_slice(payload);
        out
    }

    pub(crate) fn decode<'a>(&self, datagram: &'a [u8]) -> Result<&'a [u8], FrameError> {
        let Some(mac) = &self.mac else {
            return decode_frame(datagram);
        };
        if datagram.len() < KEYED_FRAME_HEADER_BYTES {
            return Err(FrameError::TooShort(datagram.len()));
        }
        let (header, payload) = datagram.split_at(KEYED_FRAME_HEADER_BYTES);
        if header[..4] != KEYED_FRAME_MAGIC {
            return Err(FrameError::BadMagic);
        }
        let mut mac = mac.clone();
        mac.update(&KEYED_FRAME_MAGIC);
        mac.update(payload);
        // Constant-time comparison.
        mac.verify_slice(&header[4..])
            .map_err(|_| FrameError::BadTag)?;
        Ok(payload)
    }
}

/// Why a datagram was not a valid frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    TooShort(usize),
    BadMagic,
    BadChecksum,
    /// An authenticated frame whose tag does not match: another key, or forged.
    BadTag,
}

/// Wraps one foca packet into a frame.
pub(crate) fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&FRAME_MAGIC);
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The foca packet inside a frame.
pub(crate) fn decode_frame(datagram: &[u8]) -> Result<&[u8], FrameError> {
    if datagram.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::TooShort(datagram.len()));
    }
    let (header, payload) = datagram.split_at(FRAME_HEADER_BYTES);
    if header[..4] != FRAME_MAGIC {
        return Err(FrameError::BadMagic);
    }
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if crc32c::crc32c(payload) != crc {
        return Err(FrameError::BadChecksum);
    }
    Ok(payload)
}

/// Sends one datagram. madsim's `send_to(dst, buf)` takes its arguments the other way round
/// from tokio's `send_to(buf, dst)` and returns `()`.
pub(crate) async fn send_datagram(sock: &UdpSocket, dst: SocketAddr, buf: &[u8]) -> io::Result<()> {
    #[cfg(madsim)]
    {
        sock.send_to(dst, buf).await
    }
    #[cfg(not(madsim))]
    {
        sock.send_to(buf, dst).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips() {
        for payload in [&b""[..], b"x", &[0u8; 1400]] {
            let frame = encode_frame(payload);
            assert_eq!(frame.len(), FRAME_HEADER_BYTES + payload.len());
            assert_eq!(decode_frame(&frame), Ok(payload));
        }
    }

    fn key(byte: u8) -> GossipKey {
        GossipKey::new(vec![byte; 32]).unwrap()
    }

    #[test]
    fn keyed_frames_round_trip_and_refuse_other_keys_and_no_key() {
        let framer = Framer::new(Some(&key(1)));
        for payload in [&b""[..], b"x", &[7u8; 1400]] {
            let frame = framer.encode(payload);
            assert_eq!(frame.len(), KEYED_FRAME_HEADER_BYTES + payload.len());
            assert_eq!(framer.decode(&frame), Ok(payload));
        }
        let frame = framer.encode(b"member up");
        let other = Framer::new(Some(&key(2)));
        assert_eq!(other.decode(&frame), Err(FrameError::BadTag));
        let unkeyed = Framer::new(None);
        assert_eq!(unkeyed.decode(&frame), Err(FrameError::BadMagic));
        let unkeyed_frame = unkeyed.encode(&[9u8; 64]);
        assert_eq!(framer.decode(&unkeyed_frame), Err(FrameError::BadMagic));
        // Any flipped bit, in the tag or the payload, fails.
        for i in [4, 20, frame.len() - 1] {
            let mut forged = frame.clone();
            forged[i] ^= 0x01;
            assert_eq!(framer.decode(&forged), Err(FrameError::BadTag), "byte {i}");
        }
        assert_eq!(framer.decode(b"LHa1short"), Err(FrameError::TooShort(9)));
    }

    #[test]
    fn rejects_short_foreign_and_corrupted_datagrams() {
        assert_eq!(decode_frame(b"LHg"), Err(FrameError::TooShort(3)));
        assert_eq!(decode_frame(b"HTTP/1.1 200 OK"), Err(FrameError::BadMagic));
        let mut frame = encode_frame(b"hello gossip");
        let last = frame.len() - 1;
        frame[last] ^= 0x01;
        assert_eq!(decode_frame(&frame), Err(FrameError::BadChecksum));
        let mut frame = encode_frame(b"hello gossip");
        frame[5] ^= 0x80;
        assert_eq!(decode_frame(&frame), Err(FrameError::BadChecksum));
    }
}
