//! Quadrant balancing by oversampling (Kollias et al. 2017, §2.1).
//!
//! The valence–arousal plane is cut into four quadrants, numbered counter-clockwise as usual:
//!
//! | quadrant | valence | arousal | e.g. |
//! |---|---|---|---|
//! | [`Quadrant::PositiveActive`] (Q1) | ≥ 0 | ≥ 0 | happy, excited |
//! | [`Quadrant::NegativeActive`] (Q2) | < 0 | ≥ 0 | angry, afraid |
//! | [`Quadrant::NegativePassive`] (Q3) | < 0 | < 0 | sad, bored |
//! | [`Quadrant::PositivePassive`] (Q4) | ≥ 0 | < 0 | calm, content |
//!
//! Items (frames for a CNN, whole sequences for a CNN-RNN, placed by their mean label) of
//! under-represented quadrants are repeated until each quadrant holds its target share; the
//! default targets are the paper's 43 / 24 / 19 / 14 % in the order Q1, Q2, Q3, Q4. Nothing is
//! dropped unless the epoch would grow beyond `max_growth` times the original size, in which case
//! over-represented quadrants are subsampled to fit.

use std::fmt;

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::problems::DataError;

/// A quadrant of the valence–arousal plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Quadrant {
    /// Q1: valence ≥ 0, arousal ≥ 0.
    PositiveActive = 0,
    /// Q2: valence < 0, arousal ≥ 0.
    NegativeActive = 1,
    /// Q3: valence < 0, arousal < 0.
    NegativePassive = 2,
    /// Q4: valence ≥ 0, arousal < 0.
    PositivePassive = 3,
}

impl Quadrant {
    /// All quadrants, Q1 to Q4.
    pub const ALL: [Quadrant; 4] = [
        Self::PositiveActive,
        Self::NegativeActive,
        Self::NegativePassive,
        Self::PositivePassive,
    ];

    /// The quadrant of `[valence, arousal]`.
    pub fn of(label: [f32; 2]) -> Self {
        match (label[0] >= 0.0, label[1] >= 0.0) {
            (true, true) => Self::PositiveActive,
            (false, true) => Self::NegativeActive,
            (false, false) => Self::NegativePassive,
            (true, false) => Self::PositivePassive,
        }
    }

    /// Short label for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::PositiveActive => "Q1 V+A+",
            Self::NegativeActive => "Q2 V-A+",
            Self::NegativePassive => "Q3 V-A-",
            Self::PositivePassive => "Q4 V+A-",
        }
    }
}

/// Target shares and limits of the oversampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalanceConfig {
    /// Target share of each quadrant, Q1..Q4 (normalised to sum 1).
    pub targets: [f64; 4],
    /// The balanced epoch holds at most this many times the original number of items.
    pub max_growth: f64,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            targets: [0.43, 0.24, 0.19, 0.14],
            max_growth: 4.0,
        }
    }
}

impl BalanceConfig {
    /// Checks the targets (finite, non-negative, not all zero) and the growth limit (≥ 1).
    pub fn validate(&self) -> Result<(), DataError> {
        if self.targets.iter().any(|t| !t.is_finite() || *t < 0.0)
            || self.targets.iter().sum::<f64>() <= 0.0
        {
            return Err(DataError::Config(format!(
                "quadrant targets {:?} must be non-negative and not all zero",
                self.targets
            )));
        }
        if !(self.max_growth.is_finite() && self.max_growth >= 1.0) {
            return Err(DataError::Config(format!(
                "max_growth {} must be at least 1",
                self.max_growth
            )));
        }
        Ok(())
    }
}

/// Quadrant counts before and after balancing: what the trainer logs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalanceSummary {
    /// Items per quadrant before, Q1..Q4.
    pub before: [usize; 4],
    /// Items per quadrant after oversampling.
    pub after: [usize; 4],
    /// The targets actually used (normalised; quadrants without items get 0).
    pub targets: [f64; 4],
}

impl BalanceSummary {
    /// Shares before balancing.
    pub fn before_fractions(&self) -> [f64; 4] {
        fractions(&self.before)
    }

    /// Shares after balancing.
    pub fn after_fractions(&self) -> [f64; 4] {
        fractions(&self.after)
    }
}

fn fractions(counts: &[usize; 4]) -> [f64; 4] {
    let total = counts.iter().sum::<usize>().max(1) as f64;
    counts.map(|c| c as f64 / total)
}

impl fmt::Display for BalanceSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (before, after) = (self.before_fractions(), self.after_fractions());
        write!(f, "quadrant balance:")?;
        for q in Quadrant::ALL {
            let i = q as usize;
            write!(
                f,
                " {} {:.1}% -> {:.1}% (target {:.1}%);",
                q.name(),
                100.0 * before[i],
                100.0 * after[i],
                100.0 * self.targets[i]
            )?;
        }
        write!(
            f,
            " {} -> {} items",
            self.before.iter().sum::<usize>(),
            self.after.iter().sum::<usize>()
        )
    }
}

/// Oversamples `labels` (one per item) towards the configured quadrant shares. Returns the
/// shuffled item indices of the balanced epoch (items repeat) and the summary.
pub fn balance(
    labels: &[[f32; 2]],
    config: &BalanceConfig,
    rng: &mut impl Rng,
) -> Result<(Vec<usize>, BalanceSummary), DataError> {
    config.validate()?;
    let mut groups: [Vec<usize>; 4] = Default::default();
    for (i, label) in labels.iter().enumerate() {
        groups[Quadrant::of(*label) as usize].push(i);
    }
    let before = groups.each_ref().map(Vec::len);
    // Quadrants without items cannot be filled: renormalise over the others.
    let mut targets = config.targets;
    for (t, n) in targets.iter_mut().zip(before) {
        if n == 0 {
            *t = 0.0;
        }
    }
    let sum: f64 = targets.iter().sum();
    if sum > 0.0 {
        targets = targets.map(|t| t / sum);
    }
    // Smallest epoch in which every quadrant with a target keeps all its items.
    let needed = (0..4)
        .filter(|&q| targets[q] > 0.0)
        .map(|q| before[q] as f64 / targets[q])
        .fold(0.0f64, f64::max);
    let total = needed.min(config.max_growth * labels.len() as f64);
    let after: [usize; 4] = core::array::from_fn(|q| (targets[q] * total).round() as usize);
    let mut order = Vec::with_capacity(after.iter().sum());
    for q in 0..4 {
        let group = &mut groups[q];
        if group.is_empty() {
            continue;
        }
        group.shuffle(rng);
        // Whole copies, then a random subset for the remainder.
        for _ in 0..after[q] / group.len() {
            order.extend_from_slice(group);
        }
        order.extend_from_slice(&group[..after[q] % group.len()]);
    }
    order.shuffle(rng);
    Ok((
        order,
        BalanceSummary {
            before,
            after,
            targets,
        },
    ))
}
