//! The demo dataset: a small, generated, cytology-like ImageFolder tree.
//!
//! ```text
//! setA/<label>/*.png         the five main labels and other labels (like the seed's set A)
//! setA_labelled/<label>/     more images of set A's common other labels, drawn apart
//!                            from set A, for a linear protocol whose validation and
//!                            test images the pretext never saw
//! setB/train/<main label>/   the five main labels, for fine-tuning
//! setB/test/<main label>/
//! ```
//!
//! Each image is a pale background with one or a few cells: a cytoplasm ellipse and
//! a nucleus. The label sets the nucleus's size relative to its cell, its shape
//! (round, oval, irregular), its darkness and chromatin texture, the cell's size,
//! elongation and number, a perinuclear halo, several nuclei or filaments; position,
//! rotation, size jitter and pixel noise are random. Cell colours come from palettes
//! that labels share, so shape and texture, not colour alone, tell labels apart.
//!
//! Every image draws from its own generator, seeded by (seed, folder, label, index):
//! the output is the same byte for byte whatever the number of threads.

use std::f32::consts::PI;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

/// The five labels of the downstream problem, in set A and set B.
pub const MAIN_LABELS: [&str; 5] = ["ASC_H", "ASC_US", "HSIL", "LSIL", "SCC"];

/// Labels of set A besides the main ones; [`SynthConfig::other_labels`] takes the
/// first ones of this list.
pub const OTHER_LABELS: [&str; 12] = [
    "NILM_superficial",
    "NILM_intermediate",
    "NILM_parabasal",
    "Endocervical",
    "Metaplastic",
    "Atrophy",
    "Candida",
    "Reactive",
    "Trichomonas",
    "Herpes",
    "Endometrial",
    "Actinomyces",
];

/// How much to generate. The defaults suit `sweeps/demo.toml`: six other labels with
/// 100 images each (its A1 takes 6 labels, up to 600 images) and 60 more each in
/// `setA_labelled` (its A2), two rare ones its `min_images_per_label = 20` drops, and
/// set B with 100 train and 50 test images per main label: 1,834 images in all.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub seed: u64,
    /// Side of the square images, in pixels.
    pub image_size: u32,
    /// Images per main label in set A.
    pub main_per_label: usize,
    /// How many of [`OTHER_LABELS`] set A holds (at most 12).
    pub other_labels: usize,
    /// Images per other label in set A…
    pub other_per_label: usize,
    /// …except the last `rare_labels` of them, which get `rare_per_label`.
    pub rare_labels: usize,
    pub rare_per_label: usize,
    /// Images per common (not rare) other label in `setA_labelled`.
    pub labelled_per_label: usize,
    /// Images per main label in `setB/train` and `setB/test`.
    pub train_per_label: usize,
    pub test_per_label: usize,
    /// Threads that draw and encode; 0 means one per CPU.
    pub threads: usize,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 0,
            image_size: 64,
            main_per_label: 20,
            other_labels: 8,
            other_per_label: 100,
            rare_labels: 2,
            rare_per_label: 12,
            labelled_per_label: 60,
            train_per_label: 100,
            test_per_label: 50,
            threads: 0,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSummary {
    /// Images written in all.
    pub images: usize,
    /// Each label folder, relative to the output folder, with its image count.
    pub folders: Vec<(PathBuf, usize)>,
}

/// Writes the demo dataset under `out` (created if needed; files of the same names
/// are overwritten, others are left alone).
pub fn generate(out: &Path, cfg: &SynthConfig) -> io::Result<SynthSummary> {
    if cfg.other_labels > OTHER_LABELS.len() || cfg.rare_labels > cfg.other_labels {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "other_labels = {} (at most {}) and rare_labels = {} (at most other_labels)",
                cfg.other_labels,
                OTHER_LABELS.len(),
                cfg.rare_labels
            ),
        ));
    }
    if cfg.image_size < 8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("image_size = {} is below 8 pixels", cfg.image_size),
        ));
    }

    let mut folders: Vec<(PathBuf, &'static str, usize)> = Vec::new();
    for label in MAIN_LABELS {
        folders.push((Path::new("setA").join(label), label, cfg.main_per_label));
    }
    let first_rare = cfg.other_labels - cfg.rare_labels;
    for (index, label) in OTHER_LABELS.iter().take(cfg.other_labels).enumerate() {
        let count = if index >= first_rare {
            cfg.rare_per_label
        } else {
            cfg.other_per_label
        };
        folders.push((Path::new("setA").join(label), label, count));
        if index < first_rare && cfg.labelled_per_label > 0 {
            folders.push((
                Path::new("setA_labelled").join(label),
                label,
                cfg.labelled_per_label,
            ));
        }
    }
    for (part, count) in [("train", cfg.train_per_label), ("test", cfg.test_per_label)] {
        for label in MAIN_LABELS {
            folders.push((Path::new("setB").join(part).join(label), label, count));
        }
    }

    let mut work: Vec<(PathBuf, &'static str, usize)> = Vec::new();
    for (folder, label, count) in &folders {
        std::fs::create_dir_all(out.join(folder))?;
        for index in 0..*count {
            work.push((folder.clone(), label, index));
        }
    }

    let threads = match cfg.threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> io::Result<()> {
                    loop {
                        let item = next.fetch_add(1, Ordering::Relaxed);
                        let Some((folder, label, index)) = work.get(item) else {
                            return Ok(());
                        };
                        let mut rng = image_rng(cfg.seed, folder, *index);
                        let pixels = draw(label, cfg.image_size, &mut rng);
                        let path = out.join(folder).join(format!("{label}_{index:05}.png"));
                        image::save_buffer(
                            &path,
                            &pixels,
                            cfg.image_size,
                            cfg.image_size,
                            image::ExtendedColorType::Rgb8,
                        )
                        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|worker| match worker.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            })
    })?;

    Ok(SynthSummary {
        images: work.len(),
        folders: folders
            .into_iter()
            .map(|(folder, _, count)| (folder, count))
            .collect(),
    })
}

fn image_rng(seed: u64, folder: &Path, index: usize) -> ChaCha8Rng {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(folder.as_os_str().as_encoded_bytes());
    hasher.update((index as u64).to_le_bytes());
    ChaCha8Rng::from_seed(hasher.finalize().into())
}

type Rgb = [f32; 3];

const PINK: Rgb = [0.93, 0.62, 0.72];
const BLUE_GREEN: Rgb = [0.55, 0.78, 0.80];
const ORANGE: Rgb = [0.95, 0.66, 0.40];
const PALE_BLUE: Rgb = [0.70, 0.76, 0.90];
/// What a nucleus tends to as its darkness goes to 1 (haematoxylin).
const CHROMATIN: Rgb = [0.16, 0.10, 0.32];
const BACKGROUND: Rgb = [0.94, 0.92, 0.93];

/// How a label's cells look; `(low, high)` pairs are ranges drawn from per cell.
#[derive(Debug, Clone, Copy)]
struct Style {
    /// Cells per image.
    cells: (usize, usize),
    /// Cytoplasm semi-major axis, as a share of the image side.
    cell_radius: (f32, f32),
    /// Minor / major axis of the cytoplasm.
    cell_aspect: (f32, f32),
    /// Nucleus radius / cytoplasm semi-major axis.
    nucleus_ratio: (f32, f32),
    /// Minor / major axis of the nucleus: 1 round, lower oval.
    nucleus_aspect: (f32, f32),
    /// Amplitude of the harmonics that make the nuclear outline irregular.
    irregularity: f32,
    /// 0: the cytoplasm's colour, 1: [`CHROMATIN`].
    darkness: (f32, f32),
    /// Amplitude of the per-pixel chromatin texture.
    speckle: f32,
    /// A clear zone around the nucleus, as a multiple of its radius (0: none).
    halo: f32,
    nuclei: (usize, usize),
    /// Dark thin filaments over the image.
    filaments: (usize, usize),
    palette: &'static [Rgb],
}

const SQUAMOUS: &[Rgb] = &[PINK, BLUE_GREEN];
const KERATIN: &[Rgb] = &[ORANGE, PINK, BLUE_GREEN];
const GLANDULAR: &[Rgb] = &[PALE_BLUE, BLUE_GREEN];

/// A normal intermediate squamous cell: a large cell with a small, round, pale
/// nucleus. Every label's style starts from it.
const INTERMEDIATE: Style = Style {
    cells: (1, 2),
    cell_radius: (0.30, 0.38),
    cell_aspect: (0.70, 0.95),
    nucleus_ratio: (0.14, 0.18),
    nucleus_aspect: (0.85, 1.0),
    irregularity: 0.0,
    darkness: (0.40, 0.50),
    speckle: 0.08,
    halo: 0.0,
    nuclei: (1, 1),
    filaments: (0, 0),
    palette: SQUAMOUS,
};

fn style_of(label: &str) -> Style {
    match label {
        // Main labels: from ASC_US to SCC the nucleus grows relative to its cell,
        // darkens, coarsens and loses its round outline.
        "ASC_US" => Style {
            cell_radius: (0.26, 0.34),
            cell_aspect: (0.65, 0.9),
            nucleus_ratio: (0.24, 0.30),
            nucleus_aspect: (0.75, 0.95),
            irregularity: 0.06,
            darkness: (0.50, 0.60),
            speckle: 0.12,
            ..INTERMEDIATE
        },
        // Koilocytes: a clear halo around a wrinkled, sometimes double nucleus.
        "LSIL" => Style {
            cell_radius: (0.28, 0.36),
            cell_aspect: (0.65, 0.9),
            nucleus_ratio: (0.22, 0.30),
            nucleus_aspect: (0.70, 0.90),
            irregularity: 0.14,
            darkness: (0.60, 0.72),
            speckle: 0.20,
            halo: 1.9,
            nuclei: (1, 2),
            ..INTERMEDIATE
        },
        "ASC_H" => Style {
            cells: (1, 3),
            cell_radius: (0.15, 0.20),
            cell_aspect: (0.8, 1.0),
            nucleus_ratio: (0.42, 0.52),
            nucleus_aspect: (0.75, 0.95),
            irregularity: 0.10,
            darkness: (0.60, 0.72),
            speckle: 0.20,
            ..INTERMEDIATE
        },
        "HSIL" => Style {
            cells: (1, 3),
            cell_radius: (0.14, 0.19),
            cell_aspect: (0.8, 1.0),
            nucleus_ratio: (0.60, 0.72),
            nucleus_aspect: (0.65, 0.90),
            irregularity: 0.20,
            darkness: (0.78, 0.90),
            speckle: 0.35,
            ..INTERMEDIATE
        },
        // Elongated, often keratinised (orange) cells with bizarre, very dark nuclei.
        "SCC" => Style {
            cell_radius: (0.22, 0.32),
            cell_aspect: (0.30, 0.50),
            nucleus_ratio: (0.38, 0.50),
            nucleus_aspect: (0.45, 0.70),
            irregularity: 0.30,
            darkness: (0.85, 0.95),
            speckle: 0.30,
            palette: KERATIN,
            ..INTERMEDIATE
        },
        // Other labels of set A.
        "NILM_superficial" => Style {
            nucleus_ratio: (0.08, 0.11),
            nucleus_aspect: (0.9, 1.0),
            darkness: (0.85, 0.95),
            speckle: 0.02,
            palette: KERATIN,
            ..INTERMEDIATE
        },
        "NILM_intermediate" => INTERMEDIATE,
        "NILM_parabasal" => Style {
            cells: (2, 3),
            cell_radius: (0.16, 0.20),
            cell_aspect: (0.85, 1.0),
            nucleus_ratio: (0.30, 0.36),
            irregularity: 0.02,
            darkness: (0.45, 0.55),
            ..INTERMEDIATE
        },
        // Columnar cells with an oval nucleus.
        "Endocervical" => Style {
            cells: (2, 4),
            cell_radius: (0.16, 0.22),
            cell_aspect: (0.35, 0.50),
            nucleus_ratio: (0.30, 0.40),
            nucleus_aspect: (0.70, 0.85),
            irregularity: 0.02,
            darkness: (0.50, 0.60),
            speckle: 0.06,
            palette: GLANDULAR,
            ..INTERMEDIATE
        },
        "Metaplastic" => Style {
            cells: (1, 3),
            cell_radius: (0.18, 0.24),
            cell_aspect: (0.75, 0.95),
            nucleus_ratio: (0.26, 0.32),
            nucleus_aspect: (0.8, 1.0),
            irregularity: 0.04,
            darkness: (0.50, 0.60),
            speckle: 0.10,
            ..INTERMEDIATE
        },
        "Atrophy" => Style {
            cells: (3, 5),
            cell_radius: (0.11, 0.14),
            cell_aspect: (0.8, 1.0),
            nucleus_ratio: (0.40, 0.46),
            nucleus_aspect: (0.60, 0.75),
            irregularity: 0.03,
            darkness: (0.50, 0.60),
            speckle: 0.06,
            ..INTERMEDIATE
        },
        // Normal cells crossed by hyphae.
        "Candida" => Style {
            filaments: (2, 4),
            ..INTERMEDIATE
        },
        "Reactive" => Style {
            cell_radius: (0.26, 0.32),
            cell_aspect: (0.7, 0.9),
            nucleus_ratio: (0.22, 0.28),
            irregularity: 0.02,
            darkness: (0.35, 0.45),
            speckle: 0.04,
            ..INTERMEDIATE
        },
        // Small pear-shaped organisms with a faint oval nucleus.
        "Trichomonas" => Style {
            cells: (3, 5),
            cell_radius: (0.07, 0.09),
            cell_aspect: (0.6, 0.8),
            nucleus_ratio: (0.25, 0.30),
            nucleus_aspect: (0.5, 0.6),
            darkness: (0.35, 0.45),
            speckle: 0.05,
            palette: GLANDULAR,
            ..INTERMEDIATE
        },
        // Multinucleated cells with ground-glass chromatin.
        "Herpes" => Style {
            cells: (1, 1),
            cell_radius: (0.30, 0.36),
            cell_aspect: (0.8, 1.0),
            nucleus_ratio: (0.20, 0.24),
            irregularity: 0.02,
            darkness: (0.45, 0.50),
            speckle: 0.0,
            nuclei: (3, 4),
            ..INTERMEDIATE
        },
        // Tight clusters of tiny cells with dark nuclei.
        "Endometrial" => Style {
            cells: (4, 6),
            cell_radius: (0.08, 0.10),
            cell_aspect: (0.85, 1.0),
            nucleus_ratio: (0.55, 0.65),
            irregularity: 0.03,
            darkness: (0.70, 0.80),
            speckle: 0.10,
            palette: GLANDULAR,
            ..INTERMEDIATE
        },
        // Tangled filaments, a cell at most.
        "Actinomyces" => Style {
            cells: (0, 1),
            cell_radius: (0.20, 0.26),
            cell_aspect: (0.7, 0.9),
            darkness: (0.45, 0.55),
            speckle: 0.05,
            filaments: (5, 8),
            palette: KERATIN,
            ..INTERMEDIATE
        },
        // Unknown labels look like a normal intermediate cell.
        _ => INTERMEDIATE,
    }
}

struct Nucleus {
    centre: (f32, f32),
    radius: f32,
    aspect: f32,
    angle: f32,
    /// (amplitude, phase) of the 2nd, 3rd and 5th harmonics of the outline.
    harmonics: [(f32, f32); 3],
    colour: Rgb,
}

struct Cell {
    centre: (f32, f32),
    radius: f32,
    aspect: f32,
    angle: f32,
    colour: Rgb,
    nuclei: Vec<Nucleus>,
    halo: f32,
}

fn between(rng: &mut ChaCha8Rng, (low, high): (f32, f32)) -> f32 {
    if high > low {
        rng.gen_range(low..high)
    } else {
        low
    }
}

fn count_between(rng: &mut ChaCha8Rng, (low, high): (usize, usize)) -> usize {
    rng.gen_range(low..=high.max(low))
}

/// A standard normal draw (Box–Muller).
fn gaussian(rng: &mut ChaCha8Rng) -> f32 {
    let u: f32 = rng.gen_range(f32::EPSILON..1.0);
    let v: f32 = rng.gen();
    (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
}

/// `(x, y)` in the frame of an ellipse centred at `centre`, turned by `angle`.
fn local(point: (f32, f32), centre: (f32, f32), angle: f32) -> (f32, f32) {
    let (dx, dy) = (point.0 - centre.0, point.1 - centre.1);
    let (sin, cos) = angle.sin_cos();
    (dx * cos + dy * sin, -dx * sin + dy * cos)
}

fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

/// Draws one image of `label`: `side × side` RGB bytes, row-major.
fn draw(label: &str, side: u32, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let style = style_of(label);
    let size = side as f32;
    let cells: Vec<Cell> = (0..count_between(rng, style.cells))
        .map(|_| {
            let radius = between(rng, style.cell_radius) * size;
            let margin = radius * 0.6;
            let centre = (
                rng.gen_range(margin..size - margin),
                rng.gen_range(margin..size - margin),
            );
            let aspect = between(rng, style.cell_aspect);
            let angle = rng.gen_range(0.0..PI);
            let base = style.palette[rng.gen_range(0..style.palette.len())];
            let colour = base.map(|c| (c + 0.04 * gaussian(rng)).clamp(0.0, 1.0));
            let nuclei_count = count_between(rng, style.nuclei);
            let nucleus_radius = between(rng, style.nucleus_ratio) * radius;
            let nuclei = (0..nuclei_count)
                .map(|k| {
                    // Several nuclei sit around the centre, one sits near it.
                    let spread = if nuclei_count > 1 {
                        nucleus_radius * 1.1
                    } else {
                        radius * 0.08
                    };
                    let around =
                        2.0 * PI * k as f32 / nuclei_count as f32 + rng.gen_range(0.0..0.6);
                    let offset = (spread * around.cos(), spread * around.sin() * aspect);
                    let (sin, cos) = angle.sin_cos();
                    Nucleus {
                        centre: (
                            centre.0 + offset.0 * cos - offset.1 * sin,
                            centre.1 + offset.0 * sin + offset.1 * cos,
                        ),
                        radius: nucleus_radius * rng.gen_range(0.9..1.1),
                        aspect: between(rng, style.nucleus_aspect),
                        angle: rng.gen_range(0.0..PI),
                        harmonics: [(); 3].map(|_| {
                            (
                                style.irregularity * rng.gen_range(0.3..1.0),
                                rng.gen_range(0.0..2.0 * PI),
                            )
                        }),
                        colour: mix(colour, CHROMATIN, between(rng, style.darkness)),
                    }
                })
                .collect();
            Cell {
                centre,
                radius,
                aspect,
                angle,
                colour,
                nuclei,
                halo: style.halo,
            }
        })
        .collect();

    let mut canvas: Vec<Rgb> = vec![BACKGROUND; (side * side) as usize];
    for (index, pixel) in canvas.iter_mut().enumerate() {
        let point = (
            (index as u32 % side) as f32 + 0.5,
            (index as u32 / side) as f32 + 0.5,
        );
        for cell in &cells {
            paint_cell(pixel, point, cell, style.speckle, rng);
        }
    }
    for _ in 0..count_between(rng, style.filaments) {
        paint_filament(&mut canvas, side, rng);
    }
    canvas
        .iter()
        .flat_map(|pixel| {
            let grain = 0.025 * gaussian(rng);
            pixel
                .map(|c| ((c + grain + 0.01 * gaussian(rng)).clamp(0.0, 1.0) * 255.0).round() as u8)
        })
        .collect()
}

fn paint_cell(pixel: &mut Rgb, point: (f32, f32), cell: &Cell, speckle: f32, rng: &mut ChaCha8Rng) {
    let (u, v) = local(point, cell.centre, cell.angle);
    let reach = (u / cell.radius).powi(2) + (v / (cell.radius * cell.aspect)).powi(2);
    if reach > 1.0 {
        return;
    }
    // Translucent cytoplasm, a little denser towards the rim.
    let density = 0.7 + 0.2 * reach;
    *pixel = mix(*pixel, cell.colour, density);
    for nucleus in &cell.nuclei {
        let (x, y) = local(point, nucleus.centre, nucleus.angle);
        let (x, y) = (x, y / nucleus.aspect);
        let distance = (x * x + y * y).sqrt();
        let direction = y.atan2(x);
        let outline = nucleus.radius
            * (1.0
                + nucleus
                    .harmonics
                    .iter()
                    .zip([2.0, 3.0, 5.0])
                    .map(|(&(amplitude, phase), order)| {
                        amplitude * (order * direction + phase).cos()
                    })
                    .sum::<f32>());
        if distance <= outline {
            let texture = speckle * gaussian(rng);
            *pixel = nucleus
                .colour
                .map(|c| (c * (1.0 + texture)).clamp(0.0, 1.0));
            return;
        } else if cell.halo > 0.0 && distance <= outline * cell.halo {
            *pixel = mix(*pixel, BACKGROUND, 0.8);
        }
    }
}

/// A thin dark curved line, like a fungal hypha.
fn paint_filament(canvas: &mut [Rgb], side: u32, rng: &mut ChaCha8Rng) {
    let size = side as f32;
    let (mut x, mut y) = (rng.gen_range(0.0..size), rng.gen_range(0.0..size));
    let mut heading: f32 = rng.gen_range(0.0..2.0 * PI);
    let length = rng.gen_range(0.3..0.7) * size;
    let mut travelled = 0.0;
    while travelled < length {
        if (0.0..size).contains(&x) && (0.0..size).contains(&y) {
            let index = (y as u32 * side + x as u32) as usize;
            canvas[index] = mix(canvas[index], CHROMATIN, 0.6);
        }
        heading += 0.15 * gaussian(rng);
        x += heading.cos() * 0.7;
        y += heading.sin() * 0.7;
        travelled += 0.7;
    }
}
