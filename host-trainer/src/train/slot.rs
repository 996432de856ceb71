//! A run directory's checkpoint-like sub-directory (`checkpoint/`, `best/`), replaced so that a
//! kill at any instant leaves at least one complete copy.
//!
//! A new copy is written to `NAME.<step>.tmp` (its marker file last, then every file and the
//! directory fsynced) and renamed to `NAME.new`; then `NAME` becomes `NAME.old`, `NAME.new`
//! becomes `NAME`, and `NAME.old` is removed. A copy is complete when its marker (a JSON object
//! with a `step`) exists. Readers ([`Slot::current`]) take the complete copy with the highest
//! step among `NAME`, `NAME.new` and `NAME.old` (on a tie in that order), which covers a crash
//! between any two renames; the next [`Slot::replace`] tidies up what a crash left behind.

use std::path::{Path, PathBuf};

use super::{TrainError, io_err};

/// One replaceable sub-directory of a run.
#[derive(Debug, Clone)]
pub struct Slot {
    root: PathBuf,
    name: &'static str,
    marker: &'static str,
}

impl Slot {
    /// The sub-directory `name` of the run at `root`, complete when it holds `marker`.
    pub fn new(root: impl Into<PathBuf>, name: &'static str, marker: &'static str) -> Self {
        Self {
            root: root.into(),
            name,
            marker,
        }
    }

    /// `ROOT/NAME`, where the copy lives when no replacement is under way.
    pub fn canonical(&self) -> PathBuf {
        self.root.join(self.name)
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        self.root.join(format!("{}.{suffix}", self.name))
    }

    /// The step recorded in `dir`'s marker, if `dir` is a complete copy.
    fn step_of(&self, dir: &Path) -> Option<u64> {
        let text = std::fs::read_to_string(dir.join(self.marker)).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        value.get("step")?.as_u64()
    }

    /// The complete copy with the highest step, if any.
    pub fn current(&self) -> Option<PathBuf> {
        let mut best: Option<(u64, PathBuf)> = None;
        for dir in [self.canonical(), self.sibling("new"), self.sibling("old")] {
            if let Some(step) = self.step_of(&dir)
                && best.as_ref().is_none_or(|(s, _)| step > *s)
            {
                best = Some((step, dir));
            }
        }
        best.map(|(_, dir)| dir)
    }

    /// Replaces the copy by one that `write` fills (marker file last), recorded at `step`.
    pub fn replace(
        &self,
        step: u64,
        write: impl FnOnce(&Path) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        let staging = self.stage(step, write)?;
        self.publish(&staging)?;
        self.retire()?;
        self.promote()?;
        self.discard_old()
    }

    /// Tidies up after a crash: the current copy moves to `NAME`, every other copy and staging
    /// directory goes. At each instant a complete copy remains.
    fn tidy(&self) -> Result<(), TrainError> {
        let canonical = self.canonical();
        if let Some(current) = self.current()
            && current != canonical
        {
            if canonical.exists() {
                remove_copy(&canonical, self.marker)?;
            }
            std::fs::rename(&current, &canonical).map_err(io_err(&canonical))?;
        }
        for suffix in ["new", "old"] {
            let dir = self.sibling(suffix);
            if dir.exists() {
                remove_copy(&dir, self.marker)?;
            }
        }
        let prefix = format!("{}.", self.name);
        let entries = std::fs::read_dir(&self.root).map_err(io_err(&self.root))?;
        for entry in entries {
            let entry = entry.map_err(io_err(&self.root))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".tmp") {
                remove_copy(&entry.path(), self.marker)?;
            }
        }
        Ok(())
    }

    /// Step 1: tidies up, then writes the new copy to `NAME.<step>.tmp` and syncs it to disk.
    fn stage(
        &self,
        step: u64,
        write: impl FnOnce(&Path) -> Result<(), TrainError>,
    ) -> Result<PathBuf, TrainError> {
        self.tidy()?;
        let staging = self.sibling(&format!("{step}.tmp"));
        std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        write(&staging)?;
        for entry in std::fs::read_dir(&staging).map_err(io_err(&staging))? {
            let file = entry.map_err(io_err(&staging))?.path();
            sync(&file)?;
        }
        sync(&staging)?;
        Ok(staging)
    }

    /// Step 2: the complete staging directory becomes `NAME.new`.
    fn publish(&self, staging: &Path) -> Result<(), TrainError> {
        let new = self.sibling("new");
        std::fs::rename(staging, &new).map_err(io_err(&new))?;
        sync(&self.root)
    }

    /// Step 3: the previous copy, if any, becomes `NAME.old`.
    fn retire(&self) -> Result<(), TrainError> {
        let canonical = self.canonical();
        if canonical.exists() {
            let old = self.sibling("old");
            std::fs::rename(&canonical, &old).map_err(io_err(&old))?;
        }
        Ok(())
    }

    /// Step 4: `NAME.new` becomes `NAME`.
    fn promote(&self) -> Result<(), TrainError> {
        let canonical = self.canonical();
        std::fs::rename(self.sibling("new"), &canonical).map_err(io_err(&canonical))?;
        sync(&self.root)
    }

    /// Step 5: `NAME.old` goes.
    fn discard_old(&self) -> Result<(), TrainError> {
        let old = self.sibling("old");
        if old.exists() {
            remove_copy(&old, self.marker)?;
        }
        Ok(())
    }
}

/// Removes a copy, marker first, so a half-removed copy never looks complete.
fn remove_copy(dir: &Path, marker: &str) -> Result<(), TrainError> {
    let marker = dir.join(marker);
    match std::fs::remove_file(&marker) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&marker)(e)),
    }
    std::fs::remove_dir_all(dir).map_err(io_err(dir))
}

/// Flushes a file or directory to disk.
fn sync(path: &Path) -> Result<(), TrainError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_copy(dir: &Path, step: u64) -> Result<(), TrainError> {
        std::fs::write(dir.join("data.bin"), step.to_le_bytes()).unwrap();
        std::fs::write(dir.join("state.json"), format!("{{\"step\": {step}}}")).unwrap();
        Ok(())
    }

    /// The step a reader sees, checking the copy it picks is whole.
    fn read(slot: &Slot) -> Option<u64> {
        let dir = slot.current()?;
        let data = std::fs::read(dir.join("data.bin")).expect("a complete copy has its data");
        let step = u64::from_le_bytes(data.try_into().unwrap());
        assert_eq!(slot.step_of(&dir), Some(step));
        Some(step)
    }

    fn entries(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_crash_between_any_two_steps_leaves_a_complete_copy() {
        // Crash after the first `done` steps of replacing the copy of step 1 by step 2.
        for done in 0..=5 {
            let tmp = tempfile::tempdir().unwrap();
            let slot = Slot::new(tmp.path(), "checkpoint", "state.json");
            slot.replace(1, |dir| write_copy(dir, 1)).unwrap();
            assert_eq!(entries(tmp.path()), ["checkpoint"]);
            let staging = if done >= 1 {
                Some(slot.stage(2, |dir| write_copy(dir, 2)).unwrap())
            } else {
                None
            };
            if done >= 2 {
                slot.publish(staging.as_deref().unwrap()).unwrap();
            }
            if done >= 3 {
                slot.retire().unwrap();
            }
            if done >= 4 {
                slot.promote().unwrap();
            }
            if done >= 5 {
                slot.discard_old().unwrap();
            }
            let expected = if done >= 2 { 2 } else { 1 };
            assert_eq!(read(&slot), Some(expected), "after {done} step(s)");

            // The next replacement tidies up and leaves only the new copy.
            slot.replace(3, |dir| write_copy(dir, 3)).unwrap();
            assert_eq!(read(&slot), Some(3), "after {done} step(s)");
            assert_eq!(entries(tmp.path()), ["checkpoint"], "after {done} step(s)");
        }
    }

    #[test]
    fn run_weights_come_from_the_complete_copies_a_crash_left() {
        let tmp = tempfile::tempdir().unwrap();
        let run = crate::train::RunDir::new(tmp.path());
        assert!(run.weights().is_err(), "no copy yet");
        // Crash after `checkpoint` became `checkpoint.old`, before `checkpoint.new` took its place.
        for (name, step) in [("checkpoint.old", 4), ("checkpoint.new", 6)] {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            write_copy(&dir, step).unwrap();
        }
        let new = tmp.path().join("checkpoint.new");
        assert_eq!(run.weights().unwrap(), new.join("model.safetensors"));
        assert_eq!(run.checkpoint().current(), Some(new));
        // A best copy whose marker is missing (half written) is passed over; a complete one wins.
        let best = tmp.path().join("best");
        std::fs::create_dir(&best).unwrap();
        assert_eq!(
            run.weights().unwrap(),
            tmp.path().join("checkpoint.new/model.safetensors")
        );
        std::fs::write(best.join("score.json"), r#"{"step": 5}"#).unwrap();
        assert_eq!(run.weights().unwrap(), best.join("model.safetensors"));
    }

    #[test]
    fn a_crash_while_writing_or_removing_never_yields_a_partial_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let slot = Slot::new(tmp.path(), "best", "state.json");
        assert_eq!(read(&slot), None);
        // A write that fails halfway (no marker) is not a copy.
        let failed = slot.stage(1, |dir| {
            std::fs::write(dir.join("data.bin"), 1u64.to_le_bytes()).unwrap();
            Err(io_err(dir)(std::io::Error::other("disk full")))
        });
        assert!(failed.is_err());
        assert_eq!(read(&slot), None);
        slot.replace(1, |dir| write_copy(dir, 1)).unwrap();
        assert_eq!(read(&slot), Some(1));
        // A stale copy whose removal stopped after its marker went is ignored.
        let old = slot.sibling("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("data.bin"), 9u64.to_le_bytes()).unwrap();
        assert_eq!(read(&slot), Some(1));
        slot.replace(2, |dir| write_copy(dir, 2)).unwrap();
        assert_eq!(read(&slot), Some(2));
        assert_eq!(entries(tmp.path()), ["best"]);
    }
}
