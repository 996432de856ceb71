//! Delivery bookkeeping of the MQTT reporter, free of I/O: which reports are waiting, which were
//! handed to the client, which packet id each got, which the broker acknowledged.
//!
//! A report leaves the outbox only when the broker acknowledges it (QoS 1 PUBACK). When the
//! connection drops, every report handed out but not acknowledged goes back to "waiting" and is
//! published again after the reconnect, in the original order (delivery is at least once: a
//! report whose PUBACK was lost arrives twice). Beyond `capacity` unacknowledged reports the
//! oldest is dropped and counted.

use std::collections::{HashMap, VecDeque};

/// Something published through the client, in the order the client will number it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publication {
    /// The report with this sequence number.
    Report(u64),
    /// A retained status message ("online"/"offline").
    Status,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    payload: Vec<u8>,
}

/// Reports not yet acknowledged, oldest first; the first `handed_out` were given to the client.
#[derive(Debug)]
pub(crate) struct Outbox {
    capacity: usize,
    entries: VecDeque<Entry>,
    handed_out: usize,
    awaiting_pkid: VecDeque<Publication>,
    by_pkid: HashMap<u16, Publication>,
    next_seq: u64,
    dropped: u64,
    delivered: u64,
}

impl Outbox {
    /// An outbox holding at most `capacity` (≥ 1) unacknowledged reports.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: VecDeque::new(),
            handed_out: 0,
            awaiting_pkid: VecDeque::new(),
            by_pkid: HashMap::new(),
            next_seq: 0,
            dropped: 0,
            delivered: 0,
        }
    }

    /// Adds a report; drops the oldest unacknowledged one if the outbox is full.
    pub(crate) fn push(&mut self, payload: Vec<u8>) {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
            self.dropped += 1;
            // If it was in flight its PUBACK, when it comes, matches no entry and is ignored.
            self.handed_out = self.handed_out.saturating_sub(1);
        }
        self.entries.push_back(Entry {
            seq: self.next_seq,
            payload,
        });
        self.next_seq += 1;
    }

    /// The next report to hand to the client, if fewer than `window` are in flight.
    pub(crate) fn next_to_send(&self, window: usize) -> Option<(u64, &[u8])> {
        if self.handed_out >= window {
            return None;
        }
        self.entries
            .get(self.handed_out)
            .map(|e| (e.seq, e.payload.as_slice()))
    }

    /// The client accepted the report returned by [`next_to_send`](Self::next_to_send).
    pub(crate) fn mark_sent(&mut self, seq: u64) {
        debug_assert_eq!(self.entries.get(self.handed_out).map(|e| e.seq), Some(seq));
        self.handed_out += 1;
        self.awaiting_pkid.push_back(Publication::Report(seq));
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
        if let Publication::Report(seq) = publication {
            let in_flight = self.handed_out.min(self.entries.len());
            if let Some(at) = self.entries.range(..in_flight).position(|e| e.seq == seq) {
                self.entries.remove(at);
                self.handed_out -= 1;
                self.delivered += 1;
            }
        }
        Some(publication)
    }

    /// The connection dropped: nothing is in flight any more; unacknowledged reports will be
    /// handed out again, oldest first.
    pub(crate) fn on_disconnect(&mut self) {
        self.handed_out = 0;
        self.awaiting_pkid.clear();
        self.by_pkid.clear();
    }

    /// Reports not yet acknowledged.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether every report was acknowledged.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reports dropped because the outbox was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Reports acknowledged by the broker.
    pub(crate) fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Reports handed to the client and not yet acknowledged.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.handed_out
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
        let mut outbox = Outbox::new(10);
        for i in 0..5u8 {
            outbox.push(vec![i]);
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
        let mut outbox = Outbox::new(10);
        for i in 0..4u8 {
            outbox.push(vec![i]);
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
        let mut outbox = Outbox::new(3);
        for i in 0..7u8 {
            outbox.push(vec![i]);
        }
        assert_eq!(outbox.dropped(), 4);
        let mut pkid = 1;
        assert_eq!(hand_out(&mut outbox, 10, &mut pkid), [4, 5, 6]);
        // Dropping an in-flight report keeps the window count consistent.
        outbox.push(vec![7]);
        assert_eq!(outbox.in_flight(), 2);
        // Its late PUBACK is recognised but removes nothing.
        assert_eq!(outbox.on_puback(1), Some(Publication::Report(4)));
        assert_eq!(
            (outbox.len(), outbox.in_flight(), outbox.delivered()),
            (3, 2, 0)
        );
        assert_eq!(hand_out(&mut outbox, 10, &mut pkid), [7]);
    }
}
