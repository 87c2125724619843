//! Figures with `plotters`, each written as PNG and SVG: the loss curve of every
//! pretext job (one figure per backbone, a line per job) and per backbone a heat map
//! of the final loss over data amount × projection size, one panel per batch size.
//!
//! Text is drawn with a subset of DejaVu Sans embedded in the binary (see
//! `fonts/README.md`), so the figures need no system fonts.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::SegmentValue;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::format::{chance_level, mean_std, plain, pretty_backbone, trimmed};
#[cfg(test)]
use super::layout::Mark;
use super::layout::{pretext_layout, Group, PretextLayout, LOSS, SEED};
use super::model::ReportInput;
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
trait Figure {
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
            if let Some(figure) = LossFigure::new(input, &layout, group, &name.title) {
                written.extend(save(&figure, dir, &format!("{stem}-loss"))?);
            }
            if let Some(figure) = HeatFigure::new(&layout, group, &name.title) {
                written.extend(save(&figure, dir, &format!("{stem}-heatmap"))?);
            }
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

/// The loss curves of one backbone's jobs.
struct LossFigure {
    title: String,
    /// Label and `(epoch, loss)` points, in the tables' order.
    series: Vec<(String, Vec<(f64, f64)>)>,
    /// The chance level of each batch size drawn.
    chance: Vec<(String, f64)>,
}

impl LossFigure {
    fn new(
        input: &ReportInput,
        layout: &PretextLayout,
        group: &Group,
        title: &str,
    ) -> Option<Self> {
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
                        let Some(curve) = input.curves.get(&job.id).filter(|c| !c.is_empty())
                        else {
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
        (!series.is_empty()).then(|| LossFigure {
            title: format!("{title}: NT-Xent loss per epoch"),
            series,
            chance,
        })
    }
}

impl Figure for LossFigure {
    fn size(&self) -> (u32, u32) {
        (1200, 760)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(plot_error)?;
        let points = self.series.iter().flat_map(|(_, points)| points.iter());
        let (mut x_min, mut x_max, mut y_min, mut y_max) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for (x, y) in points {
            x_min = x_min.min(*x);
            x_max = x_max.max(*x);
            y_min = y_min.min(*y);
            y_max = y_max.max(*y);
        }
        for (_, level) in &self.chance {
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
        let mut chart = ChartBuilder::on(root)
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
            .x_desc("epoch")
            .y_desc("NT-Xent loss")
            .label_style((FAMILY, 14))
            .draw()
            .map_err(plot_error)?;
        for (index, (label, level)) in self.chance.iter().enumerate() {
            let style = ShapeStyle::from(&BLACK.mix(0.35 + 0.2 * index as f64)).stroke_width(1);
            chart
                .draw_series(LineSeries::new(
                    vec![(x_min, *level), (x_max, *level)],
                    style,
                ))
                .map_err(plot_error)?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        for (index, (label, points)) in self.series.iter().enumerate() {
            let color = Palette99::pick(index).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(plot_error)?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FAMILY, 11))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(plot_error)
    }
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

/// Viridis, from dark purple (0) to yellow (1), by linear steps between five stops.
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 5] = [
        (68, 1, 84),
        (59, 82, 139),
        (33, 145, 140),
        (94, 201, 98),
        (253, 231, 37),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let scaled = t * (STOPS.len() - 1) as f64;
    let index = (scaled.floor() as usize).min(STOPS.len() - 2);
    let frac = scaled - index as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * frac).round() as u8;
    let (a, b) = (STOPS[index], STOPS[index + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

impl Figure for HeatFigure {
    fn size(&self) -> (u32, u32) {
        (420 * self.panels.len().max(1) as u32, 480)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        root.fill(&WHITE).map_err(plot_error)?;
        let root = root.titled(&self.title, (FAMILY, 18)).map_err(plot_error)?;
        let areas = root.split_evenly((1, self.panels.len()));
        let columns = self.columns.len();
        for (area, panel) in areas.iter().zip(&self.panels) {
            let rows = panel.rows.len();
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, (FAMILY, 16))
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(64)
                // An integer range is inclusive as a discrete axis: `0..n - 1` is n slots.
                .build_cartesian_2d(
                    (0..columns.max(1) - 1).into_segmented(),
                    (0..rows.max(1) - 1).into_segmented(),
                )
                .map_err(plot_error)?;
            // Row 0 (the most data) is drawn at the top, as in the tables.
            let row_label = |value: &SegmentValue<usize>| match value {
                SegmentValue::CenterOf(y) if *y < rows => panel.rows[rows - 1 - *y].clone(),
                _ => String::new(),
            };
            let column_label = |value: &SegmentValue<usize>| match value {
                SegmentValue::CenterOf(x) if *x < columns => self.columns[*x].clone(),
                _ => String::new(),
            };
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(columns + 1)
                .y_labels(rows + 1)
                .x_label_formatter(&column_label)
                .y_label_formatter(&row_label)
                .x_desc("projection output")
                .y_desc("images")
                .label_style((FAMILY, 14))
                .draw()
                .map_err(plot_error)?;
            let (low, high) = self.range;
            let span = if high > low { high - low } else { 1.0 };
            for (r, row) in panel.cells.iter().enumerate() {
                let y = rows - 1 - r;
                for (x, (value, text)) in row.iter().enumerate() {
                    let fill = match value {
                        Some(value) => viridis((value - low) / span),
                        None => RGBColor(225, 225, 225),
                    };
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [
                                (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                                (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                            ],
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
                            (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y)),
                            style,
                        )))
                        .map_err(plot_error)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viridis_ends_and_middle() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(0.5), RGBColor(33, 145, 140));
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
