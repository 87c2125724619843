//! The pretext learning-rate schedule of google-research/simclr: a peak scaled with
//! the batch size, a linear warmup from 0, then a cosine decay to 0.

/// How the peak learning rate grows with the batch size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LrScaling {
    /// `base × batch / 256` (the paper's default, base 0.3 with LARS).
    Linear { base: f64 },
    /// `base × √batch` (the paper's option for small batches, base 0.075).
    Sqrt { base: f64 },
}

impl LrScaling {
    pub fn peak(self, batch_size: i64) -> f64 {
        match self {
            LrScaling::Linear { base } => base * batch_size as f64 / 256.0,
            LrScaling::Sqrt { base } => base * (batch_size as f64).sqrt(),
        }
    }
}

/// Learning rate per optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub peak_lr: f64,
    pub warmup_steps: i64,
    pub total_steps: i64,
}

impl Schedule {
    /// The schedule google-research/simclr builds for `train_images` images:
    /// `warmup_steps = round(warmup_epochs × N // bs)`,
    /// `total_steps = N × epochs // bs + 1`.
    pub fn simclr(
        scaling: LrScaling,
        batch_size: i64,
        train_images: i64,
        epochs: i64,
        warmup_epochs: f64,
    ) -> Schedule {
        let warmup_steps = (warmup_epochs * train_images as f64 / batch_size as f64).floor() as i64;
        Schedule {
            peak_lr: scaling.peak(batch_size),
            warmup_steps,
            total_steps: train_images * epochs / batch_size + 1,
        }
    }

    /// The learning rate at optimizer step `step` (0-based).
    pub fn lr(&self, step: i64) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * step as f64 / self.warmup_steps as f64;
        }
        let decay_steps = (self.total_steps - self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        self.peak_lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// REFERENCE.md: ImageNet (1,281,167 images), batch 4096, 100 epochs.
    #[test]
    fn imagenet_oracle() {
        let s = Schedule::simclr(LrScaling::Linear { base: 0.3 }, 4096, 1_281_167, 100, 10.0);
        assert!((s.peak_lr - 4.8).abs() < 1e-12);
        assert_eq!(s.warmup_steps, 3127);
        assert_eq!(s.total_steps, 31279);
    }

    #[test]
    fn sqrt_scaling_oracle() {
        assert!((LrScaling::Sqrt { base: 0.075 }.peak(256) - 1.2).abs() < 1e-12);
    }

    #[test]
    fn warmup_rises_linearly_then_cosine_falls_to_zero() {
        let s = Schedule {
            peak_lr: 2.0,
            warmup_steps: 10,
            total_steps: 110,
        };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 1.0).abs() < 1e-12);
        assert!((s.lr(10) - 2.0).abs() < 1e-12);
        // Halfway through the decay the cosine is at half the peak.
        assert!((s.lr(60) - 1.0).abs() < 1e-12);
        assert!(s.lr(110).abs() < 1e-12);
        assert!(s.lr(500).abs() < 1e-12);
        // Monotone after the peak.
        let lrs: Vec<f64> = (10..=110).map(|i| s.lr(i)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn no_warmup_starts_at_peak() {
        let s = Schedule::simclr(LrScaling::Linear { base: 0.3 }, 256, 1000, 10, 0.0);
        assert_eq!(s.warmup_steps, 0);
        assert!((s.lr(0) - 0.3).abs() < 1e-12);
    }
}
