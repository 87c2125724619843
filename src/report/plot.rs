//! Figures with `plotters`, each written as PNG and SVG: the loss curve of every
//! pretext job (one figure per backbone, a line per job) and per backbone a heat map
//! of the final loss over data amount × projection size, one panel per batch size.
//!
//! Text is drawn with a subset of DejaVu Sans embedded in the binary (see
//! `fonts/README.md`), so the figures need no system fonts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::format::{chance_level, mean_std, plain, pretty_backbone, trimmed};
#[cfg(test)]
use super::layout::Mark;
use super::layout::{pretext_layout, Group, PretextLayout, LOSS, SEED};
use super::model::{JobRecord, ReportInput, StageInfo};
use super::names::ModelNames;
use super::ReportError;
use crate::sweep::StageKind;

/// DejaVu Sans cut to Latin-1 and the marks the report uses.
static FONT: &[u8] = include_bytes!("fonts/DejaVuSans-subset.ttf");
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

/// The final loss of every finished pretext job against each grid axis, one panel
/// per axis, a point per job (spread a little sideways within its value, so equal
/// values stay visible), coloured by backbone: which axis moves the loss, at a
/// glance. With the number of points drawn; none without a finished pretext job.
pub fn axes_svg(input: &ReportInput) -> Result<Option<(usize, String)>, ReportError> {
    let Some(stage) = input
        .stages
        .iter()
        .find(|stage| stage.kind == StageKind::Pretext && !stage.grid.is_empty())
    else {
        return Ok(None);
    };
    let jobs: Vec<(&JobRecord, f64)> = input
        .jobs
        .iter()
        .filter(|job| job.stage == stage.name)
        .filter_map(|job| Some((job, job.metric(LOSS).filter(|v| v.is_finite())?)))
        .collect();
    if jobs.is_empty() {
        return Ok(None);
    }
    let figure = AxesFigure {
        axes: stage.grid.clone(),
        jobs,
    };
    let points = figure.jobs.len() * figure.axes.len();
    Ok(Some((points, to_svg(&figure)?)))
}

struct AxesFigure<'a> {
    axes: Vec<(String, Vec<serde_json::Value>)>,
    jobs: Vec<(&'a JobRecord, f64)>,
}

impl Figure for AxesFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (300 * self.axes.len().max(1) as u32, 380)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(plot_error)?;
        let root = root
            .titled("final NT-Xent loss by grid axis", (FAMILY, 16))
            .map_err(plot_error)?;
        let (low, high) = self
            .jobs
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), (_, v)| {
                (lo.min(*v), hi.max(*v))
            });
        let pad = ((high - low) * 0.05).max(0.05);
        let mut backbones: Vec<String> = self
            .jobs
            .iter()
            .map(|(job, _)| plain(super::layout::param(job, super::layout::BACKBONE)))
            .collect();
        backbones.sort();
        backbones.dedup();
        let areas = root.split_evenly((1, self.axes.len().max(1)));
        for (area, (axis, values)) in areas.iter().zip(&self.axes) {
            let n = values.len().max(1);
            let mut chart = ChartBuilder::on(area)
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(50)
                .build_cartesian_2d(0.0..n as f64, (low - pad)..(high + pad))
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .x_desc(axis.as_str())
                .label_style((FAMILY, 12))
                .draw()
                .map_err(plot_error)?;
            for (i, value) in values.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(i as f64 + 0.5, low - pad));
                area.draw(&Text::new(
                    plain(value),
                    (px, py + 4),
                    TextStyle::from((FAMILY, 12)).pos(Pos::new(HPos::Center, VPos::Top)),
                ))
                .map_err(plot_error)?;
            }
            for (index, (job, loss)) in self.jobs.iter().enumerate() {
                let value = super::layout::param(job, axis);
                let Some(slot) = values
                    .iter()
                    .position(|v| super::format::same_value(v, value))
                else {
                    continue;
                };
                // A fixed spread from the job's place in the list: the same figure
                // for the same store.
                let offset = ((index * 37) % 60) as f64 / 100.0 - 0.3;
                let backbone = plain(super::layout::param(job, super::layout::BACKBONE));
                let colour =
                    Palette99::pick(backbones.iter().position(|b| *b == backbone).unwrap_or(0));
                chart
                    .draw_series(std::iter::once(Circle::new(
                        (slot as f64 + 0.5 + offset, *loss),
                        3,
                        colour.filled(),
                    )))
                    .map_err(plot_error)?;
            }
        }
        Ok(())
    }
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
                .map(|(axis, _)| format!("{axis} {}", plain(super::layout::param(job, axis))))
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
            plain(super::layout::param(job, SEED))
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
        .filter(|job| job.state == super::model::JobState::Succeeded)
    {
        if let Some(figure) = ConfusionFigure::of(job, &label(job)) {
            let stem = file_stem(&format!("{}-{}-confusion", stage.name, label(job)));
            written.extend(save(&figure, dir, &stem)?);
        }
    }
    Ok(written)
}

/// A downstream job's confusion matrix on its test split: truth down, prediction
/// across, each cell's count written and its colour the share of its true class
/// (the row's recall on the diagonal).
pub struct ConfusionFigure {
    pub title: String,
    pub labels: Vec<String>,
    /// `matrix[truth][predicted]`.
    pub matrix: Vec<Vec<i64>>,
}

impl ConfusionFigure {
    /// From a job's result (`confusion` and `per_class` labels), when it has one.
    pub fn of(job: &JobRecord, title: &str) -> Option<ConfusionFigure> {
        let result = job.result.as_ref()?;
        let matrix: Vec<Vec<i64>> =
            serde_json::from_value(result.get("confusion")?.clone()).ok()?;
        let labels: Vec<String> = result
            .get("per_class")
            .and_then(|classes| classes.as_array())
            .map(|classes| {
                classes
                    .iter()
                    .map(|class| class["label"].as_str().unwrap_or("?").to_owned())
                    .collect()
            })
            .unwrap_or_else(|| (0..matrix.len()).map(|i| i.to_string()).collect());
        (!matrix.is_empty() && labels.len() == matrix.len()).then(|| ConfusionFigure {
            title: format!("{title}: confusion on the test split"),
            labels,
            matrix,
        })
    }
}

impl Figure for ConfusionFigure {
    fn size(&self) -> (u32, u32) {
        let side = (self.labels.len() as u32 * 70).clamp(280, 900);
        (side + 200, side + 150)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(plot_error)?;
        let n = self.labels.len();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, 18))
            .margin(16)
            .x_label_area_size(70)
            .y_label_area_size(110)
            .build_cartesian_2d(0.0..n as f64, 0.0..n as f64)
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .x_desc("predicted")
            .y_desc("true class")
            .label_style((FAMILY, 14))
            .draw()
            .map_err(plot_error)?;
        let label = TextStyle::from((FAMILY, 12));
        for (i, name) in self.labels.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(
                name.clone(),
                (px, py + 6),
                label.pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(plot_error)?;
            let (px, py) = chart.backend_coord(&(0.0, (n - 1 - i) as f64 + 0.5));
            root.draw(&Text::new(
                name.clone(),
                (px - 6, py),
                label.pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(plot_error)?;
        }
        for (truth, row) in self.matrix.iter().enumerate() {
            let total: i64 = row.iter().sum();
            let y = (n - 1 - truth) as f64;
            for (predicted, count) in row.iter().enumerate() {
                let share = if total > 0 {
                    *count as f64 / total as f64
                } else {
                    0.0
                };
                let x = predicted as f64;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x, y), (x + 1.0, y + 1.0)],
                        viridis(share).filled(),
                    )))
                    .map_err(plot_error)?;
                let ink = if share < 0.55 { WHITE } else { BLACK };
                chart
                    .draw_series(std::iter::once(Text::new(
                        count.to_string(),
                        (x + 0.5, y + 0.5),
                        TextStyle::from((FAMILY, 15))
                            .color(&ink)
                            .pos(Pos::new(HPos::Center, VPos::Center)),
                    )))
                    .map_err(plot_error)?;
            }
        }
        Ok(())
    }
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

/// Curves over epochs (or steps) with labelled reference lines, the legend beside
/// the data, never over it: a pretext group's loss curves with its chance levels, a
/// job's live curves on the dashboard, a downstream job's validation curves.
pub struct CurveFigure {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    /// Label and `(x, y)` points, in legend order.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
    /// Horizontal reference lines (chance levels): label and height, each drawn
    /// dashed in its own colour and named at its right end and in the legend.
    pub references: Vec<(String, f64)>,
    /// Width and height in pixels ([`CurveFigure::FULL`] for the files of `plot`).
    pub size: (u32, u32),
}

impl CurveFigure {
    pub const FULL: (u32, u32) = (1200, 760);
}

/// The loss curves of one backbone's jobs.
fn loss_figure(
    input: &ReportInput,
    layout: &PretextLayout,
    group: &Group,
    title: &str,
) -> Option<CurveFigure> {
    let several_seeds = group
        .panels
        .iter()
        .flat_map(|panel| panel.rows.iter())
        .flat_map(|row| row.cells.iter())
        .any(|cell| cell.jobs.len() > 1);
    let mut series = Vec::new();
    let mut chance = Vec::new();
    for panel in &group.panels {
        let mut panel_has_curve = false;
        for row in &panel.rows {
            for (cell, projection) in row.cells.iter().zip(&layout.projections) {
                for job in &cell.jobs {
                    let Some(curve) = input.curves.get(&job.id).filter(|c| !c.is_empty()) else {
                        continue;
                    };
                    let mut label = format!(
                        "batch {}, {}, proj {}",
                        plain(&panel.batch_size),
                        row.data_label,
                        plain(projection)
                    );
                    if several_seeds {
                        label.push_str(&format!(
                            ", seed {}",
                            plain(super::layout::param(job, SEED))
                        ));
                    }
                    let points = curve
                        .iter()
                        .filter(|(_, loss)| loss.is_finite())
                        .map(|(epoch, loss)| (*epoch as f64, *loss))
                        .collect();
                    series.push((label, points));
                    panel_has_curve = true;
                }
            }
        }
        if let Some(n) = panel
            .batch_size
            .as_u64()
            .filter(|n| *n > 0 && panel_has_curve)
        {
            chance.push((
                format!("chance ln({}), batch {n}", 2 * n - 1),
                chance_level(n),
            ));
        }
    }
    (!series.is_empty()).then(|| CurveFigure {
        title: format!("{title}: NT-Xent loss per epoch"),
        x_desc: "epoch".into(),
        y_desc: "NT-Xent loss".into(),
        series,
        references: chance,
        size: CurveFigure::FULL,
    })
}

/// Reference lines: dark, distinct hues, each with its own dash length.
const REFERENCE_COLOURS: [RGBColor; 4] = [
    RGBColor(40, 40, 40),
    RGBColor(178, 34, 34),
    RGBColor(30, 90, 180),
    RGBColor(120, 60, 150),
];

/// Width of the legend column beside a curve figure's data.
const LEGEND_WIDTH: u32 = 330;

impl Figure for CurveFigure {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(plot_error)?;
        let (width, _) = root.dim_in_pixel();
        let legend_width = LEGEND_WIDTH.min(width / 3);
        let (plot_area, legend_area) =
            root.split_horizontally(width.saturating_sub(legend_width) as i32);
        let points = self.series.iter().flat_map(|(_, points)| points.iter());
        let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in points {
            x_min = x_min.min(*x);
            x_max = x_max.max(*x);
            y_min = y_min.min(*y);
            y_max = y_max.max(*y);
        }
        for (_, level) in &self.references {
            y_min = y_min.min(*level);
            y_max = y_max.max(*level);
        }
        if x_min > x_max {
            (x_min, x_max, y_min, y_max) = (0.0, 1.0, 0.0, 1.0);
        }
        // A single epoch or a flat curve still needs a range to draw in.
        if x_max - x_min < 1.0 {
            x_max = x_min + 1.0;
        }
        let pad = ((y_max - y_min) * 0.05).max(0.05);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(&self.title, (FAMILY, 24))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(60)
            .build_cartesian_2d(x_min..x_max, (y_min - pad)..(y_max + pad))
            .map_err(plot_error)?;
        chart
            .configure_mesh()
            .x_labels(((x_max - x_min) as usize + 1).min(12))
            .x_label_formatter(&|epoch| {
                if (epoch - epoch.round()).abs() < 1e-9 {
                    format!("{epoch:.0}")
                } else {
                    format!("{epoch:.1}")
                }
            })
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .label_style((FAMILY, 14))
            .draw()
            .map_err(plot_error)?;
        let mut legend: Vec<(String, ShapeStyle, bool)> = Vec::new();
        for (index, (label, level)) in self.references.iter().enumerate() {
            let colour = REFERENCE_COLOURS[index % REFERENCE_COLOURS.len()];
            let style = ShapeStyle::from(&colour).stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(
                    vec![(x_min, *level), (x_max, *level)],
                    4 + 4 * index as u32,
                    5,
                    style,
                ))
                .map_err(plot_error)?;
            // Named on the line itself, at its right end, above it.
            let (x, y) = chart.backend_coord(&(x_max, *level));
            let anchor = TextStyle::from((FAMILY, 12))
                .color(&colour)
                .pos(Pos::new(HPos::Right, VPos::Bottom));
            plot_area
                .draw(&Text::new(label.clone(), (x - 4, y - 3), anchor))
                .map_err(plot_error)?;
            legend.push((label.clone(), style, true));
        }
        for (index, (label, points)) in self.series.iter().enumerate() {
            let colour = Palette99::pick(index).to_rgba();
            let style = colour.stroke_width(2);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), style))
                .map_err(plot_error)?;
            legend.push((label.clone(), style, false));
        }
        draw_legend(&legend_area, &legend)
    }
}

/// The legend in its own column: a swatch and a label per entry, top down, as many
/// as fit; the rest summed up in a last line.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, ShapeStyle, bool)],
) -> Result<(), String> {
    let (_, height) = area.dim_in_pixel();
    let line = 16;
    let fits = ((height as i32 - 60) / line).max(1) as usize;
    let shown = if entries.len() > fits {
        fits - 1
    } else {
        entries.len()
    };
    let label_style = TextStyle::from((FAMILY, 12)).pos(Pos::new(HPos::Left, VPos::Center));
    for (index, (label, style, dashed)) in entries.iter().take(shown).enumerate() {
        let y = 60 + index as i32 * line;
        if *dashed {
            for start in [4, 14, 24] {
                area.draw(&PathElement::new(vec![(start, y), (start + 6, y)], *style))
                    .map_err(plot_error)?;
            }
        } else {
            area.draw(&PathElement::new(vec![(4, y), (30, y)], *style))
                .map_err(plot_error)?;
        }
        area.draw(&Text::new(label.clone(), (38, y), label_style.clone()))
            .map_err(plot_error)?;
    }
    if shown < entries.len() {
        let y = 60 + shown as i32 * line;
        area.draw(&Text::new(
            format!("… and {} more", entries.len() - shown),
            (38, y),
            label_style,
        ))
        .map_err(plot_error)?;
    }
    Ok(())
}

/// One batch size's panel of the heat map.
struct HeatPanel {
    title: String,
    /// Top to bottom: data amounts as the tables write them.
    rows: Vec<String>,
    /// `cells[row][column]`: the mean final loss, and the text drawn in the cell.
    cells: Vec<Vec<(Option<f64>, String)>>,
}

/// Final loss over data amount × projection size, one panel per batch size.
struct HeatFigure {
    title: String,
    columns: Vec<String>,
    panels: Vec<HeatPanel>,
    /// The colour scale's ends, shared by the panels.
    range: (f64, f64),
}

impl HeatFigure {
    fn new(layout: &PretextLayout, group: &Group, title: &str) -> Option<Self> {
        let panels: Vec<HeatPanel> = group
            .panels
            .iter()
            .map(|panel| HeatPanel {
                title: match panel.batch_size.as_u64().filter(|n| *n > 0) {
                    Some(n) => format!("batch {n} (chance {:.2})", chance_level(n)),
                    None => format!("batch {}", plain(&panel.batch_size)),
                },
                rows: panel
                    .rows
                    .iter()
                    .map(|row| row.data_label.clone())
                    .collect(),
                cells: panel
                    .rows
                    .iter()
                    .map(|row| {
                        row.cells
                            .iter()
                            .map(|cell| {
                                let mean = mean_std(&cell.values(LOSS)).map(|(mean, _)| mean);
                                let marks: String =
                                    cell.marks(LOSS).iter().map(|mark| mark.symbol()).collect();
                                let text = match mean {
                                    Some(mean) if marks.is_empty() => trimmed(mean, 2),
                                    Some(mean) => format!("{} {marks}", trimmed(mean, 2)),
                                    None => marks,
                                };
                                (mean, text)
                            })
                            .collect()
                    })
                    .collect(),
            })
            .collect();
        if panels.is_empty() || panels.iter().all(|panel| panel.rows.is_empty()) {
            return None;
        }
        let values = panels
            .iter()
            .flat_map(|p| p.cells.iter().flatten())
            .filter_map(|(v, _)| *v);
        let range = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let range = if range.0 > range.1 { (0.0, 1.0) } else { range };
        Some(HeatFigure {
            title: format!(
                "{title}: final NT-Xent loss (dark = {}, yellow = {})",
                trimmed(range.0, 2),
                trimmed(range.1, 2)
            ),
            columns: layout.projections.iter().map(plain).collect(),
            panels,
            range,
        })
    }
}

/// Viridis, from dark purple (0) to yellow (1).
fn viridis(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let colour = colorous::VIRIDIS.eval_continuous(t);
    RGBColor(colour.r, colour.g, colour.b)
}

/// Width of the colour bar column at a heat map's right.
const COLOUR_BAR_WIDTH: u32 = 110;

impl Figure for HeatFigure {
    fn size(&self) -> (u32, u32) {
        (
            (420 * self.panels.len().max(1)) as u32 + COLOUR_BAR_WIDTH,
            480,
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(plot_error)?;
        let root = root.titled(&self.title, (FAMILY, 18)).map_err(plot_error)?;
        let (width, _) = root.dim_in_pixel();
        let (panels_area, bar_area) =
            root.split_horizontally(width.saturating_sub(COLOUR_BAR_WIDTH) as i32);
        let areas = panels_area.split_evenly((1, self.panels.len()));
        let columns = self.columns.len().max(1);
        let (low, high) = self.range;
        let span = if high > low { high - low } else { 1.0 };
        for (area, panel) in areas.iter().zip(&self.panels) {
            let rows = panel.rows.len().max(1);
            // Continuous axes, one unit per cell, labels drawn at the cells' centres:
            // a single row or column is a cell like any other.
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, (FAMILY, 16))
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d(0.0..columns as f64, 0.0..rows as f64)
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(0)
                .y_labels(0)
                .x_desc("projection output")
                .y_desc("images")
                .label_style((FAMILY, 14))
                .draw()
                .map_err(plot_error)?;
            let label = TextStyle::from((FAMILY, 14));
            for (x, name) in self.columns.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(x as f64 + 0.5, 0.0));
                area.draw(&Text::new(
                    name.clone(),
                    (px, py + 6),
                    label.pos(Pos::new(HPos::Center, VPos::Top)),
                ))
                .map_err(plot_error)?;
            }
            // Row 0 (the most data) is drawn at the top, as in the tables.
            for (r, name) in panel.rows.iter().enumerate() {
                let y = (rows - 1 - r) as f64 + 0.5;
                let (px, py) = chart.backend_coord(&(0.0, y));
                area.draw(&Text::new(
                    name.clone(),
                    (px - 6, py),
                    label.pos(Pos::new(HPos::Right, VPos::Center)),
                ))
                .map_err(plot_error)?;
            }
            for (r, row) in panel.cells.iter().enumerate() {
                let y = (rows - 1 - r) as f64;
                for (x, (value, text)) in row.iter().enumerate() {
                    let x = x as f64;
                    let fill = match value {
                        Some(value) => viridis((value - low) / span),
                        None => RGBColor(225, 225, 225),
                    };
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(x, y), (x + 1.0, y + 1.0)],
                            fill.filled(),
                        )))
                        .map_err(plot_error)?;
                    // Light text on the dark half of the scale, dark on the light half.
                    let dark_fill = value.is_some_and(|v| (v - low) / span < 0.55);
                    let ink = if dark_fill { WHITE } else { BLACK };
                    let style = TextStyle::from((FAMILY, 16))
                        .color(&ink)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    chart
                        .draw_series(std::iter::once(Text::new(
                            text.clone(),
                            (x + 0.5, y + 0.5),
                            style,
                        )))
                        .map_err(plot_error)?;
                }
            }
        }
        draw_colour_bar(&bar_area, self.range)
    }
}

/// A vertical viridis strip from the lowest value (bottom) to the highest (top),
/// with five labelled ticks.
fn draw_colour_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    (low, high): (f64, f64),
) -> Result<(), String> {
    let (_, height) = area.dim_in_pixel();
    let (top, bottom) = (48, height as i32 - 56);
    let (left, right) = (14, 34);
    let steps = (bottom - top).max(1);
    for step in 0..steps {
        let t = 1.0 - step as f64 / (steps - 1).max(1) as f64;
        area.draw(&Rectangle::new(
            [(left, top + step), (right, top + step + 1)],
            viridis(t).filled(),
        ))
        .map_err(plot_error)?;
    }
    area.draw(&Rectangle::new(
        [(left, top), (right, bottom)],
        BLACK.stroke_width(1),
    ))
    .map_err(plot_error)?;
    let style = TextStyle::from((FAMILY, 12)).pos(Pos::new(HPos::Left, VPos::Center));
    for tick in 0..5 {
        let t = tick as f64 / 4.0;
        let y = bottom - ((bottom - top) as f64 * t).round() as i32;
        area.draw(&PathElement::new(vec![(right, y), (right + 4, y)], BLACK))
            .map_err(plot_error)?;
        area.draw(&Text::new(
            trimmed(low + (high - low) * t, 2),
            (right + 7, y),
            style.clone(),
        ))
        .map_err(plot_error)?;
    }
    area.draw(&Text::new(
        "final loss",
        (left - 4, top - 18),
        style.pos(Pos::new(HPos::Left, VPos::Center)),
    ))
    .map_err(plot_error)?;
    Ok(())
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
