//! A small result table printed as aligned text, CSV or JSON: what `status`, `jobs`,
//! `workers` and `query` print.

use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// How a table is printed; the command line's `--format table|csv|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    #[default]
    #[value(name = "table")]
    Text,
    Csv,
    Json,
}

impl Table {
    pub fn new<S: Into<String>>(columns: impl IntoIterator<Item = S>) -> Table {
        Table {
            columns: columns.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Value>) {
        self.rows.push(row);
    }

    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => self.to_text(),
            Format::Csv => self.to_csv(),
            Format::Json => self.to_json(),
        }
    }

    /// Columns padded to their widest cell; numbers right-aligned.
    pub fn to_text(&self) -> String {
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|row| row.iter().map(cell).collect())
            .collect();
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for row in &cells {
            for (width, text) in widths.iter_mut().zip(row) {
                *width = (*width).max(text.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, texts: Vec<(&str, bool)>| {
            let mut parts = Vec::new();
            for ((text, right), width) in texts.into_iter().zip(&widths) {
                parts.push(if right {
                    format!("{text:>width$}")
                } else {
                    format!("{text:<width$}")
                });
            }
            out.push_str(parts.join("  ").trim_end());
            out.push('\n');
        };
        // A header sits right-aligned over a column of numbers.
        let numeric: Vec<bool> = (0..self.columns.len())
            .map(|i| {
                let mut values = self
                    .rows
                    .iter()
                    .filter_map(|row| row.get(i))
                    .filter(|v| !v.is_null());
                values.clone().next().is_some() && values.all(Value::is_number)
            })
            .collect();
        line(
            &mut out,
            self.columns
                .iter()
                .map(String::as_str)
                .zip(numeric)
                .collect(),
        );
        for (row, texts) in self.rows.iter().zip(&cells) {
            line(
                &mut out,
                row.iter()
                    .zip(texts)
                    .map(|(v, t)| (t.as_str(), v.is_number()))
                    .collect(),
            );
        }
        out
    }

    pub fn to_csv(&self) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        // Writing into a Vec cannot fail.
        let _ = writer.write_record(&self.columns);
        for row in &self.rows {
            let _ = writer.write_record(row.iter().map(cell));
        }
        let bytes = writer.into_inner().unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// An array with one object per row, as text.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.to_json_value()).unwrap_or_default();
        text.push('\n');
        text
    }

    /// An array with one object per row.
    pub fn to_json_value(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let object: Map<String, Value> = self
                    .columns
                    .iter()
                    .cloned()
                    .zip(row.iter().cloned())
                    .collect();
                Value::Object(object)
            })
            .collect();
        Value::Array(rows)
    }
}

/// A value as one cell: strings as they are, NULL empty, the rest as JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Table {
        let mut table = Table::new(["name", "n"]);
        table.push(vec![json!("a,b"), json!(7)]);
        table.push(vec![json!(null), json!(123)]);
        table
    }

    #[test]
    fn text_aligns_columns_and_right_aligns_numbers() {
        assert_eq!(sample().to_text(), "name    n\na,b     7\n      123\n");
    }

    #[test]
    fn csv_quotes_separators() {
        assert_eq!(sample().to_csv(), "name,n\n\"a,b\",7\n,123\n");
    }

    #[test]
    fn json_is_one_object_per_row() {
        let parsed: Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(
            parsed,
            json!([{"name": "a,b", "n": 7}, {"name": null, "n": 123}])
        );
    }
}
