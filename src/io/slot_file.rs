//! Small state files written whole: the Raft store's `raft/meta` (vote, purge point, snapshot,
//! pending reset), `raft/applied` and `raft/repair`, and the topic catalog (`topics.catalog`).
//!
//! A slot file holds two fixed-size slots. Each write goes to the slot *not* holding the newest
//! state, so a write torn by a crash can only damage the slot being replaced: the other one
//! still holds the previous state. A load reads both and takes the valid slot with the higher
//! sequence number.
//!
//! Slot layout (little-endian), at `slot * slot_bytes`:
//!
//! ```text
//! 0   magic    u32  0x4C48_4D53 ("LHMS")
//! 4   version  u32  1
//! 8   seq      u64  bumped by every write; the higher valid one wins
//! 16  len      u32  payload bytes
//! 20  crc32c   u32  over bytes 8..20 and the payload
//! 24  payload  len bytes: postcard
//! ```
//!
//! Invariants:
//! - a file that exists always holds at least one valid slot: it is created as `<name>.tmp`,
//!   written, synced and renamed into place (directory synced), so a crash during creation
//!   leaves no half-made file under the real name;
//! - with `write(.., sync = true)` the newest state survives a crash once `write` returns, and
//!   a torn write falls back to the state before it;
//! - what `open` returns is on disk: it is written again and synced before `open` returns, so a
//!   state read back after a failed fsync (still in the page cache, maybe not on the disk) is
//!   never used unless it is durable;
//! - files are reached only through `io::Disk`.

use std::io;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::io::{Disk, DiskFile};

const MAGIC: u32 = 0x4C48_4D53;
const VERSION: u32 = 1;
/// Bytes before the payload.
pub const SLOT_HEADER_BYTES: usize = 24;

/// What `SlotFile::open` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotLoad {
    /// No file existed: it was created holding the default value.
    Created,
    /// Both slots were valid, or one valid and the other never written.
    Clean,
    /// One slot failed its checks (a torn or corrupt write): the other one was used.
    FellBack,
}

/// A two-slot file holding one `T`.
#[derive(Debug)]
pub struct SlotFile<T> {
    path: PathBuf,
    file: Arc<dyn DiskFile>,
    slot_bytes: usize,
    /// Sequence number of the newest slot written or loaded.
    seq: u64,
    /// Index (0 or 1) of the slot holding `seq`.
    newest: usize,
    _value: PhantomData<fn() -> T>,
}

impl<T: Serialize + DeserializeOwned + Default> SlotFile<T> {
    /// Opens `path`, or creates it holding `T::default()`. Errors when the file exists but no
    /// slot is valid (`InvalidData`): a state file is never silently reset.
    pub fn open(
        disk: Arc<dyn Disk>,
        path: &Path,
        slot_bytes: usize,
    ) -> io::Result<(SlotFile<T>, T, SlotLoad)> {
        assert!(slot_bytes > SLOT_HEADER_BYTES, "slot too small");
        let dir = path.parent().unwrap_or_else(|| Path::new("/"));
        crate::io::create_dir_durable(disk.as_ref(), dir)?;
        if !disk.exists(path) {
            Self::create(disk.as_ref(), path, slot_bytes)?;
            disk.sync_dir(dir)?;
            let (file, value, _) = Self::open_existing(disk.as_ref(), path, slot_bytes)?;
            return Ok((file, value, SlotLoad::Created));
        }
        Self::open_existing(disk.as_ref(), path, slot_bytes)
    }

    fn create(disk: &dyn Disk, path: &Path, slot_bytes: usize) -> io::Result<()> {
        let tmp = tmp_path(path);
        let file = disk.open(&tmp, true)?;
        file.set_len(0)?;
        let frame = encode_slot(1, &T::default(), slot_bytes)?;
        file.write_at(&frame, 0)?;
        file.sync_data()?;
        drop(file);
        disk.rename(&tmp, path)
    }

    fn open_existing(
        disk: &dyn Disk,
        path: &Path,
        slot_bytes: usize,
    ) -> io::Result<(SlotFile<T>, T, SlotLoad)> {
        let file = disk.open(path, false)?;
        let mut slots = Vec::with_capacity(2);
        for slot in 0..2 {
            let mut buf = vec![0u8; slot_bytes];
            let n = read_full(file.as_ref(), &mut buf, (slot * slot_bytes) as u64)?;
            buf.truncate(n);
            slots.push(decode_slot::<T>(&buf));
        }
        let mut best: Option<(u64, usize, T)> = None;
        let mut bad = 0;
        for (i, slot) in slots.into_iter().enumerate() {
            match slot {
                SlotState::Valid(seq, value) => {
                    if best.as_ref().is_none_or(|(s, _, _)| seq > *s) {
                        best = Some((seq, i, value));
                    }
                }
                SlotState::Empty => {}
                SlotState::Invalid => bad += 1,
            }
        }
        let Some((seq, newest, value)) = best else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: no valid slot", path.display()),
            ));
        };
        let load = if bad > 0 {
            SlotLoad::FellBack
        } else {
            SlotLoad::Clean
        };
        let slot_file = SlotFile {
            path: path.to_path_buf(),
            file,
            slot_bytes,
            seq,
            newest,
            _value: PhantomData,
        };
        slot_file.repersist(&value)?;
        Ok((slot_file, value, load))
    }

    /// Writes the loaded state again, into the slot it came from, and syncs it.
    ///
    /// What a read returns may never have reached the disk: after a failed fsync Linux keeps the
    /// page cache but may drop those bytes at the next power loss, even if a later fsync of the
    /// file succeeds (fsyncgate). A process that restarts and goes on using such a state (a
    /// vote, say) could see it go back later. Rewriting and syncing it before it is used makes it
    /// durable, or fails the open. The slot written is the one the state came from: a write torn
    /// by a crash then falls back to the other slot, the state before it, never to an older one.
    fn repersist(&self, value: &T) -> io::Result<()> {
        let frame = encode_slot(self.seq, value, self.slot_bytes)?;
        (self.file).write_at(&frame, (self.newest * self.slot_bytes) as u64)?;
        self.file.sync_data()
    }

    /// Writes `value` into the older slot, then fsyncs if `sync` (without it the write survives
    /// a process crash but not a power loss). Errors with `InvalidInput` when the encoding does
    /// not fit a slot.
    pub fn write(&mut self, value: &T, sync: bool) -> io::Result<()> {
        let seq = self.seq + 1;
        let frame = encode_slot(seq, value, self.slot_bytes)?;
        let slot = 1 - self.newest;
        self.file
            .write_at(&frame, (slot * self.slot_bytes) as u64)?;
        if sync {
            self.file.sync_data()?;
        }
        self.seq = seq;
        self.newest = slot;
        Ok(())
    }

    /// Fsyncs earlier unsynced writes.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

fn read_full(file: &dyn DiskFile, buf: &mut [u8], position: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], position + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// The bytes of one slot holding `value`: header and payload (not padded).
pub fn encode_slot<T: Serialize>(seq: u64, value: &T, slot_bytes: usize) -> io::Result<Vec<u8>> {
    let payload = postcard::to_allocvec(value)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    if SLOT_HEADER_BYTES + payload.len() > slot_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "state of {} bytes does not fit a {slot_bytes}-byte slot",
                payload.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(SLOT_HEADER_BYTES + payload.len());
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let mut crc = crc32c::crc32c(&out[8..20]);
    crc = crc32c::crc32c_append(crc, &payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// What a slot's bytes hold.
#[derive(Debug)]
pub enum SlotState<T> {
    /// Never written: all zeros, or past the end of the file.
    Empty,
    Valid(u64, T),
    /// Torn or corrupt: bad magic, version, length, CRC or payload.
    Invalid,
}

/// Checks and decodes one slot's bytes.
pub fn decode_slot<T: DeserializeOwned>(buf: &[u8]) -> SlotState<T> {
    if buf.iter().all(|&b| b == 0) {
        return SlotState::Empty;
    }
    if buf.len() < SLOT_HEADER_BYTES {
        return SlotState::Invalid;
    }
    let word = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    if word(0) != MAGIC || word(4) != VERSION {
        return SlotState::Invalid;
    }
    let seq = u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes"));
    let len = word(16) as usize;
    let Some(payload) = buf.get(SLOT_HEADER_BYTES..SLOT_HEADER_BYTES + len) else {
        return SlotState::Invalid;
    };
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[8..20]), payload);
    if crc != word(20) {
        return SlotState::Invalid;
    }
    match postcard::from_bytes(payload) {
        Ok(value) => SlotState::Valid(seq, value),
        Err(_) => SlotState::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SimDisk;
    use serde::Deserialize;

    #[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct State {
        term: u64,
        name: String,
    }

    const SLOT: usize = 256;

    fn state(term: u64) -> State {
        State {
            term,
            name: format!("node-{term}"),
        }
    }

    fn open(disk: &SimDisk) -> io::Result<(SlotFile<State>, State, SlotLoad)> {
        SlotFile::open(Arc::new(disk.clone()), Path::new("/d/meta"), SLOT)
    }

    #[test]
    fn created_with_the_default_then_newest_write_wins() {
        let disk = SimDisk::new(1);
        let (mut f, v, load) = open(&disk).unwrap();
        assert_eq!((v, load), (State::default(), SlotLoad::Created));
        for t in 1..=5 {
            f.write(&state(t), true).unwrap();
        }
        drop(f);
        disk.crash();
        let (_, v, load) = open(&disk).unwrap();
        assert_eq!((v, load), (state(5), SlotLoad::Clean));
    }

    #[test]
    fn a_torn_slot_falls_back_to_the_other() {
        let disk = SimDisk::new(2);
        let (mut f, _, _) = open(&disk).unwrap();
        f.write(&state(1), true).unwrap();
        f.write(&state(2), true).unwrap();
        // The newest (seq 3, term 2) sits in slot 0 (the default was slot 0, seq 1; term 1 went
        // to slot 1). Flip a payload bit of the newest slot: the CRC rejects it.
        let newest = f.newest;
        drop(f);
        let pos = (newest * SLOT + SLOT_HEADER_BYTES + 1) as u64;
        disk.flip_bit(Path::new("/d/meta"), pos, 3).unwrap();
        let (_, v, load) = open(&disk).unwrap();
        assert_eq!((v, load), (state(1), SlotLoad::FellBack));
    }

    #[test]
    fn a_torn_unsynced_write_falls_back_and_the_next_write_replaces_it() {
        let disk = SimDisk::new(3);
        disk.set_faults(crate::io::SimDiskFaults {
            io_error_per_million: 0,
            torn_write_on_crash: true,
        });
        let (mut f, _, _) = open(&disk).unwrap();
        f.write(&state(7), true).unwrap();
        f.write(&state(8), false).unwrap(); // never synced: lost or torn at the crash
        drop(f);
        disk.crash();
        let (mut f, v, _) = open(&disk).unwrap();
        assert_eq!(v, state(7));
        f.write(&state(9), true).unwrap();
        drop(f);
        disk.crash();
        let (_, v, _) = open(&disk).unwrap();
        assert_eq!(v, state(9));
    }

    /// Seed 733477's class: a vote whose fsync failed is still read back by a restart in the
    /// same process (the page cache has it); if it is used, it must not go back at a later
    /// power loss. Open writes it again and syncs it, so it stays.
    #[test]
    fn a_state_read_back_after_a_failed_sync_is_durable_once_open_returns() {
        let disk = SimDisk::new(5);
        let (mut f, _, _) = open(&disk).unwrap();
        f.write(&state(1), true).unwrap();
        f.write(&state(3), false).unwrap();
        let always = |io_error_per_million| crate::io::SimDiskFaults {
            io_error_per_million,
            torn_write_on_crash: false,
        };
        disk.set_faults(always(2_000_000));
        f.sync().unwrap_err();
        disk.set_faults(always(0));
        drop(f);
        let (f, v, _) = open(&disk).unwrap(); // an in-process restart: no crash
        assert_eq!(v, state(3), "the page cache still holds the unsynced vote");
        drop(f);
        disk.crash();
        let (_, v, _) = open(&disk).unwrap();
        assert_eq!(v, state(3), "a vote in use went back after a power loss");
    }

    #[test]
    fn both_slots_bad_is_an_error_not_a_reset() {
        let disk = SimDisk::new(4);
        let (mut f, _, _) = open(&disk).unwrap();
        f.write(&state(1), true).unwrap();
        drop(f);
        for slot in 0..2 {
            let pos = (slot * SLOT + 9) as u64; // inside `seq`: covered by the CRC
            disk.flip_bit(Path::new("/d/meta"), pos, 0).unwrap();
        }
        let err = open(&disk).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn slot_checks() {
        let frame = encode_slot(7, &state(3), SLOT).unwrap();
        assert!(matches!(decode_slot::<State>(&frame), SlotState::Valid(7, s) if s == state(3)));
        assert!(matches!(decode_slot::<State>(&[0; 64]), SlotState::Empty));
        assert!(matches!(decode_slot::<State>(&[]), SlotState::Empty));
        // Every strict prefix is rejected (a torn write).
        for n in 1..frame.len() {
            assert!(
                matches!(decode_slot::<State>(&frame[..n]), SlotState::Invalid),
                "prefix of {n} bytes"
            );
        }
        let mut bad = frame.clone();
        bad[4] = 2; // unknown version
        assert!(matches!(decode_slot::<State>(&bad), SlotState::Invalid));
        let big = State {
            term: 1,
            name: "x".repeat(SLOT),
        };
        assert_eq!(
            encode_slot(1, &big, SLOT).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
