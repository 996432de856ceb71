//! The durable report queue: a segmented append-only log in a directory of the state directory,
//! bounded in bytes, CRC-checked per record, that survives a crash or a power cut.
//!
//! **Why a log of our own and not an embedded database** (`redb`, `sled`): the queue is strictly
//! FIFO (append at the tail, acknowledge at the head), which is exactly what an append-only log
//! does with one `write` per report and no write amplification; a B-tree store would rewrite
//! pages and keep a free list for the same job, could not be bounded in bytes by deleting whole
//! files, and would add a large dependency to a device build. The format is small enough to be
//! read by hand and its recovery rules are spelled out below and tested byte by byte.
//!
//! **Layout.** `<dir>/<first seq, 20 digits>.seg` segment files, each a run of records with
//! consecutive sequence numbers starting at the one in its name; `<dir>/acked`, the cursor
//! (every sequence number below it was acknowledged by the broker); `<dir>/lock`, held with an
//! advisory lock so two processes never share a queue. A record is
//!
//! ```text
//! len u32 LE | crc u32 LE | seq u64 LE | payload (len bytes)
//! ```
//!
//! with `crc` the CRC-32 (IEEE, `crc32fast`) of `len`, `seq` and the payload. The cursor file is
//! `seq u64 LE | crc u32 LE`, replaced atomically (written to `acked.tmp`, synced, renamed).
//!
//! **Bound.** Segments are `max_bytes / 16` long; when an append would take the files past
//! `max_bytes`, the oldest segment is deleted and its unacknowledged reports are counted as
//! dropped. Fully acknowledged segments are deleted as soon as the cursor passes them.
//!
//! **fsync policy.** Every append is one `write` straight to the segment file (no user-space
//! buffer), so a process crash (`kill -9`, a panic, the OOM killer) loses nothing: the data is
//! in the kernel's page cache. The segment is `fdatasync`ed and the cursor rewritten at most
//! every `fsync_interval` (by the caller, through [`Journal::sync_job`], off the lock that
//! guards appends), when a segment is sealed, and on a clean shutdown: a power cut loses at
//! most the reports of the last interval, and re-delivers at most the acknowledgements of the
//! last interval (delivery is at least once).
//!
//! **Recovery.** Opening scans every segment: a record that is cut short, fails its CRC, claims
//! an impossible length or breaks the sequence ends that segment there. The damage is logged,
//! counted ([`Journal::damaged`]) and cut off (the file is truncated to its last good record);
//! the following segments are read as usual. A damaged cursor counts as damage too and means
//! "nothing acknowledged": reports may be re-delivered, never lost. Damage found later, while
//! reading a record back for delivery, is handled the same way. Nothing here panics on what it
//! reads.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes before a record's payload: length, CRC, sequence number.
pub const RECORD_HEADER: usize = 16;
/// Largest payload a record may carry (a JSON report is about 200 bytes).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Segments per byte bound: a segment is `max_bytes / SEGMENTS` long.
pub const SEGMENTS: u64 = 16;
/// Smallest byte bound: 16 segments of 4 KiB.
pub const MIN_BYTES: u64 = 64 * 1024;

const CURSOR: &str = "acked";
const CURSOR_TMP: &str = "acked.tmp";
const LOCK: &str = "lock";
const EXTENSION: &str = "seg";

/// The directory of one reporter's queue in `state_dir`: `queue/<kind>-<readable>-<hash>`, with
/// `readable` reduced to file-name characters and the hash of `identity` keeping names that
/// reduce alike apart.
pub fn queue_directory(state_dir: &Path, kind: &str, readable: &str, identity: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let readable: String = readable
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = Sha256::digest(identity.as_bytes());
    let tag: String = hash[..4].iter().map(|b| format!("{b:02x}")).collect();
    state_dir
        .join("queue")
        .join(format!("{kind}-{readable}-{tag}"))
}

/// Why the queue could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// Another process holds the queue's lock.
    #[error("{path}: the report queue is in use by another process")]
    Locked {
        /// The queue directory.
        path: String,
    },
    /// A report too large for one record.
    #[error("a report of {len} bytes does not fit in a queue record (at most {max})")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The largest payload accepted.
        max: usize,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The CRC of a record: over its length, sequence number and payload.
fn record_crc(len: u32, seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&len.to_le_bytes());
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends the record `seq`/`payload` to `out`.
pub fn encode_record(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(len, seq, payload).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// What is wrong with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The file ends inside the record (a write cut short).
    Truncated,
    /// The length field is beyond [`MAX_PAYLOAD`].
    Length,
    /// The CRC does not match.
    Checksum,
    /// A valid record with the wrong sequence number.
    Sequence,
}

/// A record's header fields.
#[derive(Debug, Clone, Copy)]
struct Header {
    len: u32,
    crc: u32,
    seq: u64,
}

impl Header {
    fn parse(bytes: &[u8; RECORD_HEADER]) -> Self {
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[8..16]);
        Self {
            len: u32_at(0),
            crc: u32_at(4),
            seq: u64::from_le_bytes(seq),
        }
    }
}

/// Reads the record expected to carry `expected` from `reader`, which has `left` bytes.
fn read_record(
    reader: &mut impl Read,
    left: u64,
    expected: u64,
) -> io::Result<Result<Vec<u8>, Damage>> {
    if left < RECORD_HEADER as u64 {
        return Ok(Err(Damage::Truncated));
    }
    let mut header = [0u8; RECORD_HEADER];
    reader.read_exact(&mut header)?;
    let header = Header::parse(&header);
    if header.len as usize > MAX_PAYLOAD {
        return Ok(Err(Damage::Length));
    }
    if left < (RECORD_HEADER as u64) + u64::from(header.len) {
        return Ok(Err(Damage::Truncated));
    }
    let mut payload = vec![0u8; header.len as usize];
    reader.read_exact(&mut payload)?;
    if record_crc(header.len, header.seq, &payload) != header.crc {
        return Ok(Err(Damage::Checksum));
    }
    if header.seq != expected {
        return Ok(Err(Damage::Sequence));
    }
    Ok(Ok(payload))
}

/// The good prefix of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// One past the last good record's sequence number.
    pub end: u64,
    /// Bytes of the good records.
    pub good_bytes: u64,
    /// What ended the scan before the end of the data, and at which byte.
    pub damage: Option<(Damage, u64)>,
}

/// Scans `len` bytes of a segment whose first record is `first`.
pub fn scan(reader: impl Read, len: u64, first: u64) -> io::Result<Scan> {
    let mut reader = BufReader::new(reader);
    let mut scan = Scan {
        end: first,
        good_bytes: 0,
        damage: None,
    };
    while scan.good_bytes < len {
        match read_record(&mut reader, len - scan.good_bytes, scan.end)? {
            Ok(payload) => {
                scan.end += 1;
                scan.good_bytes += (RECORD_HEADER + payload.len()) as u64;
            }
            Err(damage) => {
                scan.damage = Some((damage, scan.good_bytes));
                break;
            }
        }
    }
    Ok(scan)
}

/// One segment file: records `first..end`, `bytes` long on disk.
#[derive(Debug)]
struct Segment {
    first: u64,
    end: u64,
    bytes: u64,
}

/// Where the next sequential read continues: record `seq` at `offset` of segment `segment`.
#[derive(Debug, Clone, Copy)]
struct ReadPos {
    segment: u64,
    seq: u64,
    offset: u64,
}

/// Work to make the queue durable, done without holding the queue: fsync the active segment and
/// replace the cursor file.
#[derive(Debug)]
pub struct SyncJob {
    dir: PathBuf,
    segment: Option<File>,
    acked: Option<u64>,
}

impl SyncJob {
    /// Does the work.
    pub fn run(self) -> Result<(), JournalError> {
        if let Some(segment) = &self.segment {
            segment.sync_data().map_err(io_error(&self.dir))?;
        }
        if let Some(acked) = self.acked {
            write_cursor(&self.dir, acked)?;
        }
        Ok(())
    }
}

fn write_cursor(dir: &Path, acked: u64) -> Result<(), JournalError> {
    let tmp = dir.join(CURSOR_TMP);
    let mut bytes = acked.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&acked.to_le_bytes()).to_le_bytes());
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(&bytes).map_err(io_error(&tmp))?;
    file.sync_data().map_err(io_error(&tmp))?;
    let cursor = dir.join(CURSOR);
    std::fs::rename(&tmp, &cursor).map_err(io_error(&cursor))
}

/// The acknowledgement cursor as found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// No cursor file: nothing was acknowledged yet.
    Missing,
    /// Every report below this was acknowledged.
    Acked(u64),
    /// The file is there but does not hold a valid cursor.
    Damaged,
}

fn read_cursor(dir: &Path) -> Result<Cursor, JournalError> {
    let path = dir.join(CURSOR);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Cursor::Missing),
        Err(e) => return Err(io_error(&path)(e)),
    };
    let Ok(bytes) = <[u8; 12]>::try_from(bytes.as_slice()) else {
        return Ok(Cursor::Damaged);
    };
    let [s0, s1, s2, s3, s4, s5, s6, s7, c0, c1, c2, c3] = bytes;
    let seq = [s0, s1, s2, s3, s4, s5, s6, s7];
    Ok(
        if crc32fast::hash(&seq) == u32::from_le_bytes([c0, c1, c2, c3]) {
            Cursor::Acked(u64::from_le_bytes(seq))
        } else {
            Cursor::Damaged
        },
    )
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.{EXTENSION}")
}

/// The on-disk queue; see the module documentation.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    /// Oldest first; the last one is the active one while `active` is open.
    segments: VecDeque<Segment>,
    active: Option<File>,
    reader: Option<(u64, File)>,
    read_pos: Option<ReadPos>,
    acked: u64,
    synced_acked: u64,
    unsynced: bool,
    next_seq: u64,
    bytes: u64,
    dropped: u64,
    damaged: u64,
    buf: Vec<u8>,
    _lock: File,
}

impl Journal {
    /// Opens (creating it if needed) the queue in `dir`, bounded to `max_bytes` (at least
    /// [`MIN_BYTES`]), recovering what a crash left: see the module documentation.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(JournalError::Locked {
                    path: dir.display().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
        }
        let max_bytes = max_bytes.max(MIN_BYTES);
        let mut journal = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: max_bytes / SEGMENTS,
            segments: VecDeque::new(),
            active: None,
            reader: None,
            read_pos: None,
            acked: 0,
            synced_acked: 0,
            unsynced: false,
            next_seq: 0,
            bytes: 0,
            dropped: 0,
            damaged: 0,
            buf: Vec::new(),
            _lock: lock,
        };
        let acked = match read_cursor(dir)? {
            Cursor::Missing => 0,
            Cursor::Acked(seq) => seq,
            Cursor::Damaged => {
                journal.damaged += 1;
                tracing::warn!(
                    "{}: damaged acknowledgement cursor; every queued report will be sent again",
                    dir.join(CURSOR).display()
                );
                0
            }
        };
        journal.recover(acked)?;
        // New reports must come after everything acknowledged, even if the records that were
        // acknowledged did not survive a power cut.
        journal.next_seq = journal.next_seq.max(acked);
        journal.acked = acked;
        journal.synced_acked = acked;
        Ok(journal)
    }

    fn recover(&mut self, acked: u64) -> Result<(), JournalError> {
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_error(&self.dir))? {
            let entry = entry.map_err(io_error(&self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(first) = name
                .strip_suffix(&format!(".{EXTENSION}"))
                .filter(|stem| stem.len() == 20)
                .and_then(|stem| stem.parse::<u64>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        for first in firsts {
            let path = self.dir.join(segment_name(first));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_error(&path))?;
            let len = file.metadata().map_err(io_error(&path))?.len();
            let mut scan = scan(&file, len, first).map_err(io_error(&path))?;
            let overlaps = self.segments.back().is_some_and(|s| first < s.end);
            if overlaps {
                scan.damage = Some((Damage::Sequence, 0));
                scan.end = first;
                scan.good_bytes = 0;
            }
            if let Some((damage, offset)) = scan.damage {
                self.damaged += 1;
                tracing::warn!(
                    "{}: {damage:?} record at byte {offset} of {len}; the {} byte(s) from there \
                     are cut off and the queue goes on with the next segment",
                    path.display(),
                    len - offset
                );
                file.set_len(scan.good_bytes).map_err(io_error(&path))?;
            }
            if scan.end == first || scan.end <= acked {
                // Empty, or acknowledged to the end.
                drop(file);
                std::fs::remove_file(&path).map_err(io_error(&path))?;
                continue;
            }
            self.bytes += scan.good_bytes;
            self.next_seq = scan.end;
            self.segments.push_back(Segment {
                first,
                end: scan.end,
                bytes: scan.good_bytes,
            });
        }
        let _ = std::fs::remove_file(self.dir.join(CURSOR_TMP));
        if let Some(last) = self.segments.back()
            && last.bytes < self.segment_bytes
        {
            let path = self.dir.join(segment_name(last.first));
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            self.active = Some(file);
        }
        Ok(())
    }

    /// Appends a report; returns its sequence number. Deletes the oldest segment (its
    /// unacknowledged reports counted as dropped) when the bound would be exceeded.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        let record = (RECORD_HEADER + payload.len()) as u64;
        let max = MAX_PAYLOAD.min(self.segment_bytes as usize - RECORD_HEADER);
        if payload.len() > max {
            return Err(JournalError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        if self.active.is_some()
            && let Some(last) = self.segments.back()
            && last.bytes > 0
            && last.bytes + record > self.segment_bytes
        {
            self.seal();
        }
        while self.bytes + record > self.max_bytes
            && self.segments.len() > usize::from(self.active.is_some())
        {
            self.drop_oldest();
        }
        if self.active.is_none() {
            let path = self.dir.join(segment_name(self.next_seq));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io_error(&path))?;
            // The new name must survive a power cut along with its data.
            if let Err(e) = File::open(&self.dir).and_then(|d| d.sync_all()) {
                tracing::warn!("{}: fsync: {e}", self.dir.display());
            }
            self.active = Some(file);
            self.segments.push_back(Segment {
                first: self.next_seq,
                end: self.next_seq,
                bytes: 0,
            });
        }
        let seq = self.next_seq;
        self.buf.clear();
        encode_record(seq, payload, &mut self.buf);
        let (Some(file), Some(segment)) = (self.active.as_mut(), self.segments.back_mut()) else {
            unreachable!("an active segment was just ensured");
        };
        if let Err(e) = file.write_all(&self.buf) {
            // Take back what part of the record was written; if that fails too, the segment is
            // sealed and the torn record is cut off when the queue is next opened.
            let path = self.dir.join(segment_name(segment.first));
            if file.set_len(segment.bytes).is_err() {
                self.active = None;
            }
            return Err(io_error(&path)(e));
        }
        segment.bytes += record;
        segment.end = seq + 1;
        self.bytes += record;
        self.next_seq += 1;
        self.unsynced = true;
        Ok(seq)
    }

    /// Closes the active segment (synced); the next append starts a new one.
    fn seal(&mut self) {
        if let Some(file) = self.active.take()
            && let Err(e) = file.sync_data()
        {
            tracing::warn!("{}: fsync of a full segment: {e}", self.dir.display());
        }
    }

    fn drop_oldest(&mut self) {
        let Some(segment) = self.segments.pop_front() else {
            return;
        };
        self.dropped += segment.end.saturating_sub(segment.first.max(self.acked));
        self.remove(&segment);
    }

    fn remove(&mut self, segment: &Segment) {
        self.bytes -= segment.bytes;
        if self
            .reader
            .as_ref()
            .is_some_and(|(s, _)| *s == segment.first)
        {
            self.reader = None;
        }
        let path = self.dir.join(segment_name(segment.first));
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("{}: {e}", path.display());
        }
    }

    /// The first report at or after `from` that is still queued, read back from disk. Damage
    /// found on the way ends that segment (logged and counted) and the search goes on.
    pub fn read(&mut self, from: u64) -> Option<(u64, Vec<u8>)> {
        let from = from.max(self.acked);
        loop {
            let index = self
                .segments
                .iter()
                .position(|s| s.end > from.max(s.first))?;
            let segment = &self.segments[index];
            let (first, end) = (segment.first, segment.end);
            let want = from.max(first);
            let mut pos = match self.read_pos {
                Some(p) if p.segment == first && p.seq <= want => p,
                _ => ReadPos {
                    segment: first,
                    seq: first,
                    offset: 0,
                },
            };
            match self.read_at(pos, want) {
                Ok((seq, payload, next)) => {
                    pos.seq = seq + 1;
                    pos.offset = next;
                    self.read_pos = Some(pos);
                    return Some((seq, payload));
                }
                Err(at) => {
                    self.damaged += 1;
                    let segment = &mut self.segments[index];
                    segment.end = at.max(segment.first);
                    tracing::warn!(
                        "{}: damaged record {at} found while reading; skipping to the next \
                         segment ({} report(s) lost)",
                        self.dir.join(segment_name(first)).display(),
                        end - at
                    );
                    self.read_pos = None;
                }
            }
        }
    }

    /// Reads records from `pos` until the one numbered `want`; `Err(seq)` names the first
    /// record that cannot be read.
    fn read_at(&mut self, mut pos: ReadPos, want: u64) -> Result<(u64, Vec<u8>, u64), u64> {
        if self.reader.as_ref().is_none_or(|(s, _)| *s != pos.segment) {
            let path = self.dir.join(segment_name(pos.segment));
            let file = File::open(&path).map_err(|_| pos.seq)?;
            self.reader = Some((pos.segment, file));
        }
        let Some((_, file)) = self.reader.as_ref() else {
            return Err(pos.seq);
        };
        let len = file.metadata().map_err(|_| pos.seq)?.len();
        loop {
            let mut reader = ReadAt {
                file,
                at: pos.offset,
            };
            let payload = match read_record(&mut reader, len.saturating_sub(pos.offset), pos.seq) {
                Ok(Ok(payload)) => payload,
                _ => return Err(pos.seq),
            };
            let next = pos.offset + (RECORD_HEADER + payload.len()) as u64;
            if pos.seq >= want {
                return Ok((pos.seq, payload, next));
            }
            pos.seq += 1;
            pos.offset = next;
        }
    }

    /// Every report below `seq` was acknowledged: fully acknowledged segments are deleted.
    pub fn release_before(&mut self, seq: u64) {
        let seq = seq.min(self.next_seq);
        if seq <= self.acked {
            return;
        }
        self.acked = seq;
        while let Some(front) = self.segments.front() {
            let active = self.active.is_some() && self.segments.len() == 1;
            if front.end > seq || active {
                break;
            }
            if let Some(segment) = self.segments.pop_front() {
                self.remove(&segment);
            }
        }
    }

    /// The work that makes everything appended and acknowledged so far durable, if any; run it
    /// with [`SyncJob::run`] (it needs no access to the journal).
    pub fn sync_job(&mut self) -> Option<SyncJob> {
        let segment = if self.unsynced {
            self.unsynced = false;
            self.active.as_ref().and_then(|f| match f.try_clone() {
                Ok(file) => Some(file),
                Err(e) => {
                    tracing::warn!("{}: {e}", self.dir.display());
                    None
                }
            })
        } else {
            None
        };
        let acked = (self.acked != self.synced_acked).then_some(self.acked);
        self.synced_acked = self.acked;
        (segment.is_some() || acked.is_some()).then(|| SyncJob {
            dir: self.dir.clone(),
            segment,
            acked,
        })
    }

    /// Makes everything durable now (clean shutdown).
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.sync_job().map_or(Ok(()), SyncJob::run)
    }

    /// The lowest sequence number still queued (the next one to be appended when empty).
    pub fn first(&self) -> u64 {
        self.segments
            .iter()
            .find_map(|s| {
                let start = s.first.max(self.acked);
                (start < s.end).then_some(start)
            })
            .unwrap_or(self.next_seq)
    }

    /// Reports queued (appended, neither acknowledged nor dropped).
    pub fn len(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.end.saturating_sub(s.first.max(self.acked)))
            .sum()
    }

    /// Whether no report is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the segment files.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The byte bound.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Reports dropped because the bound was reached.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Damaged records, tails and cursors found (each skipped, see the module documentation).
    pub fn damaged(&self) -> u64 {
        self.damaged
    }
}

/// [`Read`] at a moving offset of a file, without moving the file's own position.
struct ReadAt<'a> {
    file: &'a File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(i: u64) -> Vec<u8> {
        format!(
            "{{\"frame\":{i},\"pad\":\"{}\"}}",
            "x".repeat((i % 7) as usize)
        )
        .into_bytes()
    }

    /// Everything queued, read back in order.
    fn contents(journal: &mut Journal) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some((seq, payload)) = journal.read(from) {
            from = seq + 1;
            out.push((seq, payload));
        }
        out
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == EXTENSION))
            .collect();
        files.sort();
        files
    }

    #[test]
    fn records_round_trip_and_a_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode_record(7, b"hello", &mut buf);
        assert_eq!(buf.len(), RECORD_HEADER + 5);
        let ok = read_record(&mut buf.as_slice(), buf.len() as u64, 7).unwrap();
        assert_eq!(ok, Ok(b"hello".to_vec()));
        assert_eq!(
            read_record(&mut buf.as_slice(), buf.len() as u64, 8).unwrap(),
            Err(Damage::Sequence)
        );
        for byte in 0..buf.len() {
            let mut bad = buf.clone();
            bad[byte] ^= 0x10;
            let got = read_record(&mut bad.as_slice(), bad.len() as u64, 7).unwrap();
            assert!(got.is_err(), "flip in byte {byte} not caught");
        }
    }

    #[test]
    fn appended_reports_survive_a_reopen_and_acknowledged_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
        for i in 0..10 {
            assert_eq!(journal.append(&payload(i)).unwrap(), i);
        }
        journal.release_before(4);
        assert_eq!((journal.len(), journal.first()), (6, 4));
        journal.sync().unwrap();
        drop(journal);
        let mut journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
        assert_eq!(
            (journal.len(), journal.first(), journal.damaged()),
            (6, 4, 0)
        );
        let got = contents(&mut journal);
        assert_eq!(got, (4..10).map(|i| (i, payload(i))).collect::<Vec<_>>());
        // Numbering goes on after the reopen.
        assert_eq!(journal.append(b"next").unwrap(), 10);
        // Acknowledged but not synced (a crash): delivered again, never lost.
        journal.release_before(8);
        drop(journal);
        let mut journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
        assert_eq!(journal.first(), 4);
        assert_eq!(contents(&mut journal).len(), 7);
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_segment_and_counts_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
        let report = vec![b'r'; 200];
        let per_segment = (MIN_BYTES / SEGMENTS) / (RECORD_HEADER as u64 + 200);
        let total = per_segment * SEGMENTS * 3;
        for _ in 0..total {
            journal.append(&report).unwrap();
            assert!(journal.bytes() <= MIN_BYTES);
        }
        assert!(segment_files(dir.path()).len() <= SEGMENTS as usize);
        assert_eq!(journal.dropped() + journal.len(), total);
        assert!(journal.dropped() >= total / 2, "{}", journal.dropped());
        // What is left is the newest, in order.
        let got = contents(&mut journal);
        assert_eq!(got.first().unwrap().0, journal.dropped());
        assert_eq!(got.last().unwrap().0, total - 1);
        // Acknowledged reports are not counted as dropped when their segment goes.
        let mut journal2 = {
            drop(journal);
            Journal::open(dir.path(), MIN_BYTES).unwrap()
        };
        let next = journal2.first() + journal2.len();
        journal2.release_before(next);
        for _ in 0..total {
            journal2.append(&report).unwrap();
        }
        assert_eq!(journal2.dropped() + journal2.len(), total);
    }

    #[test]
    fn a_truncated_tail_at_every_byte_of_the_last_record_keeps_the_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
        for i in 0..5 {
            journal.append(&payload(i)).unwrap();
        }
        drop(journal);
        let [segment] = segment_files(dir.path()).try_into().unwrap();
        let whole = std::fs::read(&segment).unwrap();
        let last = RECORD_HEADER + payload(4).len();
        let keep = whole.len() - last;
        for cut in keep + 1..whole.len() {
            std::fs::write(&segment, &whole[..cut]).unwrap();
            let mut journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
            assert_eq!(journal.damaged(), 1, "cut at {cut}");
            assert_eq!(
                contents(&mut journal),
                (0..4).map(|i| (i, payload(i))).collect::<Vec<_>>()
            );
            // The tail is cut off: appending goes on after the last good record.
            assert_eq!(journal.append(b"after").unwrap(), 4);
            drop(journal);
            let mut journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
            assert_eq!((journal.damaged(), journal.len()), (0, 5), "cut at {cut}");
            assert_eq!(contents(&mut journal)[4], (4, b"after".to_vec()));
            drop(journal);
        }
    }

    #[test]
    fn a_flipped_byte_is_detected_and_the_rest_of_its_segment_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
        let report = vec![b'r'; 300];
        let total = 40;
        for _ in 0..total {
            journal.append(&report).unwrap();
        }
        drop(journal);
        let files = segment_files(dir.path());
        assert!(files.len() >= 3);
        // A byte in the second record of the second segment.
        let victim = &files[1];
        let first: u64 = victim
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let next: u64 = files[2]
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let mut bytes = std::fs::read(victim).unwrap();
        bytes[RECORD_HEADER + 300 + RECORD_HEADER + 10] ^= 0xff;
        std::fs::write(victim, &bytes).unwrap();
        let mut journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
        assert_eq!(journal.damaged(), 1);
        let seqs: Vec<u64> = contents(&mut journal).into_iter().map(|(s, _)| s).collect();
        let expected: Vec<u64> = (0..=first).chain(next..total).collect();
        assert_eq!(seqs, expected);

        // Damage that appears after opening is found when the record is read back.
        let files = segment_files(dir.path());
        let mut bytes = std::fs::read(&files[2]).unwrap();
        bytes[RECORD_HEADER + 5] ^= 0xff;
        std::fs::write(&files[2], &bytes).unwrap();
        let first_of_third: u64 = files[2]
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        journal.read_pos = None;
        journal.reader = None;
        let seqs: Vec<u64> = contents(&mut journal).into_iter().map(|(s, _)| s).collect();
        assert!(!seqs.contains(&first_of_third));
        assert_eq!(journal.damaged(), 2);
        assert_eq!(*seqs.last().unwrap(), total - 1);
    }

    #[test]
    fn a_damaged_cursor_means_everything_is_sent_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
        for i in 0..6 {
            journal.append(&payload(i)).unwrap();
        }
        journal.release_before(3);
        journal.sync().unwrap();
        drop(journal);
        std::fs::write(dir.path().join(CURSOR), b"garbage").unwrap();
        let journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
        assert_eq!(
            (journal.damaged(), journal.first(), journal.len()),
            (1, 0, 6)
        );
    }

    #[test]
    fn a_second_process_cannot_open_the_same_queue() {
        let dir = tempfile::tempdir().unwrap();
        let _journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
        let err = Journal::open(dir.path(), MIN_BYTES).unwrap_err();
        assert!(matches!(err, JournalError::Locked { .. }), "{err}");
    }

    /// Appends per second of 200-byte reports, with the fsync policy's syncs every interval and
    /// with an fsync after every append for comparison:
    /// `cargo test --release -p affect-edge-runtime --lib journal -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn append_rate() {
        use std::time::{Duration, Instant};
        let report = vec![b'r'; 200];
        for (label, interval) in [
            ("fsync every 1000 ms", Duration::from_millis(1000)),
            ("fsync every append", Duration::ZERO),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut journal = Journal::open(dir.path(), 64 << 20).unwrap();
            let (start, mut last_sync, mut n) = (Instant::now(), Instant::now(), 0u64);
            while start.elapsed() < Duration::from_secs(3) {
                journal.append(&report).unwrap();
                journal.release_before(n.saturating_sub(32));
                n += 1;
                if last_sync.elapsed() >= interval {
                    journal.sync().unwrap();
                    last_sync = Instant::now();
                }
            }
            let rate = n as f64 / start.elapsed().as_secs_f64();
            println!("{label}: {rate:.0} appends/s");
        }
    }

    mod model {
        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        enum Op {
            Append(usize),
            /// Acknowledge this many of the queued reports.
            Ack(usize),
            Sync,
            /// Close without syncing, as `kill -9` does, and open again.
            Reopen,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                6 => (0usize..400).prop_map(Op::Append),
                2 => (0usize..40).prop_map(Op::Ack),
                1 => Just(Op::Sync),
                1 => Just(Op::Reopen),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]
            #[test]
            fn the_journal_behaves_like_a_queue(ops in prop::collection::vec(op(), 1..120)) {
                let dir = tempfile::tempdir().unwrap();
                // Small segments (4 KiB), so some fill up and are deleted, but nothing is
                // dropped: 120 × 416 B < 64 KiB.
                let bound = MIN_BYTES;
                let mut journal = Journal::open(dir.path(), bound).unwrap();
                // The model: every report appended, what is acknowledged, what is durable.
                let mut all: Vec<Vec<u8>> = Vec::new();
                let (mut acked, mut synced) = (0u64, 0u64);
                for op in ops {
                    match op {
                        Op::Append(len) => {
                            let p: Vec<u8> = (0..len).map(|i| (i + all.len()) as u8).collect();
                            prop_assert_eq!(journal.append(&p).unwrap(), all.len() as u64);
                            all.push(p);
                        }
                        Op::Ack(n) => {
                            acked = (acked + n as u64).min(all.len() as u64);
                            journal.release_before(acked);
                        }
                        Op::Sync => {
                            journal.sync().unwrap();
                            synced = acked;
                        }
                        Op::Reopen => {
                            drop(journal);
                            journal = Journal::open(dir.path(), bound).unwrap();
                            // At least once: everything from the durable cursor on comes back,
                            // except what was acknowledged and already deleted.
                            let first = journal.first();
                            prop_assert!((synced..=acked).contains(&first), "{first} not in {synced}..={acked}");
                            acked = first;
                            synced = first;
                        }
                    }
                    prop_assert_eq!(journal.len(), all.len() as u64 - acked);
                    prop_assert_eq!(journal.first(), acked);
                    prop_assert_eq!(journal.damaged(), 0);
                }
                let got = contents(&mut journal);
                let want: Vec<(u64, Vec<u8>)> = all
                    .into_iter()
                    .enumerate()
                    .skip(acked as usize)
                    .map(|(i, p)| (i as u64, p))
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
