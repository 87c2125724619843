//! Optimizers whose whole state is a list of named tensors, so a checkpoint can save
//! it and a resumed attempt continues exactly: LARS (google-research/simclr
//! `lars_optimizer.py`), momentum SGD and Adam.
//!
//! Biases and batch-norm parameters (every parameter with at most one dimension) are
//! excluded from weight decay and from LARS's trust ratio, as in the reference.
//!
//! **One flat buffer.** A ResNet-50 has 161 parameter tensors; updating them one by
//! one costs a dozen small kernels each (two norms, the trust ratio, weight decay,
//! momentum, the update), about 2,000 launches a step. Instead the optimizer moves
//! every parameter, and every gradient, into views of one flat buffer each (in the
//! parameter's own memory order, so channels-last weights stay channels-last), keeps
//! its state flat too, and takes a step in about twenty whole-buffer operations: on a
//! GPU the per-parameter norms are one `segment_reduce` each and the per-parameter
//! trust ratios are spread back over the elements with one `repeat_interleave` (on
//! the CPU, where launches are cheap and those extra passes are not, LARS keeps
//! fused per-parameter norms and updates). Nothing waits for the host. Backward accumulates into the aliased gradients in place; before each
//! step the optimizer checks (by data pointer, on the host) that every parameter and
//! gradient still lives in its view, and moves back any that another owner replaced.

use std::ops::Range;

use tch::{Kind, Tensor};

use super::{TrainError, TrainResult};

/// LARS's trust coefficient η.
pub const LARS_ETA: f64 = 0.001;
/// Momentum of LARS and SGD.
pub const MOMENTUM: f64 = 0.9;
const ADAM_BETAS: (f64, f64) = (0.9, 0.999);
const ADAM_EPS: f64 = 1e-8;

/// The one definition of an optimizer name lives with the typed job parameters.
pub use crate::sweep::params::OptimizerKind;

/// Whether a parameter is left out of weight decay and the trust ratio.
pub fn is_excluded(weight: &Tensor) -> bool {
    weight.dim() <= 1
}

/// One parameter: where it lives in the flat buffers and how its view is shaped.
struct Slot {
    name: String,
    weight: Tensor,
    range: Range<i64>,
    /// Dimensions from the outermost in memory to the innermost (a permutation of
    /// `0..dim`): `[0, 1, 2, 3]` for a contiguous tensor, `[0, 2, 3, 1]` for
    /// channels-last.
    memory_order: Vec<i64>,
    /// Biases and batch-norm parameters: no weight decay, no trust ratio.
    excluded: bool,
    /// This parameter's views of the flat weight and gradient buffers.
    weight_view: Tensor,
    grad_view: Tensor,
}

impl Slot {
    /// The view of `flat` that holds this parameter, with the parameter's shape and
    /// memory order.
    fn view(&self, flat: &Tensor) -> Tensor {
        let sizes = self.weight.size();
        let stored: Vec<i64> = self
            .memory_order
            .iter()
            .map(|&d| sizes[d as usize])
            .collect();
        let mut inverse = vec![0i64; self.memory_order.len()];
        for (position, &dim) in self.memory_order.iter().enumerate() {
            inverse[dim as usize] = position as i64;
        }
        flat.narrow(0, self.range.start, self.range.end - self.range.start)
            .view(stored.as_slice())
            .permute(inverse.as_slice())
    }
}

/// Whether `t` is exactly `view`: same memory, same layout.
fn aliases(t: &Tensor, view: &Tensor) -> bool {
    t.data_ptr() == view.data_ptr() && t.stride() == view.stride()
}

/// The order of `t`'s dimensions in memory, outermost first (ties keep their order).
fn memory_order(t: &Tensor) -> Vec<i64> {
    let strides = t.stride();
    let mut order: Vec<i64> = (0..strides.len() as i64).collect();
    order.sort_by_key(|&d| std::cmp::Reverse(strides[d as usize]));
    order
}

/// An optimizer over named parameters.
pub struct Optimizer {
    kind: OptimizerKind,
    weight_decay: f64,
    /// Non-excluded parameters first, so weight decay touches one leading range.
    slots: Vec<Slot>,
    /// Elements of the non-excluded parameters (the leading range of the buffers).
    decayed: i64,
    weights: Tensor,
    grads: Tensor,
    /// Elements per parameter, in slot order.
    lengths: Tensor,
    /// 1 for parameters that take LARS's trust ratio, 0 for excluded ones.
    trusted: Tensor,
    /// LARS/SGD momentum buffer, or Adam's first moment.
    first: Tensor,
    /// Adam's second moment (unused otherwise).
    second: Option<Tensor>,
    /// Optimizer steps taken (Adam's bias correction needs it).
    pub steps: i64,
}

impl Optimizer {
    /// An optimizer over `params` (name, trainable tensor, all of one kind and on one
    /// device). Each parameter's data moves into the optimizer's flat buffer: the
    /// tensors (and the `VarStore` they came from) keep their values and shapes.
    pub fn new(kind: OptimizerKind, weight_decay: f64, params: Vec<(String, Tensor)>) -> Self {
        let mut params = params;
        // Decayed parameters first, then by name; names keep the saved state stable.
        params.sort_by(|a, b| (is_excluded(&a.1), &a.0).cmp(&(is_excluded(&b.1), &b.0)));
        let (kind_of, device) = params
            .first()
            .map(|(_, t)| (t.kind(), t.device()))
            .unwrap_or((Kind::Float, tch::Device::Cpu));
        let mut offset = 0;
        let mut decayed = 0;
        let slots: Vec<Slot> = params
            .into_iter()
            .map(|(name, weight)| {
                let numel = weight.numel() as i64;
                let excluded = is_excluded(&weight);
                if !excluded {
                    decayed += numel;
                }
                let slot = Slot {
                    name,
                    range: offset..offset + numel,
                    memory_order: memory_order(&weight),
                    excluded,
                    weight,
                    // Set below, once the buffers exist.
                    weight_view: Tensor::new(),
                    grad_view: Tensor::new(),
                };
                offset += numel;
                slot
            })
            .collect();
        let total = offset;
        let opts = (kind_of, device);
        let lengths: Vec<i64> = slots.iter().map(|s| s.range.end - s.range.start).collect();
        let trusted: Vec<f32> = slots
            .iter()
            .map(|s| if s.excluded { 0.0 } else { 1.0 })
            .collect();
        let weights = Tensor::zeros([total], opts);
        let grads = Tensor::zeros([total], opts);
        let slots: Vec<Slot> = slots
            .into_iter()
            .map(|slot| Slot {
                weight_view: slot.view(&weights),
                grad_view: slot.view(&grads),
                ..slot
            })
            .collect();
        let mut optimizer = Optimizer {
            kind,
            weight_decay,
            decayed,
            weights,
            grads,
            lengths: Tensor::from_slice(&lengths).to_device(device),
            trusted: Tensor::from_slice(&trusted)
                .to_kind(kind_of)
                .to_device(device),
            first: Tensor::zeros([total], opts),
            second: (kind == OptimizerKind::Adam).then(|| Tensor::zeros([total], opts)),
            slots,
            steps: 0,
        };
        optimizer.alias_weights();
        optimizer
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// Moves every parameter whose data is not (or no longer) its view of the flat
    /// buffer into it, keeping its values.
    fn alias_weights(&mut self) {
        tch::no_grad(|| {
            for slot in &mut self.slots {
                if !aliases(&slot.weight, &slot.weight_view) {
                    slot.weight_view.copy_(&slot.weight);
                    slot.weight.set_data(&slot.weight_view);
                }
            }
        });
    }

    /// The same for gradients; a parameter without one gets a zero gradient (its
    /// update is then undone, see [`Optimizer::step`]). Returns the slots that had none.
    fn alias_grads(&mut self) -> Vec<usize> {
        let mut missing = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let mut grad = slot.weight.grad();
            if !grad.defined() {
                missing.push(index);
                let _ = slot.grad_view.zero_();
            } else if !aliases(&grad, &slot.grad_view) {
                slot.grad_view.copy_(&grad);
                grad.set_data(&slot.grad_view);
            }
        }
        missing
    }

    pub fn zero_grad(&mut self) {
        // Gradients that live in the flat buffer are zeroed with it; any other (a
        // parameter's first gradient, before the first step aliased it) one by one.
        let _ = self.grads.zero_();
        for slot in &self.slots {
            let mut grad = slot.weight.grad();
            if grad.defined() && !aliases(&grad, &slot.grad_view) {
                let _ = grad.detach_().zero_();
            }
        }
    }

    /// One update at learning rate `lr` from the gradients in the parameters.
    /// A parameter without a gradient is left as it was, state included. Weight decay
    /// is added to the gradients in place: after a step they hold `g + wd·w`.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        tch::no_grad(|| {
            self.alias_weights();
            let missing = self.alias_grads();
            let saved: Vec<(Range<i64>, Vec<Tensor>)> = missing
                .iter()
                .map(|&i| {
                    let range = self.slots[i].range.clone();
                    let len = range.end - range.start;
                    let copies = self
                        .buffers()
                        .iter()
                        .map(|b| b.narrow(0, range.start, len).copy())
                        .collect();
                    (range, copies)
                })
                .collect();
            self.update(lr);
            for (range, copies) in saved {
                let len = range.end - range.start;
                for (buffer, copy) in self.buffers().iter().zip(copies) {
                    buffer.narrow(0, range.start, len).copy_(&copy);
                }
            }
        });
    }

    /// The weights and every state buffer.
    fn buffers(&self) -> Vec<Tensor> {
        let mut all = vec![self.weights.shallow_clone(), self.first.shallow_clone()];
        if let Some(second) = &self.second {
            all.push(second.shallow_clone());
        }
        all
    }

    fn update(&mut self, lr: f64) {
        let w = &mut self.weights;
        if self.weight_decay != 0.0 && self.decayed > 0 {
            // g += wd·w in one fused pass, in the gradient buffer itself: after a step
            // the parameters' gradients include the decay (the next `zero_grad`
            // clears them anyway).
            let wd = Tensor::from(self.weight_decay)
                .to_kind(w.kind())
                .to_device(w.device());
            let _ = self
                .grads
                .narrow(0, 0, self.decayed)
                .addcmul_(&w.narrow(0, 0, self.decayed), &wd);
        }
        let g = self.grads.shallow_clone();
        match self.kind {
            OptimizerKind::Lars => {
                // On a GPU every launch costs, so the norms are two segment sums over
                // the whole buffers and the trust ratios are spread over the elements
                // with one `repeat_interleave`. On the CPU launches are cheap and those
                // two whole-buffer passes are not (`repeat_interleave` builds an index
                // per element): there, fused per-parameter norms and updates.
                let flat = w.device().is_cuda();
                let ranges: Vec<(i64, i64)> = self
                    .slots
                    .iter()
                    .map(|s| (s.range.start, s.range.end - s.range.start))
                    .collect();
                let norms = |x: &Tensor| {
                    if flat {
                        Tensor::segment_reduce(
                            &(x * x),
                            "sum",
                            Some(&self.lengths),
                            None::<&Tensor>,
                            None::<&Tensor>,
                            0,
                            false,
                            0.0,
                        )
                        .sqrt()
                    } else {
                        let each: Vec<Tensor> = ranges
                            .iter()
                            .map(|&(start, len)| x.narrow(0, start, len).norm())
                            .collect();
                        Tensor::stack(&each, 0)
                    }
                };
                // trust = η‖w‖/‖g‖ per parameter where both norms are positive and the
                // parameter is not excluded, else 1.
                let w_norm = norms(w);
                let g_norm = norms(&g);
                let use_ratio = w_norm
                    .gt(0.0)
                    .logical_and(&g_norm.gt(0.0))
                    .logical_and(&self.trusted.gt(0.0));
                // Where a norm is 0 the ratio is not finite, and not used either.
                let ratio = (&w_norm * LARS_ETA) / &g_norm;
                let trust = ratio.where_self(&use_ratio, &w_norm.ones_like()) * lr;
                // v = m·v + lr·trust·g;  w = w − v
                let _ = self.first.g_mul_scalar_(MOMENTUM);
                if flat {
                    let total = w.size()[0];
                    let scale = trust.repeat_interleave_self_tensor(&self.lengths, 0, total);
                    let _ = self.first.addcmul_(&g, &scale);
                } else {
                    for (index, &(start, len)) in ranges.iter().enumerate() {
                        let _ = self
                            .first
                            .narrow(0, start, len)
                            .addcmul_(&g.narrow(0, start, len), &trust.get(index as i64));
                    }
                }
                let _ = w.g_sub_(&self.first);
            }
            OptimizerKind::Sgd => {
                let _ = self.first.g_mul_scalar_(MOMENTUM).g_add_(&(&g * lr));
                let _ = w.g_sub_(&self.first);
            }
            OptimizerKind::Adam => {
                let (b1, b2) = ADAM_BETAS;
                let steps = self.steps as i32;
                let _ = self.first.g_mul_scalar_(b1).g_add_(&(&g * (1.0 - b1)));
                // The second moment always exists for Adam (built in `new`).
                if let Some(second) = self.second.as_mut() {
                    let _ = second.g_mul_scalar_(b2).addcmul_(&g, &(&g * (1.0 - b2)));
                    let denominator = (&*second / (1.0 - b2.powi(steps))).sqrt() + ADAM_EPS;
                    let update = &self.first / denominator * (lr / (1.0 - b1.powi(steps)));
                    let _ = w.g_sub_(&update);
                }
            }
        }
    }

    /// The state as named tensors (copies on the CPU, one per parameter), for a
    /// checkpoint.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for slot in &self.slots {
            let cpu = |flat: &Tensor| slot.view(flat).to_device(tch::Device::Cpu).copy();
            out.push((format!("first.{}", slot.name), cpu(&self.first)));
            if let Some(second) = &self.second {
                out.push((format!("second.{}", slot.name), cpu(second)));
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
        for slot in &self.slots {
            let mut first = slot.view(&self.first);
            let saved = find(format!("first.{}", slot.name))?;
            tch::no_grad(|| first.copy_(&saved.to_kind(first.kind())));
            if let Some(second) = &self.second {
                let mut second = slot.view(second);
                let saved = find(format!("second.{}", slot.name))?;
                tch::no_grad(|| second.copy_(&saved.to_kind(second.kind())));
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

    /// The per-parameter LARS of REFERENCE.md, written out plainly, for comparison.
    fn lars_reference(
        w: &[f64],
        g: &[f64],
        v: &mut [f64],
        lr: f64,
        wd: f64,
        excluded: bool,
    ) -> Vec<f64> {
        let g: Vec<f64> = if excluded {
            g.to_vec()
        } else {
            g.iter().zip(w).map(|(g, w)| g + wd * w).collect()
        };
        let norm = |x: &[f64]| x.iter().map(|a| a * a).sum::<f64>().sqrt();
        let (wn, gn) = (norm(w), norm(&g));
        let trust = if !excluded && wn > 0.0 && gn > 0.0 {
            LARS_ETA * wn / gn
        } else {
            1.0
        };
        v.iter_mut()
            .zip(&g)
            .zip(w)
            .map(|((v, g), w)| {
                *v = MOMENTUM * *v + lr * trust * g;
                w - *v
            })
            .collect()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        // Row-major order whatever the layout.
        Vec::<f64>::try_from(t.detach().contiguous().flatten(0, -1)).expect("f64 values")
    }

    /// Several parameters of different shapes and layouts in one flat buffer: each
    /// follows its own per-parameter LARS, a channels-last one included, over
    /// steps whose gradients change, with gradients accumulating in the aliased
    /// buffer.
    #[test]
    fn flat_lars_matches_per_parameter_lars() {
        let opts = (Kind::Double, tch::Device::Cpu);
        let conv = Tensor::randn([4, 3, 2, 2], opts)
            .permute([0, 2, 3, 1])
            .contiguous()
            .permute([0, 3, 1, 2])
            .set_requires_grad(true);
        let linear = Tensor::randn([5, 4], opts).set_requires_grad(true);
        let bias = Tensor::randn([5], opts).set_requires_grad(true);
        let params = [&conv, &linear, &bias];
        let mut expected: Vec<Vec<f64>> = params.iter().map(|p| values(p)).collect();
        let mut momenta: Vec<Vec<f64>> = expected.iter().map(|w| vec![0.0; w.len()]).collect();
        let mut opt = Optimizer::new(
            OptimizerKind::Lars,
            1e-3,
            vec![
                ("b".into(), bias.shallow_clone()),
                ("conv".into(), conv.shallow_clone()),
                ("lin".into(), linear.shallow_clone()),
            ],
        );
        assert_eq!(conv.stride(), [12, 1, 6, 3], "still channels-last");
        for step in 0..4 {
            opt.zero_grad();
            // Gradients that depend on the weights and the step, in two backward
            // passes that accumulate.
            for half in 0..2 {
                let loss = (&conv * &conv).sum(Kind::Double) * (1.0 + step as f64)
                    + (&linear * (half as f64 + 0.5)).tanh().sum(Kind::Double)
                    + (&bias * &bias * &bias).sum(Kind::Double);
                loss.backward();
            }
            let grads: Vec<Vec<f64>> = params.iter().map(|p| values(&p.grad())).collect();
            for (i, p) in params.iter().enumerate() {
                expected[i] = lars_reference(
                    &expected[i],
                    &grads[i],
                    &mut momenta[i],
                    0.5,
                    1e-3,
                    is_excluded(p),
                );
            }
            opt.step(0.5);
            for (i, p) in params.iter().enumerate() {
                assert!(
                    close(&values(p), &expected[i], 1e-12),
                    "param {i}, step {step}"
                );
            }
        }
    }

    /// A parameter that gets no gradient is left exactly as it was, momentum included.
    #[test]
    fn a_parameter_without_gradient_is_untouched() {
        let used = Tensor::from_slice(&[1.0f64, 2.0])
            .reshape([1, 2])
            .set_requires_grad(true);
        let unused = Tensor::from_slice(&[3.0f64, 4.0])
            .reshape([1, 2])
            .set_requires_grad(true);
        let mut opt = Optimizer::new(
            OptimizerKind::Sgd,
            0.1,
            vec![
                ("a".into(), used.shallow_clone()),
                ("b".into(), unused.shallow_clone()),
            ],
        );
        for _ in 0..2 {
            opt.zero_grad();
            (&used * 2.0).sum(Kind::Double).backward();
            opt.step(0.1);
        }
        assert_eq!(values(&unused), [3.0, 4.0]);
        assert_ne!(values(&used), [1.0, 2.0]);
        let state = opt.state_tensors();
        let momentum_b = &state.iter().find(|(n, _)| n == "first.b").expect("saved").1;
        assert_eq!(values(momentum_b), [0.0, 0.0]);
    }

    /// Weights that live in the flat buffer still save one copy each: a checkpoint of
    /// a store whose variables alias the buffer is no larger than one of plain ones.
    #[test]
    fn aliased_weights_save_at_their_own_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        for i in 0..8 {
            let _ = vs
                .root()
                .var(&format!("w{i}"), &[256, 256], tch::nn::Init::Const(1.0));
        }
        let plain = dir.path().join("plain.ot");
        vs.save(&plain).expect("save");
        let _opt = Optimizer::new(
            OptimizerKind::Lars,
            0.0,
            vs.trainable_variables()
                .into_iter()
                .enumerate()
                .map(|(i, t)| (format!("w{i}"), t))
                .collect(),
        );
        let aliased = dir.path().join("aliased.ot");
        vs.save(&aliased).expect("save");
        let size = |p: &std::path::Path| std::fs::metadata(p).expect("written").len();
        assert!(
            size(&aliased) <= size(&plain) + 4096,
            "{} vs {}",
            size(&aliased),
            size(&plain)
        );
        let mut other = tch::nn::VarStore::new(tch::Device::Cpu);
        let w = other
            .root()
            .var("w3", &[256, 256], tch::nn::Init::Const(0.0));
        other.load_partial(&aliased).expect("load");
        assert_eq!(w.sum(Kind::Float).double_value(&[]), 65536.0);
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
