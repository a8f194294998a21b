//! Rewards for reinforcement learning with a length budget (the first piece of GRPO).
//!
//! A sample's reward is its correctness times a length term: 1 while its reasoning stays
//! within the prompt's budget, then a soft barrier that decays exponentially with the
//! overshoot, `exp(-(L - B) / (softness * B))` (at `softness` = 0.25, a trace 25% over budget
//! keeps e^-1 ≈ 0.37 of its reward, 50% over keeps 0.14). A wrong answer earns 0 however short
//! it is, so the student is never paid for guessing quickly. The budget is drawn per prompt
//! from [`BudgetBuckets`] and stated in the prompt by [`budget_control`] (`[budget 128]`), so that one student
//! learns several lengths and the user picks one at inference. [`group_advantages`]
//! normalises the rewards of the G samples of one prompt, as GRPO does.

use crate::error::{Result, TrainError};

pub use laconic_traces::schema::budget_control;

/// How a sample is rewarded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RewardConfig {
    /// Reward of a correct answer within budget.
    pub correct: f64,
    /// The barrier's decay scale, as a fraction of the budget (> 0).
    pub softness: f64,
}

impl Default for RewardConfig {
    /// Reward 1, softness 0.25.
    fn default() -> Self {
        Self {
            correct: 1.0,
            softness: 0.25,
        }
    }
}

impl RewardConfig {
    /// Checks ranges.
    pub fn validate(&self) -> Result<()> {
        if !(self.softness > 0.0 && self.softness.is_finite()) {
            return Err(TrainError::Invalid(format!(
                "reward softness must be a positive number, got {}",
                self.softness
            )));
        }
        if !(self.correct > 0.0 && self.correct.is_finite()) {
            return Err(TrainError::Invalid(format!(
                "reward for a correct answer must be positive, got {}",
                self.correct
            )));
        }
        Ok(())
    }

    /// The length term: 1 up to `budget` tokens, then `exp(-(L - B) / (softness * B))`.
    /// Without a budget it is 1.
    pub fn length_factor(&self, tokens: usize, budget: Option<usize>) -> f64 {
        match budget {
            Some(b) if tokens > b && b > 0 => {
                let over = (tokens - b) as f64;
                (-over / (self.softness * b as f64)).exp()
            }
            _ => 1.0,
        }
    }

    /// A sample's reward: `correct * length_factor` for a correct answer, 0 otherwise.
    pub fn reward(&self, correct: bool, reasoning_tokens: usize, budget: Option<usize>) -> f64 {
        if correct {
            self.correct * self.length_factor(reasoning_tokens, budget)
        } else {
            0.0
        }
    }
}

/// GRPO's group-relative advantages: each reward minus the group's mean, divided by the
/// group's standard deviation (population) plus `1e-4`. A group whose rewards are all equal
/// carries no signal and gets zeros.
pub fn group_advantages(rewards: &[f64]) -> Vec<f64> {
    if rewards.is_empty() {
        return Vec::new();
    }
    let n = rewards.len() as f64;
    let mean = rewards.iter().sum::<f64>() / n;
    let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n;
    let std = var.sqrt();
    if std < 1e-12 {
        return vec![0.0; rewards.len()];
    }
    rewards.iter().map(|r| (r - mean) / (std + 1e-4)).collect()
}

/// The reasoning budgets a prompt may be given (reasoning tokens), e.g. 64/128/256/512.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetBuckets(Vec<usize>);

impl BudgetBuckets {
    /// Buckets from a list; empty or zero buckets are errors.
    pub fn new(buckets: Vec<usize>) -> Result<Self> {
        if buckets.is_empty() {
            return Err(TrainError::Invalid("budget buckets: none given".into()));
        }
        if buckets.contains(&0) {
            return Err(TrainError::Invalid(format!(
                "budget buckets {buckets:?}: a budget of 0 tokens leaves no room to reason"
            )));
        }
        Ok(Self(buckets))
    }

    /// Parses `64,128,256,512`.
    pub fn parse(s: &str) -> Result<Self> {
        let buckets = s
            .split(',')
            .map(|x| {
                x.trim().parse::<usize>().map_err(|_| {
                    TrainError::Invalid(format!(
                        "budget buckets `{s}`: `{}` is not a whole number of tokens",
                        x.trim()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::new(buckets)
    }

    /// The buckets.
    pub fn buckets(&self) -> &[usize] {
        &self.0
    }

    /// The budget of prompt `index` in epoch `epoch` under `seed`: a stable hash, so a resumed
    /// run draws the same budgets, and every bucket is drawn about equally often.
    pub fn draw(&self, seed: u64, epoch: u64, index: u64) -> usize {
        let z = seed
            .wrapping_add(epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .wrapping_add(index.wrapping_mul(0xbf58_476d_1ce4_e5b9));
        self.0[(mix64(z) % self.0.len() as u64) as usize]
    }
}

/// SplitMix64's finaliser: the stable hash behind every seeded choice of a run (dropout seeds,
/// problem order, budgets), so that a resumed run makes the same choices.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reward_is_flat_within_budget_and_decays_beyond() {
        let r = RewardConfig::default();
        assert_eq!(r.reward(true, 10, Some(128)), 1.0);
        assert_eq!(r.reward(true, 128, Some(128)), 1.0);
        let over25 = r.reward(true, 160, Some(128));
        assert!((over25 - (-1.0f64).exp()).abs() < 1e-12, "{over25}");
        let over50 = r.reward(true, 192, Some(128));
        assert!(over50 < over25 && over50 > 0.0);
        assert_eq!(r.reward(false, 10, Some(128)), 0.0);
        assert_eq!(r.reward(true, 10_000, None), 1.0);
        // Monotone in length.
        let mut last = f64::INFINITY;
        for len in (0..600).step_by(7) {
            let x = r.reward(true, len, Some(256));
            assert!(x <= last);
            last = x;
        }
    }

    #[test]
    fn bad_reward_settings_are_refused() {
        for (correct, softness) in [(1.0, 0.0), (1.0, -1.0), (0.0, 0.25), (1.0, f64::NAN)] {
            assert!(RewardConfig { correct, softness }.validate().is_err());
        }
        assert!(RewardConfig::default().validate().is_ok());
    }

    #[test]
    fn advantages_are_centred_and_scaled_within_the_group() {
        let a = group_advantages(&[1.0, 0.0, 0.0, 1.0]);
        assert!(a.iter().sum::<f64>().abs() < 1e-9);
        assert!(
            (a[0] - 1.0).abs() < 1e-3 && (a[1] + 1.0).abs() < 1e-3,
            "{a:?}"
        );
        assert_eq!(group_advantages(&[0.5; 4]), vec![0.0; 4]);
        assert!(group_advantages(&[]).is_empty());
        // Shorter correct answers are preferred within a group.
        let r = RewardConfig::default();
        let rewards: Vec<f64> = [100, 200, 300]
            .iter()
            .map(|&l| r.reward(true, l, Some(128)))
            .collect();
        let a = group_advantages(&rewards);
        assert!(a[0] > a[1] && a[1] > a[2]);
    }

    #[test]
    fn budgets_parse_refuse_zero_and_draw_every_bucket_stably() {
        let b = BudgetBuckets::parse("64, 128,256,512").expect("parses");
        assert_eq!(b.buckets(), &[64, 128, 256, 512]);
        let e = BudgetBuckets::parse("64,0").expect_err("zero").to_string();
        assert!(e.contains("0 tokens"), "{e}");
        let e = BudgetBuckets::parse("64,lots")
            .expect_err("word")
            .to_string();
        assert!(e.contains("`lots`"), "{e}");
        assert!(BudgetBuckets::new(vec![]).is_err());
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            let d = b.draw(7, 0, i);
            assert_eq!(d, b.draw(7, 0, i));
            counts[b.buckets().iter().position(|&x| x == d).expect("a bucket")] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_ne!(
            (0..32).map(|i| b.draw(7, 0, i)).collect::<Vec<_>>(),
            (0..32).map(|i| b.draw(7, 1, i)).collect::<Vec<_>>()
        );
        assert_eq!(budget_control(128), "[budget 128]");
    }
}
