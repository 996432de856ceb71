//! The drop directory: a model moved into it (or written and closed there) becomes a deploy
//! job. Only complete files count: a rename into the directory or the close of a file written
//! in it; names starting with `.` (temporaries) and files not ending in `.onnx` are ignored.
//! Files already there at start-up are taken too.

use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};

use super::{DeployError, Job};

/// Whether `path` names a candidate model.
fn is_candidate(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| !n.starts_with('.') && n.ends_with(".onnx"))
}

/// The files an event completes.
fn completed(event: &Event) -> Option<&PathBuf> {
    match event.kind {
        EventKind::Modify(ModifyKind::Name(
            RenameMode::To | RenameMode::Both | RenameMode::Any,
        ))
        | EventKind::Access(AccessKind::Close(AccessMode::Write)) => event.paths.last(),
        _ => None,
    }
}

/// Watches `dir`, sending a [`Job::File`] for every completed candidate (blocking while the
/// deploy thread is busy: files wait on disk, not in memory).
pub(super) fn watch(
    dir: &Path,
    jobs: Sender<Job>,
) -> Result<notify::RecommendedWatcher, DeployError> {
    let failed = |source| DeployError::Watch {
        path: dir.to_owned(),
        source,
    };
    let sender = jobs.clone();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<Event>| match event {
            Ok(event) => {
                if let Some(path) = completed(&event).filter(|p| is_candidate(p)) {
                    let _ = sender.send(Job::File(path.clone()));
                }
            }
            Err(e) => tracing::warn!("deploy: watching the drop directory: {e}"),
        })
        .map_err(failed)?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(failed)?;
    let entries = std::fs::read_dir(dir).map_err(|source| DeployError::Store {
        path: dir.to_owned(),
        source,
    })?;
    let mut waiting: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_candidate(p))
        .collect();
    waiting.sort();
    // Sent from a thread: the channel holds only a couple of jobs.
    std::thread::Builder::new()
        .name("deploy-scan".into())
        .spawn(move || {
            for path in waiting {
                if jobs.send(Job::File(path)).is_err() {
                    return;
                }
            }
        })
        .map_err(DeployError::Thread)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_completed_onnx_files_count() {
        assert!(is_candidate(Path::new("/in/model.onnx")));
        for ignored in [
            "/in/.model.onnx.tmp",
            "/in/.model.onnx",
            "/in/model.onnx.sha256",
        ] {
            assert!(!is_candidate(Path::new(ignored)), "{ignored}");
        }
        let event = |kind| Event::new(kind).add_path("/in/m.onnx".into());
        let moved_in = event(EventKind::Modify(ModifyKind::Name(RenameMode::To)));
        let closed = event(EventKind::Access(AccessKind::Close(AccessMode::Write)));
        let created = event(EventKind::Create(notify::event::CreateKind::File));
        assert!(completed(&moved_in).is_some() && completed(&closed).is_some());
        assert!(
            completed(&created).is_none(),
            "a created file may still be written"
        );
    }
}
