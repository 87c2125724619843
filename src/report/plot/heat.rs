//! Heat maps of the final loss, the colour scale and its bar, and the grid of
//! labelled cells they share with the confusion matrix.

use super::*;

/// One batch size's panel of the heat map.
struct HeatPanel {
    title: String,
    /// Top to bottom: data amounts as the tables write them.
    rows: Vec<String>,
    /// `cells[row][column]`: the mean final loss, and the text drawn in the cell.
    cells: Vec<Vec<(Option<f64>, String)>>,
}

/// Final loss over data amount × projection size, one panel per batch size.
pub(super) struct HeatFigure {
    pub(super) title: String,
    columns: Vec<String>,
    panels: Vec<HeatPanel>,
    /// The colour scale's ends, shared by the panels.
    range: (f64, f64),
}

impl HeatFigure {
    pub(super) fn new(layout: &PretextLayout, group: &Group, title: &str) -> Option<Self> {
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
pub(super) fn viridis(t: f64) -> RGBColor {
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
        let (low, high) = self.range;
        let span = if high > low { high - low } else { 1.0 };
        for (area, panel) in areas.iter().zip(&self.panels) {
            let cells = panel
                .cells
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|(value, text)| (value.map(|v| (v - low) / span), text.clone()))
                        .collect()
                })
                .collect();
            draw_cell_grid(
                area,
                &CellGrid {
                    caption: &panel.title,
                    caption_size: 16,
                    x_desc: "projection output",
                    y_desc: "images",
                    columns: &self.columns,
                    rows: &panel.rows,
                    cells,
                    label_size: 14,
                    text_size: 16,
                    label_areas: (44, 64),
                    margin: 12,
                },
            )?;
        }
        draw_colour_bar(&bar_area, self.range)
    }
}

/// A grid of cells on continuous axes, one unit per cell (a single row or column is a
/// cell like any other): column names under the cells' centres, row names beside them
/// with row 0 at the top, as in the tables; each cell filled from the colour scale and
/// its text light on the scale's dark half, dark on its light half.
pub(super) struct CellGrid<'a> {
    pub caption: &'a str,
    pub caption_size: u32,
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub columns: &'a [String],
    pub rows: &'a [String],
    /// `cells[row][column]`: the fill's place on the scale, 0 to 1 (none: grey), and
    /// the text written in it.
    pub cells: Vec<Vec<(Option<f64>, String)>>,
    pub label_size: u32,
    pub text_size: u32,
    /// Pixels for the column names (below) and the row names (left).
    pub label_areas: (u32, u32),
    pub margin: u32,
}

pub(super) fn draw_cell_grid<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    grid: &CellGrid<'_>,
) -> Result<(), String> {
    let columns = grid.columns.len().max(1);
    let rows = grid.rows.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(grid.caption, (FAMILY, grid.caption_size))
        .margin(grid.margin)
        .x_label_area_size(grid.label_areas.0)
        .y_label_area_size(grid.label_areas.1)
        .build_cartesian_2d(0.0..columns as f64, 0.0..rows as f64)
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(0)
        .x_desc(grid.x_desc)
        .y_desc(grid.y_desc)
        .label_style((FAMILY, 14))
        .draw()
        .map_err(plot_error)?;
    let label = TextStyle::from((FAMILY, grid.label_size));
    for (x, name) in grid.columns.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(x as f64 + 0.5, 0.0));
        area.draw(&Text::new(
            name.clone(),
            (px, py + 6),
            label.pos(Pos::new(HPos::Center, VPos::Top)),
        ))
        .map_err(plot_error)?;
    }
    for (r, name) in grid.rows.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(0.0, (rows - 1 - r) as f64 + 0.5));
        area.draw(&Text::new(
            name.clone(),
            (px - 6, py),
            label.pos(Pos::new(HPos::Right, VPos::Center)),
        ))
        .map_err(plot_error)?;
    }
    for (r, row) in grid.cells.iter().enumerate() {
        let y = (rows - 1 - r) as f64;
        for (x, (place, text)) in row.iter().enumerate() {
            let x = x as f64;
            let fill = match place {
                Some(t) => viridis(*t),
                None => RGBColor(225, 225, 225),
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x, y), (x + 1.0, y + 1.0)],
                    fill.filled(),
                )))
                .map_err(plot_error)?;
            let ink = if place.is_some_and(|t| t < 0.55) {
                WHITE
            } else {
                BLACK
            };
            let style = TextStyle::from((FAMILY, grid.text_size))
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
    Ok(())
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
