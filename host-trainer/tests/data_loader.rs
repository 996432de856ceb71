//! The loader and the quadrant sampler: same seed ⇒ same batches whatever the thread count,
//! sequences with stride and masks, the crop cache, pixels equal to the shared preprocessing,
//! and oversampled proportions within tolerance (frames and whole sequences).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use affect_shared::preprocess::{FaceBox, Preprocess};
use affect_shared::synth::SynthConfig;
use affect_trainer::data::sampling::{BalanceConfig, Quadrant, balance};
use affect_trainer::data::synth::{SynthDatasetConfig, SynthLayout, write_dataset};
use affect_trainer::data::{Batch, Dataset, FaceSource, Loader, LoaderConfig, ReadOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One small synthetic dataset shared by the tests of this file.
fn dataset() -> Arc<Dataset> {
    static DATA: OnceLock<(tempfile::TempDir, Arc<Dataset>)> = OnceLock::new();
    let (_, ds) = DATA.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("synth");
        write_dataset(
            &root,
            &SynthDatasetConfig {
                layout: SynthLayout::AffWild2,
                videos: 4,
                val_fraction: 0.0,
                seed: 11,
                jpeg_quality: 90,
                render: SynthConfig {
                    size: 40,
                    frames: 45,
                    no_face_rate: 0.03,
                    invalid_label_rate: 0.02,
                    ..SynthConfig::default()
                },
            },
        )
        .unwrap();
        let ds = Dataset::open(&root, "Train_Set", &ReadOptions::default()).unwrap();
        (tmp, Arc::new(ds))
    });
    Arc::clone(ds)
}

fn loader(config: LoaderConfig) -> Loader {
    Loader::new(dataset(), Preprocess::imagenet(32), config).unwrap()
}

fn epoch(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).unwrap().collect()
}

#[test]
fn same_seed_gives_the_same_batches_for_any_number_of_workers() {
    for steps in [1, 6] {
        let config = |workers, seed| LoaderConfig {
            batch_size: 7,
            steps,
            stride: 4,
            seed,
            workers,
            prefetch: 3,
            ..LoaderConfig::default()
        };
        let one = epoch(&loader(config(1, 9)), 2);
        let three = epoch(&loader(config(3, 9)), 2);
        assert!(one.len() > 3);
        assert_eq!(one, three, "steps {steps}");
        let next_epoch = epoch(&loader(config(2, 9)), 3);
        assert_ne!(one[0].first_frames, next_epoch[0].first_frames);
        let other_seed = epoch(&loader(config(2, 10)), 2);
        assert_ne!(one[0].first_frames, other_seed[0].first_frames);
        // Every clip exactly once per epoch (no balancing).
        let clips: usize = one.iter().map(|b| b.sequences).sum();
        assert_eq!(clips, loader(config(1, 9)).clips().len());
    }
}

#[test]
fn frame_batches_cover_every_usable_frame_once() {
    let ds = dataset();
    let l = loader(LoaderConfig {
        batch_size: 16,
        workers: 2,
        ..LoaderConfig::default()
    });
    assert_eq!(l.clips().len(), ds.usable_count());
    let batches = epoch(&l, 0);
    let mut seen: Vec<(String, u32)> = Vec::new();
    for b in &batches {
        assert_eq!(b.steps, 1);
        assert_eq!(b.size, 32);
        assert_eq!(b.faces.len(), b.sequences * 3 * 32 * 32);
        assert_eq!(b.mask, vec![1.0; b.sequences]);
        for (i, (video, first)) in b.videos.iter().zip(&b.first_frames).enumerate() {
            let v = ds.videos.iter().find(|v| &v.name == video).unwrap();
            let label = v.frames[*first as usize].label.unwrap();
            assert_eq!(b.labels[2 * i..2 * i + 2], label);
            seen.push((video.clone(), *first));
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), ds.usable_count());
    let last = batches.last().unwrap();
    assert_eq!(last.sequences, ds.usable_count() - 16 * (batches.len() - 1));
    let dropped = loader(LoaderConfig {
        batch_size: 16,
        drop_last: true,
        ..LoaderConfig::default()
    });
    assert_eq!(epoch(&dropped, 0).len(), ds.usable_count() / 16);
}

#[test]
fn sequence_windows_have_stride_masks_and_padding() {
    let ds = dataset();
    let l = loader(LoaderConfig {
        batch_size: 4,
        steps: 10,
        stride: 8,
        shuffle: false,
        workers: 2,
        ..LoaderConfig::default()
    });
    // 45 frames: starts 0, 8, 16, 24, 32 and a last window ending on frame 45 (start 35).
    let starts: Vec<usize> = l
        .clips()
        .iter()
        .filter(|c| c.video == 0)
        .map(|c| c.first)
        .collect();
    assert_eq!(starts, [0, 8, 16, 24, 32, 35]);
    for b in epoch(&l, 0) {
        for s in 0..b.sequences {
            let v = ds.videos.iter().find(|v| v.name == b.videos[s]).unwrap();
            for t in 0..b.steps {
                let frame = &v.frames[b.first_frames[s] as usize + t];
                let cell = s * b.steps + t;
                assert_eq!(
                    b.mask[cell] == 1.0,
                    frame.usable(),
                    "mask follows face+label"
                );
                // Faces are loaded whenever there is one (the recurrent state steps on them),
                // labelled or not; frames without a face stay zero.
                assert_eq!(
                    b.present[cell] == 1.0,
                    frame.face.is_some(),
                    "presence follows the face"
                );
                if b.present[cell] == 0.0 {
                    let plane = 3 * 32 * 32;
                    assert!(
                        b.faces[cell * plane..(cell + 1) * plane]
                            .iter()
                            .all(|&x| x == 0.0)
                    );
                }
            }
        }
    }
    // A window longer than the video is padded with masked frames.
    let long = loader(LoaderConfig {
        batch_size: 2,
        steps: 50,
        stride: 50,
        shuffle: false,
        ..LoaderConfig::default()
    });
    let b = epoch(&long, 0).remove(0);
    assert!(b.mask[45..50].iter().all(|&m| m == 0.0));
}

#[test]
fn pixels_equal_the_shared_preprocessing_of_the_crop() {
    let ds = dataset();
    let pre = Preprocess {
        landmarks: true,
        ..Preprocess::imagenet(32)
    };
    let l = Loader::new(
        Arc::clone(&ds),
        pre.clone(),
        LoaderConfig {
            shuffle: false,
            ..LoaderConfig::default()
        },
    )
    .unwrap();
    let clip = l.clips()[3];
    let batch = l.load(&[clip]);
    let frame = &ds.videos[clip.video].frames[clip.first];
    let Some(FaceSource::Crop(path)) = &frame.face else {
        panic!("synthetic faces are crops")
    };
    let image = image::open(path).unwrap().to_rgb8();
    // The crop is the face box plus the preprocess margin on every side.
    let side = 40.0 / (1.0 + 2.0 * pre.margin);
    let face = FaceBox {
        x: (40.0 - side) / 2.0,
        y: (40.0 - side) / 2.0,
        w: side,
        h: side,
    };
    let expected = pre
        .face_input(&image, &face, frame.landmarks.as_deref())
        .unwrap();
    assert_eq!(batch.faces, expected.pixels);
    assert_eq!(batch.landmarks, expected.landmarks.unwrap().to_vec());
}

#[test]
fn the_crop_cache_serves_later_runs_with_identical_batches() {
    let cache = tempfile::tempdir().unwrap();
    let config = LoaderConfig {
        batch_size: 20,
        seed: 4,
        workers: 2,
        cache_dir: Some(cache.path().to_owned()),
        ..LoaderConfig::default()
    };
    let uncached = epoch(
        &loader(LoaderConfig {
            cache_dir: None,
            ..config.clone()
        }),
        0,
    );
    let first = loader(config.clone());
    assert_eq!(epoch(&first, 0), uncached);
    assert_eq!(first.stats().cache_hits, 0);
    let second = loader(config);
    assert_eq!(epoch(&second, 0), uncached);
    let stats = second.stats();
    assert_eq!(stats.decoded, 0);
    assert_eq!(stats.cache_hits as usize, dataset().usable_count());
    assert!(count_files(cache.path()) >= dataset().usable_count());
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() { count_files(&p) } else { 1 }
        })
        .sum()
}

fn shares(labels: &[[f32; 2]], order: &[usize]) -> [f64; 4] {
    let mut counts = [0usize; 4];
    for &i in order {
        counts[Quadrant::of(labels[i]) as usize] += 1;
    }
    counts.map(|c| c as f64 / order.len() as f64)
}

#[test]
fn oversampling_reaches_the_target_shares_without_dropping_items() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // Imbalanced: mostly Q1, few Q3.
    let labels: Vec<[f32; 2]> = (0..2000)
        .map(|_| {
            let v = rng.random_range(-0.4f32..1.0);
            let a = rng.random_range(-0.3f32..1.0);
            [v, a]
        })
        .collect();
    let config = BalanceConfig::default();
    let (order, summary) = balance(&labels, &config, &mut rng).unwrap();
    let got = shares(&labels, &order);
    for q in 0..4 {
        assert!((got[q] - config.targets[q]).abs() < 0.01, "{got:?}");
    }
    assert_eq!(summary.before.iter().sum::<usize>(), 2000);
    assert_eq!(summary.after.iter().sum::<usize>(), order.len());
    assert_eq!(
        summary.after_fractions().map(|f| (f * 1000.0).round()),
        got.map(|f| (f * 1000.0).round())
    );
    // Nothing dropped: every item appears at least once.
    let mut seen = vec![false; labels.len()];
    for &i in &order {
        seen[i] = true;
    }
    assert!(seen.iter().all(|&s| s));
    assert!(summary.to_string().contains("Q3 V-A-"));

    // Capped growth subsamples the biggest quadrant but still hits the shares.
    let capped = BalanceConfig {
        max_growth: 1.0,
        ..BalanceConfig::default()
    };
    let (order, _) = balance(&labels, &capped, &mut rng).unwrap();
    assert!(order.len() <= 2000);
    let got = shares(&labels, &order);
    for q in 0..4 {
        assert!((got[q] - capped.targets[q]).abs() < 0.01, "{got:?}");
    }
    // An empty quadrant's share goes to the others.
    let no_q3: Vec<[f32; 2]> = labels
        .iter()
        .copied()
        .filter(|l| Quadrant::of(*l) != Quadrant::NegativePassive)
        .collect();
    let (order, summary) = balance(&no_q3, &config, &mut rng).unwrap();
    assert_eq!(summary.after[2], 0);
    assert!((summary.targets.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    assert!((shares(&no_q3, &order)[0] - 0.43 / 0.81).abs() < 0.01);
    assert!(
        balance(
            &labels,
            &BalanceConfig {
                targets: [0.0; 4],
                max_growth: 2.0
            },
            &mut rng
        )
        .is_err()
    );
}

#[test]
fn the_loader_balances_frames_and_whole_sequences_deterministically() {
    for steps in [1, 8] {
        let config = |workers| LoaderConfig {
            batch_size: 10,
            steps,
            stride: 2,
            workers,
            seed: 3,
            balance: Some(BalanceConfig {
                targets: [0.25; 4],
                max_growth: 10.0,
            }),
            ..LoaderConfig::default()
        };
        let l = loader(config(1));
        let plan = l.plan(0).unwrap();
        let summary = plan.balance.clone().unwrap();
        let present = summary.before.iter().filter(|&&n| n > 0).count();
        let got = shares(l.clip_labels(), &plan.order);
        for q in 0..4 {
            if summary.before[q] > 0 {
                assert!(
                    (got[q] - 1.0 / present as f64).abs() < 0.02,
                    "steps {steps}: {got:?}"
                );
            }
        }
        let mut e = l.epoch(0).unwrap();
        assert_eq!(e.balance(), Some(&summary));
        let first = e.next().unwrap();
        let other = loader(config(3)).epoch(0).unwrap().next().unwrap();
        assert_eq!(first, other);
    }
}
