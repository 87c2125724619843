//! Figures with `plotters`, each written as PNG and SVG: the loss curve of every
//! pretext job (one figure per backbone, a line per job) and per backbone a heat map
//! of the final loss over data amount × projection size, one panel per batch size.
//!
//! Also each downstream stage's validation curves and every downstream job's
//! confusion matrix, each command stage's metrics, and for the dashboard the same
//! figures as SVG text. Here: the font, saving, and which figures a sweep gets; the
//! figures themselves in [`curve`], [`heat`] (with the cell grid [`confusion`] shares),
//! [`confusion`] and [`axes`].
//!
//! Text is drawn with a subset of DejaVu Sans embedded in the binary (see
//! `fonts/README.md`), so the figures need no system fonts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::model::{JobRecord, ReportInput, StageInfo};
use super::names::ModelNames;
use super::ReportError;
use crate::report::format::{chance_level, mean_std, plain, pretty_backbone, trimmed};
#[cfg(test)]
use crate::report::layout::Mark;
use crate::report::layout::{pretext_layout, Group, PretextLayout, LOSS, SEED};
use crate::sweep::StageKind;

mod axes;
mod confusion;
mod curve;
mod heat;

pub use axes::axes_svg;
pub use confusion::ConfusionFigure;
use curve::loss_figure;
pub use curve::CurveFigure;
#[cfg(test)]
use heat::viridis;
use heat::HeatFigure;

/// DejaVu Sans cut to Latin-1 and the marks the report uses.
static FONT: &[u8] = include_bytes!("../fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

/// Registers the embedded font with plotters, once per process.
fn register_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ReportError::Font)
    }
}

/// A figure that can be drawn on any plotters backend.
pub trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>;
}

/// Draws `figure` to `<dir>/<stem>.png` and `<dir>/<stem>.svg`.
fn save(figure: &impl Figure, dir: &Path, stem: &str) -> Result<Vec<PathBuf>, ReportError> {
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    {
        let root = BitMapBackend::new(&png, figure.size()).into_drawing_area();
        figure
            .draw(&root)
            .and_then(|()| root.present().map_err(|error| error.to_string()))
            .map_err(|message| ReportError::Plot {
                path: png.clone(),
                message,
            })?;
    }
    {
        let root = SVGBackend::new(&svg, figure.size()).into_drawing_area();
        figure
            .draw(&root)
            .and_then(|()| root.present().map_err(|error| error.to_string()))
            .map_err(|message| ReportError::Plot {
                path: svg.clone(),
                message,
            })?;
    }
    Ok(vec![png, svg])
}

/// `figure` as SVG text, for a page to embed.
pub fn to_svg(figure: &impl Figure) -> Result<String, ReportError> {
    register_font()?;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, figure.size()).into_drawing_area();
        figure
            .draw(&root)
            .and_then(|()| root.present().map_err(|error| error.to_string()))
            .map_err(|message| ReportError::Plot {
                path: PathBuf::from("(in memory)"),
                message,
            })?;
    }
    Ok(text)
}

/// The loss heat map of each pretext group, titled, as SVG: what the dashboard's
/// sweep page shows (the same figures `plot` writes).
pub fn heat_maps_svg(input: &ReportInput) -> Result<Vec<(String, String)>, ReportError> {
    let mut figures = Vec::new();
    for stage in input
        .stages
        .iter()
        .filter(|stage| stage.kind == StageKind::Pretext)
    {
        let layout = pretext_layout(stage, &input.jobs);
        for group in &layout.groups {
            let name = group_name(group);
            if let Some(figure) = HeatFigure::new(&layout, group, &name.title) {
                figures.push((figure.title.clone(), to_svg(&figure)?));
            }
        }
    }
    Ok(figures)
}

/// Writes every figure of the sweep into `dir` (created if missing) and returns the
/// files written, PNG then SVG for each figure.
pub fn plots(input: &ReportInput, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    register_font()?;
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for stage in input
        .stages
        .iter()
        .filter(|stage| stage.kind == StageKind::Pretext)
    {
        let layout = pretext_layout(stage, &input.jobs);
        for group in &layout.groups {
            let name = group_name(group);
            let stem = file_stem(&format!("{}-{}", stage.name, name.file));
            if let Some(figure) = loss_figure(input, &layout, group, &name.title) {
                written.extend(save(&figure, dir, &format!("{stem}-loss"))?);
            }
            if let Some(figure) = HeatFigure::new(&layout, group, &name.title) {
                written.extend(save(&figure, dir, &format!("{stem}-heatmap"))?);
            }
        }
    }
    for stage in input
        .stages
        .iter()
        .filter(|stage| stage.kind != StageKind::Pretext)
    {
        written.extend(history_figures(input, stage, dir)?);
    }
    Ok(written)
}

/// A downstream stage's validation curves (one figure per metric, a line per job)
/// and each finished job's confusion matrix; a command stage's own metrics, a figure
/// per metric. Only what `input.histories` and the results hold.
fn history_figures(
    input: &ReportInput,
    stage: &StageInfo,
    dir: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    let names = ModelNames::new(input);
    let jobs: Vec<&JobRecord> = input
        .jobs
        .iter()
        .filter(|job| job.stage == stage.name)
        .collect();
    let label = |job: &JobRecord| match stage.kind {
        StageKind::Command => {
            let axes: Vec<String> = stage
                .grid
                .iter()
                .map(|(axis, _)| {
                    format!("{axis} {}", plain(crate::report::layout::param(job, axis)))
                })
                .collect();
            if axes.is_empty() {
                format!("job {}", &job.id.to_string()[..8])
            } else {
                axes.join(", ")
            }
        }
        _ => format!(
            "{}, seed {}",
            names.name(job.parent.unwrap_or(job.id)),
            plain(crate::report::layout::param(job, SEED))
        ),
    };
    let mut metric_names: Vec<&str> = jobs
        .iter()
        .filter_map(|job| input.histories.get(&job.id))
        .flat_map(|names| names.keys().map(String::as_str))
        .collect();
    metric_names.sort_unstable();
    metric_names.dedup();
    let mut written = Vec::new();
    for metric in metric_names {
        let series: Vec<(String, Vec<(f64, f64)>)> = jobs
            .iter()
            .filter_map(|job| {
                let points = input.histories.get(&job.id)?.get(metric)?;
                let points = points
                    .iter()
                    .filter(|(_, value)| value.is_finite())
                    .map(|(step, value)| (*step as f64, *value))
                    .collect();
                Some((label(job), points))
            })
            .collect();
        let x_desc = if stage.kind == StageKind::Command {
            "step"
        } else {
            "epoch"
        };
        let figure = CurveFigure {
            title: format!("{}: {metric} per {x_desc}", stage.name),
            x_desc: x_desc.into(),
            y_desc: metric.into(),
            series,
            references: Vec::new(),
            size: CurveFigure::FULL,
        };
        let stem = file_stem(&format!("{}-{metric}", stage.name));
        written.extend(save(&figure, dir, &stem)?);
    }
    for job in jobs
        .iter()
        .filter(|job| job.state == crate::report::model::JobState::Succeeded)
    {
        if let Some(figure) = ConfusionFigure::of(job, &label(job)) {
            let stem = file_stem(&format!("{}-{}-confusion", stage.name, label(job)));
            written.extend(save(&figure, dir, &stem)?);
        }
    }
    Ok(written)
}

struct GroupName {
    title: String,
    file: String,
}

fn group_name(group: &Group) -> GroupName {
    let backbone = plain(&group.backbone);
    let extras: Vec<String> = group
        .extras
        .iter()
        .map(|(axis, value)| format!("{axis} {}", plain(value)))
        .collect();
    let file_extras: Vec<String> = group
        .extras
        .iter()
        .map(|(axis, value)| format!("{axis}{}", plain(value)))
        .collect();
    let mut title = pretty_backbone(&backbone);
    let mut file = backbone;
    if !extras.is_empty() {
        title = format!("{title} ({})", extras.join(", "));
        file = format!("{file}-{}", file_extras.join("-"));
    }
    GroupName { title, file }
}

/// A file name from any text: letters, digits, `.`, `_` and `-` kept, the rest `_`.
fn file_stem(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn plot_error(error: impl std::fmt::Display) -> String {
    error.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends_and_middle() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        // d3's interpolateViridis(0.5) is #21918c; colorous resamples the same
        // curve, so the middle may differ by a unit per channel.
        let RGBColor(r, g, b) = viridis(0.5);
        for (got, want) in [(r, 33), (g, 145), (b, 140)] {
            assert!(got.abs_diff(want) <= 1, "{:?}", viridis(0.5));
        }
        assert_eq!(viridis(f64::NAN), RGBColor(68, 1, 84));
    }

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(file_stem("pretext-resnet50"), "pretext-resnet50");
        assert_eq!(file_stem("a b/c"), "a_b_c");
    }

    #[test]
    fn the_embedded_font_registers() {
        assert!(register_font().is_ok());
    }

    #[test]
    fn the_embedded_font_draws_every_mark() {
        use ab_glyph::Font;
        let font = ab_glyph::FontRef::try_from_slice(FONT).unwrap();
        let symbols = Mark::ALL.iter().flat_map(|mark| mark.symbol().chars());
        for c in symbols.chain("±−—äé".chars()) {
            assert_ne!(font.glyph_id(c).0, 0, "no glyph for {c:?}");
        }
        // A character outside the subset has none, so the check above can fail.
        assert_eq!(font.glyph_id('中').0, 0);
    }
}
