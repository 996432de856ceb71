//! [`ReadAhead`]: a source that delivers every frame (a directory of images) read on its own
//! thread one frame ahead of the pipeline, so decoding the next picture overlaps processing
//! this one. Unlike [`super::LatestFrame`] nothing is dropped: the reader hands each frame over
//! in person and waits for the pipeline to take it, so one frame waits at most (memory stays
//! bounded, and a frame's capture-to-report latency grows by at most one frame's processing).

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{Frame, FrameSource, SourceError};

/// What the reader asks the wrapped source to wait for one frame (a file source does not wait).
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// One answer of the wrapped source, in order.
type Item = Result<Option<Frame>, SourceError>;

/// A source read on a thread of its own, one frame ahead of the consumer.
pub struct ReadAhead {
    /// Answers in the source's order; `None` once dropping.
    answers: Option<mpsc::Receiver<Item>>,
    /// The source said it ended (or failed for good).
    ended: bool,
    what: String,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts reading `source` on a new thread; fails when the system cannot start one.
    pub fn spawn(mut source: Box<dyn FrameSource + Send>) -> Result<Self, SourceError> {
        let what = source.describe();
        // A rendezvous: `send` returns once the consumer took the frame.
        let (send, answers) = mpsc::sync_channel(0);
        let thread = std::thread::Builder::new()
            .name("read-ahead".into())
            .spawn(move || {
                loop {
                    let item = source.next_frame(READ_TIMEOUT);
                    // The end, and a configuration error, which the runner does not retry.
                    let last = matches!(item, Ok(None) | Err(SourceError::Config(_)));
                    // A closed channel: the consumer is gone.
                    if send.send(item).is_err() || last {
                        return;
                    }
                }
            })
            .map_err(|e| SourceError::Unavailable {
                what: what.clone(),
                message: format!("cannot start the read-ahead thread: {e}"),
            })?;
        Ok(Self {
            answers: Some(answers),
            ended: false,
            what,
            thread: Some(thread),
        })
    }
}

impl FrameSource for ReadAhead {
    /// The wrapped source's next answer, waiting for it as the source itself would (`timeout`
    /// is the reader's business).
    fn next_frame(&mut self, _timeout: Duration) -> Result<Option<Frame>, SourceError> {
        if self.ended {
            return Ok(None);
        }
        let answer = self.answers.as_ref().map(mpsc::Receiver::recv);
        match answer {
            Some(Ok(item)) => {
                self.ended = matches!(item, Ok(None) | Err(SourceError::Config(_)));
                item
            }
            _ => {
                self.ended = true;
                Err(SourceError::Config(format!(
                    "{}: the read-ahead thread stopped",
                    self.what
                )))
            }
        }
    }

    fn describe(&self) -> String {
        self.what.clone()
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the channel ends the reader at its next frame.
        self.answers = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    /// Frames 0.. on whichever thread asks, recording that thread; frame 3 does not decode,
    /// and the source ends after `len` answers (or never, for `len == u64::MAX`).
    struct Counting {
        next: u64,
        len: u64,
        reads: Arc<AtomicU64>,
        threads: Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>,
    }

    impl FrameSource for Counting {
        fn next_frame(&mut self, _timeout: Duration) -> Result<Option<Frame>, SourceError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.threads
                .lock()
                .unwrap()
                .push(std::thread::current().id());
            if self.next == self.len {
                return Ok(None);
            }
            let index = self.next;
            self.next += 1;
            if index == 3 {
                return Err(SourceError::Decode {
                    what: "frame 3".into(),
                    message: "broken".into(),
                });
            }
            Ok(Some(Frame::numbered(index)))
        }

        fn describe(&self) -> String {
            "counting".into()
        }
    }

    fn counting(
        len: u64,
    ) -> (
        ReadAhead,
        Arc<AtomicU64>,
        Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>,
    ) {
        let reads = Arc::new(AtomicU64::new(0));
        let threads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let source = Counting {
            next: 0,
            len,
            reads: Arc::clone(&reads),
            threads: Arc::clone(&threads),
        };
        (ReadAhead::spawn(Box::new(source)).unwrap(), reads, threads)
    }

    #[test]
    fn every_answer_arrives_in_order_from_another_thread() {
        let (mut source, reads, threads) = counting(6);
        let mut got = Vec::new();
        loop {
            match source.next_frame(Duration::ZERO) {
                Ok(Some(frame)) => got.push(Ok(frame.index)),
                Ok(None) => break,
                Err(e) => got.push(Err(e.to_string())),
            }
        }
        assert_eq!(
            got,
            [
                Ok(0),
                Ok(1),
                Ok(2),
                Err("frame 3: cannot decode frame: broken".into()),
                Ok(4),
                Ok(5)
            ]
        );
        assert!(source.next_frame(Duration::ZERO).unwrap().is_none());
        assert_eq!(source.dropped(), 0);
        assert_eq!(source.describe(), "counting");
        // Six frames and the end, each read once, none on the consumer's thread.
        assert_eq!(reads.load(Ordering::SeqCst), 7);
        let me = std::thread::current().id();
        assert!(threads.lock().unwrap().iter().all(|t| *t != me));
    }

    #[test]
    fn dropping_stops_a_reader_waiting_to_hand_over_a_frame() {
        let (mut source, reads, _) = counting(u64::MAX);
        assert_eq!(source.next_frame(Duration::ZERO).unwrap().unwrap().index, 0);
        // Returns only once the reader thread has ended (joined).
        drop(source);
        let after = reads.load(Ordering::SeqCst);
        // At most the taken frame and the one waiting to be handed over were read.
        assert!((1..=2).contains(&after), "{after} reads");
    }
}
