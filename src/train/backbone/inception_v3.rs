//! Inception-v3 (Szegedy et al. 2015) as torchvision builds it, as a feature
//! extractor: no auxiliary classifier, no dropout, no final linear layer.
//!
//! Variable names follow torchvision (`Conv2d_1a_3x3.conv`, `Mixed_5b.branch1x1.bn`,
//! …). The smallest input is 75 px: below that the stride-2 reduction in `Mixed_7a`
//! has nothing left to convolve.

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::layers::{apply_chain, global_avg_pool, max_pool_3x3_s2, ConvBnRelu, ConvShape};

/// Width of the pooled feature.
pub(super) const FEATURE_DIM: i64 = 2048;

/// torchvision's `F.avg_pool2d(x, 3, stride=1, padding=1)`: padding counts as zeros.
fn avg_pool_3x3_same(xs: &Tensor) -> Tensor {
    xs.avg_pool2d([3, 3], [1, 1], [1, 1], false, true, None::<i64>)
}

fn unit(p: &nn::Path, name: &str, c_in: i64, c_out: i64, shape: ConvShape) -> ConvBnRelu {
    ConvBnRelu::new(p / name, c_in, c_out, shape)
}

/// 35×35 block: 1×1, 5×5, double 3×3 and pooled branches (`Mixed_5b`–`5d`).
#[derive(Debug)]
struct InceptionA {
    branch1x1: ConvBnRelu,
    branch5x5: Vec<ConvBnRelu>,
    branch3x3dbl: Vec<ConvBnRelu>,
    branch_pool: ConvBnRelu,
}

impl InceptionA {
    fn new(p: &nn::Path, c_in: i64, pool_features: i64) -> Self {
        InceptionA {
            branch1x1: unit(p, "branch1x1", c_in, 64, ConvShape::valid(1)),
            branch5x5: vec![
                unit(p, "branch5x5_1", c_in, 48, ConvShape::valid(1)),
                unit(p, "branch5x5_2", 48, 64, ConvShape::same(5)),
            ],
            branch3x3dbl: vec![
                unit(p, "branch3x3dbl_1", c_in, 64, ConvShape::valid(1)),
                unit(p, "branch3x3dbl_2", 64, 96, ConvShape::same(3)),
                unit(p, "branch3x3dbl_3", 96, 96, ConvShape::same(3)),
            ],
            branch_pool: unit(p, "branch_pool", c_in, pool_features, ConvShape::valid(1)),
        }
    }
}

impl ModuleT for InceptionA {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        Tensor::cat(
            &[
                xs.apply_t(&self.branch1x1, train),
                apply_chain(xs, &self.branch5x5, train),
                apply_chain(xs, &self.branch3x3dbl, train),
                avg_pool_3x3_same(xs).apply_t(&self.branch_pool, train),
            ],
            1,
        )
    }
}

/// 35×35 → 17×17 reduction (`Mixed_6a`).
#[derive(Debug)]
struct InceptionB {
    branch3x3: ConvBnRelu,
    branch3x3dbl: Vec<ConvBnRelu>,
}

impl InceptionB {
    fn new(p: &nn::Path, c_in: i64) -> Self {
        InceptionB {
            branch3x3: unit(p, "branch3x3", c_in, 384, ConvShape::reduce(3)),
            branch3x3dbl: vec![
                unit(p, "branch3x3dbl_1", c_in, 64, ConvShape::valid(1)),
                unit(p, "branch3x3dbl_2", 64, 96, ConvShape::same(3)),
                unit(p, "branch3x3dbl_3", 96, 96, ConvShape::reduce(3)),
            ],
        }
    }
}

impl ModuleT for InceptionB {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        Tensor::cat(
            &[
                xs.apply_t(&self.branch3x3, train),
                apply_chain(xs, &self.branch3x3dbl, train),
                max_pool_3x3_s2(xs),
            ],
            1,
        )
    }
}

/// 17×17 block with factorised 7×7 convolutions (`Mixed_6b`–`6e`).
#[derive(Debug)]
struct InceptionC {
    branch1x1: ConvBnRelu,
    branch7x7: Vec<ConvBnRelu>,
    branch7x7dbl: Vec<ConvBnRelu>,
    branch_pool: ConvBnRelu,
}

impl InceptionC {
    fn new(p: &nn::Path, c_in: i64, c7: i64) -> Self {
        InceptionC {
            branch1x1: unit(p, "branch1x1", c_in, 192, ConvShape::valid(1)),
            branch7x7: vec![
                unit(p, "branch7x7_1", c_in, c7, ConvShape::valid(1)),
                unit(p, "branch7x7_2", c7, c7, ConvShape::rect(1, 7)),
                unit(p, "branch7x7_3", c7, 192, ConvShape::rect(7, 1)),
            ],
            branch7x7dbl: vec![
                unit(p, "branch7x7dbl_1", c_in, c7, ConvShape::valid(1)),
                unit(p, "branch7x7dbl_2", c7, c7, ConvShape::rect(7, 1)),
                unit(p, "branch7x7dbl_3", c7, c7, ConvShape::rect(1, 7)),
                unit(p, "branch7x7dbl_4", c7, c7, ConvShape::rect(7, 1)),
                unit(p, "branch7x7dbl_5", c7, 192, ConvShape::rect(1, 7)),
            ],
            branch_pool: unit(p, "branch_pool", c_in, 192, ConvShape::valid(1)),
        }
    }
}

impl ModuleT for InceptionC {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        Tensor::cat(
            &[
                xs.apply_t(&self.branch1x1, train),
                apply_chain(xs, &self.branch7x7, train),
                apply_chain(xs, &self.branch7x7dbl, train),
                avg_pool_3x3_same(xs).apply_t(&self.branch_pool, train),
            ],
            1,
        )
    }
}

/// 17×17 → 8×8 reduction (`Mixed_7a`).
#[derive(Debug)]
struct InceptionD {
    branch3x3: Vec<ConvBnRelu>,
    branch7x7x3: Vec<ConvBnRelu>,
}

impl InceptionD {
    fn new(p: &nn::Path, c_in: i64) -> Self {
        InceptionD {
            branch3x3: vec![
                unit(p, "branch3x3_1", c_in, 192, ConvShape::valid(1)),
                unit(p, "branch3x3_2", 192, 320, ConvShape::reduce(3)),
            ],
            branch7x7x3: vec![
                unit(p, "branch7x7x3_1", c_in, 192, ConvShape::valid(1)),
                unit(p, "branch7x7x3_2", 192, 192, ConvShape::rect(1, 7)),
                unit(p, "branch7x7x3_3", 192, 192, ConvShape::rect(7, 1)),
                unit(p, "branch7x7x3_4", 192, 192, ConvShape::reduce(3)),
            ],
        }
    }
}

impl ModuleT for InceptionD {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        Tensor::cat(
            &[
                apply_chain(xs, &self.branch3x3, train),
                apply_chain(xs, &self.branch7x7x3, train),
                max_pool_3x3_s2(xs),
            ],
            1,
        )
    }
}

/// 8×8 block with split 1×3 / 3×1 outputs (`Mixed_7b`, `Mixed_7c`).
#[derive(Debug)]
struct InceptionE {
    branch1x1: ConvBnRelu,
    branch3x3_1: ConvBnRelu,
    branch3x3_2a: ConvBnRelu,
    branch3x3_2b: ConvBnRelu,
    branch3x3dbl: Vec<ConvBnRelu>,
    branch3x3dbl_3a: ConvBnRelu,
    branch3x3dbl_3b: ConvBnRelu,
    branch_pool: ConvBnRelu,
}

impl InceptionE {
    fn new(p: &nn::Path, c_in: i64) -> Self {
        InceptionE {
            branch1x1: unit(p, "branch1x1", c_in, 320, ConvShape::valid(1)),
            branch3x3_1: unit(p, "branch3x3_1", c_in, 384, ConvShape::valid(1)),
            branch3x3_2a: unit(p, "branch3x3_2a", 384, 384, ConvShape::rect(1, 3)),
            branch3x3_2b: unit(p, "branch3x3_2b", 384, 384, ConvShape::rect(3, 1)),
            branch3x3dbl: vec![
                unit(p, "branch3x3dbl_1", c_in, 448, ConvShape::valid(1)),
                unit(p, "branch3x3dbl_2", 448, 384, ConvShape::same(3)),
            ],
            branch3x3dbl_3a: unit(p, "branch3x3dbl_3a", 384, 384, ConvShape::rect(1, 3)),
            branch3x3dbl_3b: unit(p, "branch3x3dbl_3b", 384, 384, ConvShape::rect(3, 1)),
            branch_pool: unit(p, "branch_pool", c_in, 192, ConvShape::valid(1)),
        }
    }
}

impl ModuleT for InceptionE {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let branch3x3 = xs.apply_t(&self.branch3x3_1, train);
        let branch3x3dbl = apply_chain(xs, &self.branch3x3dbl, train);
        Tensor::cat(
            &[
                xs.apply_t(&self.branch1x1, train),
                branch3x3.apply_t(&self.branch3x3_2a, train),
                branch3x3.apply_t(&self.branch3x3_2b, train),
                branch3x3dbl.apply_t(&self.branch3x3dbl_3a, train),
                branch3x3dbl.apply_t(&self.branch3x3dbl_3b, train),
                avg_pool_3x3_same(xs).apply_t(&self.branch_pool, train),
            ],
            1,
        )
    }
}

/// Inception-v3 feature extractor: `[N, 3, S, S]` (S ≥ 75) → `[N, 2048]`.
#[derive(Debug)]
pub(super) struct InceptionV3 {
    /// `Conv2d_1a_3x3`, `Conv2d_2a_3x3`, `Conv2d_2b_3x3`, then `maxpool1`.
    stem_a: Vec<ConvBnRelu>,
    /// `Conv2d_3b_1x1`, `Conv2d_4a_3x3`, then `maxpool2`.
    stem_b: Vec<ConvBnRelu>,
    blocks: Vec<Box<dyn ModuleT>>,
}

impl InceptionV3 {
    pub(super) fn new(p: &nn::Path) -> Self {
        let stem_a = vec![
            unit(p, "Conv2d_1a_3x3", 3, 32, ConvShape::reduce(3)),
            unit(p, "Conv2d_2a_3x3", 32, 32, ConvShape::valid(3)),
            unit(p, "Conv2d_2b_3x3", 32, 64, ConvShape::same(3)),
        ];
        let stem_b = vec![
            unit(p, "Conv2d_3b_1x1", 64, 80, ConvShape::valid(1)),
            unit(p, "Conv2d_4a_3x3", 80, 192, ConvShape::valid(3)),
        ];
        let blocks: Vec<Box<dyn ModuleT>> = vec![
            Box::new(InceptionA::new(&(p / "Mixed_5b"), 192, 32)),
            Box::new(InceptionA::new(&(p / "Mixed_5c"), 256, 64)),
            Box::new(InceptionA::new(&(p / "Mixed_5d"), 288, 64)),
            Box::new(InceptionB::new(&(p / "Mixed_6a"), 288)),
            Box::new(InceptionC::new(&(p / "Mixed_6b"), 768, 128)),
            Box::new(InceptionC::new(&(p / "Mixed_6c"), 768, 160)),
            Box::new(InceptionC::new(&(p / "Mixed_6d"), 768, 160)),
            Box::new(InceptionC::new(&(p / "Mixed_6e"), 768, 192)),
            Box::new(InceptionD::new(&(p / "Mixed_7a"), 768)),
            Box::new(InceptionE::new(&(p / "Mixed_7b"), 1280)),
            Box::new(InceptionE::new(&(p / "Mixed_7c"), FEATURE_DIM)),
        ];
        InceptionV3 {
            stem_a,
            stem_b,
            blocks,
        }
    }
}

impl ModuleT for InceptionV3 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = max_pool_3x3_s2(&apply_chain(xs, &self.stem_a, train));
        ys = max_pool_3x3_s2(&apply_chain(&ys, &self.stem_b, train));
        for block in &self.blocks {
            ys = block.forward_t(&ys, train);
        }
        global_avg_pool(&ys)
    }
}
