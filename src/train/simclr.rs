//! SimCLR's pieces: the v1 projection head and the NT-Xent loss.
//!
//! **Loss convention.** [`nt_xent`] is the mean over all 2N anchors of
//! `−log(exp(sim(i, partner)/τ) / Σ_{k≠i} exp(sim(i, k)/τ))`, as lightly and the paper
//! write it; at chance it equals ln(2N−1). google-research/simclr logs twice this value
//! (the sum of its two halves). Every `loss` metric sweeper stores uses the mean.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

/// The v1 projection head: Linear(d→d, no bias) → BN → ReLU → Linear(d→p, no bias) → BN.
#[derive(Debug)]
pub struct ProjectionHead {
    hidden: nn::Linear,
    hidden_bn: nn::BatchNorm,
    out: nn::Linear,
    out_bn: nn::BatchNorm,
}

impl ProjectionHead {
    /// Initialised as PyTorch initialises the reference heads (lightly, the SimCLR
    /// PyTorch ports): linear weights uniform in ±1/√fan_in and batch norm at weight 1,
    /// bias 0. tch's defaults would draw the linear weights √6 times wider and the
    /// batch-norm weights from U(0, 1), which shrinks the projection at random.
    pub fn new(p: &nn::Path, feature_dim: i64, projection_dim: i64) -> ProjectionHead {
        let linear = |fan_in: i64| {
            let bound = 1.0 / (fan_in as f64).sqrt();
            nn::LinearConfig {
                ws_init: nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
                bias: false,
                ..Default::default()
            }
        };
        let batch_norm = nn::BatchNormConfig {
            ws_init: nn::Init::Const(1.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        ProjectionHead {
            hidden: nn::linear(p / "hidden", feature_dim, feature_dim, linear(feature_dim)),
            hidden_bn: nn::batch_norm1d(p / "hidden_bn", feature_dim, batch_norm),
            out: nn::linear(p / "out", feature_dim, projection_dim, linear(feature_dim)),
            out_bn: nn::batch_norm1d(p / "out_bn", projection_dim, batch_norm),
        }
    }
}

impl ModuleT for ProjectionHead {
    fn forward_t(&self, features: &Tensor, train: bool) -> Tensor {
        let hidden = features
            .apply(&self.hidden)
            .apply_t(&self.hidden_bn, train)
            .relu();
        hidden.apply(&self.out).apply_t(&self.out_bn, train)
    }
}

/// NT-Xent of two views `[N, p]` (row k of each is the same sample) at temperature τ,
/// computed in float32 whatever the inputs' precision: the mean over the 2N anchors.
pub fn nt_xent(view1: &Tensor, view2: &Tensor, temperature: f64) -> Tensor {
    let n = view1.size()[0];
    let z = Tensor::cat(&[view1, view2], 0).to_kind(Kind::Float);
    let z = &z / z.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12);
    let logits = z.matmul(&z.transpose(0, 1)) / temperature;
    // Self-similarity is no candidate: a −∞ logit drops it from the softmax.
    let eye = Tensor::eye(2 * n, (Kind::Bool, z.device()));
    let logits = logits.masked_fill(&eye, f64::NEG_INFINITY);
    let partners = Tensor::cat(
        &[
            Tensor::arange_start(n, 2 * n, (Kind::Int64, z.device())),
            Tensor::arange(n, (Kind::Int64, z.device())),
        ],
        0,
    );
    logits.log_softmax(1, Kind::Float).nll_loss(&partners)
}

/// The loss at chance, ln(2N−1), for a batch of N samples (2N views).
pub fn chance_loss(batch_size: i64) -> f64 {
    ((2 * batch_size - 1) as f64).ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rows: &[&[f64]]) -> Tensor {
        let cols = rows[0].len() as i64;
        let flat: Vec<f64> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).reshape([rows.len() as i64, cols])
    }

    fn loss(a: &Tensor, b: &Tensor, tau: f64) -> f64 {
        nt_xent(a, b, tau).double_value(&[])
    }

    const TAUS: [f64; 3] = [1.0, 0.5, 0.1];

    /// REFERENCE.md cases A–E at τ = 1, 0.5, 0.1.
    #[test]
    fn reference_vectors() {
        let cases: Vec<(&str, Tensor, Tensor, [f64; 3])> = vec![
            (
                "A",
                t(&[&[1., 0.], &[0., 1.]]),
                t(&[&[1., 0.], &[0., 1.]]),
                [0.5514447139, 0.2395447662, 0.0000907957],
            ),
            (
                "A'",
                t(&[&[3., 0.], &[0., 0.5]]),
                t(&[&[2., 0.], &[0., 7.]]),
                [0.5514447139, 0.2395447662, 0.0000907957],
            ),
            (
                "B",
                t(&[&[1., 0.], &[0., 1.]]),
                t(&[&[0., 1.], &[1., 0.]]),
                [1.5514447139, 2.2395447662, 10.0000907957],
            ),
            (
                "C",
                t(&[&[1., 2., 3.], &[-1., 0.5, 2.], &[0., -1., 1.]]),
                t(&[&[1., 1., 3.], &[-2., 1., 1.], &[0.5, -1., 0.]]),
                [1.1500444555, 0.8358986092, 0.1781622287],
            ),
            ("D", t(&[&[1., 2.]]), t(&[&[-3., 1.]]), [0.0, 0.0, 0.0]),
            (
                "E",
                t(&[&[1.0f64, 2.0][..]; 4]),
                t(&[&[2.0f64, 4.0][..]; 4]),
                [1.9459101491; 3],
            ),
        ];
        for (name, a, b, expected) in cases {
            for (tau, want) in TAUS.iter().zip(expected) {
                let got = loss(&a, &b, *tau);
                // float32 arithmetic: relative 1e-5 (case B at τ=0.1 is about 10).
                assert!(
                    (got - want).abs() < 1e-5 * want.max(1.0),
                    "case {name} τ={tau}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn chance_levels() {
        assert!((chance_loss(64) - 4.8442).abs() < 1e-4);
        assert!((chance_loss(128) - 5.5413).abs() < 1e-4);
        assert!((chance_loss(256) - 6.2364).abs() < 1e-4);
    }

    #[test]
    fn loss_has_gradients_and_head_maps_to_projection_dim() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let head = ProjectionHead::new(&vs.root(), 8, 3);
        let features =
            Tensor::randn([6, 8], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let z = head.forward_t(&features, true);
        assert_eq!(z.size(), [6, 3]);
        let l = nt_xent(&z.narrow(0, 0, 3), &z.narrow(0, 3, 3), 0.5);
        l.backward();
        assert!(features.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
        // Four weight tensors, none with a bias: 8·8 + 8·3 weights + two BN pairs.
        let count: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        assert_eq!(count, 64 + 16 + 24 + 6);
    }

    #[test]
    fn head_starts_as_pytorch_initialises_it() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        ProjectionHead::new(&vs.root(), 512, 128);
        let variables = vs.variables();
        let get = |name: &str| variables.get(name).expect(name).shallow_clone();
        // nn.Linear(512, …): kaiming_uniform(a=√5) draws from ±1/√512 ≈ ±0.0442.
        for name in ["hidden.weight", "out.weight"] {
            let weight = get(name);
            let largest = weight.abs().max().double_value(&[]);
            assert!(largest <= 1.0 / 512f64.sqrt() + 1e-7, "{name}: {largest}");
            assert!(
                largest > 0.9 / 512f64.sqrt(),
                "{name} spans its range: {largest}"
            );
        }
        for name in ["hidden_bn.weight", "out_bn.weight"] {
            let weight = get(name);
            assert_eq!(weight.min().double_value(&[]), 1.0, "{name}");
            assert_eq!(weight.max().double_value(&[]), 1.0, "{name}");
        }
    }
}
