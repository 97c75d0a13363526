//! THROWAWAY FAKE (sim harness testing only; never commit): a tiny segmented log on the Disk seam.
#![allow(clippy::all)]
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{LogConfig, LogError, NewRecord, Record};
use crate::io::{Clock, Disk, DiskFile};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogInfo {
    pub lowest_offset: u64,
    pub next_offset: u64,
    pub size_bytes: u64,
    pub segment_count: u32,
    pub durable_offset: u64,
}

const HDR: usize = 36; // len u32, crc u32, offset u64, term u64, kind u32, ts i64
const SEG_RECORDS: usize = 8;

#[derive(Debug)]
struct Seg {
    base: u64,
    store: Arc<dyn DiskFile>,
    index: Arc<dyn DiskFile>,
    positions: Vec<u64>,
    size: u64,
}

#[derive(Debug)]
struct Inner {
    segs: Vec<Seg>,
    next: u64,
    durable: u64,
    last_ts: i64,
    poisoned: Option<String>,
    closed: bool,
}

#[derive(Debug)]
pub struct Log {
    disk: Arc<dyn Disk>,
    clock: Arc<dyn Clock>,
    config: LogConfig,
    inner: Mutex<Inner>,
}

fn crc(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}

fn encode(offset: u64, r: &NewRecord, ts: i64) -> Vec<u8> {
    let mut body = Vec::with_capacity(HDR + r.value.len());
    body.extend_from_slice(&offset.to_le_bytes());
    body.extend_from_slice(&r.term.to_le_bytes());
    body.extend_from_slice(&r.kind.to_le_bytes());
    body.extend_from_slice(&ts.to_le_bytes());
    body.extend_from_slice(&r.value);
    let mut f = Vec::with_capacity(8 + body.len());
    f.extend_from_slice(&(r.value.len() as u32).to_le_bytes());
    f.extend_from_slice(&crc(&body).to_le_bytes());
    f.extend_from_slice(&body);
    f
}

fn io(ctx: &str, e: std::io::Error) -> LogError {
    LogError::io(ctx.to_string(), e)
}

impl Log {
    pub fn open(
        disk: Arc<dyn Disk>,
        clock: Arc<dyn Clock>,
        config: LogConfig,
    ) -> Result<Log, LogError> {
        config.validate()?;
        disk.create_dir_all(&config.dir)
            .map_err(|e| io("mkdir", e))?;
        let mut bases: Vec<u64> = disk
            .list_dir(&config.dir)
            .map_err(|e| io("list", e))?
            .iter()
            .filter_map(|n| n.strip_suffix(".store").and_then(|s| s.parse().ok()))
            .collect();
        bases.sort();
        let log = Log {
            disk,
            clock,
            config,
            inner: Mutex::new(Inner {
                segs: vec![],
                next: 0,
                durable: 0,
                last_ts: 0,
                poisoned: None,
                closed: false,
            }),
        };
        let mut inner = log.inner.lock();
        for (i, base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            let (store, index) = log.open_files(*base, false)?;
            let mut seg = Seg {
                base: *base,
                store,
                index,
                positions: vec![],
                size: 0,
            };
            if last {
                log.scan_tail(&mut seg)?;
            } else {
                let len = seg.index.len().map_err(|e| io("len", e))?;
                let mut buf = vec![0u8; len as usize];
                seg.index
                    .read_at(&mut buf, 0)
                    .map_err(|e| io("read index", e))?;
                seg.positions = buf
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                seg.size = seg.store.len().map_err(|e| io("len", e))?;
            }
            inner.next = seg.base + seg.positions.len() as u64;
            inner.segs.push(seg);
        }
        inner.durable = inner.next;
        let next = inner.next;
        drop(inner);
        if next > 0 {
            if let Ok(r) = log.read(next - 1) {
                log.inner.lock().last_ts = r.timestamp_ms;
            }
        }
        Ok(log)
    }

    fn paths(&self, base: u64) -> (PathBuf, PathBuf) {
        (
            self.config.dir.join(format!("{base:020}.store")),
            self.config.dir.join(format!("{base:020}.index")),
        )
    }

    fn open_files(
        &self,
        base: u64,
        create: bool,
    ) -> Result<(Arc<dyn DiskFile>, Arc<dyn DiskFile>), LogError> {
        let (s, i) = self.paths(base);
        let store = self
            .disk
            .open(&s, create)
            .map_err(|e| io("open store", e))?;
        let index = self
            .disk
            .open(&i, create)
            .map_err(|e| io("open index", e))?;
        Ok((store, index))
    }

    fn scan_tail(&self, seg: &mut Seg) -> Result<(), LogError> {
        let len = seg.store.len().map_err(|e| io("len", e))?;
        let mut pos = 0u64;
        while pos + HDR as u64 <= len {
            let mut hdr = [0u8; 8];
            seg.store
                .read_at(&mut hdr, pos)
                .map_err(|e| io("read", e))?;
            let vlen = u32::from_le_bytes(hdr[0..4].try_into().unwrap()) as u64;
            if vlen > self.config.record_bytes_max as u64 || pos + HDR as u64 + vlen > len {
                break;
            }
            let mut body = vec![0u8; HDR - 8 + vlen as usize];
            seg.store
                .read_at(&mut body, pos + 8)
                .map_err(|e| io("read", e))?;
            let want = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
            let off = u64::from_le_bytes(body[0..8].try_into().unwrap());
            if crc(&body) != want || off != seg.base + seg.positions.len() as u64 {
                break;
            }
            seg.positions.push(pos);
            pos += HDR as u64 + vlen;
        }
        seg.store.set_len(pos).map_err(|e| io("truncate", e))?;
        let idx: Vec<u8> = seg.positions.iter().flat_map(|p| p.to_le_bytes()).collect();
        seg.index.set_len(0).map_err(|e| io("truncate", e))?;
        seg.index.write_at(&idx, 0).map_err(|e| io("write", e))?;
        seg.store.sync_data().map_err(|e| io("sync", e))?;
        seg.index.sync_data().map_err(|e| io("sync", e))?;
        seg.size = pos;
        Ok(())
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    fn roll(&self, inner: &mut Inner) -> Result<(), LogError> {
        if let Some(seg) = inner.segs.last() {
            seg.store.sync_data().map_err(|e| io("sync", e))?;
            seg.index.sync_data().map_err(|e| io("sync", e))?;
        }
        let base = inner.next;
        let (store, index) = self.open_files(base, true)?;
        self.disk
            .sync_dir(&self.config.dir)
            .map_err(|e| io("sync dir", e))?;
        inner.segs.push(Seg {
            base,
            store,
            index,
            positions: vec![],
            size: 0,
        });
        Ok(())
    }

    pub fn append(&self, records: &[NewRecord]) -> Result<Range<u64>, LogError> {
        if records.is_empty() {
            return Err(LogError::BatchEmpty);
        }
        for r in records {
            if r.value.len() as u64 > self.config.record_bytes_max as u64 {
                return Err(LogError::RecordTooLarge {
                    len: r.value.len() as u64,
                    max: self.config.record_bytes_max,
                });
            }
        }
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(LogError::Closed);
        }
        if let Some(cause) = &inner.poisoned {
            return Err(LogError::Poisoned {
                cause: cause.clone(),
            });
        }
        let start = inner.next;
        let res = self.append_locked(&mut inner, records);
        if let Err(e) = &res {
            inner.poisoned = Some(e.to_string());
        }
        res.map(|()| start..inner.next)
    }

    fn append_locked(&self, inner: &mut Inner, records: &[NewRecord]) -> Result<(), LogError> {
        for r in records {
            let full = inner.segs.last().is_none_or(|s| {
                s.positions.len() >= SEG_RECORDS
                    || s.size + (HDR + r.value.len()) as u64 > self.config.segment_bytes_max
            });
            if full {
                self.roll(inner)?;
            }
            let ts = self.clock.now_ms().max(inner.last_ts);
            inner.last_ts = ts;
            let off = inner.next;
            let frame = encode(off, r, ts);
            let seg = inner.segs.last_mut().unwrap();
            seg.store
                .write_at(&frame, seg.size)
                .map_err(|e| io("write", e))?;
            seg.index
                .write_at(&seg.size.to_le_bytes(), seg.positions.len() as u64 * 8)
                .map_err(|e| io("write", e))?;
            seg.positions.push(seg.size);
            seg.size += frame.len() as u64;
            inner.next += 1;
        }
        Ok(())
    }

    pub fn append_at(
        &self,
        offset: u64,
        record: &NewRecord,
        timestamp_ms: i64,
    ) -> Result<(), LogError> {
        let _ = (offset, record, timestamp_ms);
        Err(LogError::InvalidConfig("fake".into()))
    }

    pub fn sync(&self) -> Result<u64, LogError> {
        let mut inner = self.inner.lock();
        if let Some(cause) = &inner.poisoned {
            return Err(LogError::Poisoned {
                cause: cause.clone(),
            });
        }
        if let Some(seg) = inner.segs.last() {
            let r = seg.store.sync_data().and_then(|()| seg.index.sync_data());
            if let Err(e) = r {
                inner.poisoned = Some(e.to_string());
                return Err(io("sync", e));
            }
        }
        inner.durable = inner.next;
        Ok(inner.next)
    }

    pub fn read(&self, offset: u64) -> Result<Record, LogError> {
        let inner = self.inner.lock();
        if offset >= inner.next {
            return Err(LogError::OffsetOutOfRange {
                offset,
                lowest: 0,
                next: inner.next,
            });
        }
        let i = inner.segs.partition_point(|s| s.base <= offset) - 1;
        let seg = &inner.segs[i];
        let pos = seg.positions[(offset - seg.base) as usize];
        let corrupt = |reason: &str| LogError::Corrupt {
            segment: self.paths(seg.base).0,
            position: pos,
            reason: reason.into(),
        };
        let mut hdr = [0u8; 8];
        if seg
            .store
            .read_at(&mut hdr, pos)
            .map_err(|e| io("read", e))?
            < 8
        {
            return Err(corrupt("short"));
        }
        let vlen = u32::from_le_bytes(hdr[0..4].try_into().unwrap()) as usize;
        if vlen > self.config.record_bytes_max as usize {
            return Err(corrupt("len"));
        }
        let mut body = vec![0u8; HDR - 8 + vlen];
        if seg
            .store
            .read_at(&mut body, pos + 8)
            .map_err(|e| io("read", e))?
            < body.len()
        {
            return Err(corrupt("short"));
        }
        if crc(&body) != u32::from_le_bytes(hdr[4..8].try_into().unwrap()) {
            return Err(corrupt("crc"));
        }
        let off = u64::from_le_bytes(body[0..8].try_into().unwrap());
        if off != offset {
            return Err(corrupt("offset"));
        }
        Ok(Record {
            offset,
            term: u64::from_le_bytes(body[8..16].try_into().unwrap()),
            kind: u32::from_le_bytes(body[16..20].try_into().unwrap()),
            timestamp_ms: i64::from_le_bytes(body[20..28].try_into().unwrap()),
            value: bytes::Bytes::copy_from_slice(&body[28..]),
        })
    }

    pub fn read_batch(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let mut out = vec![self.read(offset)?];
        let mut bytes = out[0].value.len();
        let next = self.next_offset();
        let mut o = offset + 1;
        while o < next && out.len() < max_records {
            let r = self.read(o)?;
            bytes += r.value.len();
            if bytes > max_bytes {
                break;
            }
            out.push(r);
            o += 1;
        }
        Ok(out)
    }
    pub fn offset_for_time(&self, timestamp_ms: i64) -> Result<u64, LogError> {
        let _ = timestamp_ms;
        Ok(self.next_offset())
    }
    pub fn lowest_offset(&self) -> u64 {
        0
    }
    pub fn next_offset(&self) -> u64 {
        self.inner.lock().next
    }
    pub fn info(&self) -> LogInfo {
        let inner = self.inner.lock();
        LogInfo {
            lowest_offset: 0,
            next_offset: inner.next,
            size_bytes: inner.segs.iter().map(|s| s.size).sum(),
            segment_count: inner.segs.len() as u32,
            durable_offset: inner.durable,
        }
    }
    pub fn truncate_before(&self, offset: u64) -> Result<(), LogError> {
        let _ = offset;
        Ok(())
    }
    pub fn truncate_from(&self, offset: u64) -> Result<(), LogError> {
        let _ = offset;
        Err(LogError::InvalidConfig("fake".into()))
    }
    pub fn apply_retention(&self) -> Result<u32, LogError> {
        Ok(0)
    }
    pub fn close(&self) -> Result<(), LogError> {
        self.sync()?;
        self.inner.lock().closed = true;
        Ok(())
    }
}
