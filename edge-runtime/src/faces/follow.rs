//! Landmark-driven tracking (as MediaPipe Face Mesh and OpenFace do it): after a full detection,
//! each face's box on the next frame is derived from its 68 landmarks of the previous frame, and
//! only the landmark net runs; the detector runs again every `redetect_every` frames, at once
//! when there are no faces to follow, and when a followed face looks lost.
//!
//! Pure logic, no models: [`BoxCalibration`] relates a detector box to its landmarks,
//! [`looks_lost`] is the sanity check, [`Follower`] is the per-frame state (bounded: one entry
//! per face of the last detection).
//!
//! **Calibration.** A detector box and the landmarks found in its crop are measured in units of
//! the landmarks' *spread* (root-mean-square distance of the 68 points from their centroid): the
//! box's width and height, its centre's offset from the centroid, and the detector keypoints'
//! offsets. A box derived from later landmarks puts the same shape around their centroid at
//! their spread, so the landmark crop and the affect model's crop keep the detector's
//! convention (size and placement relative to the face) between detections. Rotation is not
//! modelled: a head rolled since the detection keeps an upright box until the next one.
//!
//! **Groups.** The landmark net costs about as much per face as the affect model, so in a group
//! it would dominate the frame. Between detections at most `landmarks_per_frame` faces get new
//! landmarks per frame, in turn (round robin); the others keep their box and landmarks of the
//! frame they were last refreshed on. One face (or up to that many) is refreshed on every frame
//! as before; 29 faces with 8 per frame each every fourth frame. A held face that moved too far
//! by its next refresh looks lost, and the frame is detected.
//!
//! **Limits.** A face that enters the picture between detections is found on the next one (at
//! most `redetect_every - 1` frames late). A face that vanishes is dropped at the latest on the
//! next detection, earlier when the sanity check fires (on a blank frame it does at once:
//! `edge-runtime/tests/faces.rs`). A scene cut the source reports ends the tracks in the
//! pipeline but does not force a detection here; the sanity check or the next detection
//! catches it.

use affect_shared::preprocess::{FaceBox, Landmarks68};

use super::{Face, FaceError};

/// Default of [`super::FacesConfig::redetect_every`]: a full detection every 10th frame (3 per
/// second at 30 frames/s).
pub const DEFAULT_REDETECT_EVERY: u32 = 10;

/// Default of [`super::FacesConfig::landmarks_per_frame`]: between detections, new landmarks for
/// at most 8 faces per frame (a kiosk's few visitors on every frame, a group of 29 each on every
/// fourth).
pub const DEFAULT_LANDMARKS_PER_FRAME: u32 = 8;

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

/// One face followed since the last detection.
#[derive(Debug, Clone)]
struct Followed {
    calibration: BoxCalibration,
    /// The face as last refreshed (with the detection's score): its box is where its next
    /// landmark crop is taken.
    face: Face,
}

/// Per-frame state of landmark-driven tracking: which frames need the detector and which boxes
/// the landmark net looks at otherwise.
#[derive(Debug, Clone)]
pub struct Follower {
    redetect_every: u32,
    /// Faces refreshed per frame between detections (0: all).
    landmarks_per_frame: u32,
    /// The faces of the last detection (at most the detector's `max_faces`).
    faces: Vec<Followed>,
    /// The first face to refresh on the next frame (round robin).
    next: usize,
    /// Frames since the last detection.
    since_detection: u32,
    /// Size of the frame the faces were found in.
    frame_size: (u32, u32),
}

impl Follower {
    /// A follower that runs the detector every `redetect_every` frames (1: on every frame; 0 is
    /// refused) and refreshes the landmarks of at most `landmarks_per_frame` faces per frame in
    /// between (0: every face).
    pub fn new(redetect_every: u32, landmarks_per_frame: u32) -> Result<Self, FaceError> {
        if redetect_every == 0 {
            return Err(FaceError::Config(
                "redetect_every must be at least 1 (1 = detect on every frame)".into(),
            ));
        }
        Ok(Self {
            redetect_every,
            landmarks_per_frame,
            faces: Vec::new(),
            next: 0,
            since_detection: 0,
            frame_size: (0, 0),
        })
    }

    /// Indices of the faces refreshed on the next frame: `landmarks_per_frame` of them from
    /// `next` on, wrapping around.
    fn due(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.faces.len();
        let count = match self.landmarks_per_frame {
            0 => n,
            k => n.min(k as usize),
        };
        (0..count).map(move |i| (self.next + i) % n)
    }

    /// The boxes to run the landmark net on for a `width × height` frame (the faces due for new
    /// landmarks, see [`Self::new`]), or `None` when this frame needs a full detection: every
    /// `redetect_every`-th frame, when no faces are followed, or when the frame size changed.
    pub fn boxes(&self, width: u32, height: u32) -> Option<Vec<FaceBox>> {
        let due = self.since_detection + 1 >= self.redetect_every;
        (!due && !self.faces.is_empty() && self.frame_size == (width, height))
            .then(|| self.due().map(|i| self.faces[i].face.bbox).collect())
    }

    /// Starts following a detection's faces (replacing those followed so far) in a
    /// `width × height` frame. A face without usable landmarks cannot be followed: then nothing
    /// is, and the next frame is detected again.
    pub fn detected(&mut self, faces: &[Face], width: u32, height: u32) {
        self.since_detection = 0;
        self.next = 0;
        self.frame_size = (width, height);
        self.faces.clear();
        for face in faces {
            let calibration = face
                .landmarks
                .as_ref()
                .and_then(|l| BoxCalibration::new(&face.bbox, &face.keypoints, l));
            let Some(calibration) = calibration else {
                self.faces.clear();
                return;
            };
            self.faces.push(Followed {
                calibration,
                face: face.clone(),
            });
        }
    }

    /// This frame's faces, in the order of the detection: those of [`Self::boxes`] with the box
    /// derived from the landmarks found in their crops (same order), the others as last
    /// refreshed; each with the last detection's score. `None` when a refreshed face looks lost
    /// ([`looks_lost`]) or the count does not match: the caller then detects on this frame, and
    /// nothing is followed until it does.
    pub fn followed(
        &mut self,
        landmarks: Vec<Landmarks68>,
        width: u32,
        height: u32,
    ) -> Option<Vec<Face>> {
        let due: Vec<usize> = self.due().collect();
        if self.faces.is_empty()
            || landmarks.len() != due.len()
            || self.frame_size != (width, height)
        {
            self.faces.clear();
            return None;
        }
        let mut refreshed = Vec::with_capacity(due.len());
        for (&i, landmarks) in due.iter().zip(landmarks) {
            let face = &self.faces[i];
            match face.calibration.place(&landmarks) {
                Some((bbox, keypoints)) if !looks_lost(&face.face.bbox, &bbox, width, height) => {
                    refreshed.push(Face {
                        bbox,
                        score: face.face.score,
                        keypoints,
                        landmarks: Some(landmarks),
                    })
                }
                _ => {
                    self.faces.clear();
                    return None;
                }
            }
        }
        self.next = (self.next + due.len()) % self.faces.len();
        for (i, face) in due.into_iter().zip(refreshed) {
            self.faces[i].face = face;
        }
        self.since_detection += 1;
        Some(self.faces.iter().map(|f| f.face.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use affect_shared::contract::LANDMARK_POINTS;

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
    fn zero_is_refused_and_one_detects_every_frame() {
        let text = Follower::new(0, 0).unwrap_err().to_string();
        assert!(text.contains("redetect_every"), "{text}");
        let mut every = Follower::new(1, 0).unwrap();
        every.detected(&[face(BOX, landmarks([100.0, 110.0], 20.0))], 640, 480);
        assert!(every.boxes(640, 480).is_none());
    }

    #[test]
    fn the_detector_runs_every_nth_frame_and_when_nothing_is_followed() {
        let mut f = Follower::new(3, 0).unwrap();
        assert!(f.boxes(640, 480).is_none(), "nothing to follow yet");
        f.detected(&[], 640, 480);
        assert!(f.boxes(640, 480).is_none(), "no faces: detect at once");
        let mut centre = [100.0, 110.0];
        f.detected(&[face(BOX, landmarks(centre, 20.0))], 640, 480);
        let mut detections = 1;
        for _ in 1..10 {
            centre[0] += 2.0;
            match f.boxes(640, 480) {
                Some(boxes) => {
                    assert_eq!(boxes.len(), 1);
                    let faces = f.followed(vec![landmarks(centre, 20.0)], 640, 480).unwrap();
                    assert_eq!(faces[0].score, 0.9);
                    assert!((faces[0].bbox.x - (centre[0] + 5.0 - 25.0)).abs() < 1e-3);
                }
                None => {
                    detections += 1;
                    let bbox = FaceBox {
                        x: centre[0] - 20.0,
                        ..BOX
                    };
                    f.detected(&[face(bbox, landmarks(centre, 20.0))], 640, 480);
                }
            }
        }
        // Frames 0, 3, 6, 9 of 10.
        assert_eq!(detections, 4);
        assert!(f.boxes(320, 240).is_none(), "a new frame size is detected");
    }

    #[test]
    fn a_group_gets_new_landmarks_in_turn_and_the_others_hold_their_boxes() {
        let mut f = Follower::new(100, 2).unwrap();
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
        f.detected(&faces, 640, 480);
        // The frame each face was last refreshed on.
        let mut last = [0u32; 3];
        for (frame, due) in (1..=6).zip([[0, 1], [2, 0], [1, 2], [0, 1], [2, 0], [1, 2]]) {
            let boxes = f.boxes(640, 480).unwrap();
            assert_eq!(boxes.len(), 2, "frame {frame}");
            for (b, &i) in boxes.iter().zip(&due) {
                assert!(
                    (b.x - box_x(i, last[i])).abs() < 1e-3,
                    "frame {frame} face {i}"
                );
            }
            let found = f
                .followed(
                    due.iter()
                        .map(|&i| landmarks(centre(i, frame), 20.0))
                        .collect(),
                    640,
                    480,
                )
                .unwrap();
            for &i in &due {
                last[i] = frame;
            }
            assert_eq!(found.len(), 3, "every face on every frame");
            for (i, face) in found.iter().enumerate() {
                assert!(
                    (face.bbox.x - box_x(i, last[i])).abs() < 1e-3,
                    "frame {frame} face {i}: {:?}",
                    face.bbox
                );
                assert_eq!(
                    face.landmarks.as_ref().unwrap().0,
                    landmarks(centre(i, last[i]), 20.0).0
                );
                assert_eq!(face.score, 0.9);
            }
        }
        // Landmarks for every face instead of the two due are refused.
        let all = (0..3).map(|i| landmarks(centre(i, 7), 20.0)).collect();
        assert!(f.followed(all, 640, 480).is_none());
    }

    #[test]
    fn a_lost_face_or_one_without_landmarks_stops_following() {
        let mut f = Follower::new(10, 0).unwrap();
        let two = [
            face(BOX, landmarks([100.0, 110.0], 20.0)),
            face(FaceBox { x: 300.0, ..BOX }, landmarks([320.0, 110.0], 20.0)),
        ];
        f.detected(&two, 640, 480);
        assert_eq!(f.boxes(640, 480).unwrap().len(), 2);
        // The second face's landmarks collapse: the frame must be detected.
        let collapsed = vec![
            landmarks([100.0, 110.0], 20.0),
            landmarks([320.0, 110.0], 8.0),
        ];
        assert!(f.followed(collapsed, 640, 480).is_none());
        assert!(f.boxes(640, 480).is_none());
        // A detection whose face has no landmarks cannot be followed.
        let mut bare = two[0].clone();
        bare.landmarks = None;
        f.detected(&[two[1].clone(), bare], 640, 480);
        assert!(f.boxes(640, 480).is_none());
        // Landmarks for the wrong number of faces are refused too.
        f.detected(&two, 640, 480);
        assert!(f.followed(vec![], 640, 480).is_none());
    }
}
