//! Helpers shared by the integration tests: generated image sets and a small
//! backbone that trains in seconds on two CPU cores.

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use sweeper::sweep::Params;
use sweeper::train::config::Architecture;
use sweeper::train::data::ImageSet;
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

pub const SHAPES: [&str; 3] = ["circle", "square", "triangle"];

/// `n` images of `size` px, each a circle, a square or a triangle (the label) of
/// random colour, size and position on a random background: a label that crops,
/// flips and colour changes keep.
pub fn shapes(n: usize, size: usize, seed: u64) -> ImageSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = vec![0u8; n * 3 * size * size];
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let label = i % SHAPES.len();
        labels.push(label as i64);
        let background: [f64; 3] = [
            rng.gen_range(0.0..255.0),
            rng.gen_range(0.0..255.0),
            rng.gen_range(0.0..255.0),
        ];
        // A foreground clearly apart from the background in brightness.
        let mut foreground = [0.0; 3];
        for (c, f) in foreground.iter_mut().enumerate() {
            let shift = rng.gen_range(90.0..160.0);
            *f = if background[c] > 127.0 {
                background[c] - shift
            } else {
                background[c] + shift
            };
        }
        let s = size as f64;
        let radius = rng.gen_range(0.3 * s..0.45 * s);
        let cx = rng.gen_range(0.4 * s..0.6 * s);
        let cy = rng.gen_range(0.4 * s..0.6 * s);
        for y in 0..size {
            for x in 0..size {
                let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                let inside = match label {
                    0 => dx * dx + dy * dy <= radius * radius,
                    1 => dx.abs() <= radius * 0.8 && dy.abs() <= radius * 0.8,
                    // Pointing up: the half-width grows from the apex to the base.
                    _ => dy >= -radius && dy <= radius * 0.7 && dx.abs() <= (dy + radius) * 0.6,
                };
                let colour = if inside { foreground } else { background };
                for c in 0..3 {
                    pixels[((i * 3 + c) * size + y) * size + x] = colour[c].clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    ImageSet {
        images: Tensor::from_slice(&pixels).view([n as i64, 3, size as i64, size as i64]),
        labels: Tensor::from_slice(&labels),
        label_names: SHAPES.iter().map(|s| s.to_string()).collect(),
        skipped: Vec::new(),
    }
}

/// Colours of [`rotated_shapes`]: far apart in hue and brightness.
const PALETTE: [[f64; 3]; 4] = [
    [220.0, 60.0, 50.0],
    [40.0, 90.0, 200.0],
    [235.0, 215.0, 80.0],
    [30.0, 30.0, 35.0],
];

/// The classes of [`rotated_shapes`].
pub const ROTATED_SHAPES: [&str; 4] = ["circle", "square", "triangle", "cross"];

/// `n` images of `size` px, each a circle, a square, a triangle or a cross (the
/// label, in turn) of random palette colours, size, position and rotation on a random
/// background, with edges anti-aliased by 2×2 supersampling: a label that every
/// SimCLR augmentation (crop, flip, colour jitter, grayscale) keeps, and that colour
/// or brightness alone cannot tell.
pub fn rotated_shapes(n: usize, size: usize, seed: u64) -> ImageSet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = vec![0u8; n * 3 * size * size];
    let mut labels = Vec::with_capacity(n);
    let s = size as f64;
    for i in 0..n {
        let label = i % ROTATED_SHAPES.len();
        labels.push(label as i64);
        // Two different colours of a small palette: many images share their colours, so colour cannot tell one image from the
        // others of its batch and SimCLR has to look at the shape.
        let first = rng.gen_range(0..PALETTE.len());
        let second = (first + rng.gen_range(1..PALETTE.len())) % PALETTE.len();
        let (background, foreground) = (PALETTE[first], PALETTE[second]);
        let radius = rng.gen_range(0.25 * s..0.4 * s);
        let cx = rng.gen_range(0.35 * s..0.65 * s);
        let cy = rng.gen_range(0.35 * s..0.65 * s);
        let angle: f64 = rng.gen_range(0.0..std::f64::consts::TAU);
        let (sin, cos) = angle.sin_cos();
        let inside = |x: f64, y: f64| {
            // The point in the shape's own frame.
            let (dx, dy) = (x - cx, y - cy);
            let (u, v) = (cos * dx + sin * dy, -sin * dx + cos * dy);
            match label {
                0 => u * u + v * v <= radius * radius,
                1 => u.abs() <= radius * 0.75 && v.abs() <= radius * 0.75,
                // Apex up; the half-width grows from the apex to the base.
                2 => v >= -radius && v <= radius * 0.6 && u.abs() <= (v + radius) * 0.6,
                _ => {
                    let arm = radius * 0.28;
                    (u.abs() <= arm && v.abs() <= radius) || (v.abs() <= arm && u.abs() <= radius)
                }
            }
        };
        for y in 0..size {
            for x in 0..size {
                let covered = [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]
                    .iter()
                    .filter(|(ox, oy)| inside(x as f64 + ox, y as f64 + oy))
                    .count() as f64
                    / 4.0;
                let noise = rng.gen_range(-6.0..6.0);
                for c in 0..3 {
                    let value = covered * foreground[c] + (1.0 - covered) * background[c] + noise;
                    pixels[((i * 3 + c) * size + y) * size + x] = value.clamp(0.0, 255.0) as u8;
                }
            }
        }
    }
    ImageSet {
        images: Tensor::from_slice(&pixels).view([n as i64, 3, size as i64, size as i64]),
        labels: Tensor::from_slice(&labels),
        label_names: ROTATED_SHAPES.iter().map(|s| s.to_string()).collect(),
        skipped: Vec::new(),
    }
}

/// A four-layer convolutional backbone with 64 pooled features.
#[derive(Debug)]
struct TinyNet {
    layers: Vec<(nn::Conv2D, nn::BatchNorm)>,
}

impl ModuleT for TinyNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut x = x.shallow_clone();
        for (conv, bn) in &self.layers {
            x = x.apply(conv).apply_t(bn, train).relu();
        }
        x.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }
}

pub fn tiny_arch() -> Architecture {
    Architecture {
        name: "tiny".into(),
        feature_dim: 64,
        build: Arc::new(|p: &nn::Path| {
            let widths = [(3, 16, 1), (16, 32, 2), (32, 64, 2), (64, 64, 1)];
            let layers = widths
                .iter()
                .enumerate()
                .map(|(i, &(cin, cout, stride))| {
                    let cfg = nn::ConvConfig {
                        stride,
                        padding: 1,
                        bias: false,
                        ..Default::default()
                    };
                    let conv = nn::conv2d(p / format!("conv{i}"), cin, cout, 3, cfg);
                    let bn = nn::batch_norm2d(p / format!("bn{i}"), cout, Default::default());
                    (conv, bn)
                })
                .collect();
            Ok(Box::new(TinyNet { layers }) as Box<dyn ModuleT>)
        }),
    }
}

pub fn params(v: Value) -> Params {
    v.as_object().expect("params are a JSON object").clone()
}

/// A subset of a set, by index range.
pub fn slice(set: &ImageSet, start: i64, len: i64) -> ImageSet {
    ImageSet {
        images: set.images.narrow(0, start, len),
        labels: set.labels.narrow(0, start, len),
        label_names: set.label_names.clone(),
        skipped: Vec::new(),
    }
}

pub fn accuracy_of_majority(set: &ImageSet) -> f64 {
    let counts = set.labels.bincount::<Tensor>(None, 0);
    counts.max().double_value(&[]) / set.labels.size()[0] as f64
}

pub fn float_mean(t: &Tensor) -> f64 {
    t.to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
}
