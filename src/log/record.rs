//! Records and their on-disk frame.
//!
//! A frame is a 40-byte little-endian header followed by the value:
//!
//! ```text
//! 0   len           u32  bytes after the crc field: HEADER_BYTES - 8 + value length
//! 4   crc32c        u32  CRC32C (Castagnoli) of every byte after this field
//! 8   offset        u64  the record's offset
//! 16  term          u64  the Raft term it was appended in
//! 24  timestamp_ms  i64  append time, ms since the Unix epoch
//! 32  kind          u32  the record's type
//! 36  flags         u32  must be 0 (reserved for e.g. compression)
//! 40  value         len - 32 bytes
//! ```
//!
//! The header is 40 bytes rather than 32: the fields the issue asks for (length, CRC, offset,
//! term, timestamp, type) take 36 bytes, and a reserved word keeps room for a format change that
//! old readers reject rather than misread.

use bytes::Bytes;

/// A stored record, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub term: u64,
    /// The record's type (the wire's `Record.type`): 0 for client data; Raft uses others.
    pub kind: u32,
    /// Append time, ms since the Unix epoch (non-decreasing along the log).
    pub timestamp_ms: i64,
    pub value: Bytes,
}

/// A record to append: the log assigns its offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    pub term: u64,
    pub kind: u32,
    pub value: Bytes,
}

impl NewRecord {
    /// A client data record (term 0, kind 0).
    pub fn data(value: impl Into<Bytes>) -> Self {
        NewRecord {
            term: 0,
            kind: 0,
            value: value.into(),
        }
    }
}

/// The frame header's length in bytes.
pub const HEADER_BYTES: usize = 40;

/// Bytes of the header before the CRC'd part (the `len` and `crc32c` fields).
const PREFIX_BYTES: usize = 8;

/// The length of the frame holding a value of `value_len` bytes.
pub const fn frame_len(value_len: usize) -> usize {
    HEADER_BYTES + value_len
}

/// Why a frame could not be decoded. `Incomplete` is what a torn tail looks like; the others are
/// corruption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame needs {needed} bytes but only {available} remain")]
    Incomplete { needed: u64, available: u64 },
    #[error("frame length field {len} is outside [{min}, {max}]")]
    BadLength { len: u32, min: u32, max: u64 },
    #[error("CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("unknown frame flags {flags:#x}")]
    BadFlags { flags: u32 },
    #[error("frame holds offset {found} where {expected} belongs")]
    WrongOffset { found: u64, expected: u64 },
}

/// The decoded header of a frame whose length and CRC have been checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub offset: u64,
    pub term: u64,
    pub timestamp_ms: i64,
    pub kind: u32,
    /// The whole frame's length (header and value).
    pub frame_bytes: usize,
}

/// Appends the frame of `record` at `offset` to `out`. The caller has checked the value length
/// against the log's limit; frames carry a u32 length, so anything beyond that is a bug.
pub fn encode(out: &mut Vec<u8>, offset: u64, timestamp_ms: i64, record: &NewRecord) {
    let value = &record.value[..];
    let len = u32::try_from(HEADER_BYTES - PREFIX_BYTES + value.len())
        .expect("value length was validated against record_bytes_max");
    let start = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&record.term.to_le_bytes());
    out.extend_from_slice(&timestamp_ms.to_le_bytes());
    out.extend_from_slice(&record.kind.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(value);
    let crc = crc32c::crc32c(&out[start + PREFIX_BYTES..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Checks the frame at the start of `buf` (length bounds, CRC, flags) and returns its header.
/// `record_bytes_max` bounds the value length, so a corrupt length never makes a reader ask for
/// gigabytes.
pub fn check(buf: &[u8], record_bytes_max: u32) -> Result<FrameHeader, FrameError> {
    if buf.len() < HEADER_BYTES {
        return Err(FrameError::Incomplete {
            needed: HEADER_BYTES as u64,
            available: buf.len() as u64,
        });
    }
    let len = u32_at(buf, 0);
    let min = (HEADER_BYTES - PREFIX_BYTES) as u32;
    let max = u64::from(min) + u64::from(record_bytes_max);
    if len < min || u64::from(len) > max {
        return Err(FrameError::BadLength { len, min, max });
    }
    let frame_bytes = PREFIX_BYTES + len as usize;
    if buf.len() < frame_bytes {
        return Err(FrameError::Incomplete {
            needed: frame_bytes as u64,
            available: buf.len() as u64,
        });
    }
    let stored = u32_at(buf, 4);
    let computed = crc32c::crc32c(&buf[PREFIX_BYTES..frame_bytes]);
    if stored != computed {
        return Err(FrameError::BadCrc { stored, computed });
    }
    let flags = u32_at(buf, 36);
    if flags != 0 {
        return Err(FrameError::BadFlags { flags });
    }
    Ok(FrameHeader {
        offset: u64_at(buf, 8),
        term: u64_at(buf, 16),
        timestamp_ms: u64_at(buf, 24) as i64,
        kind: u32_at(buf, 32),
        frame_bytes,
    })
}

/// Reads only the header fields at the start of `buf`, without checking the CRC (for the cheap
/// clean-close check). `None` when `buf` is shorter than a header.
pub fn peek_header(buf: &[u8]) -> Option<FrameHeader> {
    if buf.len() < HEADER_BYTES {
        return None;
    }
    Some(FrameHeader {
        offset: u64_at(buf, 8),
        term: u64_at(buf, 16),
        timestamp_ms: u64_at(buf, 24) as i64,
        kind: u32_at(buf, 32),
        frame_bytes: PREFIX_BYTES + u32_at(buf, 0) as usize,
    })
}

/// Decodes the frame at the start of `buf`; the record's value is a zero-copy slice of `buf`.
/// Returns the record and the frame's length.
pub fn decode(buf: &Bytes, record_bytes_max: u32) -> Result<(Record, usize), FrameError> {
    let header = check(buf, record_bytes_max)?;
    let record = Record {
        offset: header.offset,
        term: header.term,
        kind: header.kind,
        timestamp_ms: header.timestamp_ms,
        value: buf.slice(HEADER_BYTES..header.frame_bytes),
    };
    Ok((record, header.frame_bytes))
}

/// The little-endian `u32` at `buf[at..at + 4]` (every on-disk format here is little-endian).
pub(crate) fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

/// The little-endian `u64` at `buf[at..at + 8]`.
pub(crate) fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(offset: u64, ts: i64, term: u64, kind: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let rec = NewRecord {
            term,
            kind,
            value: Bytes::copy_from_slice(value),
        };
        encode(&mut out, offset, ts, &rec);
        out
    }

    #[test]
    fn encode_then_decode_gives_the_record_back() {
        let buf = Bytes::from(frame(7, -3, 9, 2, b"hello"));
        assert_eq!(buf.len(), frame_len(5));
        let (rec, n) = decode(&buf, 1024).unwrap();
        assert_eq!(n, buf.len());
        assert_eq!(
            rec,
            Record {
                offset: 7,
                term: 9,
                kind: 2,
                timestamp_ms: -3,
                value: Bytes::from_static(b"hello"),
            }
        );
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let good = frame(1, 2, 3, 4, b"abcdefgh");
        for bit in 0..good.len() * 8 {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let result = check(&bad, 1024);
            assert!(result.is_err(), "flip of bit {bit} went undetected");
        }
    }

    #[test]
    fn short_buffers_are_incomplete_not_corrupt() {
        let good = frame(1, 2, 3, 4, b"abcdefgh");
        for cut in 0..good.len() {
            let err = check(&good[..cut], 1024).unwrap_err();
            assert!(
                matches!(err, FrameError::Incomplete { .. }),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn a_length_beyond_the_limit_is_refused_before_reading_the_value() {
        let good = frame(1, 2, 3, 4, &[0u8; 100]);
        let err = check(&good, 99).unwrap_err();
        assert!(
            matches!(err, FrameError::BadLength { len: 132, .. }),
            "{err}"
        );
        let zeros = [0u8; HEADER_BYTES];
        assert!(matches!(
            check(&zeros, 99),
            Err(FrameError::BadLength { len: 0, .. })
        ));
    }

    #[test]
    fn nonzero_flags_are_refused() {
        let mut bad = frame(1, 2, 3, 4, b"x");
        bad[36] = 1;
        let crc = crc32c::crc32c(&bad[8..]);
        bad[4..8].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(check(&bad, 10), Err(FrameError::BadFlags { flags: 1 }));
    }

    proptest! {
        #[test]
        fn frame_roundtrip(offset: u64, ts: i64, term: u64, kind: u32,
                           value in proptest::collection::vec(any::<u8>(), 0..300),
                           trailing in proptest::collection::vec(any::<u8>(), 0..50)) {
            let mut buf = frame(offset, ts, term, kind, &value);
            let len = buf.len();
            buf.extend_from_slice(&trailing);
            let buf = Bytes::from(buf);
            let (rec, n) = decode(&buf, 300).unwrap();
            prop_assert_eq!(n, len);
            prop_assert_eq!(rec.offset, offset);
            prop_assert_eq!(rec.timestamp_ms, ts);
            prop_assert_eq!(rec.term, term);
            prop_assert_eq!(rec.kind, kind);
            prop_assert_eq!(&rec.value[..], &value[..]);
            let header = peek_header(&buf).unwrap();
            prop_assert_eq!(header, check(&buf, 300).unwrap());
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&Bytes::from(buf), 64);
        }
    }
}
