//! The disk seam: the narrow file API under the storage engine.
//!
//! Contract (both `StdDisk` and `SimDisk` pass `tests/disk_conformance.rs`):
//! - Bytes written with `write_at` are visible to `read_at` at once, but survive a crash only once
//!   `sync_data` on that file has returned.
//! - A file created (or renamed, or removed) survives a crash only once `sync_dir` on its parent
//!   directory has returned.
//! - `read_at` returns fewer bytes than asked only at the end of the file.
//! - Writes through a `MapMut` are visible to `MapMut::as_slice` at once and survive a crash only
//!   once `MapMut::flush` has returned. Code must not mix `read_at`/`write_at` with a live map of
//!   the same file range.
//! - No method panics on any input; failures are `io::Error`s.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// A file system. Paths are absolute or relative to the process, as with `std::fs`.
pub trait Disk: Send + Sync + fmt::Debug + 'static {
    /// Creates a directory and its parents; succeeds if it exists.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens a file for reading and writing; creates it (empty) when `create` is set and it does
    /// not exist. Errors with `NotFound` when it does not exist and `create` is not set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// The names (not full paths) of the entries of a directory, in no particular order.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> bool;
}

/// An open file. All positions are byte offsets from the start of the file.
#[allow(clippy::len_without_is_empty)]
pub trait DiskFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `position`; returns how many were read (short only at the
    /// end of the file, 0 at or past it).
    fn read_at(&self, buf: &mut [u8], position: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `position`, growing the file (with zeros in any gap) if needed.
    fn write_at(&self, buf: &[u8], position: u64) -> io::Result<()>;
    /// The current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data (and its length) durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Maps the first `len` bytes of the file for reading and writing. The file must already be
    /// at least `len` bytes long.
    fn map_mut(&self, len: usize) -> io::Result<Box<dyn MapMut>>;
}

/// A writable memory map of the start of a file.
pub trait MapMut: Send + Sync {
    fn as_slice(&self) -> &[u8];
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// Makes everything written through the map durable (msync).
    fn flush(&self) -> io::Result<()>;
}
