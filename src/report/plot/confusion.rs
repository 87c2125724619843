//! A downstream job's confusion matrix.

use super::heat::{draw_cell_grid, CellGrid};
use super::*;

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
        let cells = self
            .matrix
            .iter()
            .map(|row| {
                let total: i64 = row.iter().sum();
                row.iter()
                    .map(|count| {
                        let share = if total > 0 {
                            *count as f64 / total as f64
                        } else {
                            0.0
                        };
                        (Some(share), count.to_string())
                    })
                    .collect()
            })
            .collect();
        draw_cell_grid(
            root,
            &CellGrid {
                caption: &self.title,
                caption_size: 18,
                x_desc: "predicted",
                y_desc: "true class",
                columns: &self.labels,
                rows: &self.labels,
                cells,
                label_size: 12,
                text_size: 15,
                label_areas: (70, 110),
                margin: 16,
            },
        )
    }
}
