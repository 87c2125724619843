//! The final loss of every finished pretext job against each grid axis.

use super::*;

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
            .map(|(job, _)| {
                plain(crate::report::layout::param(
                    job,
                    crate::report::layout::BACKBONE,
                ))
            })
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
                let value = crate::report::layout::param(job, axis);
                let Some(slot) = values
                    .iter()
                    .position(|v| crate::report::format::same_value(v, value))
                else {
                    continue;
                };
                // A fixed spread from the job's place in the list: the same figure
                // for the same store.
                let offset = ((index * 37) % 60) as f64 / 100.0 - 0.3;
                let backbone = plain(crate::report::layout::param(
                    job,
                    crate::report::layout::BACKBONE,
                ));
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
