//! ResNets (He et al. 2015) as torchvision builds them (v1.5: the stride of a
//! bottleneck sits on its 3×3 conv), without the classifier, plus a small
//! CIFAR-style variant for CPU demos and tests.
//!
//! Variable names follow torchvision (`conv1`, `bn1`, `layer1.0.conv1`,
//! `layer2.0.downsample.0`, …), so a converted torchvision checkpoint lines up.

use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::layers::{batch_norm, conv2d, global_avg_pool, ConvShape, RESNET_BN_EPS};

/// How the network turns the image into the first feature map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stem {
    /// 7×7 conv with stride 2, then a 3×3 max pool with stride 2: for 224 px images.
    ImageNet,
    /// One 3×3 conv with stride 1 and no pooling: for 32–64 px images.
    Cifar,
}

/// The residual unit of every stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlockKind {
    /// Two 3×3 convs (ResNet-18/34).
    Basic,
    /// 1×1 → 3×3 → 1×1 with a 4× wider output (ResNet-50/101/152).
    Bottleneck,
}

impl BlockKind {
    const fn expansion(self) -> i64 {
        match self {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        }
    }
}

/// One ResNet architecture.
#[derive(Debug, Clone, Copy)]
pub(super) struct ResNetConfig {
    pub stem: Stem,
    pub block: BlockKind,
    /// Channels of the stem's output.
    pub stem_width: i64,
    /// Inner width of each of the four stages (a bottleneck's output is 4× wider).
    pub widths: [i64; 4],
    /// Blocks per stage.
    pub depths: [i64; 4],
}

impl ResNetConfig {
    pub(super) const RESNET18: ResNetConfig = ResNetConfig {
        stem: Stem::ImageNet,
        block: BlockKind::Basic,
        stem_width: 64,
        widths: [64, 128, 256, 512],
        depths: [2, 2, 2, 2],
    };
    pub(super) const RESNET50: ResNetConfig = ResNetConfig {
        stem: Stem::ImageNet,
        block: BlockKind::Bottleneck,
        stem_width: 64,
        widths: [64, 128, 256, 512],
        depths: [3, 4, 6, 3],
    };
    pub(super) const RESNET101: ResNetConfig = ResNetConfig {
        stem: Stem::ImageNet,
        block: BlockKind::Bottleneck,
        stem_width: 64,
        widths: [64, 128, 256, 512],
        depths: [3, 4, 23, 3],
    };
    /// The demo network: basic blocks, one per stage, at a quarter of ResNet-18's
    /// widths, behind a CIFAR stem: 1,226,400 trainable parameters, 256 features. At
    /// 32 px its four stages see 32, 16, 8 and 4 px maps; one SimCLR step on 128
    /// views of 32 px (forward, backward, update) takes about 0.6 s on 2 CPU cores.
    pub(super) const SMALL: ResNetConfig = ResNetConfig {
        stem: Stem::Cifar,
        block: BlockKind::Basic,
        stem_width: 32,
        widths: [32, 64, 128, 256],
        depths: [1, 1, 1, 1],
    };

    /// Width of the pooled feature.
    pub(super) const fn feature_dim(&self) -> i64 {
        self.widths[3] * self.block.expansion()
    }
}

/// Conv followed by batch norm (no activation: the block decides where ReLU goes).
#[derive(Debug)]
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ConvBn {
    /// `conv_name`/`bn_name` are the torchvision names (`conv1`/`bn1`, or `0`/`1`
    /// inside a downsample).
    fn new(p: &nn::Path, names: (&str, &str), c_in: i64, c_out: i64, shape: ConvShape) -> Self {
        ConvBn {
            conv: conv2d(p / names.0, c_in, c_out, shape, false),
            bn: batch_norm(p / names.1, c_out, RESNET_BN_EPS),
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.conv).apply_t(&self.bn, train)
    }
}

/// A residual block: the convs of its main path with ReLU between them, plus the
/// shortcut (a strided 1×1 projection where the shape changes), then ReLU.
#[derive(Debug)]
struct ResidualBlock {
    main: Vec<ConvBn>,
    downsample: Option<ConvBn>,
}

impl ResidualBlock {
    fn new(p: &nn::Path, kind: BlockKind, c_in: i64, width: i64, stride: i64) -> Self {
        let c_out = width * kind.expansion();
        let main = match kind {
            BlockKind::Basic => vec![
                ConvBn::new(
                    p,
                    ("conv1", "bn1"),
                    c_in,
                    width,
                    ConvShape::square(3, stride, 1),
                ),
                ConvBn::new(p, ("conv2", "bn2"), width, width, ConvShape::same(3)),
            ],
            BlockKind::Bottleneck => vec![
                ConvBn::new(p, ("conv1", "bn1"), c_in, width, ConvShape::valid(1)),
                ConvBn::new(
                    p,
                    ("conv2", "bn2"),
                    width,
                    width,
                    ConvShape::square(3, stride, 1),
                ),
                ConvBn::new(p, ("conv3", "bn3"), width, c_out, ConvShape::valid(1)),
            ],
        };
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            ConvBn::new(
                &(p / "downsample"),
                ("0", "1"),
                c_in,
                c_out,
                ConvShape::square(1, stride, 0),
            )
        });
        ResidualBlock { main, downsample }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = xs.shallow_clone();
        for (index, unit) in self.main.iter().enumerate() {
            if index > 0 {
                ys = ys.relu();
            }
            ys = unit.forward_t(&ys, train);
        }
        let shortcut = match &self.downsample {
            Some(projection) => projection.forward_t(xs, train),
            None => xs.shallow_clone(),
        };
        (ys + shortcut).relu()
    }
}

/// A ResNet feature extractor: `[N, 3, S, S]` → `[N, feature_dim]`.
#[derive(Debug)]
pub(super) struct ResNet {
    stem: ConvBn,
    max_pool: bool,
    blocks: Vec<ResidualBlock>,
}

impl ResNet {
    pub(super) fn new(p: &nn::Path, config: ResNetConfig) -> Self {
        let stem_shape = match config.stem {
            Stem::ImageNet => ConvShape::square(7, 2, 3),
            Stem::Cifar => ConvShape::same(3),
        };
        let stem = ConvBn::new(p, ("conv1", "bn1"), 3, config.stem_width, stem_shape);
        let mut blocks = Vec::new();
        let mut c_in = config.stem_width;
        for (stage, (&width, &depth)) in config.widths.iter().zip(&config.depths).enumerate() {
            let stage_path = p / format!("layer{}", stage + 1);
            // The first stage keeps the stem's resolution; each later one halves it.
            let first_stride = if stage == 0 { 1 } else { 2 };
            for index in 0..depth {
                let stride = if index == 0 { first_stride } else { 1 };
                let block_path = &stage_path / index.to_string();
                blocks.push(ResidualBlock::new(
                    &block_path,
                    config.block,
                    c_in,
                    width,
                    stride,
                ));
                c_in = width * config.block.expansion();
            }
        }
        ResNet {
            stem,
            max_pool: config.stem == Stem::ImageNet,
            blocks,
        }
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = self.stem.forward_t(xs, train).relu();
        if self.max_pool {
            ys = ys.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        }
        for block in &self.blocks {
            ys = block.forward_t(&ys, train);
        }
        global_avg_pool(&ys)
    }
}
