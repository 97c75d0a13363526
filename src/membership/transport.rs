//! The datagram transport: a frame around foca's packets, and a shim over the two socket APIs
//! (tokio's and madsim's `UdpSocket`, which differ in `send_to`).
//!
//! Frame: `FRAME_MAGIC` (4 bytes) | crc32c of the payload (4 bytes, little endian) | payload.
//! foca's postcard packets have no magic or checksum, and random bytes can decode as a valid
//! header (a phantom member would then join the view); the frame makes stray or corrupted
//! datagrams fail before foca sees them. It is not authentication.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// Identifies a Loghouse gossip datagram, version 1 of the frame.
pub(crate) const FRAME_MAGIC: [u8; 4] = *b"LHg1";
/// Bytes the frame adds in front of foca's packet.
pub(crate) const FRAME_HEADER_BYTES: usize = 8;

/// Why a datagram was not a valid frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    TooShort(usize),
    BadMagic,
    BadChecksum,
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
