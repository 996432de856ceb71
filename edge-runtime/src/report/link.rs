//! A byte link that can go away (a serial adapter pulled out) and come back: encoded messages
//! wait in a bounded queue while it is gone — in memory, or on disk in a [`Journal`] that
//! survives a crash — the link is reopened with exponential backoff, and the queue is written in
//! order once it is back. The opening is behind [`LinkOpener`] so the logic is tested with an
//! in-memory link.
//!
//! [`Journal`]: super::journal::Journal

use std::io::Write;
use std::time::{Duration, Instant};

use super::journal::{JournalError, SyncJob};
use super::outbox::{MemoryStore, Store};
use crate::backoff::{Backoff, BackoffConfig};

/// Opens the link (again).
pub trait LinkOpener {
    /// The open link.
    type Link: Write;
    /// Opens the link; fails while the device is absent.
    fn open(&mut self) -> std::io::Result<Self::Link>;
    /// Name for logs and errors ("serial /dev/ttyUSB0@115200").
    fn describe(&self) -> String;
}

/// Counters of a [`ReopeningLink`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Messages written completely.
    pub sent: u64,
    /// Messages dropped because the queue was full (oldest first).
    pub dropped: u64,
    /// Messages waiting now.
    pub queued: usize,
    /// Successful opens (1 after the first, +1 per reopen).
    pub opens: u64,
    /// Times a write failed and the link was closed.
    pub failures: u64,
}

/// A link plus its bounded queue and reopen schedule.
pub struct ReopeningLink<O: LinkOpener> {
    opener: O,
    link: Option<O::Link>,
    queue: Box<dyn Store>,
    /// The sequence number of the next message to write.
    next: u64,
    capacity: usize,
    resync: Vec<u8>,
    backoff: Backoff,
    stats: LinkStats,
    last_error: Option<String>,
}

impl<O: LinkOpener> ReopeningLink<O> {
    /// A link that holds at most `capacity` (≥ 1) unsent messages and writes `resync` first after
    /// every (re)open, so a receiver discards whatever half message the old link left behind.
    /// Nothing is opened until the first [`send`](Self::send) or [`pump`](Self::pump).
    pub fn new(opener: O, capacity: usize, resync: Vec<u8>, backoff: BackoffConfig) -> Self {
        let store = MemoryStore::new(capacity);
        Self::with_store(opener, Box::new(store), capacity.max(1), resync, backoff)
    }

    /// [`new`](Self::new) over any store: `capacity` is its bound in messages (0 for a store
    /// bounded in bytes). Messages already in the store (from an earlier run) go out first.
    pub(crate) fn with_store(
        opener: O,
        queue: Box<dyn Store>,
        capacity: usize,
        resync: Vec<u8>,
        backoff: BackoffConfig,
    ) -> Self {
        Self {
            opener,
            link: None,
            next: queue.first(),
            queue,
            capacity,
            resync,
            backoff: Backoff::new(backoff),
            stats: LinkStats::default(),
            last_error: None,
        }
    }

    /// Queues one message (dropping the oldest if the queue is full) and writes what it can;
    /// fails only when a queue on disk cannot take it (e.g. the disk is full).
    pub fn send(&mut self, message: &[u8], now: Instant) -> Result<(), JournalError> {
        self.queue.append(message)?;
        self.pump(now);
        Ok(())
    }

    /// Opens the link if it is down and the backoff allows, then writes queued messages in order
    /// until the queue is empty or a write fails (the failed message stays at the front).
    pub fn pump(&mut self, now: Instant) {
        if self.queue.len() == 0 {
            return;
        }
        if self.link.is_none() {
            if !self.backoff.ready(now) {
                return;
            }
            match self.open_with_resync() {
                Ok(link) => {
                    self.link = Some(link);
                    self.backoff.succeeded();
                    self.stats.opens += 1;
                    if self.stats.opens > 1 {
                        tracing::info!("{}: reopened", self.opener.describe());
                    }
                }
                Err(e) => {
                    let wait = self.backoff.failed(now);
                    tracing::debug!(
                        "{}: cannot open ({e}); retrying in {wait:?}",
                        self.opener.describe()
                    );
                    self.last_error = Some(e.to_string());
                    return;
                }
            }
        }
        let Some(link) = self.link.as_mut() else {
            return;
        };
        while let Some((seq, message)) = self.queue.read(self.next) {
            match link.write_all(&message).and_then(|()| link.flush()) {
                Ok(()) => {
                    self.next = seq + 1;
                    self.queue.release_before(self.next);
                    self.stats.sent += 1;
                }
                Err(e) => {
                    let wait = self.backoff.failed(now);
                    tracing::warn!(
                        "{}: write failed ({e}); {} report(s) queued, reopening in {wait:?}",
                        self.opener.describe(),
                        self.queue.len()
                    );
                    self.last_error = Some(e.to_string());
                    self.link = None;
                    self.stats.failures += 1;
                    return;
                }
            }
        }
    }

    fn open_with_resync(&mut self) -> std::io::Result<O::Link> {
        let mut link = self.opener.open()?;
        if !self.resync.is_empty() {
            link.write_all(&self.resync)?;
            link.flush()?;
        }
        Ok(link)
    }

    /// Keeps pumping until the queue is empty or `timeout` passes; returns how many messages are
    /// still queued.
    pub fn drain(&mut self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            self.pump(now);
            let left = self.queue.len() as usize;
            if left == 0 || now >= deadline {
                return left;
            }
            let next = self.backoff.retry_at().unwrap_or(now).min(deadline);
            std::thread::sleep(
                next.saturating_duration_since(now)
                    .max(Duration::from_millis(1)),
            );
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        LinkStats {
            queued: self.queue.len() as usize,
            dropped: self.queue.dropped(),
            ..self.stats
        }
    }

    /// Bytes of the queue on disk and their bound (`(0, 0)` in memory), and the damaged records
    /// it skipped.
    pub fn disk(&self) -> (u64, u64, u64) {
        let (bytes, bound) = self.queue.bytes();
        (bytes, bound, self.queue.damaged())
    }

    /// The work that makes a queue on disk durable up to now (none in memory); run it off the
    /// frame loop.
    pub(crate) fn sync_job(&mut self) -> Option<SyncJob> {
        self.queue.sync_job()
    }

    /// Whether the link is open now.
    pub fn is_open(&self) -> bool {
        self.link.is_some()
    }

    /// Most messages the queue holds (0: bounded in bytes, on disk).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The last open or write error, if any.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The opener's description.
    pub fn describe(&self) -> String {
        self.opener.describe()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// A device that can be unplugged: writes fail while it is absent, opens fail too.
    #[derive(Default)]
    struct Wire {
        plugged: bool,
        received: Vec<u8>,
        opens: u32,
    }

    struct FakeOpener(Rc<RefCell<Wire>>);
    struct FakeLink(Rc<RefCell<Wire>>);

    impl Write for FakeLink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut wire = self.0.borrow_mut();
            if !wire.plugged {
                return Err(std::io::Error::other("unplugged"));
            }
            wire.received.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl LinkOpener for FakeOpener {
        type Link = FakeLink;
        fn open(&mut self) -> std::io::Result<FakeLink> {
            let mut wire = self.0.borrow_mut();
            if !wire.plugged {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such device",
                ));
            }
            wire.opens += 1;
            Ok(FakeLink(self.0.clone()))
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    fn backoff() -> BackoffConfig {
        BackoffConfig {
            initial_ms: 100,
            max_ms: 400,
            factor: 2.0,
        }
    }

    #[test]
    fn queues_while_unplugged_and_delivers_in_order_after_reopen() {
        let wire = Rc::new(RefCell::new(Wire {
            plugged: true,
            ..Wire::default()
        }));
        let mut link = ReopeningLink::new(FakeOpener(wire.clone()), 8, vec![0], backoff());
        let t0 = Instant::now();
        link.send(b"a", t0).unwrap();
        wire.borrow_mut().plugged = false;
        link.send(b"b", t0).unwrap();
        assert!(!link.is_open());
        link.send(b"c", t0 + Duration::from_millis(50)).unwrap();
        assert_eq!(link.stats().queued, 2);
        wire.borrow_mut().plugged = true;
        // Still inside the first backoff wait: nothing is tried.
        link.pump(t0 + Duration::from_millis(99));
        assert_eq!(wire.borrow().opens, 1);
        link.pump(t0 + Duration::from_millis(100));
        assert_eq!(wire.borrow().opens, 2);
        assert_eq!(wire.borrow().received, b"\0a\0bc");
        let stats = link.stats();
        assert_eq!(
            (stats.sent, stats.dropped, stats.queued, stats.failures),
            (3, 0, 0, 1)
        );
    }

    #[test]
    fn full_queue_drops_the_oldest_and_counts_it() {
        let wire = Rc::new(RefCell::new(Wire::default()));
        let mut link = ReopeningLink::new(FakeOpener(wire.clone()), 3, Vec::new(), backoff());
        let t0 = Instant::now();
        for (i, m) in ["1", "2", "3", "4", "5"].iter().enumerate() {
            link.send(m.as_bytes(), t0 + Duration::from_millis(i as u64))
                .unwrap();
        }
        assert_eq!(link.stats().dropped, 2);
        assert!(link.last_error().unwrap().contains("no such device"));
        wire.borrow_mut().plugged = true;
        assert_eq!(link.drain(Duration::from_secs(2)), 0);
        assert_eq!(wire.borrow().received, b"345");
    }

    #[test]
    fn drain_gives_up_at_the_deadline_and_reports_what_is_left() {
        let wire = Rc::new(RefCell::new(Wire::default()));
        let mut link = ReopeningLink::new(FakeOpener(wire), 4, Vec::new(), backoff());
        link.send(b"x", Instant::now()).unwrap();
        let started = Instant::now();
        assert_eq!(link.drain(Duration::from_millis(150)), 1);
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_queue_on_disk_outlives_the_process_and_goes_out_first_in_order() {
        use crate::report::journal::{Journal, MIN_BYTES};
        let dir = tempfile::tempdir().unwrap();
        let wire = Rc::new(RefCell::new(Wire::default()));
        let t0 = Instant::now();
        {
            let journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
            let mut link = ReopeningLink::with_store(
                FakeOpener(wire.clone()),
                Box::new(journal),
                0,
                Vec::new(),
                backoff(),
            );
            for m in ["a", "b", "c"] {
                link.send(m.as_bytes(), t0).unwrap();
            }
            assert_eq!(link.stats().queued, 3);
            assert!(link.disk().0 > 0);
            // The process dies here: no drain, no sync.
        }
        wire.borrow_mut().plugged = true;
        let journal = Journal::open(dir.path(), MIN_BYTES).unwrap();
        let mut link = ReopeningLink::with_store(
            FakeOpener(wire.clone()),
            Box::new(journal),
            0,
            Vec::new(),
            backoff(),
        );
        assert_eq!(link.stats().queued, 3);
        link.send(b"d", t0).unwrap();
        assert_eq!(link.drain(Duration::from_secs(1)), 0);
        assert_eq!(wire.borrow().received, b"abcd");
        assert_eq!(link.stats().queued, 0);
    }
}
