//! [`LatestFrame`]: a live source captured on its own thread into a one-slot mailbox, so the
//! pipeline always gets the newest frame. A frame not taken before the next one arrives is stale:
//! it is dropped and counted ([`FrameSource::dropped`]). When processing is slower than the
//! camera, capture-to-report latency then stays about one frame interval plus one processing
//! time, instead of growing with a queue.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Frame, FrameSource, SourceError};

/// How long the capture thread waits for one frame before checking whether it should stop.
const CAPTURE_POLL: Duration = Duration::from_millis(200);

/// The one slot between the capture thread and the consumer.
#[derive(Default)]
struct Slot {
    /// The newest frame or error not yet taken.
    item: Option<Result<Frame, SourceError>>,
    /// The source ended (after `item`, if any, is taken).
    ended: bool,
}

struct Shared {
    slot: Mutex<Slot>,
    ready: Condvar,
    stop: AtomicBool,
    dropped: AtomicU64,
}

impl Shared {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A source read continuously on a capture thread; [`FrameSource::next_frame`] returns the
/// newest frame captured since the previous call.
pub struct LatestFrame {
    shared: Arc<Shared>,
    what: String,
    thread: Option<JoinHandle<()>>,
}

impl LatestFrame {
    /// Starts capturing from `source` on a new thread; fails when the system cannot start one.
    pub fn spawn(mut source: Box<dyn FrameSource + Send>) -> Result<Self, SourceError> {
        let what = source.describe();
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::default()),
            ready: Condvar::new(),
            stop: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        let capture = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || {
                while !capture.stop.load(Ordering::Relaxed) {
                    let item = match source.next_frame(CAPTURE_POLL) {
                        Ok(Some(frame)) => Ok(frame),
                        Ok(None) => {
                            capture.slot().ended = true;
                            capture.ready.notify_all();
                            return;
                        }
                        Err(e) => Err(e),
                    };
                    let mut slot = capture.slot();
                    if let Some(Ok(_)) = slot.item.replace(item) {
                        capture.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(slot);
                    capture.ready.notify_all();
                }
            })
            .map_err(|e| SourceError::Unavailable {
                what: what.clone(),
                message: format!("cannot start the capture thread: {e}"),
            })?;
        Ok(Self {
            shared,
            what,
            thread: Some(thread),
        })
    }
}

impl FrameSource for LatestFrame {
    fn next_frame(&mut self, timeout: Duration) -> Result<Option<Frame>, SourceError> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.shared.slot();
        loop {
            if let Some(item) = slot.item.take() {
                return item.map(Some);
            }
            if slot.ended {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SourceError::Unavailable {
                    what: self.what.clone(),
                    message: format!("no frame within {} ms", timeout.as_millis()),
                });
            }
            slot = self
                .shared
                .ready
                .wait_timeout(slot, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn describe(&self) -> String {
        format!("{} (newest frame)", self.what)
    }

    fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for LatestFrame {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // The capture thread notices within one CAPTURE_POLL.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A camera the test drives: each `next_frame` announces the call (so the test knows the
    /// previous frame is in the mailbox) and delivers the next frame the test releases; a
    /// closed channel ends the stream.
    struct Scripted {
        release: mpsc::Receiver<u64>,
        asked: mpsc::Sender<()>,
    }

    impl FrameSource for Scripted {
        fn next_frame(&mut self, _timeout: Duration) -> Result<Option<Frame>, SourceError> {
            let _ = self.asked.send(());
            Ok(self.release.recv().ok().map(Frame::numbered))
        }

        fn describe(&self) -> String {
            "scripted camera".into()
        }
    }

    fn scripted() -> (LatestFrame, mpsc::Sender<u64>, mpsc::Receiver<()>) {
        let (release, frames) = mpsc::channel();
        let (asked, calls) = mpsc::channel();
        let source = LatestFrame::spawn(Box::new(Scripted {
            release: frames,
            asked,
        }))
        .unwrap();
        (source, release, calls)
    }

    /// Releases frame `index` and waits until it sits in the mailbox (the capture thread asks
    /// for the next one only after storing it).
    fn capture(release: &mpsc::Sender<u64>, calls: &mpsc::Receiver<()>, index: u64) {
        release.send(index).unwrap();
        calls.recv().unwrap();
    }

    #[test]
    fn the_newest_frame_wins_and_stale_ones_are_counted() {
        let (mut source, release, calls) = scripted();
        calls.recv().unwrap(); // The first request.
        for index in 0..10 {
            capture(&release, &calls, index);
        }
        let frame = source.next_frame(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(frame.index, 9);
        assert_eq!(source.dropped(), 9);
        capture(&release, &calls, 10);
        let frame = source.next_frame(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(frame.index, 10);
        assert_eq!(source.dropped(), 9);
        drop(release);
        assert!(source.next_frame(Duration::from_secs(5)).unwrap().is_none());
    }

    #[test]
    fn a_camera_faster_than_the_pipeline_keeps_latency_bounded() {
        // The camera delivers 5 frames per processed frame. With a queue the age of the frame
        // being processed would grow by 4 every step; from the mailbox it is always the newest.
        let (mut source, release, calls) = scripted();
        calls.recv().unwrap();
        let mut captured = 0;
        let mut ages = Vec::new();
        for _ in 0..20 {
            for _ in 0..5 {
                capture(&release, &calls, captured);
                captured += 1;
            }
            let frame = source.next_frame(Duration::from_secs(5)).unwrap().unwrap();
            ages.push(captured - 1 - frame.index);
        }
        assert!(ages.iter().all(|&age| age == 0), "{ages:?}");
        assert_eq!(source.dropped(), 20 * 4);
    }
}
