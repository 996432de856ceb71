//! Delivery bookkeeping of the MQTT reporter: which reports are waiting, which were handed to
//! the client, which packet id each got, which the broker acknowledged. The reports themselves
//! live in a [`Store`]: in memory ([`MemoryStore`], bounded in reports) or on disk (the
//! [`Journal`], bounded in bytes, surviving a crash); only the handed-out window is held here.
//!
//! A report leaves the store only when the broker acknowledges it (QoS 1 PUBACK) and every
//! report before it was acknowledged too. When the connection drops, every report handed out but
//! not acknowledged goes back to "waiting" and is published again after the reconnect, in the
//! original order (delivery is at least once: a report whose PUBACK was lost arrives twice).
//! When the store is full the oldest reports are dropped and counted.

use std::collections::{HashMap, VecDeque};

use super::journal::{Journal, JournalError, SyncJob};

/// Something published through the client, in the order the client will number it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publication {
    /// The report with this sequence number.
    Report(u64),
    /// A retained status message ("online"/"offline").
    Status,
}

/// Where reports wait for their acknowledgement, numbered in the order they came.
pub(crate) trait Store: Send {
    /// Keeps a report (dropping the oldest when full); returns its sequence number.
    fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError>;
    /// The first report kept at or after `from`.
    fn read(&mut self, from: u64) -> Option<(u64, Vec<u8>)>;
    /// Every report below `seq` was acknowledged.
    fn release_before(&mut self, seq: u64);
    /// The lowest sequence number kept (the next to be appended when empty).
    fn first(&self) -> u64;
    /// Reports kept.
    fn len(&self) -> u64;
    /// Reports dropped because the store was full.
    fn dropped(&self) -> u64;
    /// Bytes on disk and their bound; `(0, 0)` in memory.
    fn bytes(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Damaged records skipped (on disk only).
    fn damaged(&self) -> u64 {
        0
    }
    /// Work that makes the store durable, if there is any to do.
    fn sync_job(&mut self) -> Option<SyncJob> {
        None
    }
}

/// Reports in memory, at most `capacity`; lost when the process ends.
#[derive(Debug)]
pub(crate) struct MemoryStore {
    capacity: usize,
    entries: VecDeque<(u64, Vec<u8>)>,
    next_seq: u64,
    dropped: u64,
}

impl MemoryStore {
    /// A store holding at most `capacity` (≥ 1) reports.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: VecDeque::new(),
            next_seq: 0,
            dropped: 0,
        }
    }
}

impl Store for MemoryStore {
    fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
            self.dropped += 1;
        }
        let seq = self.next_seq;
        self.entries.push_back((seq, payload.to_vec()));
        self.next_seq += 1;
        Ok(seq)
    }

    fn read(&mut self, from: u64) -> Option<(u64, Vec<u8>)> {
        let at = self.entries.partition_point(|(seq, _)| *seq < from);
        self.entries.get(at).cloned()
    }

    fn release_before(&mut self, seq: u64) {
        while self.entries.front().is_some_and(|(s, _)| *s < seq) {
            self.entries.pop_front();
        }
    }

    fn first(&self) -> u64 {
        self.entries.front().map_or(self.next_seq, |(seq, _)| *seq)
    }

    fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl Store for Journal {
    fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        Journal::append(self, payload)
    }

    fn read(&mut self, from: u64) -> Option<(u64, Vec<u8>)> {
        Journal::read(self, from)
    }

    fn release_before(&mut self, seq: u64) {
        Journal::release_before(self, seq);
    }

    fn first(&self) -> u64 {
        Journal::first(self)
    }

    fn len(&self) -> u64 {
        Journal::len(self)
    }

    fn dropped(&self) -> u64 {
        Journal::dropped(self)
    }

    fn bytes(&self) -> (u64, u64) {
        (Journal::bytes(self), self.max_bytes())
    }

    fn damaged(&self) -> u64 {
        Journal::damaged(self)
    }

    fn sync_job(&mut self) -> Option<SyncJob> {
        Journal::sync_job(self)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// To be handed to the client.
    Waiting,
    /// Handed to the client, not acknowledged.
    Sent,
    /// Acknowledged; still in the store while an earlier report is not.
    Acked,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    payload: Vec<u8>,
    stage: Stage,
}

/// The window of reports read from the store and not yet released, oldest first.
pub(crate) struct Outbox {
    store: Box<dyn Store>,
    window: VecDeque<Entry>,
    sent: usize,
    acked: usize,
    /// The next sequence number to read from the store.
    next_read: u64,
    awaiting_pkid: VecDeque<Publication>,
    by_pkid: HashMap<u16, Publication>,
    delivered: u64,
}

impl Outbox {
    /// An outbox keeping its reports in `store`; reports already there (from before a restart)
    /// are sent first, oldest first.
    pub(crate) fn new(store: Box<dyn Store>) -> Self {
        let next_read = store.first();
        Self {
            store,
            window: VecDeque::new(),
            sent: 0,
            acked: 0,
            next_read,
            awaiting_pkid: VecDeque::new(),
            by_pkid: HashMap::new(),
            delivered: 0,
        }
    }

    /// Adds a report; the store drops the oldest ones if it is full.
    pub(crate) fn push(&mut self, payload: &[u8]) -> Result<(), JournalError> {
        self.store.append(payload)?;
        self.forget_dropped();
        Ok(())
    }

    /// Forgets window entries the store no longer holds (dropped when it was full). If one was
    /// in flight its PUBACK, when it comes, matches no entry and is ignored.
    fn forget_dropped(&mut self) {
        let first = self.store.first();
        while let Some(front) = self.window.front()
            && front.seq < first
        {
            match front.stage {
                Stage::Sent => self.sent -= 1,
                Stage::Acked => self.acked -= 1,
                Stage::Waiting => {}
            }
            self.window.pop_front();
        }
        self.next_read = self.next_read.max(first);
    }

    /// The next report to hand to the client, if fewer than `window` are in flight.
    pub(crate) fn next_to_send(&mut self, window: usize) -> Option<(u64, &[u8])> {
        if self.sent >= window {
            return None;
        }
        let at = match self.window.iter().position(|e| e.stage == Stage::Waiting) {
            Some(at) => at,
            None => {
                let (seq, payload) = self.store.read(self.next_read)?;
                self.next_read = seq + 1;
                self.window.push_back(Entry {
                    seq,
                    payload,
                    stage: Stage::Waiting,
                });
                self.window.len() - 1
            }
        };
        self.window.get(at).map(|e| (e.seq, e.payload.as_slice()))
    }

    /// The client accepted the report returned by [`next_to_send`](Self::next_to_send).
    pub(crate) fn mark_sent(&mut self, seq: u64) {
        if let Some(entry) = self
            .window
            .iter_mut()
            .find(|e| e.seq == seq && e.stage == Stage::Waiting)
        {
            entry.stage = Stage::Sent;
            self.sent += 1;
            self.awaiting_pkid.push_back(Publication::Report(seq));
        }
    }

    /// The client accepted a status publication.
    pub(crate) fn mark_status_sent(&mut self) {
        self.awaiting_pkid.push_back(Publication::Status);
    }

    /// The client wrote a QoS 1 PUBLISH with this packet id (in the order handed out).
    pub(crate) fn on_outgoing_publish(&mut self, pkid: u16) {
        if let Some(publication) = self.awaiting_pkid.pop_front() {
            self.by_pkid.insert(pkid, publication);
        }
    }

    /// The broker acknowledged `pkid`; returns what it was.
    pub(crate) fn on_puback(&mut self, pkid: u16) -> Option<Publication> {
        let publication = self.by_pkid.remove(&pkid)?;
        if let Publication::Report(seq) = publication
            && let Some(entry) = self
                .window
                .iter_mut()
                .find(|e| e.seq == seq && e.stage == Stage::Sent)
        {
            entry.stage = Stage::Acked;
            self.sent -= 1;
            self.acked += 1;
            self.delivered += 1;
            while self.window.front().is_some_and(|e| e.stage == Stage::Acked) {
                self.window.pop_front();
                self.acked -= 1;
            }
            let released = self.window.front().map_or(self.next_read, |e| e.seq);
            self.store.release_before(released);
        }
        Some(publication)
    }

    /// The connection dropped: nothing is in flight any more; unacknowledged reports will be
    /// handed out again, oldest first.
    pub(crate) fn on_disconnect(&mut self) {
        for entry in &mut self.window {
            if entry.stage == Stage::Sent {
                entry.stage = Stage::Waiting;
            }
        }
        self.sent = 0;
        self.awaiting_pkid.clear();
        self.by_pkid.clear();
    }

    /// Reports not yet acknowledged.
    pub(crate) fn len(&self) -> usize {
        (self.store.len() as usize).saturating_sub(self.acked)
    }

    /// Whether every report was acknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reports dropped because the store was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.store.dropped()
    }

    /// Reports acknowledged by the broker.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The store's bytes on disk and their bound (`(0, 0)` in memory).
    pub(crate) fn bytes(&self) -> (u64, u64) {
        self.store.bytes()
    }

    /// Damaged records the store skipped.
    pub(crate) fn damaged(&self) -> u64 {
        self.store.damaged()
    }

    /// Work that makes the store durable, if any.
    pub(crate) fn sync_job(&mut self) -> Option<SyncJob> {
        self.store.sync_job()
    }

    /// Reports handed to the client and not yet acknowledged.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out everything the window allows, as the I/O loop does; returns the sequence numbers.
    fn hand_out(outbox: &mut Outbox, window: usize, next_pkid: &mut u16) -> Vec<u64> {
        let mut sent = Vec::new();
        while let Some((seq, _)) = outbox.next_to_send(window) {
            outbox.mark_sent(seq);
            outbox.on_outgoing_publish(*next_pkid);
            *next_pkid += 1;
            sent.push(seq);
        }
        sent
    }

    #[test]
    fn acknowledged_reports_leave_in_order_and_the_window_limits_flight() {
        let mut outbox = Outbox::new(Box::new(MemoryStore::new(10)));
        for i in 0..5u8 {
            outbox.push(&[i]).unwrap();
        }
        let mut pkid = 1;
        assert_eq!(hand_out(&mut outbox, 3, &mut pkid), [0, 1, 2]);
        assert_eq!(outbox.on_puback(1), Some(Publication::Report(0)));
        assert_eq!(hand_out(&mut outbox, 3, &mut pkid), [3]);
        assert_eq!(outbox.on_puback(99), None);
        for p in 2..=4 {
            outbox.on_puback(p);
        }
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox.delivered(), 4);
        assert_eq!(outbox.next_to_send(3), Some((4, &[4u8][..])));
    }

    #[test]
    fn a_dropped_connection_resends_every_unacknowledged_report_in_order() {
        let mut outbox = Outbox::new(Box::new(MemoryStore::new(10)));
        for i in 0..4u8 {
            outbox.push(&[i]).unwrap();
        }
        let mut pkid = 1;
        outbox.mark_status_sent();
        outbox.on_outgoing_publish(pkid);
        pkid += 1;
        hand_out(&mut outbox, 10, &mut pkid);
        assert_eq!(outbox.on_puback(1), Some(Publication::Status));
        outbox.on_puback(2); // report 0
        outbox.on_disconnect();
        assert_eq!(outbox.in_flight(), 0);
        // A late PUBACK from the old connection matches nothing.
        assert_eq!(outbox.on_puback(3), None);
        let mut pkid = 1;
        assert_eq!(hand_out(&mut outbox, 10, &mut pkid), [1, 2, 3]);
        for p in 1..=3 {
            outbox.on_puback(p);
        }
        assert!(outbox.is_empty());
        assert_eq!((outbox.delivered(), outbox.dropped()), (4, 0));
    }

    #[test]
    fn beyond_capacity_the_oldest_is_dropped_and_counted() {
        let mut outbox = Outbox::new(Box::new(MemoryStore::new(3)));
        for i in 0..7u8 {
            outbox.push(&[i]).unwrap();
        }
        assert_eq!(outbox.dropped(), 4);
        let mut pkid = 1;
        assert_eq!(hand_out(&mut outbox, 10, &mut pkid), [4, 5, 6]);
        // Dropping an in-flight report keeps the window count consistent.
        outbox.push(&[7]).unwrap();
        assert_eq!(outbox.in_flight(), 2);
        // Its late PUBACK is recognised but removes nothing.
        assert_eq!(outbox.on_puback(1), Some(Publication::Report(4)));
        assert_eq!(
            (outbox.len(), outbox.in_flight(), outbox.delivered()),
            (3, 2, 0)
        );
        assert_eq!(hand_out(&mut outbox, 10, &mut pkid), [7]);
    }

    #[test]
    fn reports_on_disk_from_before_a_crash_go_out_first_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            Outbox::new(Box::new(
                Journal::open(dir.path(), crate::report::journal::MIN_BYTES).unwrap(),
            ))
        };
        let mut outbox = open();
        for i in 0..5u8 {
            outbox.push(&[i]).unwrap();
        }
        let mut pkid = 1;
        assert_eq!(hand_out(&mut outbox, 2, &mut pkid), [0, 1]);
        outbox.on_puback(1); // report 0, made durable
        outbox.sync_job().unwrap().run().unwrap();
        outbox.on_puback(2); // report 1: acknowledged, not yet durable
        assert_eq!(outbox.len(), 3);
        drop(outbox); // a crash: no clean shutdown
        let mut outbox = open();
        // At least once: report 1 comes back, report 0 does not.
        assert_eq!(outbox.len(), 4);
        outbox.push(&[5]).unwrap();
        let mut pkid = 1;
        assert_eq!(hand_out(&mut outbox, 10, &mut pkid), [1, 2, 3, 4, 5]);
        assert_eq!(outbox.next_to_send(10), None);
    }
}
