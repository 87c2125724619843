//! SimCLR augmentation as batched tensor work on the training device.
//!
//! Per-view random parameters are drawn on the host from a seeded ChaCha generator
//! (so a run is reproducible on any device), then one batch of images is transformed
//! with a handful of tensor operations: random resized crop and flip as one affine
//! `grid_sample`, colour jitter (brightness, contrast, saturation, hue in a random order
//! per image, clipped to [0, 1] after each), grayscale, Gaussian blur as a grouped
//! separable convolution. Parameters follow REFERENCE.md (google-research/simclr and
//! torchvision).

use rand::seq::SliceRandom;
use rand::Rng;
use tch::{Device, Kind, Tensor};

/// ITU-R 601 luma weights, as torchvision's `rgb_to_grayscale`.
const LUMA: [f64; 3] = [0.2989, 0.587, 0.114];
/// ImageNet statistics: every stage feeds the backbone images normalised with them.
const MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const STD: [f64; 3] = [0.229, 0.224, 0.225];

/// What one view's pipeline does; [`AugmentConfig::simclr`] gives the pretext one.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentConfig {
    /// Side of the output views.
    pub out_size: i64,
    /// Range of the crop's area as a fraction of the image.
    pub crop_scale: (f64, f64),
    /// Range of the crop's aspect ratio (width / height), sampled log-uniformly.
    pub crop_ratio: (f64, f64),
    pub flip_p: f64,
    /// Colour-jitter strength s: brightness, contrast and saturation 0.8s, hue 0.2s.
    pub jitter_strength: f64,
    pub jitter_p: f64,
    pub grayscale_p: f64,
    pub blur_p: f64,
    pub blur_sigma: (f64, f64),
}

impl AugmentConfig {
    /// The pretext pipeline at `image_size`: strength 1.0 with blur, or 0.5 without
    /// blur for images of 32 px and less, unless `strength` says otherwise.
    pub fn simclr(image_size: i64, strength: Option<f64>) -> AugmentConfig {
        let small = image_size <= 32;
        AugmentConfig {
            out_size: image_size,
            crop_scale: (0.08, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip_p: 0.5,
            jitter_strength: strength.unwrap_or(if small { 0.5 } else { 1.0 }),
            jitter_p: 0.8,
            grayscale_p: 0.2,
            blur_p: if small { 0.0 } else { 0.5 },
            blur_sigma: (0.1, 2.0),
        }
    }

    /// Fine-tuning: random resized crop and flip only. Images of 64 px and less keep
    /// at least half their area (an 8 % crop of a 32 px image is a 9 px patch, which
    /// the classifier never sees at test time); larger ones crop as the pretext does.
    pub fn fine_tune(image_size: i64) -> AugmentConfig {
        let min_scale = if image_size <= SMALL_CROP_SIZE {
            0.5
        } else {
            0.08
        };
        AugmentConfig {
            crop_scale: (min_scale, 1.0),
            jitter_p: 0.0,
            grayscale_p: 0.0,
            blur_p: 0.0,
            ..AugmentConfig::simclr(image_size, None)
        }
    }
}

/// Up to this side, fine-tuning crops keep at least half the image.
const SMALL_CROP_SIZE: i64 = 64;

/// The colour-jitter factors of one view and the order they are applied in.
#[derive(Debug, Clone, PartialEq)]
pub struct Jitter {
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub hue: f64,
    /// A permutation of 0..4: brightness, contrast, saturation, hue.
    pub order: [usize; 4],
}

/// The random draws of one view.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewParams {
    /// Crop box in source pixels: left, top, width, height (not necessarily whole).
    pub crop: [f64; 4],
    pub flip: bool,
    pub jitter: Option<Jitter>,
    pub grayscale: bool,
    pub blur_sigma: Option<f64>,
}

impl ViewParams {
    /// The crop's area as a fraction of a `source`-pixel square image.
    pub fn crop_area(&self, source: i64) -> f64 {
        self.crop[2] * self.crop[3] / (source * source) as f64
    }
}

/// Draws torchvision's `RandomResizedCrop` box: ten tries at a random area and
/// log-uniform aspect ratio, then the whole (ratio-clamped) image.
fn sample_crop(rng: &mut impl Rng, source: f64, scale: (f64, f64), ratio: (f64, f64)) -> [f64; 4] {
    let area = source * source;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(scale.0..=scale.1);
        let aspect = if log_hi > log_lo {
            rng.gen_range(log_lo..=log_hi).exp()
        } else {
            ratio.0
        };
        let w = (target * aspect).sqrt();
        let h = (target / aspect).sqrt();
        if w <= source && h <= source {
            let left = rng.gen_range(0.0..=source - w);
            let top = rng.gen_range(0.0..=source - h);
            return [left, top, w, h];
        }
    }
    // Square source: the whole image satisfies any ratio range that contains 1.
    let aspect = 1.0f64.clamp(ratio.0, ratio.1);
    let (w, h) = if aspect >= 1.0 {
        (source, source / aspect)
    } else {
        (source * aspect, source)
    };
    [(source - w) / 2.0, (source - h) / 2.0, w, h]
}

/// Draws the parameters of `n` views of `source`-pixel images.
pub fn sample_params(
    rng: &mut impl Rng,
    n: usize,
    source: i64,
    cfg: &AugmentConfig,
) -> Vec<ViewParams> {
    let s = cfg.jitter_strength;
    let factor = |rng: &mut dyn rand::RngCore, amount: f64| {
        rng.gen_range((1.0 - amount).max(0.0)..=1.0 + amount)
    };
    (0..n)
        .map(|_| {
            let crop = sample_crop(rng, source as f64, cfg.crop_scale, cfg.crop_ratio);
            let flip = rng.gen_bool(cfg.flip_p);
            let jitter = (s > 0.0 && rng.gen_bool(cfg.jitter_p)).then(|| {
                let mut order = [0, 1, 2, 3];
                order.shuffle(rng);
                Jitter {
                    brightness: factor(rng, 0.8 * s),
                    contrast: factor(rng, 0.8 * s),
                    saturation: factor(rng, 0.8 * s),
                    hue: rng.gen_range(-0.2 * s..=0.2 * s),
                    order,
                }
            });
            let grayscale = rng.gen_bool(cfg.grayscale_p);
            let blur_sigma = rng
                .gen_bool(cfg.blur_p)
                .then(|| rng.gen_range(cfg.blur_sigma.0..=cfg.blur_sigma.1));
            ViewParams {
                crop,
                flip,
                jitter,
                grayscale,
                blur_sigma,
            }
        })
        .collect()
}

/// Applies drawn parameters to `uint8 [N, 3, S, S]` images on any device; returns
/// float `[N, 3, out, out]` in [0, 1] on the images' device.
pub fn apply(images: &Tensor, params: &[ViewParams], cfg: &AugmentConfig) -> Tensor {
    let device = images.device();
    let source = images.size()[2] as f64;
    let x = images.to_kind(Kind::Float) / 255.0;
    let mut x = crop_flip(&x, params, source, cfg.out_size);
    jitter(&mut x, params);
    let gray_idx: Vec<i64> = indices(params, |p| p.grayscale);
    if !gray_idx.is_empty() {
        let idx = Tensor::from_slice(&gray_idx).to_device(device);
        let gray = grayscale(&x.index_select(0, &idx)).expand([-1, 3, -1, -1], false);
        let _ = x.index_copy_(0, &idx, &gray);
    }
    let blur_idx: Vec<i64> = indices(params, |p| p.blur_sigma.is_some());
    if !blur_idx.is_empty() {
        let sigmas: Vec<f64> = params.iter().filter_map(|p| p.blur_sigma).collect();
        let idx = Tensor::from_slice(&blur_idx).to_device(device);
        let blurred = gaussian_blur(&x.index_select(0, &idx), &sigmas);
        let _ = x.index_copy_(0, &idx, &blurred);
    }
    x.clamp(0.0, 1.0)
}

/// Two independently augmented views of every image, as SimCLR trains on.
pub fn simclr_views(images: &Tensor, rng: &mut impl Rng, cfg: &AugmentConfig) -> (Tensor, Tensor) {
    let n = images.size()[0] as usize;
    let source = images.size()[2];
    let first = sample_params(rng, n, source, cfg);
    let second = sample_params(rng, n, source, cfg);
    (apply(images, &first, cfg), apply(images, &second, cfg))
}

/// Evaluation images: a centre crop of 0.875 of the side, resized to `out_size`.
pub fn center_crop(images: &Tensor, out_size: i64) -> Tensor {
    let source = images.size()[2] as f64;
    let side = 0.875 * source;
    let margin = (source - side) / 2.0;
    let params = vec![
        ViewParams {
            crop: [margin, margin, side, side],
            flip: false,
            jitter: None,
            grayscale: false,
            blur_sigma: None
        };
        images.size()[0] as usize
    ];
    let x = images.to_kind(Kind::Float) / 255.0;
    crop_flip(&x, &params, source, out_size).clamp(0.0, 1.0)
}

/// ImageNet mean/std normalisation of [0, 1] images, the backbone's input.
pub fn normalize(images: &Tensor) -> Tensor {
    let opts = (Kind::Float, images.device());
    let mean = Tensor::from_slice(&MEAN)
        .to_kind(Kind::Float)
        .to_device(opts.1)
        .view([1, 3, 1, 1]);
    let std = Tensor::from_slice(&STD)
        .to_kind(Kind::Float)
        .to_device(opts.1)
        .view([1, 3, 1, 1]);
    (images - mean) / std
}

fn indices(params: &[ViewParams], keep: impl Fn(&ViewParams) -> bool) -> Vec<i64> {
    params
        .iter()
        .enumerate()
        .filter(|(_, p)| keep(p))
        .map(|(i, _)| i as i64)
        .collect()
}

/// Crop boxes and flips as one bilinear resampling: output pixel (u, v) in [−1, 1]²
/// reads the source at `centre + half-size × (±u, v)`.
fn crop_flip(x: &Tensor, params: &[ViewParams], source: f64, out_size: i64) -> Tensor {
    let n = params.len() as i64;
    let theta: Vec<f32> = params
        .iter()
        .flat_map(|p| {
            let [left, top, w, h] = p.crop;
            let cx = (left + w / 2.0) / source * 2.0 - 1.0;
            let cy = (top + h / 2.0) / source * 2.0 - 1.0;
            let sx = w / source * if p.flip { -1.0 } else { 1.0 };
            let sy = h / source;
            [sx as f32, 0.0, cx as f32, 0.0, sy as f32, cy as f32]
        })
        .collect();
    let theta = Tensor::from_slice(&theta)
        .view([n, 2, 3])
        .to_device(x.device());
    let grid = Tensor::affine_grid_generator(&theta, [n, 3, out_size, out_size], false);
    // Bilinear (0), border padding (1): a box inside the image never reads outside.
    x.grid_sampler_2d(&grid, 0, 1, false)
}

fn grayscale(x: &Tensor) -> Tensor {
    let w = Tensor::from_slice(&LUMA)
        .to_kind(Kind::Float)
        .to_device(x.device())
        .view([1, 3, 1, 1]);
    (x * w).sum_dim_intlist(&[1i64][..], true, Kind::Float)
}

/// Per-image factors as a `[k, 1, 1, 1]` tensor.
fn factors(values: &[f64], device: Device) -> Tensor {
    Tensor::from_slice(values)
        .to_kind(Kind::Float)
        .to_device(device)
        .view([-1, 1, 1, 1])
}

/// Colour jitter in each view's own order. At each of the four positions every
/// operation runs once on the views that put it there, so the total work is four
/// passes over the batch whatever the orders are.
fn jitter(x: &mut Tensor, params: &[ViewParams]) {
    let device = x.device();
    for position in 0..4 {
        for op in 0..4 {
            let chosen: Vec<(i64, &Jitter)> = params
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    p.jitter
                        .as_ref()
                        .filter(|j| j.order[position] == op)
                        .map(|j| (i as i64, j))
                })
                .collect();
            if chosen.is_empty() {
                continue;
            }
            let idx = Tensor::from_slice(&chosen.iter().map(|(i, _)| *i).collect::<Vec<_>>())
                .to_device(device);
            let sub = x.index_select(0, &idx);
            let value = |f: fn(&Jitter) -> f64| {
                factors(
                    &chosen.iter().map(|(_, j)| f(j)).collect::<Vec<_>>(),
                    device,
                )
            };
            let out = match op {
                0 => &sub * value(|j| j.brightness),
                1 => {
                    let mean = grayscale(&sub).mean_dim(&[1i64, 2, 3][..], true, Kind::Float);
                    blend(&sub, &mean, &value(|j| j.contrast))
                }
                2 => blend(&sub, &grayscale(&sub), &value(|j| j.saturation)),
                _ => shift_hue(&sub, &value(|j| j.hue)),
            };
            // In place: `x` is this batch's own fresh tensor, and copies of a whole
            // batch sixteen times over would cost more than the jitter itself.
            let _ = x.index_copy_(0, &idx, &out.clamp(0.0, 1.0));
        }
    }
}

/// `factor × image + (1 − factor) × other`, torchvision's `_blend`.
fn blend(image: &Tensor, other: &Tensor, factor: &Tensor) -> Tensor {
    image * factor + other * (1.0 - factor)
}

/// Rotates the hue by `shift` (a fraction of the circle) through HSV, as
/// torchvision's `adjust_hue`.
fn shift_hue(x: &Tensor, shift: &Tensor) -> Tensor {
    let (maxc, _) = x.max_dim(1, true);
    let (minc, _) = x.min_dim(1, true);
    let chroma = &maxc - &minc;
    let flat = chroma.eq(0.0);
    let ones = maxc.ones_like();
    let saturation = &chroma / maxc.where_self(&flat.logical_not(), &ones);
    let divisor = chroma.where_self(&flat.logical_not(), &ones);
    let channel = |c: i64| x.narrow(1, c, 1);
    let (r, g, b) = (channel(0), channel(1), channel(2));
    let rc = (&maxc - &r) / &divisor;
    let gc = (&maxc - &g) / &divisor;
    let bc = (&maxc - &b) / &divisor;
    let is_r = maxc.eq_tensor(&r);
    let is_g = maxc.eq_tensor(&g).logical_and(&is_r.logical_not());
    let is_b = is_r.logical_or(&is_g).logical_not();
    let hue: Tensor = is_r.to_kind(Kind::Float) * (&bc - &gc)
        + is_g.to_kind(Kind::Float) * ((&rc - &bc) + 2.0)
        + is_b.to_kind(Kind::Float) * ((&gc - &rc) + 4.0);
    let hue: Tensor = (hue / 6.0 + 1.0).fmod(1.0);
    let hue = (hue + shift).remainder(1.0);
    // HSV → RGB: channel n takes v − v·s·clamp(min(k, 4 − k), 0, 1), k = (n + 6h) mod 6.
    let value = maxc;
    let rgb: Vec<Tensor> = [5.0, 3.0, 1.0]
        .iter()
        .map(|n| {
            let k = (&hue * 6.0 + *n).remainder(6.0);
            let ramp = k.minimum(&(4.0 - &k)).clamp(0.0, 1.0);
            &value - &value * &saturation * ramp
        })
        .collect();
    Tensor::cat(&rgb, 1)
}

/// Gaussian blur with one σ per image; the kernel is 10% of the side, made odd.
fn gaussian_blur(x: &Tensor, sigmas: &[f64]) -> Tensor {
    let size = x.size();
    let (n, c, h, w) = (size[0], size[1], size[2], size[3]);
    let radius = (h / 10) / 2;
    if radius == 0 {
        return x.shallow_clone();
    }
    let taps = 2 * radius + 1;
    let kernels: Vec<f32> = sigmas
        .iter()
        .flat_map(|sigma| {
            let raw: Vec<f64> = (-radius..=radius)
                .map(|i| (-((i * i) as f64) / (2.0 * sigma * sigma)).exp())
                .collect();
            let total: f64 = raw.iter().sum();
            raw.into_iter().map(move |v| (v / total) as f32)
        })
        .collect();
    // One kernel per image, repeated for its channels: a grouped convolution.
    let kernel = Tensor::from_slice(&kernels)
        .to_device(x.device())
        .view([n, 1, taps])
        .repeat([1, c, 1])
        .view([n * c, 1, taps]);
    let planes = x.reshape([1, n * c, h, w]);
    let padded = planes.reflection_pad2d([radius, radius, 0, 0]);
    let horizontal = padded.conv2d(
        &kernel.view([n * c, 1, 1, taps]),
        None::<Tensor>,
        [1, 1],
        [0, 0],
        [1, 1],
        n * c,
    );
    let padded = horizontal.reflection_pad2d([0, 0, radius, radius]);
    let vertical = padded.conv2d(
        &kernel.view([n * c, 1, taps, 1]),
        None::<Tensor>,
        [1, 1],
        [0, 0],
        [1, 1],
        n * c,
    );
    vertical.reshape([n, c, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Colourful images whose every pixel differs from its mirror image.
    fn colourful(n: i64, side: i64) -> Tensor {
        let ramp = Tensor::arange(side, (Kind::Float, Device::Cpu)) * (200.0 / side as f64);
        let r = ramp.view([1, 1, 1, side]).expand([n, 1, side, side], false) + 20.0;
        let g = ramp.view([1, 1, side, 1]).expand([n, 1, side, side], false) * 0.5 + 40.0;
        let b = Tensor::full([n, 1, side, side], 230.0, (Kind::Float, Device::Cpu));
        Tensor::cat(&[r, g, b], 1).to_kind(Kind::Uint8)
    }

    #[test]
    fn crop_areas_and_ratios_stay_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let cfg = AugmentConfig::simclr(64, None);
        let params = sample_params(&mut rng, 4000, 64, &cfg);
        let areas: Vec<f64> = params.iter().map(|p| p.crop_area(64)).collect();
        assert!(areas.iter().all(|a| (0.08 - 1e-9..=1.0 + 1e-9).contains(a)));
        // The whole range is used, not a corner of it.
        assert!(areas.iter().any(|a| *a < 0.12) && areas.iter().any(|a| *a > 0.9));
        for p in &params {
            let [left, top, w, h] = p.crop;
            let ratio = w / h;
            assert!(
                ratio > 0.75 - 1e-9 && ratio < 4.0 / 3.0 + 1e-9,
                "ratio {ratio}"
            );
            assert!(left >= 0.0 && top >= 0.0 && left + w <= 64.0 + 1e-9 && top + h <= 64.0 + 1e-9);
        }
    }

    #[test]
    fn flips_about_half_and_the_pixels_show_it() {
        let cfg = AugmentConfig {
            crop_scale: (1.0, 1.0),
            crop_ratio: (1.0, 1.0),
            jitter_p: 0.0,
            grayscale_p: 0.0,
            blur_p: 0.0,
            ..AugmentConfig::simclr(16, None)
        };
        let images = colourful(400, 16);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let params = sample_params(&mut rng, 400, 16, &cfg);
        let out = apply(&images, &params, &cfg);
        let original = images.to_kind(Kind::Float) / 255.0;
        let mirrored = original.flip([3]);
        let mut flipped = 0;
        for (i, p) in params.iter().enumerate() {
            let i = i as i64;
            let same = (out.get(i) - original.get(i)).abs().max().double_value(&[]) < 1e-4;
            let mirror = (out.get(i) - mirrored.get(i)).abs().max().double_value(&[]) < 1e-4;
            assert!(
                same != mirror,
                "image {i} is neither the source nor its mirror"
            );
            assert_eq!(mirror, p.flip);
            flipped += mirror as i32;
        }
        // Binomial(400, 0.5): ±5 standard deviations is 150..250.
        assert!((150..=250).contains(&flipped), "{flipped} of 400 flipped");
    }

    #[test]
    fn grayscale_fraction_matches_its_probability() {
        let cfg = AugmentConfig::simclr(16, None);
        let images = colourful(500, 16);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let params = sample_params(&mut rng, 500, 16, &cfg);
        let out = apply(&images, &params, &cfg);
        // A gray image has equal channels; jitter alone never makes a colourful one gray.
        let spread = (out.narrow(1, 0, 1) - out.narrow(1, 1, 1))
            .abs()
            .amax(&[1i64, 2, 3][..], false)
            + (out.narrow(1, 1, 1) - out.narrow(1, 2, 1))
                .abs()
                .amax(&[1i64, 2, 3][..], false);
        let gray: Vec<bool> = Vec::<f32>::try_from(spread)
            .expect("f32")
            .iter()
            .map(|s| *s < 1e-5)
            .collect();
        for (p, g) in params.iter().zip(&gray) {
            assert_eq!(p.grayscale, *g);
        }
        let count = gray.iter().filter(|g| **g).count();
        // Binomial(500, 0.2): mean 100, sd ≈ 8.9.
        assert!((55..=145).contains(&count), "{count} of 500 gray");
    }

    #[test]
    fn same_seed_same_views_other_seed_other_views() {
        let cfg = AugmentConfig::simclr(64, None);
        let images = colourful(8, 64);
        let run = |seed| simclr_views(&images, &mut ChaCha8Rng::seed_from_u64(seed), &cfg);
        let (a1, a2) = run(11);
        let (b1, b2) = run(11);
        let (c1, _) = run(12);
        assert!(a1.equal(&b1) && a2.equal(&b2));
        assert!(!a1.equal(&c1));
        assert!(!a1.equal(&a2));
        assert_eq!(a1.size(), [8, 3, 64, 64]);
        assert!(a1.min().double_value(&[]) >= 0.0 && a1.max().double_value(&[]) <= 1.0);
    }

    #[test]
    fn crop_reads_the_right_region() {
        // Red grows with x: a crop of the right half only sees the right half's values.
        let images = colourful(1, 32);
        let params = vec![ViewParams {
            crop: [16.0, 0.0, 16.0, 32.0],
            flip: false,
            jitter: None,
            grayscale: false,
            blur_sigma: None,
        }];
        let cfg = AugmentConfig {
            out_size: 16,
            ..AugmentConfig::fine_tune(16)
        };
        let out = apply(&images, &params, &cfg);
        let red = out.get(0).get(0) * 255.0;
        let low = red.min().double_value(&[]);
        let high = red.max().double_value(&[]);
        // Source red at x is 20 + 6.25x; the right half spans x = 16..31.
        assert!(
            low > 20.0 + 6.25 * 15.5 && high < 20.0 + 6.25 * 31.5,
            "{low}..{high}"
        );
    }

    #[test]
    fn hue_shift_of_zero_and_of_a_full_turn_keeps_colours() {
        let x = colourful(2, 8).to_kind(Kind::Float) / 255.0;
        for shift in [0.0, 1.0] {
            let out = shift_hue(&x, &factors(&[shift, shift], Device::Cpu));
            assert!((out - &x).abs().max().double_value(&[]) < 1e-5);
        }
        // A third of a turn sends pure red to pure green.
        let red = Tensor::from_slice(&[1.0f32, 0.0, 0.0]).view([1, 3, 1, 1]);
        let green = shift_hue(&red, &factors(&[1.0 / 3.0], Device::Cpu));
        assert!(
            (green - Tensor::from_slice(&[0.0f32, 1.0, 0.0]).view([1, 3, 1, 1]))
                .abs()
                .max()
                .double_value(&[])
                < 1e-5
        );
    }

    #[test]
    fn blur_keeps_flat_images_and_smooths_edges() {
        let flat = Tensor::full([2, 3, 20, 20], 0.4, (Kind::Float, Device::Cpu));
        assert!(
            (gaussian_blur(&flat, &[1.0, 2.0]) - &flat)
                .abs()
                .max()
                .double_value(&[])
                < 1e-5
        );
        let edge = Tensor::cat(
            &[
                Tensor::zeros([1, 3, 20, 10], (Kind::Float, Device::Cpu)),
                Tensor::ones([1, 3, 20, 10], (Kind::Float, Device::Cpu)),
            ],
            3,
        );
        let blurred = gaussian_blur(&edge, &[2.0]);
        let left = blurred.double_value(&[0, 0, 10, 9]);
        assert!(left > 0.05 && left < 0.5, "{left}");
    }
}
