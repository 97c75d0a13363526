//! The simulated disk: an in-memory `Disk` with a crash and fault model.
//!
//! Each file keeps its *live* bytes (what reads see) apart from its *durable* bytes (what survives
//! a crash); `sync_data` makes the live bytes durable. The namespace is kept twice the same way: a
//! live map path -> file id and a durable one for files, a live and a durable set for
//! directories; `sync_dir(dir)` copies the live entries (files and directories) directly under
//! `dir` into the durable ones. So a directory, like a file, survives a crash only once its
//! parent was synced after it was created; and a crash keeps only the durable directories all of
//! whose ancestors are durable, with the durable entries inside them: a directory whose entry
//! was not synced vanishes with everything under it, synced or not. Only `/` is always durable.
//! A failed `sync_dir` changes nothing: the changed entries stay pending and the next successful
//! `sync_dir` of that directory makes them durable (entries are file-system metadata, written
//! by the journal's next commit, not page-cache data the kernel marks clean after an error).
//!
//! [`SimDisk::crash`] is a power loss: live state becomes durable state and every handle and map
//! opened before it goes stale (any later use is an `io::Error`). Optional faults
//! ([`SimDiskFaults`]) inject I/O errors and tear the last unsynced write of a file at a crash.
//!
//! A failed `sync_data` behaves as on Linux (fsyncgate): the kernel marks the pages it failed to
//! write clean, so the file's bytes written since its last successful sync stay readable but are
//! *lost*: no later sync copies them, and a crash brings back the durable bytes there (zeros
//! past the durable length), even after a later sync succeeded. Only writing them again
//! (`write_at`, `set_len`, or a map changing them) and syncing makes them durable. A crash does
//! not tear lost bytes back in (the write was not in flight any more: the kernel gave up on it).
//! `MapMut::flush` is never failed on purpose; it fails only for a stale map or a file that
//! shrank under it, and then changes nothing (msync never ran, so nothing was dropped).
//! All randomness comes from a splitmix64 generator seeded by [`SimDisk::new`], and every
//! collection is ordered, so a run is a pure function of the seed and the calls made.
//!
//! One `SimDisk` stands for one machine's disk: `crash` affects every file on it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::disk::{Disk, DiskFile, MapMut};

/// The largest file the sim disk holds; writes and `set_len` beyond it fail.
pub const SIM_FILE_BYTES_MAX: u64 = 1 << 30;
/// The most files (live or only durable) the sim disk holds at once.
pub const SIM_FILES_MAX: usize = 100_000;
/// The message of every injected I/O error.
pub const INJECTED_ERROR_MESSAGE: &str = "injected I/O error (sim disk)";

const PER_MILLION: u32 = 1_000_000;

/// Faults the sim disk injects. The default injects none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimDiskFaults {
    /// Probability, per million, that a `read_at`, `write_at`, `sync_data`, `sync_dir` or
    /// `set_len` fails with an `io::Error` of kind `Other` (values above 1_000_000 mean always).
    /// A failed call changes nothing, except a failed `sync_data`: as on Linux, the file's bytes
    /// written since its last successful sync stay readable but are *lost* (no later sync makes
    /// them durable, so a crash undoes them) until they are written again and synced.
    /// `MapMut::flush` is never failed on purpose.
    pub io_error_per_million: u32,
    /// At a crash, keep a seeded random prefix (shorter than the whole write) of each file's last
    /// write since its last `sync_data`, on top of its durable bytes.
    pub torn_write_on_crash: bool,
}

/// Counters since the disk was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimDiskStats {
    /// Successful `sync_data`, `sync_dir` and `MapMut::flush` calls.
    pub syncs: u64,
    /// Successful `write_at` calls.
    pub writes: u64,
    /// Bytes written by successful `write_at` calls.
    pub bytes_written: u64,
    /// I/O errors injected by `SimDiskFaults::io_error_per_million`.
    pub injected_errors: u64,
    /// Calls to `SimDisk::crash`.
    pub crashes: u64,
}

/// An in-memory disk with a crash and fault model. Clones share the same disk.
#[derive(Clone, Debug)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    /// An empty disk (only `/` exists) whose randomness is drawn from `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::new(seed))),
        }
    }

    /// Sets the faults injected from now on.
    pub fn set_faults(&self, faults: SimDiskFaults) {
        self.state.lock().faults = faults;
    }

    /// The faults currently injected.
    pub fn faults(&self) -> SimDiskFaults {
        self.state.lock().faults
    }

    /// A power loss: every file's bytes and the namespace fall back to their durable state (plus
    /// torn writes, when enabled), and every handle and map opened before now goes stale.
    pub fn crash(&self) {
        self.state.lock().crash();
    }

    /// Counters since the disk was created.
    pub fn stats(&self) -> SimDiskStats {
        self.state.lock().stats
    }

    /// Flips bit `bit` (0..=7) of the byte at `position` in both the live and the durable bytes of
    /// the file at `path` (in each, where the file is that long): bit rot.
    pub fn flip_bit(&self, path: &Path, position: u64, bit: u8) -> io::Result<()> {
        let path = normalize(path);
        let mut state = self.state.lock();
        let id = state.file_id_live(&path)?;
        state.file_mut(id)?.flip_bit(position, bit)
    }

    /// The length of the durable bytes of the file now at `path` (live namespace); `None` when no
    /// file is there.
    pub fn file_len_durable(&self, path: &Path) -> Option<u64> {
        self.durable_bytes(path).map(|bytes| bytes.len() as u64)
    }

    /// The durable bytes of the file now at `path` (live namespace): what a crash would leave,
    /// before any torn write. `None` when no file is there.
    pub fn durable_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let path = normalize(path);
        let state = self.state.lock();
        let id = state.names_live.get(&path)?;
        state.files.get(id).map(|file| file.bytes_durable.clone())
    }

    /// The paths of all files, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state.lock().names_live.keys().cloned().collect()
    }

    /// The paths of the files that would exist after a crash, sorted.
    pub fn files_durable(&self) -> Vec<PathBuf> {
        let state = self.state.lock();
        let dirs = state.dirs_surviving_crash();
        (state.names_durable.keys())
            .filter(|path| dirs.contains(parent(path)))
            .cloned()
            .collect()
    }

    /// The directories that would exist after a crash, sorted (`/` first).
    pub fn dirs_durable(&self) -> Vec<PathBuf> {
        self.state
            .lock()
            .dirs_surviving_crash()
            .into_iter()
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.lock().create_dir_all(&normalize(path))
    }

    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>> {
        let path = normalize(path);
        let mut state = self.lock();
        let id = state.open(&path, create)?;
        state.file_mut(id)?.handles += 1;
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            id,
            generation: state.generation,
            path,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.lock().remove_file(&normalize(path))
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.lock().remove_dir(&normalize(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.lock().rename(&normalize(from), &normalize(to))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.lock().list_dir(&normalize(path))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.inject_fault()?;
        state.sync_dir(&normalize(path))
    }

    fn exists(&self, path: &Path) -> bool {
        let path = normalize(path);
        let state = self.lock();
        state.dirs.contains(&path) || state.names_live.contains_key(&path)
    }
}

/// An open file of a `SimDisk`: refers to the file (not the path), like a Unix file descriptor.
struct SimFile {
    state: Arc<Mutex<State>>,
    id: FileId,
    generation: u64,
    path: PathBuf,
}

impl SimFile {
    /// Locks the disk, failing when the disk has crashed since this file was opened.
    fn lock_current(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.state.lock();
        if state.generation != self.generation {
            return Err(stale(&self.path));
        }
        Ok(state)
    }
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("id", &self.id)
            .field("generation", &self.generation)
            .finish()
    }
}

impl DiskFile for SimFile {
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize> {
        let mut state = self.lock_current()?;
        state.inject_fault()?;
        Ok(state.file_mut(self.id)?.read_at(buf, position))
    }

    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<()> {
        let mut state = self.lock_current()?;
        state.inject_fault()?;
        state.file_mut(self.id)?.write_at(buf, position)?;
        state.stats.writes += 1;
        state.stats.bytes_written += buf.len() as u64;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let mut state = self.lock_current()?;
        Ok(state.file_mut(self.id)?.bytes_live.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut state = self.lock_current()?;
        state.inject_fault()?;
        state.file_mut(self.id)?.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut state = self.lock_current()?;
        if let Err(e) = state.inject_fault() {
            state.file_mut(self.id)?.sync_failed();
            return Err(e);
        }
        state.file_mut(self.id)?.sync_data();
        state.stats.syncs += 1;
        Ok(())
    }

    fn map_mut(&self, len: usize) -> io::Result<Box<dyn MapMut>> {
        let mut state = self.lock_current()?;
        let file = state.file_mut(self.id)?;
        let copy = file.bytes_live.get(..len).ok_or_else(|| {
            invalid_input(format!(
                "cannot map {len} bytes of {}: the file is {} bytes long",
                self.path.display(),
                file.bytes_live.len()
            ))
        })?;
        let copy = copy.to_vec();
        file.handles += 1;
        Ok(Box::new(SimMap {
            state: Arc::clone(&self.state),
            id: self.id,
            generation: self.generation,
            path: self.path.clone(),
            copy,
        }))
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        self.state.lock().release(self.id, self.generation);
    }
}

/// A map of a `SimDisk` file: a private copy of the mapped range, written back on `flush` (to the
/// live and durable bytes) and on drop (to the live bytes only, as unmapping keeps the page cache).
struct SimMap {
    state: Arc<Mutex<State>>,
    id: FileId,
    generation: u64,
    path: PathBuf,
    copy: Vec<u8>,
}

impl MapMut for SimMap {
    fn as_slice(&self) -> &[u8] {
        &self.copy
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.copy
    }

    fn flush(&self) -> io::Result<()> {
        let mut state = self.state.lock();
        if state.generation != self.generation {
            return Err(stale(&self.path));
        }
        state.file_mut(self.id)?.flush_map(&self.copy, &self.path)?;
        state.stats.syncs += 1;
        Ok(())
    }
}

impl Drop for SimMap {
    fn drop(&mut self) {
        let mut state = self.state.lock();
        if state.generation != self.generation {
            return;
        }
        if let Some(file) = state.files.get_mut(&self.id) {
            file.write_back_map(&self.copy);
        }
        state.release(self.id, self.generation);
    }
}

type FileId = u64;

/// Everything on the disk. One lock guards it all; no method calls out while holding it.
struct State {
    rng: SplitMix64,
    faults: SimDiskFaults,
    stats: SimDiskStats,
    /// Bumped by every crash; handles and maps from an older generation are stale.
    generation: u64,
    file_id_next: FileId,
    files: BTreeMap<FileId, FileData>,
    names_live: BTreeMap<PathBuf, FileId>,
    names_durable: BTreeMap<PathBuf, FileId>,
    /// Names (of files or directories) whose live entry may differ from the durable one:
    /// changed since their directory was last synced (any other name is the same in the live
    /// and durable maps and sets), so `sync_dir` costs what changed, not the whole directory.
    names_pending: BTreeSet<PathBuf>,
    /// The directories (live); `/` is always one.
    dirs: BTreeSet<PathBuf>,
    /// The directories whose entry in their parent is durable; `/` is always one. A crash keeps
    /// those whose ancestors are all in it too.
    dirs_durable: BTreeSet<PathBuf>,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("generation", &self.generation)
            .field("files", &self.files.len())
            .field("names_live", &self.names_live.keys().collect::<Vec<_>>())
            .field("faults", &self.faults)
            .field("stats", &self.stats)
            .finish()
    }
}

impl State {
    fn new(seed: u64) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            faults: SimDiskFaults::default(),
            stats: SimDiskStats::default(),
            generation: 0,
            file_id_next: 0,
            files: BTreeMap::new(),
            names_live: BTreeMap::new(),
            names_durable: BTreeMap::new(),
            names_pending: BTreeSet::new(),
            dirs: BTreeSet::from([PathBuf::from("/")]),
            dirs_durable: BTreeSet::from([PathBuf::from("/")]),
        }
    }

    /// Fails with an injected error with probability `io_error_per_million`.
    fn inject_fault(&mut self) -> io::Result<()> {
        let per_million = self.faults.io_error_per_million.min(PER_MILLION);
        if per_million == 0 || self.rng.below(u64::from(PER_MILLION)) >= u64::from(per_million) {
            return Ok(());
        }
        self.stats.injected_errors += 1;
        Err(io::Error::other(INJECTED_ERROR_MESSAGE))
    }

    fn file_mut(&mut self, id: FileId) -> io::Result<&mut FileData> {
        // A file with a live handle is never collected; a miss is a bug in this module.
        self.files
            .get_mut(&id)
            .ok_or_else(|| io::Error::other(format!("sim disk lost file id {id}")))
    }

    fn file_id_live(&self, path: &Path) -> io::Result<FileId> {
        self.names_live
            .get(path)
            .copied()
            .ok_or_else(|| not_found(path))
    }

    /// Fails unless `path` is an existing directory.
    fn check_dir(&self, path: &Path) -> io::Result<()> {
        if self.dirs.contains(path) {
            Ok(())
        } else if self.names_live.contains_key(path) {
            Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is a file, not a directory", path.display()),
            ))
        } else {
            Err(not_found(path))
        }
    }

    fn check_not_dir(&self, path: &Path) -> io::Result<()> {
        if self.dirs.contains(path) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{} is a directory, not a file", path.display()),
            ));
        }
        Ok(())
    }

    fn create_dir_all(&mut self, path: &Path) -> io::Result<()> {
        if let Some(file) = path.ancestors().find(|a| self.names_live.contains_key(*a)) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "cannot create directory {}: {} is a file",
                    path.display(),
                    file.display()
                ),
            ));
        }
        for dir in path.ancestors() {
            if self.dirs.insert(dir.to_path_buf()) {
                self.names_pending.insert(dir.to_path_buf());
            }
        }
        Ok(())
    }

    /// The id of the file at `path`, created empty when `create` is set and it does not exist.
    fn open(&mut self, path: &Path, create: bool) -> io::Result<FileId> {
        self.check_not_dir(path)?;
        if let Some(&id) = self.names_live.get(path) {
            return Ok(id);
        }
        if !create {
            return Err(not_found(path));
        }
        self.check_dir(parent(path))?;
        if self.files.len() >= SIM_FILES_MAX {
            return Err(io::Error::other(format!(
                "cannot create {}: the sim disk holds at most {SIM_FILES_MAX} files",
                path.display()
            )));
        }
        let id = self.file_id_next;
        self.file_id_next += 1;
        self.files.insert(id, FileData::default());
        self.names_live.insert(path.to_path_buf(), id);
        self.names_pending.insert(path.to_path_buf());
        Ok(id)
    }

    fn remove_file(&mut self, path: &Path) -> io::Result<()> {
        self.check_not_dir(path)?;
        let id = self
            .names_live
            .remove(path)
            .ok_or_else(|| not_found(path))?;
        self.names_pending.insert(path.to_path_buf());
        self.collect(id);
        Ok(())
    }

    /// Removes an empty directory; like a file's removal, durable once its parent is synced
    /// (a crash before that brings it back with the entries it durably held).
    fn remove_dir(&mut self, path: &Path) -> io::Result<()> {
        self.check_dir(path)?;
        if path == Path::new("/") || !self.list_dir(path)?.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                format!("cannot remove {}: not empty", path.display()),
            ));
        }
        self.dirs.remove(path);
        self.names_pending.insert(path.to_path_buf());
        Ok(())
    }

    fn rename(&mut self, from: &Path, to: &Path) -> io::Result<()> {
        if self.dirs.contains(from) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "cannot rename {}: the sim disk renames files only",
                    from.display()
                ),
            ));
        }
        let id = self.file_id_live(from)?;
        self.check_not_dir(to)?;
        self.check_dir(parent(to))?;
        if from == to {
            return Ok(());
        }
        self.names_live.remove(from);
        self.names_pending.insert(from.to_path_buf());
        self.names_pending.insert(to.to_path_buf());
        if let Some(replaced) = self.names_live.insert(to.to_path_buf(), id) {
            self.collect(replaced);
        }
        Ok(())
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.check_dir(path)?;
        let files = self.names_live.keys();
        let dirs = self.dirs.iter().filter(|d| d.as_path() != Path::new("/"));
        let names: BTreeSet<String> = files
            .chain(dirs)
            .filter(|entry| parent(entry) == path)
            .filter_map(|entry| entry.file_name()?.to_str().map(str::to_owned))
            .collect();
        Ok(names.into_iter().collect())
    }

    /// Replaces the durable entries (files and directories) directly under `dir` with the live
    /// ones.
    fn sync_dir(&mut self, dir: &Path) -> io::Result<()> {
        self.check_dir(dir)?;
        let changed: Vec<PathBuf> = (self.names_pending.iter())
            .filter(|path| parent(path) == dir)
            .cloned()
            .collect();
        for path in changed {
            self.names_pending.remove(&path);
            self.sync_entry(path);
        }
        self.stats.syncs += 1;
        Ok(())
    }

    /// Makes the durable entry at `path` (a file, a directory or nothing) the live one.
    fn sync_entry(&mut self, path: PathBuf) {
        if self.dirs.contains(&path) {
            self.dirs_durable.insert(path.clone());
        } else {
            self.dirs_durable.remove(&path);
        }
        let replaced = match self.names_live.get(&path) {
            Some(&id) => self.names_durable.insert(path, id),
            None => self.names_durable.remove(&path),
        };
        if let Some(id) = replaced {
            self.collect(id);
        }
    }

    /// The durable directories all of whose ancestors are durable: what a crash keeps.
    fn dirs_surviving_crash(&self) -> BTreeSet<PathBuf> {
        let mut kept = BTreeSet::new();
        // Paths sort component by component, so a directory comes after its parent.
        for dir in &self.dirs_durable {
            if dir.as_path() == Path::new("/") || kept.contains(parent(dir)) {
                kept.insert(dir.clone());
            }
        }
        kept
    }

    fn crash(&mut self) {
        self.generation += 1;
        self.stats.crashes += 1;
        self.dirs_durable = self.dirs_surviving_crash();
        self.dirs.clone_from(&self.dirs_durable);
        let dirs = &self.dirs;
        self.names_durable
            .retain(|path, _| dirs.contains(parent(path)));
        self.names_live = self.names_durable.clone();
        self.names_pending.clear();
        let durable: BTreeSet<FileId> = self.names_durable.values().copied().collect();
        self.files.retain(|id, _| durable.contains(id));
        let torn = self.faults.torn_write_on_crash;
        for file in self.files.values_mut() {
            file.crash(torn.then_some(&mut self.rng));
        }
    }

    /// Drops a handle or map of file `id` opened in `generation`.
    fn release(&mut self, id: FileId, generation: u64) {
        if generation != self.generation {
            return;
        }
        if let Some(file) = self.files.get_mut(&id) {
            file.handles = file.handles.saturating_sub(1);
        }
        self.collect(id);
    }

    /// Forgets file `id` once nothing can reach it: no name (live or durable) and no handle.
    fn collect(&mut self, id: FileId) {
        let open = self.files.get(&id).is_some_and(|file| file.handles > 0);
        if open {
            return;
        }
        let named = self
            .names_live
            .values()
            .chain(self.names_durable.values())
            .any(|&n| n == id);
        if !named {
            self.files.remove(&id);
        }
    }
}

/// The last `write_at` of a file since its last `sync_data`: what a crash may tear.
#[derive(Debug, Clone)]
struct UnsyncedWrite {
    position: usize,
    bytes: Vec<u8>,
}

/// One file's bytes. For every position below both lengths, the live byte equals the durable one
/// unless the position is in `dirty` or in `lost`.
#[derive(Debug, Default)]
struct FileData {
    bytes_live: Vec<u8>,
    bytes_durable: Vec<u8>,
    /// Live bytes in `dirty.0..dirty.1` may differ from the durable ones (besides any live bytes
    /// past the durable length); `sync_data` copies those, except the `lost` ones.
    dirty: Option<(usize, usize)>,
    /// Live bytes a failed sync gave up on (Linux marks such pages clean): reads see them, but no
    /// later sync copies them, so a crash brings back the durable bytes there (zeros past the
    /// durable length). Writing a byte again (`write_at`, `set_len`, a map) takes it out.
    /// Always within the live length.
    lost: Ranges,
    write_unsynced_last: Option<UnsyncedWrite>,
    /// Open handles and maps of the current generation.
    handles: usize,
}

impl FileData {
    fn read_at(&self, buf: &mut [u8], position: u64) -> usize {
        let Ok(start) = usize::try_from(position) else {
            return 0;
        };
        let Some(available) = self.bytes_live.get(start..) else {
            return 0;
        };
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        n
    }

    fn write_at(&mut self, buf: &[u8], position: u64) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = checked_end(position, buf.len())?;
        let start = end - buf.len();
        let len_old = self.bytes_live.len();
        if len_old < end {
            self.bytes_live.resize(end, 0);
        }
        self.bytes_live[start..end].copy_from_slice(buf);
        // A gap the write filled with zeros is written too.
        self.rewritten(start.min(len_old), end);
        self.write_unsynced_last = Some(UnsyncedWrite {
            position: start,
            bytes: buf.to_vec(),
        });
        Ok(())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        let len = checked_end(len, 0)?;
        let len_old = self.bytes_live.len();
        self.bytes_live.resize(len, 0);
        self.rewritten(len.min(len_old), len.max(len_old));
        Ok(())
    }

    /// A successful fdatasync: the live length and every dirty byte not lost become durable.
    fn sync_data(&mut self) {
        self.mark_growth_dirty();
        self.bytes_durable.resize(self.bytes_live.len(), 0);
        if let Some((start, end)) = self.dirty.take() {
            self.copy_to_durable(start, end);
        }
        debug_assert!(!self.lost.is_empty() || self.bytes_durable == self.bytes_live);
        self.write_unsynced_last = None;
    }

    /// A failed fdatasync, as Linux has it: the durable bytes stay as they were, and every byte
    /// a successful sync would have copied is lost (see `lost`). The last unsynced write is no
    /// longer in flight either, so a crash does not tear it back in: its bytes are lost whole.
    fn sync_failed(&mut self) {
        self.mark_growth_dirty();
        if let Some((start, end)) = self.dirty.take() {
            self.lost.insert(start, end.min(self.bytes_live.len()));
        }
        self.write_unsynced_last = None;
    }

    /// Live bytes past the durable length are dirty.
    fn mark_growth_dirty(&mut self) {
        self.mark_dirty(self.bytes_durable.len(), self.bytes_live.len());
    }

    /// `start..end` was written again: dirty, and no longer lost.
    fn rewritten(&mut self, start: usize, end: usize) {
        self.mark_dirty(start, end);
        self.lost.remove(start, end);
    }

    fn mark_dirty(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        self.dirty = Some(match self.dirty {
            None => (start, end),
            Some((s, e)) => (s.min(start), e.max(end)),
        });
    }

    /// Copies the live bytes of `start..end` that are not lost to the durable bytes, which must
    /// already be at least as long as the live ones reach in that range.
    fn copy_to_durable(&mut self, start: usize, end: usize) {
        let end = end.min(self.bytes_live.len());
        for (s, e) in self.lost.gaps(start, end) {
            self.bytes_durable[s..e].copy_from_slice(&self.bytes_live[s..e]);
        }
    }

    /// msync: the map's bytes become live, and the live bytes it covers that are not lost
    /// become durable (the durable length grows to the map's length if shorter).
    fn flush_map(&mut self, copy: &[u8], path: &Path) -> io::Result<()> {
        if self.bytes_live.len() < copy.len() {
            return Err(invalid_input(format!(
                "cannot flush a map of {} bytes of {}: the file shrank to {} bytes",
                copy.len(),
                path.display(),
                self.bytes_live.len()
            )));
        }
        self.write_back_map(copy);
        if self.bytes_durable.len() < copy.len() {
            self.bytes_durable.resize(copy.len(), 0);
        }
        self.copy_to_durable(0, copy.len());
        Ok(())
    }

    /// Unmap (and the first half of a flush): the map's bytes become live, as far as the file
    /// still reaches. Only the bytes that differ from the live ones count as written again (a
    /// map cannot tell a byte stored with its old value from one left alone).
    fn write_back_map(&mut self, copy: &[u8]) {
        let n = copy.len().min(self.bytes_live.len());
        if let Some((start, end)) = differing_range(&self.bytes_live[..n], &copy[..n]) {
            self.bytes_live[start..end].copy_from_slice(&copy[start..end]);
            self.rewritten(start, end);
        }
    }

    /// Power loss: the durable bytes, plus a torn prefix of the last unsynced write when `rng` is
    /// given, become the file.
    fn crash(&mut self, rng: Option<&mut SplitMix64>) {
        self.handles = 0;
        self.dirty = None;
        self.lost = Ranges::default();
        let write = self.write_unsynced_last.take();
        if let (Some(rng), Some(write)) = (rng, write) {
            let kept = rng.below(write.bytes.len() as u64) as usize;
            self.overlay_durable(write.position, &write.bytes[..kept]);
        }
        self.bytes_live.clone_from(&self.bytes_durable);
    }

    fn overlay_durable(&mut self, position: usize, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let end = position + bytes.len();
        if self.bytes_durable.len() < end {
            self.bytes_durable.resize(end, 0);
        }
        self.bytes_durable[position..end].copy_from_slice(bytes);
    }

    fn flip_bit(&mut self, position: u64, bit: u8) -> io::Result<()> {
        if bit > 7 {
            return Err(invalid_input(format!("bit {bit} is out of range 0..=7")));
        }
        let position = usize::try_from(position).unwrap_or(usize::MAX);
        let mask = 1u8 << bit;
        let live = self.bytes_live.get_mut(position).map(|b| *b ^= mask);
        let durable = self.bytes_durable.get_mut(position).map(|b| *b ^= mask);
        if live.is_none() && durable.is_none() {
            return Err(invalid_input(format!(
                "position {position} is past the end of the file ({} bytes live, {} durable)",
                self.bytes_live.len(),
                self.bytes_durable.len()
            )));
        }
        Ok(())
    }
}

/// The smallest range `start..end` outside which `a` and `b` (of equal length) are equal; `None`
/// when they are equal.
fn differing_range(a: &[u8], b: &[u8]) -> Option<(usize, usize)> {
    let start = a.iter().zip(b).position(|(x, y)| x != y)?;
    let from_end = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .position(|(x, y)| x != y)?;
    Some((start, a.len() - from_end))
}

/// A set of byte positions kept as disjoint, non-adjacent ranges `start..end` (keyed by start).
/// Each operation costs the ranges it touches, plus a logarithmic lookup.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Ranges(BTreeMap<usize, usize>);

impl Ranges {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The ranges that overlap `start..end` or touch it (end at `start` or start at `end`),
    /// in descending order.
    fn touching(&self, start: usize, end: usize) -> Vec<(usize, usize)> {
        (self.0.range(..=end).rev())
            .take_while(|&(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect()
    }

    /// Adds `start..end`, merging it with the ranges it overlaps or touches.
    fn insert(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        for (s, e) in self.touching(start, end) {
            self.0.remove(&s);
            (start, end) = (start.min(s), end.max(e));
        }
        self.0.insert(start, end);
    }

    /// Removes `start..end`, keeping the parts of straddling ranges outside it.
    fn remove(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        for (s, e) in self.touching(start, end) {
            self.0.remove(&s);
            if s < start {
                self.0.insert(s, start.min(e));
            }
            if end < e {
                self.0.insert(end.max(s), e);
            }
        }
    }

    /// The parts of `start..end` in no range, in ascending order.
    fn gaps(&self, start: usize, end: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut at = start;
        for (s, e) in self.touching(start, end).into_iter().rev() {
            if s > at {
                out.push((at, s.min(end)));
            }
            at = at.max(e);
        }
        if at < end {
            out.push((at, end));
        }
        out
    }
}

/// `position + len` as a file length, if within `SIM_FILE_BYTES_MAX`.
fn checked_end(position: u64, len: usize) -> io::Result<usize> {
    let end = position.saturating_add(len as u64);
    if end > SIM_FILE_BYTES_MAX {
        return Err(invalid_input(format!(
            "a file would grow to {end} bytes; the sim disk holds at most {SIM_FILE_BYTES_MAX} \
             bytes per file"
        )));
    }
    usize::try_from(end).map_err(|_| invalid_input(format!("file length {end} overflows usize")))
}

/// splitmix64: a tiny, good-enough deterministic generator.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// The absolute, lexically normalised form of `path` (relative paths are taken from `/`).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// The directory holding a normalised path (`/` for `/` itself).
fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("/"))
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory (sim disk)", path.display()),
    )
}

fn stale(path: &Path) -> io::Error {
    io::Error::other(format!(
        "{}: stale handle, the sim disk crashed since it was opened",
        path.display()
    ))
}

fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_is_deterministic_and_below_stays_in_range() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for n in [1u64, 2, 3, 10, 1_000_000] {
            let (x, y) = (a.below(n), b.below(n));
            assert_eq!(x, y);
            assert!(x < n);
        }
        assert_eq!(SplitMix64::new(1).below(0), 0);
        assert_ne!(SplitMix64::new(1).next_u64(), SplitMix64::new(2).next_u64());
    }

    #[test]
    fn normalize_makes_paths_absolute_and_lexical() {
        assert_eq!(normalize(Path::new("a/./b/")), PathBuf::from("/a/b"));
        assert_eq!(normalize(Path::new("/a/../c")), PathBuf::from("/c"));
        assert_eq!(normalize(Path::new("/..")), PathBuf::from("/"));
        assert_eq!(parent(Path::new("/")), Path::new("/"));
    }

    #[test]
    fn a_removed_directory_is_gone_after_a_crash_only_once_its_parent_is_synced() {
        let disk = SimDisk::new(1);
        let dir = Path::new("/d/t");
        crate::io::create_dir_durable(&disk, dir).unwrap();
        let file = dir.join("f");
        disk.open(&file, true).unwrap();
        disk.sync_dir(dir).unwrap();
        let refused = disk.remove_dir(dir).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::DirectoryNotEmpty);

        disk.remove_file(&file).unwrap();
        disk.remove_dir(dir).unwrap();
        assert!(!disk.exists(dir));
        disk.crash();
        assert!(
            disk.exists(&file),
            "nothing was synced: the directory and file come back"
        );

        disk.remove_file(&file).unwrap();
        disk.remove_dir(dir).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        disk.crash();
        assert!(!disk.exists(dir) && !disk.exists(&file));
    }

    #[test]
    fn sync_copies_only_dirty_ranges_but_ends_equal() {
        let mut file = FileData::default();
        file.write_at(&[1, 2, 3, 4], 0).unwrap();
        file.sync_data();
        file.set_len(0).unwrap();
        file.write_at(&[9], 3).unwrap();
        file.sync_data();
        assert_eq!(file.bytes_durable, vec![0, 0, 0, 9]);
    }

    fn ranges(list: &[(usize, usize)]) -> Ranges {
        let mut r = Ranges::default();
        for &(s, e) in list {
            r.insert(s, e);
        }
        r
    }

    #[test]
    fn ranges_merge_split_and_report_gaps() {
        let mut r = ranges(&[(10, 20), (30, 40), (20, 25), (5, 5)]);
        assert_eq!(
            r,
            ranges(&[(10, 25), (30, 40)]),
            "touching ranges merge, empty ones vanish"
        );
        r.insert(24, 31);
        assert_eq!(r, ranges(&[(10, 40)]));
        r.remove(15, 18);
        r.remove(38, 100);
        r.remove(0, 11);
        assert_eq!(r.0.iter().collect::<Vec<_>>(), [(&11, &15), (&18, &38)]);
        assert_eq!(r.gaps(0, 50), [(0, 11), (15, 18), (38, 50)]);
        assert_eq!(r.gaps(12, 14), []);
        assert_eq!(r.gaps(14, 19), [(15, 18)]);
        assert_eq!(r.gaps(15, 18), [(15, 18)]);
        r.remove(0, usize::MAX);
        assert!(r.is_empty());
    }

    #[test]
    fn differing_range_spans_the_first_to_the_last_difference() {
        assert_eq!(differing_range(b"abcd", b"abcd"), None);
        assert_eq!(differing_range(b"abcd", b"xbcd"), Some((0, 1)));
        assert_eq!(differing_range(b"abcd", b"aXcY"), Some((1, 4)));
        assert_eq!(differing_range(b"", b""), None);
    }

    /// A file holding `durable`, synced.
    fn synced(durable: &[u8]) -> FileData {
        let mut file = FileData::default();
        file.write_at(durable, 0).unwrap();
        file.sync_data();
        file
    }

    #[test]
    fn a_failed_sync_loses_its_bytes_even_after_a_later_sync() {
        let mut file = synced(b"abcd");
        file.write_at(b"XY", 1).unwrap();
        file.write_at(b"ef", 4).unwrap();
        file.sync_failed();
        assert_eq!(file.bytes_live, b"aXYdef", "lost bytes stay readable");
        file.write_at(b"g", 6).unwrap();
        file.sync_data();
        assert_eq!(
            file.bytes_durable, b"abcd\0\0g",
            "lost growth is a hole of zeros"
        );
        file.crash(None);
        assert_eq!(file.bytes_live, b"abcd\0\0g");
    }

    #[test]
    fn rewriting_lost_bytes_makes_them_syncable_again() {
        let mut file = synced(b"abcdef");
        file.write_at(b"XYZ", 1).unwrap();
        file.sync_failed();
        file.write_at(b"Z", 3).unwrap();
        file.sync_data();
        assert_eq!(
            file.bytes_durable, b"abcZef",
            "only the rewritten byte is durable"
        );
        file.set_len(1).unwrap();
        file.sync_failed();
        file.write_at(b"g", 3).unwrap();
        file.sync_data();
        assert_eq!(
            file.bytes_durable, b"a\0\0g",
            "a write past the end writes its gap"
        );
        file.write_at(b"XYZef", 1).unwrap();
        file.sync_failed();
        file.set_len(2).unwrap();
        file.set_len(6).unwrap();
        file.sync_data();
        assert_eq!(
            file.bytes_durable, b"a\0\0\0\0\0",
            "set_len rewrites what it cuts and grows; the X at 1 is still lost"
        );
    }

    #[test]
    fn a_failed_sync_leaves_nothing_to_tear() {
        let mut file = synced(b"ab");
        file.write_at(&[7; 64], 2).unwrap();
        file.sync_failed();
        file.crash(Some(&mut SplitMix64::new(3)));
        assert_eq!(file.bytes_live, b"ab");
    }

    #[test]
    fn a_map_flush_makes_durable_only_what_it_changed_of_lost_bytes() {
        let mut file = synced(&[0; 8]);
        file.write_at(&[1; 8], 0).unwrap();
        file.sync_failed();
        let mut copy = file.bytes_live.clone();
        copy[6] = 2;
        file.flush_map(&copy, Path::new("/f")).unwrap();
        assert_eq!(file.bytes_live, [1, 1, 1, 1, 1, 1, 2, 1]);
        assert_eq!(file.bytes_durable, [0, 0, 0, 0, 0, 0, 2, 0]);
    }
}
