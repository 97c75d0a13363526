//! The disk seam: the narrow file API under the storage engine.
//!
//! Contract (both `StdDisk` and `SimDisk` pass `tests/disk_conformance.rs`):
//! - Bytes written with `write_at` are visible to `read_at` at once, but survive a crash only once
//!   `sync_data` on that file has returned.
//! - A failed `sync_data` (as on Linux) may drop the bytes it was to write: they stay readable,
//!   but a crash may lose them even after a later `sync_data` succeeded. Only writing them again
//!   and syncing makes them durable; so after a failed sync, code re-writes (or re-reads from a
//!   durable source) what it keeps using, never trusts it as written.
//! - A file or directory created (or a file renamed, or removed) survives a crash only once
//!   `sync_dir` on its parent directory has returned, and only if that directory survives too: a
//!   directory whose own entry was never synced vanishes at a crash with everything under it,
//!   synced or not. [`create_dir_durable`] creates directories that survive.
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
    /// Creates a directory and its parents; succeeds if it exists. The directories created are
    /// not durable until their parents are synced: see [`create_dir_durable`].
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Opens a file for reading and writing; creates it (empty) when `create` is set and it does
    /// not exist. Errors with `NotFound` when it does not exist and `create` is not set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn DiskFile>>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory (not durable until its parent is synced).
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
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

/// Creates the directory `path` and its missing ancestors (like [`Disk::create_dir_all`]) and
/// makes every directory of `path` durable: syncs the parent of each of them, from the top down.
/// Once it returns, `path` survives a crash, and so does a file created in it once `path` is
/// synced.
///
/// It syncs the parents of the directories that already existed too: one created by an earlier
/// call whose sync failed is there but not durable, and only a sync of its parent fixes that. A
/// directory that existed before the call and whose parent may not be read (`PermissionDenied`:
/// not one this process made) is skipped. The cost is one directory sync per component of `path`,
/// paid when a log or state file is opened.
pub fn create_dir_durable(disk: &dyn Disk, path: &Path) -> io::Result<()> {
    let dirs: Vec<&Path> = (path.ancestors())
        .filter(|dir| dir.file_name().is_some())
        .collect();
    let existed: Vec<bool> = dirs.iter().map(|dir| disk.exists(dir)).collect();
    disk.create_dir_all(path)?;
    for (dir, existed) in dirs.into_iter().zip(existed).rev() {
        match disk.sync_dir(parent_dir(dir)) {
            Err(e) if existed && e.kind() == io::ErrorKind::PermissionDenied => {}
            result => result?,
        }
    }
    Ok(())
}

/// The directory holding `dir`: `.` for a relative path of one component.
fn parent_dir(dir: &Path) -> &Path {
    match dir.parent() {
        Some(parent) if parent.as_os_str().is_empty() => Path::new("."),
        Some(parent) => parent,
        None => Path::new("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::SimDisk;

    #[test]
    fn parent_dir_of_a_relative_single_component_is_the_current_dir() {
        assert_eq!(parent_dir(Path::new("a")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/b")), Path::new("a"));
        assert_eq!(parent_dir(Path::new("/a")), Path::new("/"));
        assert_eq!(parent_dir(Path::new("/")), Path::new("/"));
    }

    #[test]
    fn create_dir_durable_syncs_every_parent_and_fails_on_a_file() -> io::Result<()> {
        let disk = SimDisk::new(1);
        create_dir_durable(&disk, Path::new("a/b/c"))?;
        assert!(disk.exists(Path::new("/a/b/c")));
        assert_eq!(disk.stats().syncs, 3, "., a and a/b");
        create_dir_durable(&disk, Path::new("/a/b/c"))?;
        assert_eq!(
            disk.stats().syncs,
            6,
            "existing directories are synced again"
        );
        drop(disk.open(Path::new("/f"), true)?);
        assert!(create_dir_durable(&disk, Path::new("/f/x")).is_err());
        Ok(())
    }
}
