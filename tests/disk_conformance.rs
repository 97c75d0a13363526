//! The disk contract (src/io/disk.rs), checked once against `StdDisk` on a temporary directory and
//! once against `SimDisk`, then the crash and fault model of `SimDisk` on its own.

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, ensure, Result};
use loghouse::io::{create_dir_durable, Disk, DiskFile, SimDisk, SimDiskFaults};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Generates one `#[test]` per conformance case for each disk. Attributes before a case's name
/// apply to its `StdDisk` test only.
macro_rules! conformance {
    ($($(#[$std_attr:meta])* $name:ident,)*) => {
        mod std_disk {
            $(
                $(#[$std_attr])*
                #[test]
                fn $name() -> anyhow::Result<()> {
                    let dir = tempfile::tempdir()?;
                    super::$name(&loghouse::io::StdDisk::new(), dir.path())
                }
            )*
        }
        mod sim_disk {
            $(
                #[test]
                fn $name() -> anyhow::Result<()> {
                    let (disk, root) = super::sim_disk_with_root(1)?;
                    super::$name(&disk, &root)
                }
            )*
        }
    };
}

conformance! {
    open_missing_is_not_found_until_created,
    open_with_create_keeps_existing_bytes,
    open_in_missing_dir_is_not_found,
    write_is_visible_to_another_handle,
    write_past_end_fills_gap_with_zeros,
    read_at_end_is_short_then_empty,
    set_len_grows_with_zeros_and_shrinks,
    rename_replaces_target,
    rename_missing_source_is_not_found,
    remove_file_then_gone_and_missing_is_not_found,
    removed_file_stays_usable_through_open_handle,
    list_dir_names_files_and_dirs,
    exists_for_files_dirs_and_missing,
    create_dir_all_nests_and_is_idempotent,
    create_dir_durable_nests_and_is_idempotent,
    create_dir_durable_fails_under_a_file,
    file_in_a_durable_new_dir_is_usable_after_syncs,
    syncs_succeed_and_keep_bytes,
    map_mut_reads_writes_and_flush_is_visible_after_reopen,
    map_mut_drop_without_flush_is_visible_after_reopen,
    map_mut_longer_than_file_errors,
    ops_match_a_vec_model,
}

fn sim_disk_with_root(seed: u64) -> Result<(SimDisk, PathBuf)> {
    let disk = SimDisk::new(seed);
    let root = PathBuf::from("/sim");
    disk.create_dir_all(&root)?;
    Ok((disk, root))
}

fn read_all(file: &dyn DiskFile) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; usize::try_from(file.len()?).unwrap_or(usize::MAX)];
    let n = file.read_at(&mut buf, 0)?;
    buf.truncate(n);
    Ok(buf)
}

fn read_path(disk: &dyn Disk, path: &Path) -> Result<Vec<u8>> {
    Ok(read_all(&*disk.open(path, false)?)?)
}

fn create_with(disk: &dyn Disk, path: &Path, bytes: &[u8]) -> Result<Arc<dyn DiskFile>> {
    let file = disk.open(path, true)?;
    file.write_at(bytes, 0)?;
    Ok(file)
}

fn expect_kind<T>(result: io::Result<T>, kind: io::ErrorKind) -> Result<()> {
    match result {
        Ok(_) => Err(anyhow!("expected an error of kind {kind:?}, got Ok")),
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => Err(anyhow!("expected an error of kind {kind:?}, got {e:?}")),
    }
}

// ---------------------------------------------------------------------------------------------
// The contract, for both disks.

fn open_missing_is_not_found_until_created(disk: &dyn Disk, root: &Path) -> Result<()> {
    let path = root.join("a");
    expect_kind(disk.open(&path, false), io::ErrorKind::NotFound)?;
    ensure!(!disk.exists(&path));
    let file = disk.open(&path, true)?;
    ensure!(file.len()? == 0);
    ensure!(disk.exists(&path));
    ensure!(disk.open(&path, false)?.len()? == 0);
    Ok(())
}

fn open_with_create_keeps_existing_bytes(disk: &dyn Disk, root: &Path) -> Result<()> {
    let path = root.join("a");
    drop(create_with(disk, &path, b"hello")?);
    let again = disk.open(&path, true)?;
    ensure!(read_all(&*again)? == b"hello");
    Ok(())
}

fn open_in_missing_dir_is_not_found(disk: &dyn Disk, root: &Path) -> Result<()> {
    expect_kind(disk.open(&root.join("no/a"), true), io::ErrorKind::NotFound)
}

fn write_is_visible_to_another_handle(disk: &dyn Disk, root: &Path) -> Result<()> {
    let path = root.join("a");
    let writer = create_with(disk, &path, b"abcdef")?;
    writer.write_at(b"XY", 2)?;
    let reader = disk.open(&path, false)?;
    ensure!(read_all(&*reader)? == b"abXYef");
    let mut buf = [0u8; 3];
    ensure!(reader.read_at(&mut buf, 1)? == 3);
    ensure!(&buf == b"bXY");
    Ok(())
}

fn write_past_end_fills_gap_with_zeros(disk: &dyn Disk, root: &Path) -> Result<()> {
    let file = create_with(disk, &root.join("a"), b"ab")?;
    file.write_at(b"cd", 5)?;
    ensure!(file.len()? == 7);
    ensure!(read_all(&*file)? == b"ab\0\0\0cd");
    Ok(())
}

fn read_at_end_is_short_then_empty(disk: &dyn Disk, root: &Path) -> Result<()> {
    let file = create_with(disk, &root.join("a"), b"abcde")?;
    let mut buf = [0xAAu8; 8];
    ensure!(file.read_at(&mut buf, 3)? == 2);
    ensure!(&buf[..2] == b"de");
    ensure!(
        buf[2..].iter().all(|&b| b == 0xAA),
        "read wrote past what it returned"
    );
    ensure!(file.read_at(&mut buf, 5)? == 0);
    ensure!(file.read_at(&mut buf, 1_000)? == 0);
    ensure!(file.read_at(&mut [], 0)? == 0);
    Ok(())
}

fn set_len_grows_with_zeros_and_shrinks(disk: &dyn Disk, root: &Path) -> Result<()> {
    let file = create_with(disk, &root.join("a"), b"abcdef")?;
    file.set_len(3)?;
    ensure!(file.len()? == 3);
    ensure!(read_all(&*file)? == b"abc");
    file.set_len(6)?;
    ensure!(
        read_all(&*file)? == b"abc\0\0\0",
        "grown bytes must be zeros"
    );
    file.set_len(0)?;
    ensure!(file.len()? == 0);
    Ok(())
}

fn rename_replaces_target(disk: &dyn Disk, root: &Path) -> Result<()> {
    let (from, to) = (root.join("from"), root.join("to"));
    drop(create_with(disk, &from, b"new")?);
    drop(create_with(disk, &to, b"old-and-longer")?);
    disk.rename(&from, &to)?;
    ensure!(!disk.exists(&from));
    expect_kind(disk.open(&from, false), io::ErrorKind::NotFound)?;
    ensure!(read_path(disk, &to)? == b"new");
    Ok(())
}

fn rename_missing_source_is_not_found(disk: &dyn Disk, root: &Path) -> Result<()> {
    expect_kind(
        disk.rename(&root.join("missing"), &root.join("to")),
        io::ErrorKind::NotFound,
    )?;
    ensure!(!disk.exists(&root.join("to")));
    Ok(())
}

fn remove_file_then_gone_and_missing_is_not_found(disk: &dyn Disk, root: &Path) -> Result<()> {
    let path = root.join("a");
    drop(create_with(disk, &path, b"x")?);
    disk.remove_file(&path)?;
    ensure!(!disk.exists(&path));
    expect_kind(disk.open(&path, false), io::ErrorKind::NotFound)?;
    expect_kind(disk.remove_file(&path), io::ErrorKind::NotFound)
}

fn removed_file_stays_usable_through_open_handle(disk: &dyn Disk, root: &Path) -> Result<()> {
    let path = root.join("a");
    let file = create_with(disk, &path, b"abc")?;
    disk.remove_file(&path)?;
    file.write_at(b"d", 3)?;
    ensure!(read_all(&*file)? == b"abcd");
    let fresh = disk.open(&path, true)?;
    ensure!(
        fresh.len()? == 0,
        "a new file at the old path must not see the removed one"
    );
    Ok(())
}

fn list_dir_names_files_and_dirs(disk: &dyn Disk, root: &Path) -> Result<()> {
    ensure!(disk.list_dir(root)?.is_empty());
    drop(create_with(disk, &root.join("b.log"), b"")?);
    drop(create_with(disk, &root.join("a.index"), b"")?);
    disk.create_dir_all(&root.join("sub/deeper"))?;
    drop(create_with(disk, &root.join("sub/inner"), b"")?);
    let mut names = disk.list_dir(root)?;
    names.sort();
    ensure!(names == ["a.index", "b.log", "sub"], "got {names:?}");
    let mut sub = disk.list_dir(&root.join("sub"))?;
    sub.sort();
    ensure!(sub == ["deeper", "inner"], "got {sub:?}");
    expect_kind(
        disk.list_dir(&root.join("missing")),
        io::ErrorKind::NotFound,
    )
}

fn exists_for_files_dirs_and_missing(disk: &dyn Disk, root: &Path) -> Result<()> {
    ensure!(disk.exists(root));
    ensure!(!disk.exists(&root.join("x")));
    disk.create_dir_all(&root.join("d"))?;
    ensure!(disk.exists(&root.join("d")));
    drop(create_with(disk, &root.join("d/f"), b"")?);
    ensure!(disk.exists(&root.join("d/f")));
    ensure!(!disk.exists(&root.join("d/g")));
    Ok(())
}

fn create_dir_all_nests_and_is_idempotent(disk: &dyn Disk, root: &Path) -> Result<()> {
    let deep = root.join("a/b/c");
    disk.create_dir_all(&deep)?;
    disk.create_dir_all(&deep)?;
    ensure!(disk.exists(&root.join("a/b")));
    drop(create_with(disk, &deep.join("f"), b"x")?);
    ensure!(read_path(disk, &deep.join("f"))? == b"x");
    Ok(())
}

fn create_dir_durable_nests_and_is_idempotent(disk: &dyn Disk, root: &Path) -> Result<()> {
    let deep = root.join("data/raft/log");
    create_dir_durable(disk, &deep)?;
    create_dir_durable(disk, &deep)?;
    create_dir_durable(disk, &root.join("data/raft"))?;
    ensure!(disk.exists(&root.join("data/raft")) && disk.exists(&deep));
    let mut names = disk.list_dir(&root.join("data"))?;
    names.sort();
    ensure!(names == ["raft"], "got {names:?}");
    Ok(())
}

fn create_dir_durable_fails_under_a_file(disk: &dyn Disk, root: &Path) -> Result<()> {
    drop(create_with(disk, &root.join("f"), b"x")?);
    ensure!(create_dir_durable(disk, &root.join("f/sub")).is_err());
    ensure!(read_path(disk, &root.join("f"))? == b"x");
    Ok(())
}

fn file_in_a_durable_new_dir_is_usable_after_syncs(disk: &dyn Disk, root: &Path) -> Result<()> {
    let dir = root.join("data/log");
    create_dir_durable(disk, &dir)?;
    let file = create_with(disk, &dir.join("0.log"), b"record")?;
    file.sync_data()?;
    disk.sync_dir(&dir)?;
    drop(file);
    ensure!(read_path(disk, &dir.join("0.log"))? == b"record");
    ensure!(disk.list_dir(&dir)? == ["0.log"]);
    Ok(())
}

fn syncs_succeed_and_keep_bytes(disk: &dyn Disk, root: &Path) -> Result<()> {
    let file = create_with(disk, &root.join("a"), b"abc")?;
    file.sync_data()?;
    disk.sync_dir(root)?;
    ensure!(read_all(&*file)? == b"abc");
    Ok(())
}

fn map_mut_reads_writes_and_flush_is_visible_after_reopen(
    disk: &dyn Disk,
    root: &Path,
) -> Result<()> {
    let path = root.join("index");
    let file = create_with(disk, &path, b"0123456789")?;
    let mut map = file.map_mut(8)?;
    ensure!(map.as_slice() == b"01234567");
    map.as_mut_slice()[..2].copy_from_slice(b"ab");
    ensure!(
        map.as_slice() == b"ab234567",
        "map writes are visible to the map at once"
    );
    map.flush()?;
    drop(map);
    drop(file);
    ensure!(read_path(disk, &path)? == b"ab23456789");
    Ok(())
}

fn map_mut_drop_without_flush_is_visible_after_reopen(disk: &dyn Disk, root: &Path) -> Result<()> {
    let path = root.join("index");
    let file = create_with(disk, &path, &[0u8; 16])?;
    let mut map = file.map_mut(16)?;
    map.as_mut_slice()[15] = 7;
    drop(map);
    drop(file);
    let bytes = read_path(disk, &path)?;
    ensure!(bytes.len() == 16 && bytes[15] == 7 && bytes[..15].iter().all(|&b| b == 0));
    Ok(())
}

fn map_mut_longer_than_file_errors(disk: &dyn Disk, root: &Path) -> Result<()> {
    let file = create_with(disk, &root.join("index"), &[1u8; 4096])?;
    // Never touch the map if it is (wrongly) created: past EOF a real map faults.
    ensure!(file.map_mut(4097).is_err());
    ensure!(file.map_mut(4096)?.as_slice().len() == 4096);
    Ok(())
}

#[derive(Debug, Clone)]
enum ModelOp {
    Write { position: u64, bytes: Vec<u8> },
    SetLen(u64),
    Read { position: u64, len: usize },
    Sync,
}

fn model_op() -> impl Strategy<Value = ModelOp> {
    prop_oneof![
        4 => (0u64..256, vec(any::<u8>(), 0..64))
            .prop_map(|(position, bytes)| ModelOp::Write { position, bytes }),
        1 => (0u64..320).prop_map(ModelOp::SetLen),
        3 => (0u64..320, 0usize..96).prop_map(|(position, len)| ModelOp::Read { position, len }),
        1 => Just(ModelOp::Sync),
    ]
}

/// Applies `op` to a `Vec` model; returns what a read must return.
fn apply_to_model(model: &mut Vec<u8>, op: &ModelOp) -> Option<Vec<u8>> {
    match op {
        ModelOp::Write { position, bytes } if !bytes.is_empty() => {
            let start = *position as usize;
            let end = start + bytes.len();
            if model.len() < end {
                model.resize(end, 0);
            }
            model[start..end].copy_from_slice(bytes);
        }
        ModelOp::SetLen(len) => model.resize(*len as usize, 0),
        ModelOp::Read { position, len } => {
            let start = (*position as usize).min(model.len());
            let end = (start + len).min(model.len());
            return Some(model[start..end].to_vec());
        }
        ModelOp::Write { .. } | ModelOp::Sync => {}
    }
    None
}

fn check_against_model(disk: &dyn Disk, path: &Path, ops: &[ModelOp]) -> Result<()> {
    let file = disk.open(path, true)?;
    let mut model = Vec::new();
    for op in ops {
        let expected = apply_to_model(&mut model, op);
        match op {
            ModelOp::Write { position, bytes } => file.write_at(bytes, *position)?,
            ModelOp::SetLen(len) => file.set_len(*len)?,
            ModelOp::Sync => file.sync_data()?,
            ModelOp::Read { position, len } => {
                let mut buf = vec![0u8; *len];
                let n = file.read_at(&mut buf, *position)?;
                ensure!(
                    Some(&buf[..n]) == expected.as_deref(),
                    "read differs after {op:?}"
                );
            }
        }
        ensure!(
            file.len()? == model.len() as u64,
            "len differs after {op:?}"
        );
    }
    ensure!(read_all(&*file)? == model);
    Ok(())
}

fn ops_match_a_vec_model(disk: &dyn Disk, root: &Path) -> Result<()> {
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let case = Cell::new(0u32);
    runner
        .run(&vec(model_op(), 1..40), |ops| {
            case.set(case.get() + 1);
            let path = root.join(format!("model-{}", case.get()));
            check_against_model(disk, &path, &ops).map_err(|e| TestCaseError::fail(e.to_string()))
        })
        .map_err(|e| anyhow!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// SimDisk: the crash model.

/// A sim disk with `/d` created and durable, and file `/d/f` created, durable, holding `bytes`.
fn sim_with_durable_file(seed: u64, bytes: &[u8]) -> Result<(SimDisk, Arc<dyn DiskFile>)> {
    let disk = SimDisk::new(seed);
    create_dir_durable(&disk, Path::new("/d"))?;
    let file = create_with(&disk, Path::new("/d/f"), bytes)?;
    file.sync_data()?;
    disk.sync_dir(Path::new("/d"))?;
    Ok((disk, file))
}

fn f() -> &'static Path {
    Path::new("/d/f")
}

#[test]
fn synced_bytes_survive_a_crash_and_unsynced_do_not() -> Result<()> {
    let (disk, file) = sim_with_durable_file(1, b"synced")?;
    file.write_at(b"-and-not", 6)?;
    file.write_at(b"S", 0)?;
    ensure!(read_all(&*file)? == b"Synced-and-not");
    ensure!(disk.file_len_durable(f()) == Some(6));
    disk.crash();
    ensure!(read_path(&disk, f())? == b"synced");
    Ok(())
}

#[test]
fn set_len_without_sync_is_undone_by_a_crash() -> Result<()> {
    let (disk, file) = sim_with_durable_file(1, b"abcdef")?;
    file.set_len(2)?;
    disk.crash();
    ensure!(read_path(&disk, f())? == b"abcdef");
    let file = disk.open(f(), false)?;
    file.set_len(2)?;
    file.sync_data()?;
    disk.crash();
    ensure!(read_path(&disk, f())? == b"ab");
    Ok(())
}

#[test]
fn file_whose_dir_was_not_synced_vanishes_on_crash() -> Result<()> {
    let (disk, _file) = sim_with_durable_file(1, b"")?;
    let new = Path::new("/d/new");
    let file = create_with(&disk, new, b"data")?;
    file.sync_data()?;
    ensure!(disk.files_durable() == [f()], "only /d/f is durable");
    disk.crash();
    ensure!(!disk.exists(new));
    expect_kind(disk.open(new, false), io::ErrorKind::NotFound)?;
    ensure!(disk.list_dir(Path::new("/d"))? == ["f"]);
    ensure!(disk.files() == [f()]);
    Ok(())
}

#[test]
fn file_whose_dir_was_synced_survives_with_its_synced_bytes_only() -> Result<()> {
    let disk = SimDisk::new(1);
    create_dir_durable(&disk, Path::new("/d"))?;
    let file = create_with(&disk, f(), b"abc")?;
    disk.sync_dir(Path::new("/d"))?;
    disk.crash();
    ensure!(disk.exists(f()));
    ensure!(read_path(&disk, f())?.is_empty(), "data was never synced");
    drop(file);
    Ok(())
}

#[test]
fn rename_without_sync_dir_is_undone_by_a_crash() -> Result<()> {
    let (disk, file) = sim_with_durable_file(1, b"old")?;
    let tmp = Path::new("/d/tmp");
    let new = create_with(&disk, tmp, b"new")?;
    new.sync_data()?;
    disk.sync_dir(Path::new("/d"))?;
    disk.rename(tmp, f())?;
    ensure!(read_path(&disk, f())? == b"new");
    disk.crash();
    ensure!(read_path(&disk, f())? == b"old");
    ensure!(read_path(&disk, tmp)? == b"new");
    drop((file, new));
    disk.rename(tmp, f())?;
    disk.sync_dir(Path::new("/d"))?;
    disk.crash();
    ensure!(read_path(&disk, f())? == b"new");
    ensure!(!disk.exists(tmp));
    Ok(())
}

#[test]
fn remove_without_sync_dir_is_undone_by_a_crash() -> Result<()> {
    let (disk, file) = sim_with_durable_file(1, b"keep")?;
    drop(file);
    disk.remove_file(f())?;
    ensure!(!disk.exists(f()));
    disk.crash();
    ensure!(read_path(&disk, f())? == b"keep");
    disk.remove_file(f())?;
    disk.sync_dir(Path::new("/d"))?;
    disk.crash();
    ensure!(!disk.exists(f()) && disk.files().is_empty());
    Ok(())
}

/// `sync_dir` makes durable exactly the name changes directly under that directory, however many
/// there were since its last sync and whatever happened in other directories (it tracks the
/// changed names rather than rescanning every name).
#[test]
fn sync_dir_makes_durable_only_its_own_directorys_name_changes() -> Result<()> {
    let (disk, file) = sim_with_durable_file(1, b"f")?;
    disk.create_dir_all(Path::new("/e/sub"))?;
    disk.sync_dir(Path::new("/"))?;
    disk.sync_dir(Path::new("/e"))?;
    let (a, b, c) = (Path::new("/d/a"), Path::new("/d/b"), Path::new("/e/c"));
    let deep = Path::new("/e/sub/x");
    drop(file);
    for path in [a, b, c, deep] {
        create_with(&disk, path, b"x")?.sync_data()?;
    }
    disk.remove_file(a)?; // created and removed before any sync: never durable
    disk.rename(b, Path::new("/d/b2"))?;
    disk.remove_file(f())?;
    disk.sync_dir(Path::new("/d"))?;
    ensure!(
        disk.files_durable() == [Path::new("/d/b2")],
        "{:?}",
        disk.files_durable()
    );
    disk.crash();
    ensure!(disk.files() == [Path::new("/d/b2")], "{:?}", disk.files());
    ensure!(read_path(&disk, Path::new("/d/b2"))? == b"x");
    // After a crash nothing is pending: a sync changes nothing.
    disk.sync_dir(Path::new("/e"))?;
    disk.crash();
    ensure!(disk.files() == [Path::new("/d/b2")]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SimDisk: directory entries are durable like file names.

/// Creates `dir/name` holding `bytes`, syncs its bytes and `dir`: durable as far as `dir` is.
fn create_synced(disk: &SimDisk, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let file = create_with(disk, &dir.join(name), bytes)?;
    file.sync_data()?;
    disk.sync_dir(dir)?;
    Ok(())
}

fn paths(list: &[&str]) -> Vec<PathBuf> {
    list.iter().map(PathBuf::from).collect()
}

#[test]
fn new_dir_whose_parent_was_not_synced_vanishes_at_a_crash_with_its_files() -> Result<()> {
    let (disk, _file) = sim_with_durable_file(1, b"")?;
    let new = Path::new("/d/new");
    disk.create_dir_all(&new.join("sub"))?;
    create_synced(&disk, new, "a", b"data")?;
    create_synced(&disk, &new.join("sub"), "b", b"data")?;
    ensure!(disk.files_durable() == [f()], "{:?}", disk.files_durable());
    ensure!(disk.dirs_durable() == paths(&["/", "/d"]));
    disk.crash();
    ensure!(!disk.exists(new) && !disk.exists(&new.join("sub")));
    expect_kind(disk.open(&new.join("a"), false), io::ErrorKind::NotFound)?;
    ensure!(disk.list_dir(Path::new("/d"))? == ["f"]);
    ensure!(disk.files() == [f()]);
    Ok(())
}

#[test]
fn dirs_made_by_create_dir_durable_survive_a_crash_and_others_do_not() -> Result<()> {
    let disk = SimDisk::new(1);
    create_dir_durable(&disk, Path::new("/data/raft/log"))?;
    disk.create_dir_all(Path::new("/data/log"))?;
    create_synced(&disk, Path::new("/data/raft/log"), "0.log", b"entry")?;
    create_synced(&disk, Path::new("/data/log"), "0.log", b"record")?;
    disk.crash();
    ensure!(
        disk.dirs_durable() == paths(&["/", "/data", "/data/raft", "/data/raft/log"]),
        "{:?}",
        disk.dirs_durable()
    );
    ensure!(read_path(&disk, Path::new("/data/raft/log/0.log"))? == b"entry");
    ensure!(!disk.exists(Path::new("/data/log")));
    ensure!(disk.list_dir(Path::new("/data"))? == ["raft"]);
    Ok(())
}

/// A file synced into its directory, and that directory synced into its parent, is still lost
/// when the parent's own entry was never synced.
#[test]
fn file_synced_into_a_dir_whose_own_entry_was_not_synced_is_gone_after_a_crash() -> Result<()> {
    let disk = SimDisk::new(1);
    disk.create_dir_all(Path::new("/a/b"))?;
    disk.sync_dir(Path::new("/a"))?;
    create_synced(&disk, Path::new("/a/b"), "f", b"x")?;
    ensure!(disk.files_durable().is_empty());
    disk.crash();
    ensure!(!disk.exists(Path::new("/a")) && disk.files().is_empty());
    ensure!(disk.list_dir(Path::new("/"))?.is_empty());
    Ok(())
}

#[test]
fn a_vanished_dir_made_again_does_not_bring_back_its_old_entries() -> Result<()> {
    let disk = SimDisk::new(1);
    disk.create_dir_all(Path::new("/x/y"))?;
    disk.sync_dir(Path::new("/x"))?;
    create_synced(&disk, Path::new("/x"), "f", b"old")?;
    disk.crash();
    create_dir_durable(&disk, Path::new("/x"))?;
    ensure!(disk.list_dir(Path::new("/x"))?.is_empty());
    disk.crash();
    ensure!(disk.exists(Path::new("/x")), "/x was made durable");
    ensure!(
        disk.list_dir(Path::new("/x"))?.is_empty(),
        "old entries came back"
    );
    Ok(())
}

#[test]
fn a_failed_sync_dir_keeps_entries_pending_for_the_next_one() -> Result<()> {
    let disk = SimDisk::new(1);
    disk.create_dir_all(Path::new("/d"))?;
    set_faults(&disk, 1_000_000, false);
    ensure!(is_injected(disk.sync_dir(Path::new("/"))));
    ensure!(is_injected(create_dir_durable(&disk, Path::new("/d/e"))));
    set_faults(&disk, 0, false);
    ensure!(disk.dirs_durable() == paths(&["/"]));
    // A retry finds every directory there and still makes each durable.
    create_dir_durable(&disk, Path::new("/d/e"))?;
    disk.crash();
    ensure!(disk.exists(Path::new("/d/e")));
    Ok(())
}

#[test]
fn renaming_or_removing_a_dir_stays_unsupported() -> Result<()> {
    let disk = SimDisk::new(1);
    create_dir_durable(&disk, Path::new("/d"))?;
    expect_kind(
        disk.rename(Path::new("/d"), Path::new("/e")),
        io::ErrorKind::Unsupported,
    )?;
    expect_kind(
        disk.remove_file(Path::new("/d")),
        io::ErrorKind::IsADirectory,
    )
}

#[test]
fn stale_handle_and_map_error_after_crash() -> Result<()> {
    let (disk, file) = sim_with_durable_file(1, b"abcd")?;
    let mut map = file.map_mut(4)?;
    disk.crash();
    let mut buf = [0u8; 4];
    ensure!(file.read_at(&mut buf, 0).is_err());
    ensure!(file.write_at(b"zz", 0).is_err());
    ensure!(file.len().is_err());
    ensure!(file.set_len(0).is_err());
    ensure!(file.sync_data().is_err());
    ensure!(file.map_mut(1).is_err());
    map.as_mut_slice()[0] = b'X';
    ensure!(map.flush().is_err());
    drop(map);
    drop(file);
    ensure!(
        read_path(&disk, f())? == b"abcd",
        "stale handles and maps changed the file"
    );
    Ok(())
}

#[test]
fn map_flush_survives_a_crash_and_unflushed_map_writes_do_not() -> Result<()> {
    let (disk, file) = sim_with_durable_file(1, &[0u8; 8])?;
    let mut map = file.map_mut(8)?;
    map.as_mut_slice()[0] = 1;
    map.flush()?;
    map.as_mut_slice()[1] = 2;
    drop(map);
    ensure!(
        read_all(&*file)? == [1, 2, 0, 0, 0, 0, 0, 0],
        "unmapping keeps the page cache"
    );
    disk.crash();
    ensure!(read_path(&disk, f())? == [1, 0, 0, 0, 0, 0, 0, 0]);
    Ok(())
}

#[test]
fn map_flush_makes_an_unsynced_length_durable() -> Result<()> {
    let (disk, file) = sim_with_durable_file(1, b"")?;
    file.set_len(4)?;
    let mut map = file.map_mut(4)?;
    map.as_mut_slice()[3] = 9;
    map.flush()?;
    disk.crash();
    ensure!(read_path(&disk, f())? == [0, 0, 0, 9]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SimDisk: torn writes.

#[derive(Debug, Clone)]
enum CrashOp {
    Write {
        position: u64,
        bytes: Vec<u8>,
    },
    SetLen(u64),
    Sync,
    /// A `sync_data` that fails with an injected error.
    FailedSync,
}

fn crash_op() -> impl Strategy<Value = CrashOp> {
    prop_oneof![
        4 => (0u64..200, vec(any::<u8>(), 1..48))
            .prop_map(|(position, bytes)| CrashOp::Write { position, bytes }),
        1 => (0u64..240).prop_map(CrashOp::SetLen),
        2 => Just(CrashOp::Sync),
        1 => Just(CrashOp::FailedSync),
    ]
}

/// What a crash may keep: the durable bytes and the last write since the last sync. A byte is
/// `pending` when it was written (or cut or grown) since the last sync, failed or not: a sync
/// copies only those (a failed sync drops them: Linux semantics).
#[derive(Debug, Default)]
struct CrashModel {
    live: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<bool>,
    write_unsynced_last: Option<(usize, Vec<u8>)>,
}

impl CrashModel {
    fn apply(&mut self, op: &CrashOp) {
        match op {
            CrashOp::Write { position, bytes } => {
                let start = *position as usize;
                let end = start + bytes.len();
                self.resize(self.live.len().max(end));
                self.live[start..end].copy_from_slice(bytes);
                self.pending[start..end].fill(true);
                self.write_unsynced_last = Some((start, bytes.clone()));
            }
            CrashOp::SetLen(len) => self.resize(*len as usize),
            CrashOp::Sync => {
                self.durable.resize(self.live.len(), 0);
                for (i, pending) in self.pending.iter_mut().enumerate() {
                    if std::mem::take(pending) {
                        self.durable[i] = self.live[i];
                    }
                }
                self.write_unsynced_last = None;
            }
            CrashOp::FailedSync => {
                self.pending.fill(false);
                self.write_unsynced_last = None;
            }
        }
    }

    /// Grown bytes (zeros) are written, hence pending.
    fn resize(&mut self, len: usize) {
        self.live.resize(len, 0);
        self.pending.resize(len, true);
    }

    /// The durable bytes with the first `kept` bytes of the last unsynced write on top.
    fn torn(&self, kept: usize) -> Vec<u8> {
        let mut bytes = self.durable.clone();
        if let Some((position, write)) = self.write_unsynced_last.as_ref().filter(|_| kept > 0) {
            let end = position + kept;
            bytes.resize(bytes.len().max(end), 0);
            bytes[*position..end].copy_from_slice(&write[..kept]);
        }
        bytes
    }

    /// Every result a crash is allowed to leave (with torn writes on).
    fn allowed_after_torn_crash(&self) -> Vec<Vec<u8>> {
        match &self.write_unsynced_last {
            None => vec![self.durable.clone()],
            Some((_, write)) => (0..write.len()).map(|kept| self.torn(kept)).collect(),
        }
    }
}

fn set_faults(disk: &SimDisk, io_error_per_million: u32, torn_write_on_crash: bool) {
    disk.set_faults(SimDiskFaults {
        io_error_per_million,
        torn_write_on_crash,
    });
}

/// A `sync_data` of `file` that fails with an injected error.
fn failed_sync(disk: &SimDisk, file: &dyn DiskFile) -> Result<()> {
    let faults = disk.faults();
    set_faults(disk, 1_000_000, faults.torn_write_on_crash);
    let result = file.sync_data();
    disk.set_faults(faults);
    ensure!(is_injected(result), "the sync did not fail");
    Ok(())
}

fn run_then_crash(seed: u64, torn: bool, ops: &[CrashOp]) -> Result<(CrashModel, Vec<u8>)> {
    let (disk, file) = sim_with_durable_file(seed, b"")?;
    set_faults(&disk, 0, torn);
    let mut model = CrashModel::default();
    for op in ops {
        model.apply(op);
        match op {
            CrashOp::Write { position, bytes } => file.write_at(bytes, *position)?,
            CrashOp::SetLen(len) => file.set_len(*len)?,
            CrashOp::Sync => file.sync_data()?,
            CrashOp::FailedSync => failed_sync(&disk, &*file)?,
        }
    }
    ensure!(read_all(&*file)? == model.live);
    ensure!(disk.durable_bytes(f()) == Some(model.durable.clone()));
    disk.crash();
    Ok((model, read_path(&disk, f())?))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn torn_crash_keeps_durable_bytes_plus_a_prefix_of_the_last_unsynced_write(
        seed in any::<u64>(),
        ops in vec(crash_op(), 1..30),
    ) {
        let (model, after) = run_then_crash(seed, true, &ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let allowed = model.allowed_after_torn_crash();
        prop_assert!(allowed.contains(&after), "{after:?} is not among {allowed:?}");
    }

    #[test]
    fn crash_without_torn_writes_keeps_exactly_the_durable_bytes(
        seed in any::<u64>(),
        ops in vec(crash_op(), 1..30),
    ) {
        let (model, after) = run_then_crash(seed, false, &ops).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(after, model.durable);
    }
}

/// The number of bytes of a 100-byte unsynced append that a torn crash keeps, for `seed`.
fn torn_append_kept_bytes(seed: u64) -> Result<usize> {
    let (disk, file) = sim_with_durable_file(seed, b"base")?;
    disk.set_faults(SimDiskFaults {
        torn_write_on_crash: true,
        ..SimDiskFaults::default()
    });
    file.write_at(&[7u8; 100], 4)?;
    disk.crash();
    let after = read_path(&disk, f())?;
    ensure!(after.starts_with(b"base") && after[4..].iter().all(|&b| b == 7));
    Ok(after.len() - 4)
}

#[test]
fn torn_writes_keep_varied_prefixes_shorter_than_the_write() -> Result<()> {
    let kept: Vec<usize> = (0..64).map(torn_append_kept_bytes).collect::<Result<_>>()?;
    ensure!(
        kept.iter().all(|&k| k < 100),
        "a tear keeps less than the whole write"
    );
    let mut distinct = kept.clone();
    distinct.sort_unstable();
    distinct.dedup();
    ensure!(
        distinct.len() >= 16,
        "tears hardly vary across seeds: {kept:?}"
    );
    Ok(())
}

#[test]
fn same_seed_gives_the_same_tears() -> Result<()> {
    let ops: Vec<CrashOp> = (0..20u8)
        .map(|i| match i % 5 {
            4 => CrashOp::Sync,
            _ => CrashOp::Write {
                position: u64::from(i) * 7,
                bytes: vec![i; 40],
            },
        })
        .chain([CrashOp::Write {
            position: 3,
            bytes: vec![0xEE; 200],
        }])
        .collect();
    for seed in [0, 1, 42, u64::MAX] {
        let (_, first) = run_then_crash(seed, true, &ops)?;
        let (_, second) = run_then_crash(seed, true, &ops)?;
        ensure!(first == second, "seed {seed} tore differently on a rerun");
    }
    let outcomes: Vec<Vec<u8>> = (0..8)
        .map(|seed| run_then_crash(seed, true, &ops).map(|(_, after)| after))
        .collect::<Result<_>>()?;
    ensure!(
        outcomes.iter().any(|o| *o != outcomes[0]),
        "the seed has no effect"
    );
    Ok(())
}

#[test]
fn a_sync_after_the_last_write_leaves_nothing_to_tear() -> Result<()> {
    for seed in 0..16 {
        let (disk, file) = sim_with_durable_file(seed, b"")?;
        disk.set_faults(SimDiskFaults {
            torn_write_on_crash: true,
            ..SimDiskFaults::default()
        });
        file.write_at(&[1u8; 50], 0)?;
        file.sync_data()?;
        disk.crash();
        ensure!(read_path(&disk, f())? == [1u8; 50]);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SimDisk: failed syncs (Linux semantics: the bytes they were to write are dropped).

#[test]
fn bytes_of_a_failed_sync_are_lost_at_a_crash_even_after_a_later_sync() -> Result<()> {
    let (disk, file) = sim_with_durable_file(1, b"durable")?;
    file.write_at(b"DUR", 0)?;
    file.write_at(b"+tail", 7)?;
    failed_sync(&disk, &*file)?;
    ensure!(
        read_all(&*file)? == b"DURable+tail",
        "reads still see the bytes"
    );
    file.sync_data()?;
    ensure!(
        disk.durable_bytes(f()) == Some(b"durable\0\0\0\0\0".to_vec()),
        "the later sync copied dropped bytes: {:?}",
        disk.durable_bytes(f())
    );
    disk.crash();
    ensure!(read_path(&disk, f())? == b"durable\0\0\0\0\0");
    Ok(())
}

#[test]
fn bytes_of_a_failed_sync_survive_once_written_again_and_synced() -> Result<()> {
    let (disk, file) = sim_with_durable_file(1, b"durable")?;
    file.write_at(b"DUR", 0)?;
    file.write_at(b"+tail", 7)?;
    failed_sync(&disk, &*file)?;
    file.write_at(b"+tail", 7)?;
    file.sync_data()?;
    disk.crash();
    ensure!(
        read_path(&disk, f())? == b"durable+tail",
        "the rewritten tail survives, the DUR not written again does not"
    );
    Ok(())
}

#[test]
fn a_failed_sync_drops_only_its_own_file_s_bytes() -> Result<()> {
    let (disk, file) = sim_with_durable_file(1, b"")?;
    let other_path = Path::new("/d/other");
    let other = create_with(&disk, other_path, b"")?;
    other.sync_data()?;
    disk.sync_dir(Path::new("/d"))?;
    file.write_at(b"f", 0)?;
    other.write_at(b"o", 0)?;
    failed_sync(&disk, &*file)?;
    file.sync_data()?;
    other.sync_data()?;
    disk.crash();
    ensure!(read_path(&disk, f())? == b"\0");
    ensure!(read_path(&disk, other_path)? == b"o");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// SimDisk: injected errors, bit rot, stats, limits, determinism.

fn is_injected(result: io::Result<impl Sized>) -> bool {
    matches!(result, Err(e) if e.kind() == io::ErrorKind::Other
        && e.to_string() == "injected I/O error (sim disk)")
}

#[test]
fn injected_errors_at_one_million_per_million_always_fail_and_change_nothing() -> Result<()> {
    let (disk, file) = sim_with_durable_file(3, b"durable")?;
    file.write_at(b"+live", 7)?;
    let unsynced = create_with(&disk, Path::new("/d/unsynced"), b"x")?;
    disk.set_faults(SimDiskFaults {
        io_error_per_million: 1_000_000,
        ..SimDiskFaults::default()
    });
    let before = disk.stats();
    let mut buf = [0u8; 4];
    for _ in 0..50 {
        ensure!(is_injected(file.read_at(&mut buf, 0)));
        ensure!(is_injected(file.write_at(b"CHANGED", 0)));
        ensure!(is_injected(file.set_len(1)));
        ensure!(is_injected(file.sync_data()));
        ensure!(is_injected(unsynced.sync_data()));
        ensure!(is_injected(disk.sync_dir(Path::new("/d"))));
    }
    let after = disk.stats();
    ensure!(after.injected_errors - before.injected_errors == 300);
    ensure!((after.writes, after.syncs) == (before.writes, before.syncs));
    disk.set_faults(SimDiskFaults::default());
    ensure!(
        read_all(&*file)? == b"durable+live",
        "failed calls changed the live bytes"
    );
    disk.crash();
    ensure!(
        read_path(&disk, f())? == b"durable",
        "a failed sync made bytes durable"
    );
    ensure!(
        !disk.exists(Path::new("/d/unsynced")),
        "a failed sync_dir made a file durable"
    );
    Ok(())
}

/// Which of 1000 writes fail at a 50% injected error rate, for `seed`.
fn failing_writes(seed: u64) -> Result<Vec<bool>> {
    let (disk, file) = sim_with_durable_file(seed, b"")?;
    disk.set_faults(SimDiskFaults {
        io_error_per_million: 500_000,
        ..SimDiskFaults::default()
    });
    let mut failed = Vec::new();
    let mut model = Vec::new();
    for i in 0..1000u32 {
        let result = file.write_at(&i.to_le_bytes(), u64::from(i) * 4);
        failed.push(is_injected(result));
        let value = if *failed.last().unwrap_or(&true) {
            0
        } else {
            i
        };
        model.extend_from_slice(&value.to_le_bytes());
    }
    disk.set_faults(SimDiskFaults::default());
    let written = read_all(&*file)?;
    ensure!(
        written == model[..written.len()],
        "a failed write changed bytes"
    );
    let failures = failed.iter().filter(|&&f| f).count() as u64;
    ensure!(disk.stats().injected_errors == failures);
    Ok(failed)
}

#[test]
fn injected_errors_follow_the_rate_and_the_seed() -> Result<()> {
    let failed = failing_writes(9)?;
    let failures = failed.iter().filter(|&&f| f).count();
    ensure!(
        (300..700).contains(&failures),
        "{failures} of 1000 failed at a 50% rate"
    );
    ensure!(
        failing_writes(9)? == failed,
        "same seed, different failures"
    );
    ensure!(failing_writes(10)? != failed, "the seed has no effect");
    Ok(())
}

#[test]
fn flip_bit_changes_one_bit_live_and_durable() -> Result<()> {
    let (disk, file) = sim_with_durable_file(1, &[0u8; 8])?;
    disk.flip_bit(f(), 5, 3)?;
    ensure!(read_all(&*file)? == [0, 0, 0, 0, 0, 0x08, 0, 0]);
    disk.crash();
    ensure!(read_path(&disk, f())? == [0, 0, 0, 0, 0, 0x08, 0, 0]);
    expect_kind(disk.flip_bit(f(), 8, 0), io::ErrorKind::InvalidInput)?;
    expect_kind(disk.flip_bit(f(), 0, 8), io::ErrorKind::InvalidInput)?;
    expect_kind(
        disk.flip_bit(Path::new("/d/none"), 0, 0),
        io::ErrorKind::NotFound,
    )
}

#[test]
fn stats_count_writes_syncs_and_bytes() -> Result<()> {
    let disk = SimDisk::new(1);
    let file = disk.open(Path::new("/a"), true)?;
    file.write_at(b"abc", 0)?;
    file.write_at(b"de", 3)?;
    file.sync_data()?;
    disk.sync_dir(Path::new("/"))?;
    file.map_mut(5)?.flush()?;
    disk.crash();
    let stats = disk.stats();
    ensure!(
        (stats.writes, stats.bytes_written, stats.syncs) == (2, 5, 3),
        "{stats:?}"
    );
    ensure!(
        (stats.injected_errors, stats.crashes) == (0, 1),
        "{stats:?}"
    );
    Ok(())
}

#[test]
fn absurd_positions_and_lengths_error_without_panicking() -> Result<()> {
    let disk = SimDisk::new(1);
    let file = disk.open(Path::new("/a"), true)?;
    expect_kind(file.write_at(b"x", u64::MAX), io::ErrorKind::InvalidInput)?;
    expect_kind(file.write_at(b"x", 1 << 40), io::ErrorKind::InvalidInput)?;
    expect_kind(file.set_len(u64::MAX), io::ErrorKind::InvalidInput)?;
    ensure!(file.read_at(&mut [0u8; 4], u64::MAX)? == 0);
    ensure!(file.len()? == 0);
    expect_kind(file.map_mut(1), io::ErrorKind::InvalidInput)?;
    expect_kind(disk.open(Path::new("/"), true), io::ErrorKind::IsADirectory)?;
    expect_kind(
        disk.open(Path::new("/a/b"), true),
        io::ErrorKind::NotADirectory,
    )?;
    Ok(())
}

#[test]
fn list_dir_is_sorted_and_paths_are_normalised() -> Result<()> {
    let disk = SimDisk::new(1);
    for name in ["c", "a", "b", "sub/x"] {
        disk.create_dir_all(Path::new("/r/sub"))?;
        drop(disk.open(&Path::new("/r").join(name), true)?);
    }
    ensure!(disk.list_dir(Path::new("/r"))? == ["a", "b", "c", "sub"]);
    ensure!(
        disk.exists(Path::new("r/./sub/../a")),
        "relative and dotted paths resolve from /"
    );
    Ok(())
}
