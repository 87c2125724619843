//! Optimizers whose whole state is a list of named tensors, so a checkpoint can save
//! it and a resumed attempt continues exactly: LARS (google-research/simclr
//! `lars_optimizer.py`), momentum SGD and Adam.
//!
//! Biases and batch-norm parameters (every parameter with at most one dimension) are
//! excluded from weight decay and from LARS's trust ratio, as in the reference.

use tch::{Kind, Tensor};

use super::{TrainError, TrainResult};

/// LARS's trust coefficient η.
pub const LARS_ETA: f64 = 0.001;
/// Momentum of LARS and SGD.
pub const MOMENTUM: f64 = 0.9;
const ADAM_BETAS: (f64, f64) = (0.9, 0.999);
const ADAM_EPS: f64 = 1e-8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    Lars,
    Sgd,
    Adam,
}

impl OptimizerKind {
    pub fn parse(name: &str) -> Option<OptimizerKind> {
        match name.to_ascii_lowercase().as_str() {
            "lars" => Some(OptimizerKind::Lars),
            "sgd" => Some(OptimizerKind::Sgd),
            "adam" => Some(OptimizerKind::Adam),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerKind::Lars => "lars",
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
        }
    }
}

/// One trainable parameter and its optimizer state.
struct Slot {
    name: String,
    weight: Tensor,
    /// Biases and batch-norm parameters: no weight decay, no trust ratio.
    excluded: bool,
    /// LARS/SGD momentum buffer, or Adam's first moment.
    first: Tensor,
    /// Adam's second moment (unused otherwise).
    second: Option<Tensor>,
}

/// An optimizer over named parameters.
pub struct Optimizer {
    kind: OptimizerKind,
    weight_decay: f64,
    slots: Vec<Slot>,
    /// Optimizer steps taken (Adam's bias correction needs it).
    pub steps: i64,
}

/// Whether a parameter is left out of weight decay and the trust ratio.
pub fn is_excluded(weight: &Tensor) -> bool {
    weight.dim() <= 1
}

impl Optimizer {
    /// An optimizer over `params` (name, trainable tensor), sorted by name so the
    /// saved state lines up with the parameters on reload.
    pub fn new(kind: OptimizerKind, weight_decay: f64, mut params: Vec<(String, Tensor)>) -> Self {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = params
            .into_iter()
            .map(|(name, weight)| {
                let first = weight.zeros_like().detach();
                let second = (kind == OptimizerKind::Adam).then(|| weight.zeros_like().detach());
                Slot {
                    excluded: is_excluded(&weight),
                    name,
                    weight,
                    first,
                    second,
                }
            })
            .collect();
        Optimizer {
            kind,
            weight_decay,
            slots,
            steps: 0,
        }
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    pub fn zero_grad(&mut self) {
        for slot in &mut self.slots {
            let mut grad = slot.weight.grad();
            if grad.defined() {
                let _ = grad.detach_().zero_();
            }
        }
    }

    /// One update at learning rate `lr` from the gradients in the parameters.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let steps = self.steps;
        tch::no_grad(|| {
            for slot in &mut self.slots {
                let grad = slot.weight.grad();
                if !grad.defined() {
                    continue;
                }
                let mut grad = grad.to_kind(slot.weight.kind());
                if !slot.excluded && self.weight_decay != 0.0 {
                    // Out of place: `grad` may alias the parameter's own gradient.
                    grad = grad.g_add(&(&slot.weight * self.weight_decay));
                }
                match self.kind {
                    OptimizerKind::Lars | OptimizerKind::Sgd => {
                        let scaled = if self.kind == OptimizerKind::Lars && !slot.excluded {
                            // trust = η‖w‖/‖g‖ where both norms are positive, else 1;
                            // kept on the device so no step waits for the host.
                            let w_norm = slot.weight.norm();
                            let g_norm = grad.norm();
                            let both_positive = w_norm.gt(0.0).logical_and(&g_norm.gt(0.0));
                            let ratio = (&w_norm * LARS_ETA) / &g_norm;
                            let trust = ratio.where_self(&both_positive, &w_norm.ones_like());
                            &grad * trust * lr
                        } else {
                            &grad * lr
                        };
                        // v = m·v + lr·trust·g;  w = w − v
                        let _ = slot.first.g_mul_scalar_(MOMENTUM).g_add_(&scaled);
                        let _ = slot.weight.g_sub_(&slot.first);
                    }
                    OptimizerKind::Adam => {
                        let (b1, b2) = ADAM_BETAS;
                        let _ = slot.first.g_mul_scalar_(b1).g_add_(&(&grad * (1.0 - b1)));
                        // The second moment always exists for Adam (built in `new`).
                        if let Some(second) = slot.second.as_mut() {
                            let _ = second
                                .g_mul_scalar_(b2)
                                .g_add_(&(&grad * &grad * (1.0 - b2)));
                            let m_hat = &slot.first / (1.0 - b1.powi(steps as i32));
                            let v_hat = &*second / (1.0 - b2.powi(steps as i32));
                            let update = m_hat / (v_hat.sqrt() + ADAM_EPS) * lr;
                            let _ = slot.weight.g_sub_(&update);
                        }
                    }
                }
            }
        });
    }

    /// The state as named tensors (on the CPU), for a checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for slot in &self.slots {
            out.push((
                format!("first.{}", slot.name),
                slot.first.to_device(tch::Device::Cpu),
            ));
            if let Some(second) = &slot.second {
                out.push((
                    format!("second.{}", slot.name),
                    second.to_device(tch::Device::Cpu),
                ));
            }
        }
        out
    }

    /// Restores state saved by [`Optimizer::state_tensors`]; every buffer must be there.
    pub fn load_state(&mut self, tensors: &[(String, Tensor)], steps: i64) -> TrainResult<()> {
        let find = |key: String| {
            tensors
                .iter()
                .find(|(n, _)| *n == key)
                .map(|(_, t)| t)
                .ok_or_else(|| TrainError::Fatal(format!("checkpoint optimizer state lacks {key}")))
        };
        for slot in &mut self.slots {
            let first = find(format!("first.{}", slot.name))?;
            tch::no_grad(|| slot.first.copy_(&first.to_kind(slot.first.kind())));
            if let Some(second) = slot.second.as_mut() {
                let saved = find(format!("second.{}", slot.name))?;
                tch::no_grad(|| second.copy_(&saved.to_kind(Kind::Float)));
            }
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: OptimizerKind, w: &[f64], wd: f64, steps: usize, bias: bool) -> Vec<Vec<f64>> {
        let weight = Tensor::from_slice(w).to_kind(Kind::Double);
        // A 2-D parameter is decayed and trust-scaled; a 1-D one is a bias.
        let weight = if bias { weight } else { weight.reshape([1, 2]) }.set_requires_grad(true);
        let mut opt = Optimizer::new(kind, wd, vec![("w".into(), weight.shallow_clone())]);
        let mut seen = Vec::new();
        for _ in 0..steps {
            opt.zero_grad();
            // A loss whose gradient is [0.6, 0.8] whatever w is.
            let g = Tensor::from_slice(&[0.6f64, 0.8]).reshape(weight.size());
            (&weight * g).sum(Kind::Double).backward();
            opt.step(0.1);
            seen.push(Vec::<f64>::try_from(weight.detach().flatten(0, -1)).expect("f64 values"));
        }
        seen
    }

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.iter().zip(b).all(|(x, y)| (x - y).abs() < tol)
    }

    /// REFERENCE.md's three-step LARS oracle (float64, lr 0.1, wd 0).
    #[test]
    fn lars_three_step_oracle() {
        let w = run(OptimizerKind::Lars, &[3.0, 4.0], 0.0, 3, false);
        assert!(close(&w[0], &[2.9997, 3.9996], 1e-12), "{:?}", w[0]);
        assert!(close(&w[1], &[2.99913003, 3.99884004], 1e-9), "{:?}", w[1]);
        assert!(
            close(&w[2], &[2.998317143997, 3.997756191996], 1e-11),
            "{:?}",
            w[2]
        );
    }

    /// With wd = 1e-6 the step-1 trust is 0.00499997500012: v = 0.1·trust·(g + wd·w).
    #[test]
    fn lars_weight_decay_changes_the_trust() {
        let w = run(OptimizerKind::Lars, &[3.0, 4.0], 1e-6, 1, false);
        let trust = 0.00499997500012;
        let expected = [
            3.0 - 0.1 * trust * (0.6 + 3e-6),
            4.0 - 0.1 * trust * (0.8 + 4e-6),
        ];
        assert!(close(&w[0], &expected, 1e-12), "{:?} vs {expected:?}", w[0]);
    }

    /// An excluded (1-D) parameter: plain momentum, w=[2.94,3.92] then [2.826,3.768].
    #[test]
    fn lars_excluded_parameter_oracle() {
        let w = run(OptimizerKind::Lars, &[3.0, 4.0], 1e-6, 2, true);
        assert!(close(&w[0], &[2.94, 3.92], 1e-12), "{:?}", w[0]);
        assert!(close(&w[1], &[2.826, 3.768], 1e-12), "{:?}", w[1]);
    }

    #[test]
    fn state_round_trips() {
        let weight = Tensor::from_slice(&[1.0f32, 2.0])
            .reshape([1, 2])
            .set_requires_grad(true);
        let mut opt = Optimizer::new(
            OptimizerKind::Adam,
            0.0,
            vec![("w".into(), weight.shallow_clone())],
        );
        (&weight * 3.0).sum(Kind::Float).backward();
        opt.step(0.01);
        let saved = opt.state_tensors();
        let mut fresh = Optimizer::new(
            OptimizerKind::Adam,
            0.0,
            vec![("w".into(), weight.shallow_clone())],
        );
        fresh
            .load_state(&saved, opt.steps)
            .expect("state saved by the same optimizer");
        for ((n1, t1), (n2, t2)) in saved.iter().zip(fresh.state_tensors()) {
            assert_eq!(n1, &n2);
            assert!(t1.allclose(&t2, 0.0, 0.0, false));
        }
        assert_eq!(fresh.steps, 1);
        assert!(fresh.load_state(&[], 1).is_err());
    }
}
