//! The persistent sending queue: an append-only segment log on disk.
//!
//! Layout of a queue directory:
//!
//! * `seg-<n>.log`: records appended in order, each
//!   `magic "WQR1" | payload length u32 | crc32 u32 | seq u64 | signal u8 | items u32 | payload`
//!   (little endian; the CRC covers everything after itself). A segment is
//!   written by one writer and rolled at [`OpenOptions::segment_bytes`].
//! * `acks.log`: the sequence numbers of records that left the queue (sent,
//!   or dropped for good), each `seq u64 | crc32 u32`.
//! * `lock`: held (`flock`) while a process has the queue open.
//!
//! A record is acknowledged to the caller of [`FileQueue::push`] only after it
//! was written to the segment file (and `fsync`ed when asked for). A segment
//! whose records have all left is deleted; the ack log is rewritten when it
//! grows, keeping only what the remaining segments need. On open, records not
//! in the ack log are queued again, oldest first, before anything new. A
//! damaged record (bad magic, CRC or length) is reported and skipped: reading
//! resumes at the next record that checks, so the readable part is kept.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions as FsOpen};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use prost::Message;

use crate::data::{Batch, Payload, Signal};
use crate::otlp_wire::EncodedTraces;

const MAGIC: &[u8; 4] = b"WQR1";
/// magic, length, crc, seq, signal, items.
const HEADER: usize = 4 + 4 + 4 + 8 + 1 + 4;
const ACK_LEN: usize = 12;
/// The largest payload a record may claim; anything above is damage.
const MAX_PAYLOAD: usize = 512 << 20;
/// The ack log is rewritten once it holds this many entries more than needed.
const ACK_COMPACT_ENTRIES: u64 = 64 * 1024;
/// After damage, a record is believed only if its sequence number follows the
/// last good one within this distance.
const RESYNC_SEQ_WINDOW: u64 = 1 << 20;

/// What the queue's size limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Requests,
    Items,
    Bytes,
}

#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// `fsync` every write before it is acknowledged.
    pub fsync: bool,
    /// The most units the queue holds; a push past it is refused.
    pub capacity: u64,
    pub unit: Unit,
    /// A segment is rolled once it is this large.
    pub segment_bytes: u64,
    /// How long to wait for another process to release the directory.
    pub lock_timeout: std::time::Duration,
    /// The ack log is rewritten once it holds this many entries and four
    /// times what the segments on disk still need.
    pub ack_compact_entries: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            fsync: false,
            capacity: 1000,
            unit: Unit::Requests,
            segment_bytes: 8 << 20,
            lock_timeout: std::time::Duration::from_secs(1),
            ack_compact_entries: ACK_COMPACT_ENTRIES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("persistent queue {dir}: {what}: {source}")]
    Io {
        dir: String,
        what: String,
        source: std::io::Error,
    },
    #[error("persistent queue {0} is in use by another process")]
    Locked(String),
    #[error("the persistent sending queue is full")]
    Full,
    #[error("a batch of {0} bytes is larger than the persistent queue takes (512 MiB)")]
    TooLarge(usize),
}

/// What opening found on disk.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Recovery {
    /// Records queued again (not yet sent when weft stopped).
    pub records: u64,
    pub items: u64,
    /// Damaged stretches skipped, one line each.
    pub damage: Vec<String>,
    /// Bytes skipped because they did not read as records.
    pub damaged_bytes: u64,
}

/// A record taken from the queue by a sender.
#[derive(Debug)]
pub struct Popped {
    pub seq: u64,
    pub batch: Batch,
    pub items: u64,
    pub units: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u64,
    seg: u64,
    offset: u64,
    len: u32,
    items: u64,
    units: u64,
}

struct Segment {
    file: Arc<File>,
    size: u64,
    /// Records not yet acknowledged.
    live: u64,
    /// Sequence numbers of this segment's records that left the queue: what the
    /// ack log must keep while the segment is on disk.
    acked: Vec<u64>,
}

struct State {
    segments: BTreeMap<u64, Segment>,
    /// The segment being written.
    head: u64,
    next_seq: u64,
    pending: VecDeque<Entry>,
    in_flight: HashMap<u64, Entry>,
    acks: File,
    /// Entries in the ack log, and how many of them the segments still need.
    ack_entries: u64,
    acks_needed: u64,
    used: u64,
    unit: Unit,
    /// Records found damaged when read back; counted by the exporter.
    damaged_reads: u64,
}

/// A persistent FIFO of batches; shared by every exporter instance that
/// opens the same directory (a reload replaces the exporter, not the queue).
pub struct FileQueue {
    dir: PathBuf,
    opts: OpenOptions,
    /// The capacity in units and the `fsync` setting; the exporter that
    /// opens the queue sets them.
    capacity: std::sync::atomic::AtomicU64,
    fsync: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    available: tokio::sync::Notify,
    room: tokio::sync::Notify,
    _lock: File,
}

static OPEN: Mutex<Option<HashMap<PathBuf, Weak<FileQueue>>>> = Mutex::new(None);

fn io(dir: &Path, what: impl Into<String>) -> impl FnOnce(std::io::Error) -> QueueError {
    let dir = dir.display().to_string();
    let what = what.into();
    move |source| QueueError::Io { dir, what, source }
}

fn seg_name(n: u64) -> String {
    format!("seg-{n:016}.log")
}

fn signal_byte(s: Signal) -> u8 {
    match s {
        Signal::Traces => 1,
        Signal::Metrics => 2,
        Signal::Logs => 3,
    }
}

fn signal_of(b: u8) -> Option<Signal> {
    match b {
        1 => Some(Signal::Traces),
        2 => Some(Signal::Metrics),
        3 => Some(Signal::Logs),
        _ => None,
    }
}

/// The batch as an OTLP export request of its signal.
pub fn encode_batch(batch: &Batch) -> Bytes {
    if let Some(w) = batch.encoded_traces() {
        return w.bytes().clone();
    }
    match batch.payload() {
        Payload::Traces(rs) => crate::otlp_wire::encode_resource_spans(rs),
        Payload::Metrics(rm) => {
            let mut buf = Vec::new();
            for m in rm {
                prost::encoding::message::encode(1, m, &mut buf);
            }
            Bytes::from(buf)
        }
        Payload::Logs(rl) => {
            let mut buf = Vec::new();
            for l in rl {
                prost::encoding::message::encode(1, l, &mut buf);
            }
            Bytes::from(buf)
        }
    }
}

fn decode_batch(signal: Signal, payload: Bytes) -> Result<Batch, String> {
    let origin: Arc<str> = Arc::from("file_storage");
    match signal {
        Signal::Traces => EncodedTraces::new(payload)
            .map(|w| Batch::encoded(w, origin))
            .map_err(|e| e.to_string()),
        Signal::Metrics => {
            opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest::decode(
                payload,
            )
            .map(|r| Batch::new(Payload::Metrics(r.resource_metrics), origin))
            .map_err(|e| e.to_string())
        }
        Signal::Logs => {
            opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest::decode(
                payload,
            )
            .map(|r| Batch::new(Payload::Logs(r.resource_logs), origin))
            .map_err(|e| e.to_string())
        }
    }
}

fn record_crc(rest: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(rest);
    h.update(payload);
    h.finalize()
}

/// A record's header fields after a successful check.
struct Parsed {
    seq: u64,
    signal: Signal,
    items: u64,
    len: usize,
}

/// Checks the record at the start of `buf`.
fn parse_record(buf: &[u8]) -> Option<Parsed> {
    if buf.len() < HEADER || &buf[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(buf[4..8].try_into().ok()?) as usize;
    if len > MAX_PAYLOAD || buf.len() < HEADER + len {
        return None;
    }
    let crc = u32::from_le_bytes(buf[8..12].try_into().ok()?);
    if record_crc(&buf[12..HEADER], &buf[HEADER..HEADER + len]) != crc {
        return None;
    }
    Some(Parsed {
        seq: u64::from_le_bytes(buf[12..20].try_into().ok()?),
        signal: signal_of(buf[20])?,
        items: u64::from(u32::from_le_bytes(buf[21..25].try_into().ok()?)),
        len,
    })
}

fn units_of(unit: Unit, items: u64, len: usize) -> u64 {
    match unit {
        Unit::Requests => 1,
        Unit::Items => items.max(1),
        Unit::Bytes => (len as u64).max(1),
    }
}

impl FileQueue {
    /// Opens (creating it if needed) the queue in `dir`, or returns the one
    /// this process already has open there (then `reconfigure` applies the
    /// caller's settings).
    pub fn open(dir: &Path, opts: OpenOptions) -> Result<(Arc<FileQueue>, Recovery), QueueError> {
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        let map = open.get_or_insert_with(HashMap::new);
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(q) = map.get(dir).and_then(Weak::upgrade) {
            return Ok((q, Recovery::default()));
        }
        let (q, rec) = FileQueue::open_fresh(dir, opts)?;
        let q = Arc::new(q);
        map.insert(dir.to_path_buf(), Arc::downgrade(&q));
        Ok((q, rec))
    }

    fn open_fresh(dir: &Path, opts: OpenOptions) -> Result<(FileQueue, Recovery), QueueError> {
        std::fs::create_dir_all(dir).map_err(io(dir, "cannot create the directory"))?;
        let lock = FsOpen::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))
            .map_err(io(dir, "cannot open the lock file"))?;
        let give_up = std::time::Instant::now() + opts.lock_timeout;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < give_up => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(QueueError::Locked(dir.display().to_string()))
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(io(dir, "cannot lock the directory")(e))
                }
            }
        }
        let mut rec = Recovery::default();

        // The ack log: entries up to the first damaged one.
        let ack_path = dir.join("acks.log");
        let mut acked = HashSet::new();
        let mut ack_bytes = Vec::new();
        if let Ok(mut f) = File::open(&ack_path) {
            f.read_to_end(&mut ack_bytes)
                .map_err(io(dir, "cannot read acks.log"))?;
        }
        for (i, e) in ack_bytes.chunks(ACK_LEN).enumerate() {
            let ok = e.len() == ACK_LEN && crc32fast::hash(&e[..8]).to_le_bytes() == e[8..12];
            if !ok {
                rec.damage.push(format!(
                    "acks.log: damaged entry at byte {}; {} bytes after it ignored (their records may be sent again)",
                    i * ACK_LEN,
                    ack_bytes.len() - i * ACK_LEN
                ));
                break;
            }
            let mut s = [0u8; 8];
            s.copy_from_slice(&e[..8]);
            acked.insert(u64::from_le_bytes(s));
        }

        // Segments, oldest first.
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(io(dir, "cannot list the directory"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n = name.strip_prefix("seg-")?.strip_suffix(".log")?;
                Some((n.parse::<u64>().ok()?, e.path()))
            })
            .collect();
        names.sort();
        let mut segments = BTreeMap::new();
        let mut pending = VecDeque::new();
        let mut used = 0u64;
        let mut max_seq: Option<u64> = None;
        for (n, path) in &names {
            let mut bytes = Vec::new();
            let file = FsOpen::new()
                .read(true)
                .append(true)
                .open(path)
                .map_err(io(dir, format!("cannot open {}", path.display())))?;
            (&file)
                .read_to_end(&mut bytes)
                .map_err(io(dir, format!("cannot read {}", path.display())))?;
            let mut seg = Segment {
                file: Arc::new(file),
                size: bytes.len() as u64,
                live: 0,
                acked: Vec::new(),
            };
            // Sequence numbers grow within a segment. After damage, a record is
            // believed only if it continues the numbering of the last good one.
            let mut prev: Option<u64> = None;
            let follows = |prev: Option<u64>, seq: u64| {
                prev.is_none_or(|q| seq > q && seq - q <= RESYNC_SEQ_WINDOW)
            };
            let mut off = 0usize;
            while off < bytes.len() {
                match parse_record(&bytes[off..]).filter(|p| follows(prev, p.seq)) {
                    Some(p) => {
                        prev = Some(p.seq);
                        max_seq = Some(max_seq.map_or(p.seq, |m| m.max(p.seq)));
                        if acked.contains(&p.seq) {
                            seg.acked.push(p.seq);
                        } else {
                            let units = units_of(opts.unit, p.items, p.len);
                            pending.push_back(Entry {
                                seq: p.seq,
                                seg: *n,
                                offset: off as u64,
                                len: p.len as u32,
                                items: p.items,
                                units,
                            });
                            seg.live += 1;
                            used += units;
                            rec.records += 1;
                            rec.items += p.items;
                        }
                        off += HEADER + p.len;
                    }
                    None => {
                        // Skip to the next place a record checks.
                        let start = off;
                        off += 1;
                        while off < bytes.len() {
                            if bytes[off..].starts_with(MAGIC)
                                && parse_record(&bytes[off..]).is_some_and(|p| follows(prev, p.seq))
                            {
                                break;
                            }
                            off += 1;
                        }
                        let skipped = off - start;
                        rec.damaged_bytes += skipped as u64;
                        rec.damage.push(format!(
                            "{}: {} damaged bytes at offset {} skipped{}",
                            seg_name(*n),
                            skipped,
                            start,
                            if off >= bytes.len() {
                                " (a write cut short at the end)"
                            } else {
                                ""
                            }
                        ));
                    }
                }
            }
            if seg.live == 0 {
                std::fs::remove_file(path)
                    .map_err(io(dir, format!("cannot remove {}", path.display())))?;
            } else {
                segments.insert(*n, seg);
            }
        }
        // Oldest first, whatever order the segments held them in.
        pending.make_contiguous().sort_by_key(|e| e.seq);

        // A new head segment: never append after damage.
        let head = names.last().map_or(0, |(n, _)| n + 1);
        let head_file = FsOpen::new()
            .create(true)
            .read(true)
            .append(true)
            .open(dir.join(seg_name(head)))
            .map_err(io(dir, "cannot create a segment"))?;
        // Acked records count too: a sequence number is never reused.
        let max_seq = acked.iter().copied().chain(max_seq).max();
        let next_seq = max_seq.map_or(0, |m| m.saturating_add(1));
        segments.insert(
            head,
            Segment {
                file: Arc::new(head_file),
                size: 0,
                live: 0,
                acked: Vec::new(),
            },
        );
        // The ack log keeps only what the remaining segments need.
        let keep: Vec<u64> = segments
            .values()
            .flat_map(|g| g.acked.iter().copied())
            .collect();
        let acks = rewrite_acks(dir, &keep)?;
        if opts.fsync {
            sync_dir(dir);
        }
        let q = FileQueue {
            dir: dir.to_path_buf(),
            capacity: std::sync::atomic::AtomicU64::new(opts.capacity),
            fsync: std::sync::atomic::AtomicBool::new(opts.fsync),
            state: Mutex::new(State {
                segments,
                head,
                next_seq,
                pending,
                in_flight: HashMap::new(),
                acks,
                ack_entries: keep.len() as u64,
                acks_needed: keep.len() as u64,
                used,
                unit: opts.unit,
                damaged_reads: 0,
            }),
            opts,
            available: tokio::sync::Notify::new(),
            room: tokio::sync::Notify::new(),
            _lock: lock,
        };
        Ok((q, rec))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn capacity(&self) -> u64 {
        self.capacity.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn fsync(&self) -> bool {
        self.fsync.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Applies the settings of the exporter that opened the queue: a reloaded
    /// exporter may ask for another size, unit or `fsync`.
    pub fn reconfigure(&self, capacity: u64, unit: Unit, fsync: bool) {
        self.capacity
            .store(capacity, std::sync::atomic::Ordering::Relaxed);
        self.fsync
            .store(fsync, std::sync::atomic::Ordering::Relaxed);
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            if st.unit != unit {
                st.unit = unit;
                for e in st.pending.iter_mut().chain(st.in_flight.values_mut()) {
                    e.units = units_of(unit, e.items, e.len as usize);
                }
                st.used = st
                    .pending
                    .iter()
                    .chain(st.in_flight.values())
                    .map(|e| e.units)
                    .sum();
            }
        }
        self.room.notify_waiters();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Units held (pending and in flight).
    pub fn used(&self) -> u64 {
        self.lock().used
    }

    /// Records waiting to be taken.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Records found damaged when read back since the last call.
    pub fn take_damaged_reads(&self) -> u64 {
        std::mem::take(&mut self.lock().damaged_reads)
    }

    /// What a batch of this size counts for against the capacity.
    pub fn units_for(&self, items: u64, len: usize) -> u64 {
        units_of(self.lock().unit, items, len)
    }

    /// Appends `payload` (an encoded export request of `signal`) and returns
    /// once it is written (and synced when `fsync` is on). A batch larger
    /// than the whole queue is taken when the queue is empty.
    ///
    /// The record is queued for sending in the critical section that writes
    /// it, so dropping this future while it waits for the sync leaks nothing;
    /// a caller that gives up (or gets a sync error) may send the data again,
    /// which makes a duplicate, never a loss.
    pub async fn push(
        &self,
        signal: Signal,
        items: u64,
        payload: &[u8],
    ) -> Result<u64, QueueError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(QueueError::TooLarge(payload.len()));
        }
        let items32 = u32::try_from(items).unwrap_or(u32::MAX);
        let mut rec = Vec::with_capacity(HEADER + payload.len());
        rec.extend_from_slice(MAGIC);
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&[0; 4]);
        let (file, seq) = {
            let mut guard = self.lock();
            let st = &mut *guard;
            let units = units_of(st.unit, items, payload.len());
            if st.used > 0 && st.used + units > self.capacity() {
                return Err(QueueError::Full);
            }
            let seq = st.next_seq;
            rec.extend_from_slice(&seq.to_le_bytes());
            rec.push(signal_byte(signal));
            rec.extend_from_slice(&items32.to_le_bytes());
            let crc = record_crc(&rec[12..HEADER], payload);
            rec[8..12].copy_from_slice(&crc.to_le_bytes());
            rec.extend_from_slice(payload);
            if st
                .segments
                .get(&st.head)
                .is_none_or(|s| s.size >= self.opts.segment_bytes)
            {
                self.roll(st)?;
            }
            let head = st.head;
            let Some(seg) = st.segments.get_mut(&head) else {
                return Err(io(&self.dir, "no segment to write")(std::io::Error::other(
                    "the head segment is missing",
                )));
            };
            let offset = seg.size;
            if let Err(e) = (&*seg.file).write_all(&rec) {
                // Whatever part was written reads as damage and is skipped;
                // the next write starts a fresh segment.
                seg.size = u64::MAX / 2;
                return Err(io(&self.dir, "cannot write a record")(e));
            }
            seg.size += rec.len() as u64;
            seg.live += 1;
            let file = seg.file.clone();
            st.next_seq = st.next_seq.saturating_add(1);
            st.used += units;
            st.pending.push_back(Entry {
                seq,
                seg: head,
                offset,
                len: payload.len() as u32,
                items,
                units,
            });
            (file, seq)
        };
        self.available.notify_one();
        if self.fsync() {
            let r = tokio::task::spawn_blocking(move || file.sync_data()).await;
            let r = r.unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            if let Err(e) = r {
                return Err(io(&self.dir, "cannot fsync a segment")(e));
            }
        }
        Ok(seq)
    }

    fn roll(&self, st: &mut State) -> Result<(), QueueError> {
        let next = st.head + 1;
        let f = FsOpen::new()
            .create(true)
            .read(true)
            .append(true)
            .open(self.dir.join(seg_name(next)))
            .map_err(io(&self.dir, "cannot create a segment"))?;
        let old = st.head;
        st.head = next;
        st.segments.insert(
            next,
            Segment {
                file: Arc::new(f),
                size: 0,
                live: 0,
                acked: Vec::new(),
            },
        );
        if self.fsync() {
            sync_dir(&self.dir);
        }
        self.drop_if_done(st, old);
        Ok(())
    }

    fn drop_if_done(&self, st: &mut State, n: u64) {
        if n == st.head {
            return;
        }
        if st.segments.get(&n).is_some_and(|s| s.live == 0) {
            if let Some(gone) = st.segments.remove(&n) {
                st.acks_needed = st.acks_needed.saturating_sub(gone.acked.len() as u64);
            }
            if let Err(e) = std::fs::remove_file(self.dir.join(seg_name(n))) {
                tracing::warn!(dir = %self.dir.display(), segment = n, error = %e, "cannot remove a sent segment");
            }
        }
    }

    /// Waits for the oldest record and takes it. Cancel safe.
    pub async fn pop(&self) -> Popped {
        loop {
            let notified = self.available.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(p) = self.try_pop() {
                return p;
            }
            notified.await;
        }
    }

    /// Takes the oldest record if there is one. Records that no longer read
    /// back (damaged on disk) are dropped, counted and skipped.
    pub fn try_pop(&self) -> Option<Popped> {
        loop {
            let (entry, file) = {
                let mut st = self.lock();
                let e = st.pending.pop_front()?;
                st.in_flight.insert(e.seq, e);
                let f = st.segments.get(&e.seg).map(|s| s.file.clone());
                (e, f)
            };
            let mut buf = vec![0u8; HEADER + entry.len as usize];
            let read = match file {
                Some(f) => f
                    .read_exact_at(&mut buf, entry.offset)
                    .map_err(|e| e.to_string()),
                None => Err("its segment is gone".to_string()),
            };
            let batch = read.and_then(|()| {
                let p = parse_record(&buf)
                    .filter(|p| p.seq == entry.seq)
                    .ok_or_else(|| "it no longer checks".to_string())?;
                let payload = Bytes::from(buf).slice(HEADER..HEADER + p.len);
                decode_batch(p.signal, payload)
            });
            match batch {
                Ok(batch) => {
                    if !self.lock().pending.is_empty() {
                        // More to take: wake another sender.
                        self.available.notify_one();
                    }
                    return Some(Popped {
                        seq: entry.seq,
                        batch,
                        items: entry.items,
                        units: entry.units,
                    });
                }
                Err(why) => {
                    tracing::error!(
                        dir = %self.dir.display(),
                        seq = entry.seq,
                        items = entry.items,
                        "a queued record cannot be read back ({why}); it is dropped"
                    );
                    self.lock().damaged_reads += entry.items;
                    self.ack(entry.seq);
                }
            }
        }
    }

    /// The record left for good (sent, or dropped): it is not sent again.
    pub fn ack(&self, seq: u64) {
        let e = self.lock().in_flight.remove(&seq);
        if let Some(e) = e {
            self.finish(e);
        }
    }

    /// The record was not sent (the sender stopped): it goes back to the
    /// front of the queue.
    pub fn nack(&self, seq: u64) {
        let mut st = self.lock();
        if let Some(e) = st.in_flight.remove(&seq) {
            let at = st.pending.partition_point(|p| p.seq < e.seq);
            st.pending.insert(at, e);
            drop(st);
            self.available.notify_one();
        }
    }

    fn finish(&self, e: Entry) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let mut rec = [0u8; ACK_LEN];
        rec[..8].copy_from_slice(&e.seq.to_le_bytes());
        rec[8..].copy_from_slice(&crc32fast::hash(&e.seq.to_le_bytes()).to_le_bytes());
        if let Err(err) = st.acks.write_all(&rec) {
            tracing::warn!(dir = %self.dir.display(), error = %err, "cannot record a sent batch; it may be sent again after a restart");
        }
        st.ack_entries += 1;
        st.used = st.used.saturating_sub(e.units);
        if let Some(seg) = st.segments.get_mut(&e.seg) {
            seg.live = seg.live.saturating_sub(1);
            seg.acked.push(e.seq);
            st.acks_needed += 1;
        }
        self.drop_if_done(st, e.seg);
        if st.ack_entries > self.opts.ack_compact_entries
            && st.ack_entries > 4 * (st.acks_needed + 1)
        {
            self.compact_acks(st);
        }
        drop(guard);
        self.room.notify_waiters();
    }

    /// Rewrites the ack log with the acks of the segments still on disk.
    fn compact_acks(&self, st: &mut State) {
        let keep: Vec<u64> = st
            .segments
            .values()
            .flat_map(|s| s.acked.iter().copied())
            .collect();
        match rewrite_acks(&self.dir, &keep) {
            Ok(f) => {
                st.acks = f;
                st.ack_entries = keep.len() as u64;
                st.acks_needed = keep.len() as u64;
            }
            Err(e) => tracing::warn!(error = %e, "cannot compact the ack log"),
        }
    }

    /// Waits until a push of `units` might fit (or `timeout` passes).
    pub async fn wait_for_room(&self, units: u64, timeout: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.lock();
                if st.used == 0 || st.used + units <= self.capacity() {
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes `seqs` as a new ack log (through a temporary file and a rename).
fn rewrite_acks(dir: &Path, seqs: &[u64]) -> Result<File, QueueError> {
    let tmp = dir.join("acks.log.tmp");
    let mut buf = Vec::with_capacity(seqs.len() * ACK_LEN);
    for s in seqs {
        buf.extend_from_slice(&s.to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&s.to_le_bytes()).to_le_bytes());
    }
    {
        let mut f = File::create(&tmp).map_err(io(dir, "cannot write acks.log.tmp"))?;
        f.write_all(&buf)
            .and_then(|()| f.sync_data())
            .map_err(io(dir, "cannot write acks.log.tmp"))?;
    }
    std::fs::rename(&tmp, dir.join("acks.log")).map_err(io(dir, "cannot replace acks.log"))?;
    sync_dir(dir);
    FsOpen::new()
        .append(true)
        .open(dir.join("acks.log"))
        .map_err(io(dir, "cannot open acks.log"))
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
