//! Property tests: the streaming accumulator equals the exact batch form on any data and any
//! split, and per-video accumulators merge into the pooled score.

use affect_shared::metrics::{Moments, VaMoments, ccc, mse};
use proptest::prelude::*;

fn pairs() -> impl Strategy<Value = Vec<(f64, f64)>> {
    prop::collection::vec((-1.0f64..1.0, -1.0f64..1.0), 1..300)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

proptest! {
    #[test]
    fn any_split_merged_equals_batch(data in pairs(), cuts in prop::collection::vec(0usize..300, 0..6)) {
        let (x, y): (Vec<f64>, Vec<f64>) = data.iter().copied().unzip();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (data.len() + 1)).collect();
        cuts.push(0);
        cuts.push(data.len());
        cuts.sort_unstable();
        let mut pooled = Moments::new();
        for w in cuts.windows(2) {
            let mut part = Moments::new();
            for &(p, t) in &data[w[0]..w[1]] {
                part.push(p, t);
            }
            pooled.merge(&part);
        }
        prop_assert_eq!(pooled.count(), data.len() as u64);
        prop_assert!(close(pooled.ccc().unwrap(), ccc(&x, &y).unwrap()));
        prop_assert!(close(pooled.mse().unwrap(), mse(&x, &y).unwrap()));
        let c = pooled.ccc().unwrap();
        prop_assert!((-1.0 - 1e-12..=1.0 + 1e-12).contains(&c));
    }

    #[test]
    fn constant_predictions_have_zero_ccc(truth in prop::collection::vec(-1.0f64..1.0, 2..100), value in -1.0f64..1.0) {
        prop_assume!(truth.iter().any(|t| (t - truth[0]).abs() > 1e-6));
        let pred = vec![value; truth.len()];
        prop_assert!(ccc(&pred, &truth).unwrap().abs() < 1e-12);
    }

    #[test]
    fn per_video_accumulators_merge_into_the_pooled_score(
        videos in prop::collection::vec(prop::collection::vec(prop::array::uniform4(-1.0f32..1.0), 1..50), 1..6)
    ) {
        let mut pooled = VaMoments::new();
        let (mut all_p, mut all_t) = (vec![Vec::new(), Vec::new()], vec![Vec::new(), Vec::new()]);
        for video in &videos {
            let mut per_video = VaMoments::new();
            for f in video {
                per_video.push([f[0], f[1]], [f[2], f[3]]);
                for d in 0..2 {
                    all_p[d].push(f64::from(f[d]));
                    all_t[d].push(f64::from(f[d + 2]));
                }
            }
            pooled.merge(&per_video);
        }
        prop_assert!(close(pooled.valence.ccc().unwrap(), ccc(&all_p[0], &all_t[0]).unwrap()));
        prop_assert!(close(pooled.arousal.mse().unwrap(), mse(&all_p[1], &all_t[1]).unwrap()));
        let mean = (pooled.valence.ccc().unwrap() + pooled.arousal.ccc().unwrap()) / 2.0;
        prop_assert!(close(pooled.mean_ccc().unwrap(), mean));
    }
}
