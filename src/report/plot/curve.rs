//! Curves with labelled reference lines and the legend beside the data.

use super::*;

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
pub(super) fn loss_figure(
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
                            plain(crate::report::layout::param(job, SEED))
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
