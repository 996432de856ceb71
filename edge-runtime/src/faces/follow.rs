//! Landmark-driven tracking with a spread detection (as MediaPipe Face Mesh and OpenFace follow
//! faces by their landmarks): each face's box on a frame is derived from its 68 landmarks of an
//! earlier frame, and the detector searches the frame's regions (the whole frame, and its tiles
//! when it is large) a share at a time, so that no frame carries a whole detection.
//!
//! Pure logic, no models: [`BoxCalibration`] relates a detector box to its landmarks,
//! [`looks_lost`] is the sanity check, [`Follower`] is the per-frame state (bounded: at most
//! `max_faces` faces).
//!
//! **Calibration.** A detector box and the landmarks found in its crop are measured in units of
//! the landmarks' *spread* (root-mean-square distance of the 68 points from their centroid): the
//! box's width and height, its centre's offset from the centroid, and the detector keypoints'
//! offsets. A box derived from later landmarks puts the same shape around their centroid at
//! their spread, so the landmark crop and the affect model's crop keep the detector's
//! convention (size and placement relative to the face) between detections. Rotation is not
//! modelled: a head rolled since the detection keeps an upright box until the next one.
//!
//! **Spread detection.** A *sweep* searches every region once, in shares of
//! `ceil(regions / redetect_every)` consecutive regions (at most `regions_per_frame`), one share
//! per frame. While faces are followed, a sweep's shares fall on the last frames of each
//! `redetect_every`: an untiled frame (one region) is searched every `redetect_every`-th frame;
//! a frame with more regions than `redetect_every × regions_per_frame` is swept a share on every
//! frame, in more frames (the Solvay photo's 71 regions: 4 at a time, a sweep of 18 frames,
//! instead of all 71 on one frame). With no face to follow, a share is searched on every frame. A detection overlapping a followed face (IoU above
//! [`MATCH_IOU`]) finds it again: the face starts over from the detection (its box, keypoints
//! and score, new landmarks and calibration); any other detection is a new face, while fewer
//! than `max_faces` are followed. When a sweep is complete, the faces no detection found during
//! it are no longer followed.
//!
//! **Groups.** The landmark net costs about as much per face as the affect model, so in a group
//! it would dominate the frame. At most `landmarks_per_frame` faces get new landmarks per frame:
//! this frame's detections first, then followed faces in turn (round robin); the others move on
//! from their last measurement (a detection or new landmarks) with their measured motion: the
//! landmarks' centroid's displacement per frame between their last two measurements, averaged
//! with the estimate before and capped at [`MAX_SPEED`] (28 faces with 4 per frame: each
//! measured about every seventh frame). With `regions_per_frame`, a group's frame thus costs a
//! bounded detector and landmark share, and grows with its faces through the affect model. A face refreshed in turn whose new box moved too far or changed
//! size too much looks lost: it is no longer followed, and the regions that hold its last box
//! whole are searched on the same frame (for an untiled frame: the whole frame).
//!
//! **Limits.** A face that enters the picture is found when its region's share is next searched
//! (at most a sweep later: `redetect_every` frames, or `ceil(regions / regions_per_frame)`). A face that vanishes is dropped when the
//! sweep that does not find it ends (at most two sweeps later), earlier when the sanity check
//! fires (on a blank frame it does at once: `edge-runtime/tests/faces.rs`). A scene cut the
//! source reports ends the tracks in the pipeline but does not restart the sweep here; the
//! sanity check or the sweep catches it. A new frame size forgets every face.

use std::ops::Range;

use affect_shared::preprocess::{FaceBox, Landmarks68};

use super::{Face, FaceError};
use crate::tracker::iou;

/// Default of [`super::FacesConfig::redetect_every`]: every region of the frame searched once
/// every 10 frames (3 times per second at 30 frames/s).
pub const DEFAULT_REDETECT_EVERY: u32 = 10;

/// Default of [`super::FacesConfig::landmarks_per_frame`]: new landmarks for at most 4 faces per
/// frame (a kiosk's few visitors on every frame, a group of 28 each about every seventh frame,
/// moving on with its measured motion in between).
pub const DEFAULT_LANDMARKS_PER_FRAME: u32 = 4;

/// Default of [`super::FacesConfig::regions_per_frame`]: the detector searches at most 4 regions
/// per frame (an untiled frame is one region; the Solvay photo's 71 then take a sweep of 18
/// frames instead of 10), so a group's frame carries a bounded detector cost.
pub const DEFAULT_REGIONS_PER_FRAME: u32 = 4;

/// When the detector searches which regions and which faces get new landmarks: the
/// `[face_models]` settings of [`super::FacesConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Every region searched once every this many frames (1: all on every frame; 0 is refused).
    pub redetect_every: u32,
    /// At most this many regions searched per frame (0: no limit): a frame with more regions
    /// than `redetect_every × regions_per_frame` takes a longer sweep.
    pub regions_per_frame: u32,
    /// New landmarks for at most this many faces per frame, detections included (0: every face).
    pub landmarks_per_frame: u32,
}

/// A detection whose box overlaps a followed face's box by more than this IoU is that face,
/// found again (faces of a group hardly overlap; a face moved for a few frames since its box was
/// last refreshed still does).
pub const MATCH_IOU: f32 = 0.3;

/// The fastest a followed face's box is predicted to move, in box widths per frame: an estimate
/// beyond it is scaled down to it (a face crossing a kiosk camera's view in a second moves
/// about a tenth of its width per frame at 30 frames/s).
pub const MAX_SPEED: f32 = 0.2;

/// A followed face is lost when its landmarks' spread changed by more than this factor (up or
/// down) from one frame to the next: landmarks that collapse or explode relative to the crop they
/// came from are the net fitting something that is not (or no longer) a face. Real faces change
/// scale by a few percent per frame.
pub const MAX_SCALE_CHANGE: f32 = 1.35;

/// A followed face is lost when the box derived from its landmarks moved by more than this
/// fraction of the previous box's width: the face was then partly outside the crop the landmarks
/// came from (the crop margin is 0.2 of the side on each side), so they are not to be trusted.
pub const MAX_SHIFT: f32 = 0.4;

/// A followed face is lost when less than this fraction of its derived box lies inside the frame
/// (it is leaving the picture).
pub const MIN_INSIDE: f32 = 0.5;

/// Centroid and spread (root-mean-square distance from the centroid) of 68 landmarks; `None`
/// when a coordinate is not finite or all points coincide.
pub fn centroid_and_spread(landmarks: &Landmarks68) -> Option<([f32; 2], f32)> {
    let points = &landmarks.0;
    if points.iter().flatten().any(|v| !v.is_finite()) {
        return None;
    }
    let n = points.len() as f32;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), p| (x + p[0], y + p[1]));
    let centre = [sx / n, sy / n];
    let squares: f32 = points
        .iter()
        .map(|p| (p[0] - centre[0]).powi(2) + (p[1] - centre[1]).powi(2))
        .sum();
    let spread = (squares / n).sqrt();
    (spread.is_finite() && spread > 1e-3).then_some((centre, spread))
}

/// How a detector box (and its keypoints) sits around its face's landmarks, in units of the
/// landmarks' spread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxCalibration {
    /// Box centre minus landmark centroid.
    offset: [f32; 2],
    /// Box width and height.
    size: [f32; 2],
    /// Detector keypoints minus landmark centroid.
    keypoints: [[f32; 2]; 6],
}

impl BoxCalibration {
    /// The calibration of a detection: its box and keypoints against the landmarks found in its
    /// crop; `None` for degenerate landmarks or box.
    pub fn new(bbox: &FaceBox, keypoints: &[[f32; 2]; 6], landmarks: &Landmarks68) -> Option<Self> {
        let (centre, spread) = centroid_and_spread(landmarks)?;
        if !(bbox.w > 0.0 && bbox.h > 0.0) {
            return None;
        }
        let relative = |p: [f32; 2]| [(p[0] - centre[0]) / spread, (p[1] - centre[1]) / spread];
        let calibration = Self {
            offset: relative([bbox.x + bbox.w / 2.0, bbox.y + bbox.h / 2.0]),
            size: [bbox.w / spread, bbox.h / spread],
            keypoints: keypoints.map(relative),
        };
        calibration
            .offset
            .iter()
            .chain(&calibration.size)
            .chain(calibration.keypoints.as_flattened())
            .all(|v| v.is_finite())
            .then_some(calibration)
    }

    /// The box and keypoints these landmarks would have had from the detector; `None` for
    /// degenerate landmarks.
    pub fn place(&self, landmarks: &Landmarks68) -> Option<(FaceBox, [[f32; 2]; 6])> {
        let (centre, spread) = centroid_and_spread(landmarks)?;
        let absolute = |p: [f32; 2]| [centre[0] + p[0] * spread, centre[1] + p[1] * spread];
        let [cx, cy] = absolute(self.offset);
        let (w, h) = (self.size[0] * spread, self.size[1] * spread);
        let bbox = FaceBox {
            x: cx - w / 2.0,
            y: cy - h / 2.0,
            w,
            h,
        };
        Some((bbox, self.keypoints.map(absolute)))
    }
}

/// The fraction of `bbox`'s area inside a `width × height` frame.
fn inside_fraction(bbox: &FaceBox, width: u32, height: u32) -> f32 {
    let ix = (bbox.x + bbox.w).min(width as f32) - bbox.x.max(0.0);
    let iy = (bbox.y + bbox.h).min(height as f32) - bbox.y.max(0.0);
    if ix <= 0.0 || iy <= 0.0 || bbox.w <= 0.0 || bbox.h <= 0.0 {
        return 0.0;
    }
    ix * iy / (bbox.w * bbox.h)
}

/// The sanity check of a followed face: `derived` (the box from this frame's landmarks) against
/// `previous` (the box whose crop they came from) in a `width × height` frame. Lost when the size
/// changed by more than [`MAX_SCALE_CHANGE`] (the landmark spread collapsed or exploded relative
/// to the crop), the centre moved by more than [`MAX_SHIFT`] of the previous width, or less than
/// [`MIN_INSIDE`] of the box is inside the frame.
pub fn looks_lost(previous: &FaceBox, derived: &FaceBox, width: u32, height: u32) -> bool {
    let scale = derived.w / previous.w;
    let shift = ((derived.x + derived.w / 2.0) - (previous.x + previous.w / 2.0))
        .hypot((derived.y + derived.h / 2.0) - (previous.y + previous.h / 2.0))
        / previous.w;
    !(scale.is_finite()
        && (1.0 / MAX_SCALE_CHANGE..=MAX_SCALE_CHANGE).contains(&scale)
        && shift <= MAX_SHIFT
        && inside_fraction(derived, width, height) >= MIN_INSIDE)
}

/// One face followed since it was detected.
#[derive(Debug, Clone)]
struct Followed {
    calibration: BoxCalibration,
    /// The face on this frame (with its last detection's score): as last measured (by a
    /// detection or new landmarks), moved along `velocity` since; its box is where its next
    /// landmark crop is taken.
    face: Face,
    /// Found by a detection since the current sweep began.
    seen: bool,
    /// Motion of the face in pixels per frame: the last two measurements' displacement
    /// per frame, averaged with the previous estimate (0 until the face is measured twice).
    velocity: [f32; 2],
    /// The landmarks' centroid when last measured (a detection's box and a box derived from
    /// landmarks place the face differently; the landmark net measures both the same way).
    measured: [f32; 2],
    /// Frames since the last measurement.
    since: u32,
    /// Whether `velocity` holds an estimate yet.
    moving: bool,
}

impl Followed {
    /// A face just measured as `face` (a detection, or new landmarks) with its `calibration`;
    /// `before` is the same face as followed until now, whose motion the measurement updates.
    fn measured(calibration: BoxCalibration, face: Face, before: Option<&Followed>) -> Self {
        let centre = face
            .landmarks
            .as_ref()
            .and_then(centroid_and_spread)
            .map_or_else(|| box_centre(&face.bbox), |(centre, _)| centre);
        let (mut velocity, mut moving, mut seen) = ([0.0; 2], false, true);
        if let Some(before) = before {
            seen = before.seen;
            (velocity, moving) = (before.velocity, before.moving);
            if before.since > 0 {
                let step = before.since as f32;
                let observed = [
                    (centre[0] - before.measured[0]) / step,
                    (centre[1] - before.measured[1]) / step,
                ];
                velocity = match moving {
                    true => [
                        (velocity[0] + observed[0]) / 2.0,
                        (velocity[1] + observed[1]) / 2.0,
                    ],
                    false => observed,
                };
                moving = true;
            }
            // A speed beyond MAX_SPEED box widths per frame is a measurement gone wrong.
            let limit = MAX_SPEED * face.bbox.w;
            let speed = velocity[0].hypot(velocity[1]);
            if speed > limit {
                velocity = velocity.map(|v| v * limit / speed);
            }
        }
        Self {
            calibration,
            face,
            seen,
            velocity,
            measured: centre,
            since: 0,
            moving,
        }
    }

    /// Moves the face one frame along its velocity: box, keypoints and landmarks.
    fn advance(&mut self) {
        let [dx, dy] = self.velocity;
        self.since += 1;
        let face = &mut self.face;
        face.bbox.x += dx;
        face.bbox.y += dy;
        let points = face.keypoints.iter_mut();
        let landmarks = face.landmarks.iter_mut().flat_map(|l| l.0.iter_mut());
        for p in points.chain(landmarks) {
            p[0] += dx;
            p[1] += dy;
        }
    }
}

/// Centre of a box.
fn box_centre(b: &FaceBox) -> [f32; 2] {
    [b.x + b.w / 2.0, b.y + b.h / 2.0]
}

/// Why a box is in a frame's landmark batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// A detection of followed face `i`: the face starts again from the detection.
    Matched(usize),
    /// A detection of a face not followed yet.
    New,
    /// Followed face `i`, due for new landmarks in turn.
    Due(usize),
}

/// Per-frame state of landmark-driven tracking with a spread detection: which regions the
/// detector searches on a frame, which boxes the landmark net looks at, which faces are followed.
/// Bounded: at most `max_faces` faces, one landmark job per face or detection of a frame.
#[derive(Debug, Clone)]
pub struct Follower {
    schedule: Schedule,
    /// Most faces followed at once (the detector's `max_faces`).
    max_faces: usize,
    faces: Vec<Followed>,
    /// The first face to refresh in turn on the next frame (round robin).
    next: usize,
    /// Size of the frame the faces were found in.
    frame_size: (u32, u32),
    /// Regions of a frame of that size (the detector's whole frame and tiles).
    regions: usize,
    /// The next share of the regions to search in the current sweep.
    next_share: usize,
    /// Frames since the current sweep began.
    step: u32,
    /// Whether this frame also searches the whole frame, besides its share ([`Self::begin`]).
    whole_frame: bool,
    /// This frame's landmark batch: why each box is in it, and the face it belongs to.
    jobs: Vec<(Job, Face)>,
}

impl Follower {
    /// A follower that searches the frame's regions and refreshes landmarks on `schedule`,
    /// following at most `max_faces` faces; a `redetect_every` of 0 is refused.
    pub fn new(schedule: Schedule, max_faces: usize) -> Result<Self, FaceError> {
        if schedule.redetect_every == 0 {
            return Err(FaceError::Config(
                "redetect_every must be at least 1 (1 = detect on every frame)".into(),
            ));
        }
        Ok(Self {
            schedule,
            max_faces,
            faces: Vec::new(),
            next: 0,
            frame_size: (0, 0),
            regions: 0,
            next_share: 0,
            step: 0,
            whole_frame: false,
            jobs: Vec::new(),
        })
    }

    /// Regions per share and shares per sweep: the regions spread over `redetect_every` frames,
    /// at most `regions_per_frame` per share.
    fn shares(&self) -> (usize, usize) {
        let Schedule {
            redetect_every,
            regions_per_frame,
            ..
        } = self.schedule;
        let mut per_share = self.regions.div_ceil(redetect_every as usize).max(1);
        if regions_per_frame > 0 {
            per_share = per_share.min(regions_per_frame as usize);
        }
        (per_share, self.regions.div_ceil(per_share))
    }

    /// Starts a frame of `width × height` whose detector regions (whole frame, then tiles) are
    /// `regions` many, and returns the range of them the detector searches on it (empty: none).
    /// A sweep searches every region once, a share per frame; with faces to follow its shares
    /// fall on the last frames of each `redetect_every` (an untiled frame: every
    /// `redetect_every`-th frame), with none on every frame. A sweep longer than
    /// `redetect_every` frames (at most `regions_per_frame` per share) also searches the whole
    /// frame every `redetect_every` frames ([`Self::whole_frame`]). A new frame size forgets
    /// every face.
    pub fn begin(&mut self, width: u32, height: u32, regions: usize) -> Range<usize> {
        self.whole_frame = false;
        if self.frame_size != (width, height) || self.regions != regions {
            self.faces.clear();
            self.frame_size = (width, height);
            self.regions = regions;
            self.next_share = 0;
            self.step = 0;
        }
        for face in &mut self.faces {
            face.advance();
        }
        let (per_share, shares) = self.shares();
        if self.next_share >= shares {
            // A frame that failed before its end: start the sweep again.
            self.next_share = 0;
            self.step = 0;
        }
        self.step += 1;
        let left = shares - self.next_share;
        if !self.faces.is_empty()
            && (self.step as usize) + left <= self.schedule.redetect_every as usize
        {
            return 0..0;
        }
        let start = self.next_share * per_share;
        self.next_share += 1;
        // A capped sweep takes more than `redetect_every` frames: the whole frame (region 0,
        // where a face close to the camera is found) is still searched that often.
        let every = self.schedule.redetect_every;
        self.whole_frame =
            shares > every as usize && start > 0 && (self.step - 1).is_multiple_of(every);
        start..(start + per_share).min(regions)
    }

    /// Whether the detector also searches the whole frame (region 0) on this frame, besides the
    /// share [`Self::begin`] returned: on every `redetect_every`-th frame of a sweep longer than
    /// `redetect_every` frames, so that a close face is found as soon as on an untiled frame.
    pub fn whole_frame(&self) -> bool {
        self.whole_frame
    }

    /// Takes this frame's detections (best first, without landmarks) and returns the boxes the
    /// landmark net runs on: each detection (the followed face it overlaps is found again;
    /// else a new face, while fewer than `max_faces` are followed), then, with `in_turn`, the
    /// followed faces due in turn, up to `landmarks_per_frame` boxes in all. Pass the landmarks
    /// of these boxes to [`Self::landmarks`].
    pub fn landmark_boxes(&mut self, detections: Vec<Face>, in_turn: bool) -> Vec<FaceBox> {
        self.jobs.clear();
        let mut new = 0;
        for detection in detections {
            let taken = |i: usize| self.jobs.iter().any(|(j, _)| *j == Job::Matched(i));
            let matched = self
                .faces
                .iter()
                .enumerate()
                .filter(|&(i, f)| !taken(i) && iou(&f.face.bbox, &detection.bbox) > MATCH_IOU)
                .max_by(|a, b| {
                    iou(&a.1.face.bbox, &detection.bbox)
                        .total_cmp(&iou(&b.1.face.bbox, &detection.bbox))
                })
                .map(|(i, _)| i);
            match matched {
                Some(i) => self.jobs.push((Job::Matched(i), detection)),
                None if self.faces.len() + new < self.max_faces => {
                    new += 1;
                    self.jobs.push((Job::New, detection));
                }
                None => {}
            }
        }
        let n = self.faces.len();
        if in_turn && n > 0 {
            let budget = match self.schedule.landmarks_per_frame {
                0 => n,
                k => (k as usize).saturating_sub(self.jobs.len()),
            };
            let mut due = 0;
            let mut last = None;
            for i in (0..n).map(|k| (self.next + k) % n) {
                if due == budget {
                    break;
                }
                if !self.jobs.iter().any(|(j, _)| *j == Job::Matched(i)) {
                    self.jobs.push((Job::Due(i), self.faces[i].face.clone()));
                    due += 1;
                    last = Some(i);
                }
            }
            if let Some(i) = last {
                self.next = (i + 1) % n;
            }
        }
        self.jobs.iter().map(|(_, face)| face.bbox).collect()
    }

    /// Applies the landmarks of [`Self::landmark_boxes`]'s boxes (same order): a detection
    /// becomes a followed face calibrated by its landmarks (one with degenerate landmarks is
    /// not followed); a face due in turn gets the box derived from its landmarks, unless it
    /// looks lost ([`looks_lost`]): then it is no longer followed and its last box is returned,
    /// for the caller to search the regions around it at once. A count that does not match is
    /// an error.
    pub fn landmarks(&mut self, landmarks: Vec<Landmarks68>) -> Result<Vec<FaceBox>, FaceError> {
        if landmarks.len() != self.jobs.len() {
            let expected = self.jobs.len();
            self.jobs.clear();
            return Err(FaceError::Inference(format!(
                "{} landmark sets for {expected} faces",
                landmarks.len()
            )));
        }
        let (width, height) = self.frame_size;
        let mut dropped = vec![false; self.faces.len()];
        let mut lost = Vec::new();
        let mut new = Vec::new();
        for ((job, face), landmarks) in self.jobs.drain(..).zip(landmarks) {
            match job {
                Job::Matched(_) | Job::New => {
                    let Some(calibration) =
                        BoxCalibration::new(&face.bbox, &face.keypoints, &landmarks)
                    else {
                        continue;
                    };
                    let face = Face {
                        landmarks: Some(landmarks),
                        ..face
                    };
                    match job {
                        Job::Matched(i) => {
                            let found = Followed::measured(calibration, face, Some(&self.faces[i]));
                            self.faces[i] = Followed {
                                seen: true,
                                ..found
                            };
                        }
                        _ => new.push(Followed::measured(calibration, face, None)),
                    }
                }
                Job::Due(i) => {
                    let followed = &mut self.faces[i];
                    match followed.calibration.place(&landmarks) {
                        Some((bbox, keypoints))
                            if !looks_lost(&followed.face.bbox, &bbox, width, height) =>
                        {
                            let face = Face {
                                bbox,
                                score: followed.face.score,
                                keypoints,
                                landmarks: Some(landmarks),
                            };
                            *followed =
                                Followed::measured(followed.calibration, face, Some(followed));
                        }
                        _ => {
                            dropped[i] = true;
                            lost.push(followed.face.bbox);
                        }
                    }
                }
            }
        }
        self.drop_where(&dropped);
        self.faces.extend(new);
        Ok(lost)
    }

    /// Ends the frame. When the sweep is complete (its last share searched, or `searched_all`:
    /// every region was searched on this frame), the faces no detection found during it are
    /// no longer followed, and a new sweep begins.
    pub fn end(&mut self, searched_all: bool) {
        let (_, shares) = self.shares();
        if !(searched_all || self.next_share >= shares) {
            return;
        }
        let unseen: Vec<bool> = self.faces.iter().map(|f| !f.seen).collect();
        self.drop_where(&unseen);
        for face in &mut self.faces {
            face.seen = false;
        }
        self.next_share = 0;
        self.step = 0;
    }

    /// The followed faces, best first (by their last detection's score).
    pub fn faces(&self) -> Vec<Face> {
        let mut faces: Vec<Face> = self.faces.iter().map(|f| f.face.clone()).collect();
        faces.sort_by(|a, b| b.score.total_cmp(&a.score));
        faces
    }

    /// Stops following the faces marked in `drop` (one flag per face), keeping the turn on the
    /// same next face.
    fn drop_where(&mut self, drop: &[bool]) {
        let before_next = drop.iter().take(self.next).filter(|&&d| d).count();
        let mut flags = drop.iter();
        self.faces
            .retain(|_| !flags.next().copied().unwrap_or(false));
        self.next = (self.next - before_next)
            .checked_rem(self.faces.len())
            .unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use affect_shared::contract::LANDMARK_POINTS;

    /// A schedule without a limit on the regions per frame.
    fn schedule(redetect_every: u32, landmarks_per_frame: u32) -> Schedule {
        Schedule {
            redetect_every,
            regions_per_frame: 0,
            landmarks_per_frame,
        }
    }

    /// The rest of a frame whose `share` [`Follower::begin`] returned, on a picture with one
    /// face, in the first region: detected when that region is searched, its landmarks found
    /// wherever the landmark net looks.
    fn one_face_frame(f: &mut Follower, share: &Range<usize>) {
        let detections = match share.contains(&0) {
            true => vec![face(BOX, landmarks([100.0, 110.0], 20.0))],
            false => vec![],
        };
        let found = f
            .landmark_boxes(detections, true)
            .iter()
            .map(|_| landmarks([100.0, 110.0], 20.0))
            .collect();
        f.landmarks(found).unwrap();
        f.end(false);
    }

    /// A face-like set of landmarks: points on an ellipse of radii `r` × 1.2 `r` around
    /// `centre`, the first one stretched so the shape is not symmetric.
    fn landmarks(centre: [f32; 2], r: f32) -> Landmarks68 {
        let mut points = [[0.0; 2]; LANDMARK_POINTS];
        for (i, p) in points.iter_mut().enumerate() {
            let a = i as f32 / LANDMARK_POINTS as f32 * std::f32::consts::TAU;
            *p = [centre[0] + r * a.cos(), centre[1] + 1.2 * r * a.sin()];
        }
        points[0][0] += r * 0.5;
        Landmarks68(points)
    }

    fn face(bbox: FaceBox, lm: Landmarks68) -> Face {
        Face {
            bbox,
            score: 0.9,
            keypoints: [[bbox.x + 10.0, bbox.y + 20.0]; 6],
            landmarks: Some(lm),
        }
    }

    const BOX: FaceBox = FaceBox {
        x: 80.0,
        y: 95.0,
        w: 50.0,
        h: 50.0,
    };

    fn close(a: &FaceBox, b: &FaceBox) -> bool {
        [a.x - b.x, a.y - b.y, a.w - b.w, a.h - b.h]
            .iter()
            .all(|d| d.abs() < 1e-3)
    }

    #[test]
    fn the_box_follows_the_landmarks_in_the_detectors_convention() {
        let lm = landmarks([100.0, 110.0], 20.0);
        let calibration = BoxCalibration::new(&BOX, &[[90.0, 115.0]; 6], &lm).unwrap();
        // The landmarks of the detection give back the detection.
        let (same, keypoints) = calibration.place(&lm).unwrap();
        assert!(close(&same, &BOX), "{same:?}");
        assert!((keypoints[0][0] - 90.0).abs() < 1e-3 && (keypoints[0][1] - 115.0).abs() < 1e-3);
        // Moved by (7, -3) and 10 % larger: the box moves and grows with them, keeping its
        // offset from the face (the centre sits 5 px right of the centroid at spread s; now 5.5).
        let (moved, keypoints) = calibration.place(&landmarks([107.0, 107.0], 22.0)).unwrap();
        let want = FaceBox {
            x: 107.0 + (105.0 - 100.0) * 1.1 - 27.5,
            y: 107.0 + (120.0 - 110.0) * 1.1 - 27.5,
            w: 55.0,
            h: 55.0,
        };
        assert!(close(&moved, &want), "{moved:?} vs {want:?}");
        assert!((keypoints[0][0] - (107.0 - 11.0)).abs() < 1e-3);
    }

    #[test]
    fn degenerate_landmarks_are_not_calibrated_or_placed() {
        let point = Landmarks68([[5.0, 5.0]; LANDMARK_POINTS]);
        assert!(centroid_and_spread(&point).is_none());
        let mut nan = landmarks([100.0, 110.0], 20.0);
        nan.0[3][1] = f32::NAN;
        assert!(centroid_and_spread(&nan).is_none());
        assert!(BoxCalibration::new(&BOX, &[[0.0; 2]; 6], &point).is_none());
        let calibration =
            BoxCalibration::new(&BOX, &[[0.0; 2]; 6], &landmarks([100.0, 110.0], 20.0)).unwrap();
        assert!(calibration.place(&nan).is_none());
        let empty = FaceBox { w: 0.0, ..BOX };
        assert!(BoxCalibration::new(&empty, &[[0.0; 2]; 6], &nan).is_none());
    }

    #[test]
    fn the_sanity_check_catches_collapse_explosion_jumps_and_leaving() {
        let moved = |dx: f32, scale: f32| FaceBox {
            x: BOX.x + dx,
            w: BOX.w * scale,
            h: BOX.h * scale,
            ..BOX
        };
        assert!(!looks_lost(&BOX, &moved(0.0, 1.0), 640, 480));
        assert!(
            !looks_lost(&BOX, &moved(6.0, 1.1), 640, 480),
            "ordinary motion"
        );
        assert!(looks_lost(&BOX, &moved(0.0, 0.5), 640, 480), "collapsed");
        assert!(looks_lost(&BOX, &moved(0.0, 2.0), 640, 480), "exploded");
        assert!(
            looks_lost(&BOX, &moved(25.0, 1.0), 640, 480),
            "jumped half a face"
        );
        assert!(looks_lost(&BOX, &moved(0.0, f32::NAN), 640, 480));
        // The same box (x 80 to 130) at the right edge of a narrow frame.
        assert!(
            looks_lost(&BOX, &moved(0.0, 1.0), 100, 480),
            "40 % inside: leaving"
        );
        assert!(!looks_lost(&BOX, &moved(0.0, 1.0), 110, 480), "60 % inside");
    }

    #[test]
    fn zero_is_refused_and_one_searches_every_frame() {
        let text = Follower::new(schedule(0, 0), 8).unwrap_err().to_string();
        assert!(text.contains("redetect_every"), "{text}");
        let mut every = Follower::new(schedule(1, 0), 8).unwrap();
        for _ in 0..3 {
            assert_eq!(every.begin(640, 480, 5), 0..5);
            let boxes =
                every.landmark_boxes(vec![face(BOX, landmarks([100.0, 110.0], 20.0))], true);
            assert_eq!(boxes.len(), 1, "the detection, found again");
            every
                .landmarks(vec![landmarks([100.0, 110.0], 20.0)])
                .unwrap();
            every.end(true);
            assert_eq!(every.faces().len(), 1);
        }
    }

    /// Runs one frame on `f` with the face of `centre` detected when the frame is searched;
    /// returns whether it was.
    fn frame(f: &mut Follower, regions: usize, centre: [f32; 2]) -> bool {
        let search = f.begin(640, 480, regions);
        let searched = !search.is_empty();
        let detections = if searched {
            let bbox = FaceBox {
                x: centre[0] - 20.0,
                ..BOX
            };
            vec![face(bbox, landmarks(centre, 20.0))]
        } else {
            vec![]
        };
        let boxes = f.landmark_boxes(detections, true);
        let found = boxes.iter().map(|_| landmarks(centre, 20.0)).collect();
        assert!(f.landmarks(found).unwrap().is_empty(), "nothing lost");
        f.end(search.len() == regions);
        searched
    }

    #[test]
    fn an_untiled_frame_is_searched_every_nth_frame_and_while_nothing_is_followed() {
        let mut f = Follower::new(schedule(3, 0), 8).unwrap();
        assert_eq!(f.begin(640, 480, 1), 0..1, "nothing to follow yet");
        assert!(f.landmark_boxes(vec![], true).is_empty());
        f.landmarks(vec![]).unwrap();
        f.end(true);
        assert_eq!(f.begin(640, 480, 1), 0..1, "no faces: search again");
        f.landmark_boxes(vec![], true);
        f.landmarks(vec![]).unwrap();
        f.end(true);
        let mut centre = [100.0, 110.0];
        let searched: Vec<bool> = (0..10)
            .map(|_| {
                centre[0] += 2.0;
                frame(&mut f, 1, centre)
            })
            .collect();
        // Frames 0, 3, 6, 9 of 10; the face followed in between.
        let want: Vec<bool> = (0..10).map(|k| k % 3 == 0).collect();
        assert_eq!(searched, want);
        let faces = f.faces();
        assert_eq!(faces.len(), 1);
        assert!((faces[0].bbox.x - (centre[0] + 5.0 - 25.0)).abs() < 1e-3);
        assert_eq!(
            f.begin(320, 240, 1),
            0..1,
            "a new frame size is searched at once"
        );
        assert!(f.faces().is_empty(), "and its faces forgotten");
    }

    #[test]
    fn a_tiled_frame_is_searched_a_share_per_frame_every_region_once_per_sweep() {
        // 71 regions (the Solvay photo's) every 10 frames: 9 shares of 8 regions.
        let mut f = Follower::new(schedule(10, 8), 32).unwrap();
        let mut searched = vec![0u32; 71];
        let mut per_frame = Vec::new();
        for k in 0..30 {
            let share = f.begin(640, 480, 71);
            per_frame.push(share.len());
            searched[share.clone()].iter_mut().for_each(|n| *n += 1);
            // One face, in the first share's regions.
            one_face_frame(&mut f, &share);
            assert_eq!(f.faces().len(), 1, "frame {k}");
        }
        // The first sweep starts at once (nothing followed); then each sweep takes the last 9
        // frames of 10.
        assert_eq!(per_frame[..10], [8, 0, 8, 8, 8, 8, 8, 8, 8, 7]);
        assert_eq!(per_frame[10..20], [0, 8, 8, 8, 8, 8, 8, 8, 8, 7]);
        assert!(searched.iter().all(|&n| n == 3), "{searched:?}");
    }

    #[test]
    fn regions_per_frame_bounds_a_share_and_lengthens_the_sweep() {
        // 71 regions every 10 frames, at most 4 per frame: sweeps of 18 frames (17 shares of 4,
        // then 3), one after the other while a face is followed, the whole frame searched every
        // 10 frames besides; an untiled frame is unchanged.
        let capped = Schedule {
            regions_per_frame: 4,
            ..schedule(10, 8)
        };
        let mut f = Follower::new(capped, 32).unwrap();
        let mut searched = vec![0u32; 71];
        let (mut per_frame, mut whole) = (Vec::new(), Vec::new());
        for k in 0..36 {
            let share = f.begin(640, 480, 71);
            per_frame.push(share.len());
            searched[share.clone()].iter_mut().for_each(|n| *n += 1);
            if f.whole_frame() {
                searched[0] += 1;
                whole.push(k);
            }
            one_face_frame(&mut f, &share);
            assert_eq!(f.faces().len(), 1);
        }
        let sweep: Vec<usize> = [4; 17].into_iter().chain([3]).collect();
        assert_eq!(per_frame[..18], sweep[..]);
        assert_eq!(per_frame[18..], sweep[..]);
        // The whole frame (region 0) also on the 11th frame of each sweep: every 10 frames.
        assert_eq!(whole, [10, 28]);
        assert_eq!(searched[0], 4);
        assert!(searched[1..].iter().all(|&n| n == 2), "{searched:?}");

        let mut untiled = Follower::new(capped, 32).unwrap();
        let shares: Vec<usize> = (0..20)
            .map(|_| {
                let share = untiled.begin(640, 480, 1);
                one_face_frame(&mut untiled, &share);
                share.len()
            })
            .collect();
        let once_in_ten: Vec<usize> = (0..20).map(|k| usize::from(k % 10 == 0)).collect();
        assert_eq!(shares, once_in_ten, "the whole frame every 10th frame");
    }

    #[test]
    fn detections_re_anchor_their_faces_add_new_ones_and_a_sweep_drops_the_unseen() {
        let mut f = Follower::new(schedule(4, 0), 3).unwrap();
        let at = |x: f32| FaceBox { x, ..BOX };
        let centre = |x: f32| [x + 20.0, 110.0];
        let detected = |x: f32, score: f32| Face {
            score,
            ..face(at(x), landmarks(centre(x), 20.0))
        };
        // Every face on every frame (landmarks_per_frame 0) on a frame without detections.
        let in_turn = |f: &mut Follower| {
            let boxes = f.landmark_boxes(vec![], true);
            assert_eq!(boxes, vec![at(80.0), at(300.0)], "every face in turn");
            f.landmarks(vec![
                landmarks(centre(80.0), 20.0),
                landmarks(centre(300.0), 20.0),
            ])
            .unwrap();
            f.end(false);
        };
        // 2 regions every 4 frames: a share of 1 region. The first (nothing followed yet) finds
        // two faces; the second comes on the last frame of 4 and finds nothing more.
        assert_eq!(f.begin(640, 480, 2), 0..1);
        let boxes = f.landmark_boxes(vec![detected(80.0, 0.9), detected(300.0, 0.8)], true);
        assert_eq!(boxes, vec![at(80.0), at(300.0)]);
        f.landmarks(vec![
            landmarks(centre(80.0), 20.0),
            landmarks(centre(300.0), 20.0),
        ])
        .unwrap();
        f.end(false);
        for share in [0..0, 0..0, 1..2, 0..0, 0..0] {
            assert_eq!(f.begin(640, 480, 2), share);
            in_turn(&mut f);
        }
        // The next sweep's first share: the first face found 3 px further (found again: same
        // face, the detection's box and score), and two new faces of which only one fits under
        // max_faces 3; the second face is refreshed in turn.
        assert_eq!(f.begin(640, 480, 2), 0..1);
        let boxes = f.landmark_boxes(
            vec![
                detected(83.0, 0.95),
                detected(500.0, 0.7),
                detected(420.0, 0.6),
            ],
            true,
        );
        assert_eq!(
            boxes,
            vec![at(83.0), at(500.0), at(300.0)],
            "found again, new, in turn"
        );
        f.landmarks(vec![
            landmarks(centre(83.0), 20.0),
            landmarks(centre(500.0), 20.0),
            landmarks(centre(300.0), 20.0),
        ])
        .unwrap();
        f.end(false);
        let faces = f.faces();
        let xs: Vec<f32> = faces.iter().map(|f| f.bbox.x).collect();
        assert_eq!(xs, vec![83.0, 300.0, 500.0], "best first, at most 3");
        assert_eq!(faces[0].score, 0.95);
        // The last share (region 1) finds only the new face: the sweep is complete, and the
        // face at 300, found by no detection during it, is dropped.
        assert_eq!(f.begin(640, 480, 2), 1..2);
        let boxes = f.landmark_boxes(vec![detected(501.0, 0.7)], true);
        // The face found 3 px further on the last frame is predicted to move on (1.5 px per
        // frame: 3 px, averaged with its still estimate before); its landmarks find it where
        // it stopped.
        assert_eq!(
            boxes,
            vec![at(501.0), at(84.5), at(300.0)],
            "the detection, then in turn"
        );
        f.landmarks(vec![
            landmarks(centre(501.0), 20.0),
            landmarks(centre(83.0), 20.0),
            landmarks(centre(300.0), 20.0),
        ])
        .unwrap();
        f.end(false);
        let xs: Vec<f32> = f.faces().iter().map(|f| f.bbox.x).collect();
        assert_eq!(xs, vec![83.0, 501.0]);
    }

    #[test]
    fn a_group_gets_new_landmarks_in_turn_and_the_others_move_on_with_their_motion() {
        let mut f = Follower::new(schedule(100, 2), 8).unwrap();
        // Three faces side by side, each moving 2 px right per frame.
        let centre = |i: usize, frame: u32| [100.0 + 150.0 * i as f32 + 2.0 * frame as f32, 110.0];
        let box_x = |i: usize, frame: u32| centre(i, frame)[0] + 5.0 - 25.0;
        let faces: Vec<Face> = (0..3)
            .map(|i| {
                let bbox = FaceBox {
                    x: box_x(i, 0),
                    ..BOX
                };
                face(bbox, landmarks(centre(i, 0), 20.0))
            })
            .collect();
        assert_eq!(f.begin(640, 480, 1), 0..1);
        assert_eq!(f.landmark_boxes(faces, true).len(), 3, "the detections");
        f.landmarks((0..3).map(|i| landmarks(centre(i, 0), 20.0)).collect())
            .unwrap();
        f.end(true);
        // The frame each face was last refreshed on. A face refreshed once since the detection
        // has measured its motion (2 px per frame) and is predicted on every frame after; one
        // not yet refreshed holds its detection's box.
        let mut last = [0u32; 3];
        let at = |last: u32, frame: u32| if last > 0 { frame } else { 0 };
        let close = |a: &Landmarks68, b: &Landmarks68| {
            a.0.iter()
                .zip(&b.0)
                .all(|(p, q)| (p[0] - q[0]).abs() < 1e-3 && (p[1] - q[1]).abs() < 1e-3)
        };
        for (frame, due) in (1..=6).zip([[0, 1], [2, 0], [1, 2], [0, 1], [2, 0], [1, 2]]) {
            assert!(f.begin(640, 480, 1).is_empty(), "frame {frame}");
            let boxes = f.landmark_boxes(vec![], true);
            assert_eq!(boxes.len(), 2, "frame {frame}");
            for (b, &i) in boxes.iter().zip(&due) {
                assert!(
                    (b.x - box_x(i, at(last[i], frame))).abs() < 1e-3,
                    "frame {frame} face {i}: crop at {}",
                    b.x
                );
            }
            let lost = f
                .landmarks(
                    due.iter()
                        .map(|&i| landmarks(centre(i, frame), 20.0))
                        .collect(),
                )
                .unwrap();
            assert!(lost.is_empty());
            f.end(false);
            for &i in &due {
                last[i] = frame;
            }
            let found = f.faces();
            assert_eq!(found.len(), 3, "every face on every frame");
            for (i, face) in found.iter().enumerate() {
                let k = at(last[i], frame);
                assert!(
                    (face.bbox.x - box_x(i, k)).abs() < 1e-3,
                    "frame {frame} face {i}: {:?}",
                    face.bbox
                );
                let want = landmarks(centre(i, k), 20.0);
                assert!(close(face.landmarks.as_ref().unwrap(), &want));
                assert_eq!(face.score, 0.9);
            }
        }
        // Landmarks for every face instead of the two due are refused.
        f.begin(640, 480, 1);
        f.landmark_boxes(vec![], true);
        let all = (0..3).map(|i| landmarks(centre(i, 7), 20.0)).collect();
        let text = f.landmarks(all).unwrap_err().to_string();
        assert!(text.contains("3 landmark sets for 2 faces"), "{text}");
    }

    #[test]
    fn a_predicted_motion_is_capped_at_max_speed() {
        let mut f = Follower::new(schedule(1, 0), 8).unwrap();
        let at = |x: f32| face(FaceBox { x, ..BOX }, landmarks([x + 20.0, 110.0], 20.0));
        for x in [80.0, 95.0] {
            f.begin(640, 480, 1);
            let boxes = f.landmark_boxes(vec![at(x)], true);
            assert_eq!(boxes.len(), 1);
            f.landmarks(vec![landmarks([x + 20.0, 110.0], 20.0)])
                .unwrap();
            f.end(true);
        }
        // 15 px in a frame is more than MAX_SPEED (0.2) of the 50 px box: 10 px per frame.
        f.begin(640, 480, 1);
        f.landmark_boxes(vec![], false);
        f.landmarks(vec![]).unwrap();
        assert_eq!(f.faces()[0].bbox.x, 95.0 + MAX_SPEED * BOX.w);
    }

    #[test]
    fn a_lost_face_is_dropped_and_returned_and_one_without_landmarks_is_not_followed() {
        let mut f = Follower::new(schedule(10, 0), 8).unwrap();
        let second = FaceBox { x: 300.0, ..BOX };
        let two = vec![
            face(BOX, landmarks([100.0, 110.0], 20.0)),
            face(second, landmarks([320.0, 110.0], 20.0)),
        ];
        f.begin(640, 480, 1);
        f.landmark_boxes(two.clone(), true);
        f.landmarks(vec![
            landmarks([100.0, 110.0], 20.0),
            landmarks([320.0, 110.0], 20.0),
        ])
        .unwrap();
        f.end(true);
        // The second face's landmarks collapse: it is dropped, its box returned to be searched
        // around; the first is still followed.
        assert!(f.begin(640, 480, 1).is_empty());
        assert_eq!(f.landmark_boxes(vec![], true).len(), 2);
        let lost = f
            .landmarks(vec![
                landmarks([100.0, 110.0], 20.0),
                landmarks([320.0, 110.0], 8.0),
            ])
            .unwrap();
        assert_eq!(lost, vec![second]);
        f.end(false);
        assert_eq!(f.faces().len(), 1);
        assert_eq!(f.faces()[0].bbox, BOX);
        // A detection whose landmarks are degenerate is not followed.
        f.begin(640, 480, 1);
        f.landmark_boxes(vec![face(second, landmarks([320.0, 110.0], 20.0))], false);
        let point = Landmarks68([[5.0, 5.0]; LANDMARK_POINTS]);
        assert!(f.landmarks(vec![point]).unwrap().is_empty());
        assert_eq!(f.faces().len(), 1);
    }
}
