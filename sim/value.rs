//! Record values the workload produces: each names its producer and sequence number and carries a
//! checksum, so the checker can tell a value that was produced from one that was damaged or made
//! up.
//!
//! Layout (little-endian): producer u32 | seq u64 | pad_len u16 | pad (pad_len bytes, a function
//! of producer and seq) | check u64 (FNV-1a of everything before it).

use std::fmt;

/// Which value: (producer, sequence number). Unique per run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ValueId {
    pub producer: u32,
    pub seq: u64,
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}#{}", self.producer, self.seq)
    }
}

const FIXED_BYTES: usize = 4 + 8 + 2 + 8;

/// The length of the encoded value with `pad_len` bytes of padding.
pub const fn encoded_len(pad_len: u16) -> usize {
    FIXED_BYTES + pad_len as usize
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn pad_byte(id: ValueId, i: usize) -> u8 {
    let mix = (u64::from(id.producer) << 48) ^ id.seq ^ (i as u64).wrapping_mul(0x9e37_79b9);
    (fnv1a(&mix.to_le_bytes()) & 0xff) as u8
}

pub fn encode(id: ValueId, pad_len: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(pad_len));
    out.extend_from_slice(&id.producer.to_le_bytes());
    out.extend_from_slice(&id.seq.to_le_bytes());
    out.extend_from_slice(&pad_len.to_le_bytes());
    out.extend((0..pad_len as usize).map(|i| pad_byte(id, i)));
    let check = fnv1a(&out);
    out.extend_from_slice(&check.to_le_bytes());
    out
}

/// The value's id, or why it is not a value the workload could have produced.
pub fn decode(bytes: &[u8]) -> Result<ValueId, String> {
    if bytes.len() < FIXED_BYTES {
        return Err(format!("{} bytes is shorter than any value", bytes.len()));
    }
    let (body, check) = bytes.split_at(bytes.len() - 8);
    let check = u64::from_le_bytes(check.try_into().expect("8 bytes"));
    if fnv1a(body) != check {
        return Err(format!("checksum mismatch over {} bytes", bytes.len()));
    }
    let producer = u32::from_le_bytes(body[0..4].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(body[4..12].try_into().expect("8 bytes"));
    let pad_len = u16::from_le_bytes(body[12..14].try_into().expect("2 bytes"));
    let id = ValueId { producer, seq };
    if bytes.len() != encoded_len(pad_len) {
        return Err(format!(
            "{id}: length {} does not match its padding",
            bytes.len()
        ));
    }
    if body[14..]
        .iter()
        .enumerate()
        .any(|(i, &b)| b != pad_byte(id, i))
    {
        return Err(format!("{id}: padding differs from what was produced"));
    }
    Ok(id)
}
