//! Small file formats shared by the readers and the synthetic writer: label values, landmark
//! tables, iBUG `.pts` files and directories of numbered frame images.

use affect_shared::contract::LANDMARK_POINTS;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use affect_shared::preprocess::Landmarks68;

use super::problems::{DataError, Problem, ProblemKind, Problems};

/// The value that marks an unannotated frame in Aff-Wild2 files.
pub const INVALID_LABEL: f32 = -5.0;

/// Image file extensions recognised as frames or crops.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Reads a whole text file; an unreadable file becomes a problem and `None`.
pub fn read_text(path: &Path, problems: &mut Problems) -> Result<Option<String>, DataError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => {
                problems.push(Problem::file(
                    path,
                    ProblemKind::Unreadable,
                    "not valid UTF-8 text (bytes replaced)",
                ))?;
                String::from_utf8_lossy(err.as_bytes()).into_owned()
            }
        })),
        Err(err) => {
            problems.push(Problem::file(
                path,
                ProblemKind::Unreadable,
                err.to_string(),
            ))?;
            Ok(None)
        }
    }
}

/// Checks one label value: finite and in [-1, 1]. `name` is the field for the message.
pub fn check_label(value: &str, name: &str) -> Result<f32, (ProblemKind, String)> {
    let parsed: f32 = value.trim().parse().map_err(|_| {
        (
            ProblemKind::BadLine,
            format!("{name}: `{value}` is not a number"),
        )
    })?;
    if !parsed.is_finite() {
        return Err((
            ProblemKind::NotFinite,
            format!("{name}: `{value}` is not finite"),
        ));
    }
    if parsed != INVALID_LABEL && !(-1.0..=1.0).contains(&parsed) {
        return Err((
            ProblemKind::OutOfRange,
            format!("{name}: {parsed} is outside [-1, 1]"),
        ));
    }
    Ok(parsed)
}

/// Numbered image files in a directory: frame number (from the file stem) → path. A missing
/// directory is an empty map; an unreadable one is a problem.
pub fn numbered_images(
    dir: &Path,
    problems: &mut Problems,
) -> Result<BTreeMap<u64, PathBuf>, DataError> {
    numbered_files(dir, &IMAGE_EXTENSIONS, problems)
}

/// Files with one of `extensions` whose stem is a decimal number, by that number.
pub fn numbered_files(
    dir: &Path,
    extensions: &[&str],
    problems: &mut Problems,
) -> Result<BTreeMap<u64, PathBuf>, DataError> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(err) => {
            problems.push(Problem::file(dir, ProblemKind::Unreadable, err.to_string()))?;
            return Ok(out);
        }
    };
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(err) => {
                problems.push(Problem::file(dir, ProblemKind::Unreadable, err.to_string()))?;
                continue;
            }
        };
        let extension_ok = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.iter().any(|x| e.eq_ignore_ascii_case(x)));
        let number = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok());
        if let (true, Some(number)) = (extension_ok, number) {
            out.insert(number, path);
        }
    }
    Ok(out)
}

/// The header of a landmark table: `frame,x0,y0,…,x67,y67`.
pub fn landmark_header() -> String {
    let mut header = String::from("frame");
    for i in 0..LANDMARK_POINTS {
        write!(header, ",x{i},y{i}").expect("writing to a String cannot fail");
    }
    header
}

/// One row of a landmark table (1-based `frame`), coordinates with 3 decimals.
pub fn landmark_row(frame: usize, landmarks: &Landmarks68) -> String {
    let mut row = frame.to_string();
    for [x, y] in &landmarks.0 {
        write!(row, ",{x:.3},{y:.3}").expect("writing to a String cannot fail");
    }
    row
}

/// Parses a landmark table (`landmarks/<video>.csv`): 1-based frame number → landmarks.
/// Bad rows are problems and are skipped.
pub fn parse_landmark_table(
    text: &str,
    path: &Path,
    problems: &mut Problems,
) -> Result<BTreeMap<usize, Landmarks68>, DataError> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    match lines.next() {
        Some((_, header)) if header.starts_with("frame,") => {}
        Some((line, _)) => {
            problems.push(Problem::line(
                path,
                line,
                ProblemKind::BadHeader,
                "expected header `frame,x0,y0,…,x67,y67`",
            ))?;
            return Ok(out);
        }
        None => return Ok(out),
    }
    for (line, row) in lines {
        if row.is_empty() {
            continue;
        }
        let fields: Vec<&str> = row.split(',').collect();
        if fields.len() != 137 {
            problems.push(Problem::line(
                path,
                line,
                ProblemKind::BadLandmarks,
                format!(
                    "expected frame number and 136 coordinates, found {} fields",
                    fields.len()
                ),
            ))?;
            continue;
        }
        let Some(frame) = fields[0].trim().parse::<usize>().ok().filter(|f| *f >= 1) else {
            problems.push(Problem::line(
                path,
                line,
                ProblemKind::BadLandmarks,
                format!("frame `{}` is not a 1-based frame number", fields[0]),
            ))?;
            continue;
        };
        match parse_points(&fields[1..]) {
            Ok(points) => {
                out.insert(frame, points);
            }
            Err(message) => {
                problems.push(Problem::line(
                    path,
                    line,
                    ProblemKind::BadLandmarks,
                    message,
                ))?;
            }
        }
    }
    Ok(out)
}

/// 136 coordinate strings → landmarks; the error says which value is bad.
fn parse_points(fields: &[&str]) -> Result<Landmarks68, String> {
    let mut points = [[0.0f32; 2]; LANDMARK_POINTS];
    for (i, field) in fields.iter().enumerate() {
        let value: f32 = field
            .trim()
            .parse()
            .ok()
            .filter(|v: &f32| v.is_finite())
            .ok_or_else(|| {
                let axis = if i % 2 == 0 { 'x' } else { 'y' };
                format!("{axis}{}: `{field}` is not a finite number", i / 2)
            })?;
        points[i / 2][i % 2] = value;
    }
    Ok(Landmarks68(points))
}

/// Parses an iBUG `.pts` file (`version: 1`, `n_points: N`, `{`, N lines `x y`, `}`).
/// Returns the points, or the problem (with its line) that made it unusable.
pub fn parse_pts(text: &str, path: &Path) -> Result<Vec<[f32; 2]>, Problem> {
    let bad = |line: usize, message: String| {
        Problem::line(path, line, ProblemKind::BadLandmarks, message)
    };
    let mut expected = None;
    let mut points = Vec::new();
    let mut inside = false;
    let mut closed = false;
    for (i, raw) in text.lines().enumerate() {
        let (line, row) = (i + 1, raw.trim());
        if row.is_empty() || row.starts_with("version") {
            continue;
        }
        if let Some(n) = row.strip_prefix("n_points:") {
            expected = Some(
                n.trim()
                    .parse::<usize>()
                    .map_err(|_| bad(line, format!("bad point count `{}`", n.trim())))?,
            );
        } else if row == "{" {
            inside = true;
        } else if row == "}" {
            closed = true;
            break;
        } else if inside {
            let xy: Vec<&str> = row.split_whitespace().collect();
            let parsed: Option<Vec<f32>> = xy
                .iter()
                .map(|v| v.parse::<f32>().ok().filter(|v| v.is_finite()))
                .collect();
            match parsed {
                Some(v) if v.len() == 2 => points.push([v[0], v[1]]),
                _ => return Err(bad(line, format!("expected `x y`, found `{row}`"))),
            }
        } else {
            return Err(bad(line, format!("unexpected `{row}`")));
        }
    }
    if !closed {
        return Err(bad(
            text.lines().count().max(1),
            "truncated: no closing `}`".into(),
        ));
    }
    if let Some(n) = expected
        && n != points.len()
    {
        return Err(Problem::file(
            path,
            ProblemKind::BadLandmarks,
            format!("n_points says {n} but {} points follow", points.len()),
        ));
    }
    Ok(points)
}

/// Writes `text` to `path`, creating parent directories.
pub fn write_text(path: &Path, text: &str) -> Result<(), DataError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(DataError::io(parent))?;
    }
    std::fs::write(path, text).map_err(DataError::io(path))
}
