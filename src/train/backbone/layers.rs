//! Building blocks shared by the backbones: convolutions and batch norms initialised
//! the way torchvision initialises a network trained from scratch, the conv → BN →
//! ReLU unit of the Inception family, and global average pooling.
//!
//! Nothing here calls `view`, so every block also runs on channels-last tensors.

use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Batch-norm epsilon of torchvision's ResNets.
pub(super) const RESNET_BN_EPS: f64 = 1e-5;
/// Batch-norm epsilon of the Inception family (torchvision and timm, after TF-slim).
pub(super) const INCEPTION_BN_EPS: f64 = 1e-3;

/// Kernel, stride and padding of one convolution.
#[derive(Debug, Clone, Copy)]
pub(super) struct ConvShape {
    kernel: [i64; 2],
    stride: i64,
    padding: [i64; 2],
}

impl ConvShape {
    /// A square `k × k` kernel.
    pub(super) fn square(kernel: i64, stride: i64, padding: i64) -> Self {
        ConvShape {
            kernel: [kernel, kernel],
            stride,
            padding: [padding, padding],
        }
    }

    /// A `k × k` kernel with stride 1 and no padding (Inception's "valid" default).
    pub(super) fn valid(kernel: i64) -> Self {
        Self::square(kernel, 1, 0)
    }

    /// A `k × k` kernel with stride 2 and no padding: the Inception reduction convs.
    pub(super) fn reduce(kernel: i64) -> Self {
        Self::square(kernel, 2, 0)
    }

    /// A `k × k` kernel with stride 1 that keeps the spatial size (odd `k`).
    pub(super) fn same(kernel: i64) -> Self {
        Self::square(kernel, 1, kernel / 2)
    }

    /// A factorised `height × width` kernel (1×7, 7×1, 1×3, 3×1) that keeps the
    /// spatial size.
    pub(super) fn rect(height: i64, width: i64) -> Self {
        ConvShape {
            kernel: [height, width],
            stride: 1,
            padding: [height / 2, width / 2],
        }
    }
}

/// A 2-D convolution with Kaiming-normal (fan-out, ReLU) weights and zero bias, as
/// torchvision's ResNet initialises its convolutions.
pub(super) fn conv2d(
    p: nn::Path,
    c_in: i64,
    c_out: i64,
    shape: ConvShape,
    bias: bool,
) -> nn::Conv2D {
    let config = nn::ConvConfigND::<[i64; 2]> {
        stride: [shape.stride, shape.stride],
        padding: shape.padding,
        bias,
        ws_init: nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        },
        bs_init: nn::Init::Const(0.),
        ..Default::default()
    };
    nn::conv(p, c_in, c_out, shape.kernel, config)
}

/// Batch norm with weight 1 and bias 0 (tch's default draws the weight from U(0, 1)).
pub(super) fn batch_norm(p: nn::Path, channels: i64, eps: f64) -> nn::BatchNorm {
    let config = nn::BatchNormConfig {
        eps,
        ws_init: nn::Init::Const(1.),
        bs_init: nn::Init::Const(0.),
        ..Default::default()
    };
    nn::batch_norm2d(p, channels, config)
}

/// Convolution without bias, batch norm, ReLU: torchvision's and timm's
/// `BasicConv2d`, with the same variable names (`conv`, `bn`).
#[derive(Debug)]
pub(super) struct ConvBnRelu {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBnRelu {
    pub(super) fn new(p: nn::Path, c_in: i64, c_out: i64, shape: ConvShape) -> Self {
        ConvBnRelu {
            conv: conv2d(&p / "conv", c_in, c_out, shape, false),
            bn: batch_norm(&p / "bn", c_out, INCEPTION_BN_EPS),
        }
    }
}

impl ModuleT for ConvBnRelu {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.conv).apply_t(&self.bn, train).relu()
    }
}

/// Applies a chain of conv units in order.
pub(super) fn apply_chain(xs: &Tensor, chain: &[ConvBnRelu], train: bool) -> Tensor {
    let mut ys = xs.shallow_clone();
    for unit in chain {
        ys = ys.apply_t(unit, train);
    }
    ys
}

/// `[N, C, H, W]` → `[N, C]` by averaging over space. A mean (not `view`) keeps this
/// valid for any memory layout.
pub(super) fn global_avg_pool(xs: &Tensor) -> Tensor {
    xs.mean_dim([-2_i64, -1].as_slice(), false, None::<tch::Kind>)
}

/// The 3×3, stride-2, unpadded max pool of the Inception stems and reduction blocks.
pub(super) fn max_pool_3x3_s2(xs: &Tensor) -> Tensor {
    xs.max_pool2d([3, 3], [2, 2], [0, 0], [1, 1], false)
}
