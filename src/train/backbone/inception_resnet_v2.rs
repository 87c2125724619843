//! Inception-ResNet-v2 (Szegedy et al. 2016) as timm builds it
//! (`timm.models.inception_resnet_v2`), as a feature extractor without the
//! classifier: stem, `mixed_5b`, 10 × Block35 (scale 0.17), `mixed_6a`,
//! 20 × Block17 (scale 0.10), `mixed_7a`, 9 × Block8 (scale 0.20) and one more
//! without the final ReLU, then a 1×1 conv from 2080 to 1536 channels.
//!
//! Variable names follow timm (`conv2d_1a.conv`, `mixed_5b.branch1.0.bn`,
//! `repeat_1.3.conv2d`, `block8.conv2d`, …). As in Inception-v3, the smallest input
//! is 75 px.

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::layers::{apply_chain, conv2d, global_avg_pool, max_pool_3x3_s2, ConvBnRelu, ConvShape};

/// Width of the pooled feature.
pub(super) const FEATURE_DIM: i64 = 1536;

/// One conv unit of a branch: input channels, output channels, shape.
type UnitSpec = (i64, i64, ConvShape);

/// A branch of conv units. timm names a one-unit branch `branchK` and a longer one
/// `branchK.0`, `branchK.1`, … (an `nn.Sequential`).
fn branch(p: &nn::Path, name: &str, units: &[UnitSpec]) -> Vec<ConvBnRelu> {
    match units {
        [(c_in, c_out, shape)] => vec![ConvBnRelu::new(p / name, *c_in, *c_out, *shape)],
        _ => {
            let sequential = p / name;
            units
                .iter()
                .enumerate()
                .map(|(index, &(c_in, c_out, shape))| {
                    ConvBnRelu::new(&sequential / index.to_string(), c_in, c_out, shape)
                })
                .collect()
        }
    }
}

/// The pooling branch of a mixed block.
#[derive(Debug)]
enum PoolBranch {
    /// 3×3 average pool (stride 1, padding not counted), then a 1×1 conv unit.
    AvgThenConv(Box<ConvBnRelu>),
    /// 3×3 max pool with stride 2 (the reduction blocks).
    Max,
}

/// Parallel conv branches plus a pooling branch, concatenated on channels.
#[derive(Debug)]
struct Mixed {
    branches: Vec<Vec<ConvBnRelu>>,
    pool: PoolBranch,
}

impl ModuleT for Mixed {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut outputs: Vec<Tensor> = self
            .branches
            .iter()
            .map(|chain| apply_chain(xs, chain, train))
            .collect();
        outputs.push(match &self.pool {
            PoolBranch::AvgThenConv(unit) => xs
                .avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None::<i64>)
                .apply_t(unit.as_ref(), train),
            PoolBranch::Max => max_pool_3x3_s2(xs),
        });
        Tensor::cat(&outputs, 1)
    }
}

/// `mixed_5b`: 192 → 320 channels at 35×35.
fn mixed_5b(p: &nn::Path) -> Mixed {
    // timm's branch3 is `Sequential(AvgPool2d, BasicConv2d)`: the conv is index 1.
    let pool_conv = ConvBnRelu::new(&(p / "branch3") / "1", 192, 64, ConvShape::valid(1));
    Mixed {
        branches: vec![
            branch(p, "branch0", &[(192, 96, ConvShape::valid(1))]),
            branch(
                p,
                "branch1",
                &[(192, 48, ConvShape::valid(1)), (48, 64, ConvShape::same(5))],
            ),
            branch(
                p,
                "branch2",
                &[
                    (192, 64, ConvShape::valid(1)),
                    (64, 96, ConvShape::same(3)),
                    (96, 96, ConvShape::same(3)),
                ],
            ),
        ],
        pool: PoolBranch::AvgThenConv(Box::new(pool_conv)),
    }
}

/// `mixed_6a`: 35×35 × 320 → 17×17 × 1088.
fn mixed_6a(p: &nn::Path) -> Mixed {
    Mixed {
        branches: vec![
            branch(p, "branch0", &[(320, 384, ConvShape::reduce(3))]),
            branch(
                p,
                "branch1",
                &[
                    (320, 256, ConvShape::valid(1)),
                    (256, 256, ConvShape::same(3)),
                    (256, 384, ConvShape::reduce(3)),
                ],
            ),
        ],
        pool: PoolBranch::Max,
    }
}

/// `mixed_7a`: 17×17 × 1088 → 8×8 × 2080.
fn mixed_7a(p: &nn::Path) -> Mixed {
    Mixed {
        branches: vec![
            branch(
                p,
                "branch0",
                &[
                    (1088, 256, ConvShape::valid(1)),
                    (256, 384, ConvShape::reduce(3)),
                ],
            ),
            branch(
                p,
                "branch1",
                &[
                    (1088, 256, ConvShape::valid(1)),
                    (256, 288, ConvShape::reduce(3)),
                ],
            ),
            branch(
                p,
                "branch2",
                &[
                    (1088, 256, ConvShape::valid(1)),
                    (256, 288, ConvShape::same(3)),
                    (288, 320, ConvShape::reduce(3)),
                ],
            ),
        ],
        pool: PoolBranch::Max,
    }
}

/// A scaled residual Inception block (Block35, Block17, Block8): the branches are
/// concatenated, projected back to the input width by a 1×1 conv with bias, scaled
/// and added to the input, then (except for the very last Block8) passed through
/// ReLU.
#[derive(Debug)]
struct ResidualInception {
    branches: Vec<Vec<ConvBnRelu>>,
    project: nn::Conv2D,
    scale: f64,
    relu: bool,
}

impl ResidualInception {
    /// `channels` is the block's input and output width; `concat` the width of the
    /// concatenated branches.
    fn new(
        p: &nn::Path,
        branches: Vec<Vec<ConvBnRelu>>,
        concat: i64,
        channels: i64,
        scale: f64,
        relu: bool,
    ) -> Self {
        let project = conv2d(p / "conv2d", concat, channels, ConvShape::valid(1), true);
        ResidualInception {
            branches,
            project,
            scale,
            relu,
        }
    }

    /// Block35 at 35×35 × 320.
    fn block35(p: &nn::Path) -> Self {
        let branches = vec![
            branch(p, "branch0", &[(320, 32, ConvShape::valid(1))]),
            branch(
                p,
                "branch1",
                &[(320, 32, ConvShape::valid(1)), (32, 32, ConvShape::same(3))],
            ),
            branch(
                p,
                "branch2",
                &[
                    (320, 32, ConvShape::valid(1)),
                    (32, 48, ConvShape::same(3)),
                    (48, 64, ConvShape::same(3)),
                ],
            ),
        ];
        Self::new(p, branches, 32 + 32 + 64, 320, 0.17, true)
    }

    /// Block17 at 17×17 × 1088.
    fn block17(p: &nn::Path) -> Self {
        let branches = vec![
            branch(p, "branch0", &[(1088, 192, ConvShape::valid(1))]),
            branch(
                p,
                "branch1",
                &[
                    (1088, 128, ConvShape::valid(1)),
                    (128, 160, ConvShape::rect(1, 7)),
                    (160, 192, ConvShape::rect(7, 1)),
                ],
            ),
        ];
        Self::new(p, branches, 192 + 192, 1088, 0.10, true)
    }

    /// Block8 at 8×8 × 2080.
    fn block8(p: &nn::Path, scale: f64, relu: bool) -> Self {
        let branches = vec![
            branch(p, "branch0", &[(2080, 192, ConvShape::valid(1))]),
            branch(
                p,
                "branch1",
                &[
                    (2080, 192, ConvShape::valid(1)),
                    (192, 224, ConvShape::rect(1, 3)),
                    (224, 256, ConvShape::rect(3, 1)),
                ],
            ),
        ];
        Self::new(p, branches, 192 + 256, 2080, scale, relu)
    }
}

impl ModuleT for ResidualInception {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let outputs: Vec<Tensor> = self
            .branches
            .iter()
            .map(|chain| apply_chain(xs, chain, train))
            .collect();
        let ys = Tensor::cat(&outputs, 1).apply(&self.project) * self.scale + xs;
        if self.relu {
            ys.relu()
        } else {
            ys
        }
    }
}

/// Inception-ResNet-v2 feature extractor: `[N, 3, S, S]` (S ≥ 75) → `[N, 1536]`.
#[derive(Debug)]
pub(super) struct InceptionResNetV2 {
    /// `conv2d_1a`, `conv2d_2a`, `conv2d_2b`, then `maxpool_3a`.
    stem_a: Vec<ConvBnRelu>,
    /// `conv2d_3b`, `conv2d_4a`, then `maxpool_5a`.
    stem_b: Vec<ConvBnRelu>,
    /// `mixed_5b` through `block8`.
    blocks: Vec<Box<dyn ModuleT>>,
    conv2d_7b: ConvBnRelu,
}

impl InceptionResNetV2 {
    pub(super) fn new(p: &nn::Path) -> Self {
        let stem_a = vec![
            ConvBnRelu::new(p / "conv2d_1a", 3, 32, ConvShape::reduce(3)),
            ConvBnRelu::new(p / "conv2d_2a", 32, 32, ConvShape::valid(3)),
            ConvBnRelu::new(p / "conv2d_2b", 32, 64, ConvShape::same(3)),
        ];
        let stem_b = vec![
            ConvBnRelu::new(p / "conv2d_3b", 64, 80, ConvShape::valid(1)),
            ConvBnRelu::new(p / "conv2d_4a", 80, 192, ConvShape::valid(3)),
        ];
        let mut blocks: Vec<Box<dyn ModuleT>> = vec![Box::new(mixed_5b(&(p / "mixed_5b")))];
        let repeat = p / "repeat";
        for index in 0..10 {
            blocks.push(Box::new(ResidualInception::block35(
                &(&repeat / index.to_string()),
            )));
        }
        blocks.push(Box::new(mixed_6a(&(p / "mixed_6a"))));
        let repeat_1 = p / "repeat_1";
        for index in 0..20 {
            blocks.push(Box::new(ResidualInception::block17(
                &(&repeat_1 / index.to_string()),
            )));
        }
        blocks.push(Box::new(mixed_7a(&(p / "mixed_7a"))));
        let repeat_2 = p / "repeat_2";
        for index in 0..9 {
            let block = ResidualInception::block8(&(&repeat_2 / index.to_string()), 0.20, true);
            blocks.push(Box::new(block));
        }
        // The last Block8 keeps timm's default scale of 1.0 and has no ReLU.
        blocks.push(Box::new(ResidualInception::block8(
            &(p / "block8"),
            1.0,
            false,
        )));
        let conv2d_7b = ConvBnRelu::new(p / "conv2d_7b", 2080, FEATURE_DIM, ConvShape::valid(1));
        InceptionResNetV2 {
            stem_a,
            stem_b,
            blocks,
            conv2d_7b,
        }
    }
}

impl ModuleT for InceptionResNetV2 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = max_pool_3x3_s2(&apply_chain(xs, &self.stem_a, train));
        ys = max_pool_3x3_s2(&apply_chain(&ys, &self.stem_b, train));
        for block in &self.blocks {
            ys = block.forward_t(&ys, train);
        }
        global_avg_pool(&ys.apply_t(&self.conv2d_7b, train))
    }
}
