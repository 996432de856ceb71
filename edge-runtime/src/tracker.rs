//! Face tracking across frames: detections are matched to existing tracks by overlap (IoU), or by
//! centre distance for fast motion when boxes no longer overlap; unmatched detections start new
//! tracks; a track unseen for more than `max_missed` frames is lost, and its recurrent state
//! with it. Pure logic: boxes in, assignments out.

use affect_shared::preprocess::FaceBox;
use serde::{Deserialize, Serialize};

/// Matching thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackerConfig {
    /// Minimum IoU for an overlap match.
    pub min_iou: f32,
    /// Maximum centre distance for a distance match, as a fraction of the mean box side.
    pub max_centre_distance: f32,
    /// Frames a track may go unseen before it is lost.
    pub max_missed: u32,
    /// Most tracks kept at once (extra detections are ignored, lowest-ranked first); the
    /// default fits a group in front of a kiosk, as the detector's `max_faces` does.
    pub max_tracks: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            min_iou: 0.3,
            max_centre_distance: 0.5,
            max_missed: 5,
            max_tracks: 32,
        }
    }
}

/// Where one detection went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Index of the detection in the input slice.
    pub detection: usize,
    /// Track id.
    pub track: u16,
    /// The track was started by this detection.
    pub new: bool,
}

/// The result of one frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackUpdate {
    /// One entry per detection that belongs to a track, in detection order.
    pub assignments: Vec<Assignment>,
    /// Tracks lost in this frame (their state must be dropped).
    pub lost: Vec<u16>,
}

#[derive(Debug, Clone)]
struct Track {
    id: u16,
    bbox: FaceBox,
    missed: u32,
}

/// Multi-face tracker with stable ids.
#[derive(Debug, Clone)]
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u16,
}

/// Intersection over union of two boxes (0 for empty boxes).
pub fn iou(a: &FaceBox, b: &FaceBox) -> f32 {
    let ix = (a.x + a.w).min(b.x + b.w) - a.x.max(b.x);
    let iy = (a.y + a.h).min(b.y + b.h) - a.y.max(b.y);
    if ix <= 0.0 || iy <= 0.0 {
        return 0.0;
    }
    let inter = ix * iy;
    let union = a.w * a.h + b.w * b.h - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

impl Tracker {
    /// An empty tracker.
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            tracks: Vec::new(),
            next_id: 0,
        }
    }

    /// Ends every track (a scene cut) and returns their ids; new ids keep counting up.
    pub fn end_all(&mut self) -> Vec<u16> {
        self.tracks.drain(..).map(|t| t.id).collect()
    }

    /// Ids of the live tracks.
    pub fn track_ids(&self) -> impl Iterator<Item = u16> + '_ {
        self.tracks.iter().map(|t| t.id)
    }

    /// Matches this frame's detections (best first) to tracks.
    pub fn update(&mut self, detections: &[FaceBox]) -> TrackUpdate {
        // Candidate pairs scored so that any IoU match beats any distance-only match.
        let mut pairs = Vec::new();
        for (ti, t) in self.tracks.iter().enumerate() {
            for (di, d) in detections.iter().enumerate() {
                let overlap = iou(&t.bbox, d);
                let score = if overlap >= self.config.min_iou {
                    1.0 + overlap
                } else {
                    let side = (t.bbox.w + t.bbox.h + d.w + d.h) / 4.0;
                    let (tx, ty) = (t.bbox.x + t.bbox.w / 2.0, t.bbox.y + t.bbox.h / 2.0);
                    let (dx, dy) = (d.x + d.w / 2.0, d.y + d.h / 2.0);
                    let dist = ((tx - dx).powi(2) + (ty - dy).powi(2)).sqrt() / side.max(1e-6);
                    if dist <= self.config.max_centre_distance {
                        1.0 - dist / self.config.max_centre_distance.max(1e-6)
                    } else {
                        continue;
                    }
                };
                pairs.push((score, ti, di));
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut track_used = vec![false; self.tracks.len()];
        let mut detection_track: Vec<Option<(u16, bool)>> = vec![None; detections.len()];
        for (_, ti, di) in pairs {
            if track_used[ti] || detection_track[di].is_some() {
                continue;
            }
            track_used[ti] = true;
            detection_track[di] = Some((self.tracks[ti].id, false));
            self.tracks[ti].bbox = detections[di];
            self.tracks[ti].missed = 0;
        }
        let mut lost = Vec::new();
        let mut kept = Vec::with_capacity(self.tracks.len());
        for (ti, mut t) in std::mem::take(&mut self.tracks).into_iter().enumerate() {
            if !track_used[ti] {
                t.missed += 1;
                if t.missed > self.config.max_missed {
                    lost.push(t.id);
                    continue;
                }
            }
            kept.push(t);
        }
        self.tracks = kept;
        for (di, slot) in detection_track.iter_mut().enumerate() {
            if slot.is_none() && self.tracks.len() < self.config.max_tracks {
                let id = self.fresh_id();
                self.tracks.push(Track {
                    id,
                    bbox: detections[di],
                    missed: 0,
                });
                *slot = Some((id, true));
            }
        }
        let assignments = detection_track
            .into_iter()
            .enumerate()
            .filter_map(|(detection, slot)| {
                slot.map(|(track, new)| Assignment {
                    detection,
                    track,
                    new,
                })
            })
            .collect();
        TrackUpdate { assignments, lost }
    }

    /// The next id not in use (ids wrap around after 65535).
    fn fresh_id(&mut self) -> u16 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if !self.tracks.iter().any(|t| t.id == id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(x: f32, y: f32) -> FaceBox {
        FaceBox {
            x,
            y,
            w: 100.0,
            h: 100.0,
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        assert_eq!(iou(&b(0.0, 0.0), &b(0.0, 0.0)), 1.0);
        assert_eq!(iou(&b(0.0, 0.0), &b(200.0, 0.0)), 0.0);
        assert!((iou(&b(0.0, 0.0), &b(50.0, 0.0)) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn a_cut_ends_every_track_and_the_same_place_gets_a_new_id() {
        let mut t = Tracker::new(TrackerConfig::default());
        let first = t.update(&[b(0.0, 0.0)]).assignments[0].track;
        assert_eq!(t.end_all(), vec![first]);
        let next = t.update(&[b(0.0, 0.0)]).assignments[0];
        assert!(next.new && next.track != first);
    }

    #[test]
    fn two_people_keep_their_ids_while_moving_whatever_the_detection_order() {
        let mut t = Tracker::new(TrackerConfig::default());
        let first = t.update(&[b(0.0, 0.0), b(300.0, 0.0)]);
        assert_eq!(first.assignments.len(), 2);
        assert!(first.assignments.iter().all(|a| a.new));
        let (a, c) = (first.assignments[0].track, first.assignments[1].track);
        for step in 1..20 {
            let s = step as f32 * 8.0;
            // Detector order flips every frame; ids must follow the faces, not the order.
            let dets = if step % 2 == 0 {
                vec![b(s, 0.0), b(300.0 + s, 0.5 * s)]
            } else {
                vec![b(300.0 + s, 0.5 * s), b(s, 0.0)]
            };
            let u = t.update(&dets);
            let ids: Vec<u16> = u.assignments.iter().map(|x| x.track).collect();
            let want = if step % 2 == 0 {
                vec![a, c]
            } else {
                vec![c, a]
            };
            assert_eq!(ids, want, "step {step}");
            assert!(u.assignments.iter().all(|x| !x.new));
            assert!(u.lost.is_empty());
        }
    }

    #[test]
    fn fast_motion_without_overlap_is_matched_by_distance() {
        let mut t = Tracker::new(TrackerConfig::default());
        let id = t.update(&[b(0.0, 0.0)]).assignments[0].track;
        let u = t.update(&[b(45.0, 0.0)]);
        assert_eq!(u.assignments[0].track, id);
        let u = t.update(&[b(400.0, 0.0)]);
        assert!(
            u.assignments[0].new,
            "a jump of 3.5 face widths is a new person"
        );
    }

    #[test]
    fn a_track_survives_short_dropouts_and_is_lost_after_max_missed() {
        let config = TrackerConfig {
            max_missed: 2,
            ..TrackerConfig::default()
        };
        let mut t = Tracker::new(config);
        let id = t.update(&[b(0.0, 0.0)]).assignments[0].track;
        assert!(t.update(&[]).lost.is_empty());
        assert!(t.update(&[]).lost.is_empty());
        assert_eq!(t.update(&[b(2.0, 0.0)]).assignments[0].track, id);
        t.update(&[]);
        t.update(&[]);
        assert_eq!(t.update(&[]).lost, vec![id]);
        let again = t.update(&[b(0.0, 0.0)]).assignments[0];
        assert!(again.new);
        assert_ne!(again.track, id);
    }

    #[test]
    fn no_more_tracks_than_the_limit() {
        let config = TrackerConfig {
            max_tracks: 2,
            ..TrackerConfig::default()
        };
        let mut t = Tracker::new(config);
        let u = t.update(&[b(0.0, 0.0), b(300.0, 0.0), b(600.0, 0.0)]);
        assert_eq!(u.assignments.len(), 2);
        assert_eq!(t.track_ids().count(), 2);
    }
}
