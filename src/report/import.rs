//! Results of runs made elsewhere, read from a CSV file whose header names the
//! stage's parameters and the metrics (`backbone,data_fraction,batch_size,
//! projection_dim,loss`). Parsing checks every row before anything is written: one
//! bad row refuses the whole file, and every bad row is named by its line.

use std::fmt;
use std::path::Path;

use serde_json::{Map, Number, Value};

use super::ReportError;
use crate::sweep::Params;

/// Always a parameter when it is a column, whatever the stage's axes are.
const SEED_COLUMN: &str = "seed";

/// One data row of an import file.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRow {
    /// The row's line in the file (1 is the header).
    pub line: usize,
    pub params: Params,
    /// The metric columns, every one a finite number.
    pub result: Map<String, Value>,
}

/// What is wrong with one line of an import file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportIssue {
    pub line: usize,
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for ImportIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(f, "{}: column {column}: {}", self.line, self.message),
            None => write!(f, "{}: {}", self.line, self.message),
        }
    }
}

/// Parses an import file. Columns named in `param_names` (the stage's grid axes; each
/// must be present) and a `seed` column become parameters: integers, then other
/// numbers, else strings. Every other column is a metric and must hold a finite
/// number in every row. Lines starting with `#` are comments. Two rows with the same
/// parameters are refused, since they would be the same job.
///
/// Numbers keep the type they are written in (`64` is an integer, `1.0` a float);
/// matching them to the sweep's grid values is the caller's job.
pub fn parse_import_csv(
    text: &str,
    origin: &Path,
    param_names: &[String],
) -> Result<Vec<ImportRow>, ReportError> {
    let fail = |issues: Vec<ImportIssue>| ReportError::Import {
        origin: origin.to_path_buf(),
        issues,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines = Lines::new(text);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_reader(text.as_bytes());
    let mut records = reader.records();

    let (header_line, header) = match records.next() {
        None => {
            return Err(fail(vec![issue(
                1,
                None,
                "the file is empty; expected a header row",
            )]))
        }
        Some(Err(error)) => return Err(fail(vec![lines.of_error(&error, 1)])),
        Some(Ok(record)) => (lines.of_record(&record, 1), record),
    };
    let columns: Vec<String> = header.iter().map(str::to_string).collect();
    let mut issues = header_issues(header_line, &columns, param_names);
    if !issues.is_empty() {
        return Err(fail(issues));
    }
    let is_param: Vec<bool> = columns
        .iter()
        .map(|column| param_names.contains(column) || column == SEED_COLUMN)
        .collect();

    let mut rows: Vec<ImportRow> = Vec::new();
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                issues.push(lines.of_error(&error, header_line));
                continue;
            }
        };
        let line = lines.of_record(&record, header_line);
        if record.len() != columns.len() {
            issues.push(issue(
                line,
                None,
                &format!("expected {} fields, found {}", columns.len(), record.len()),
            ));
            continue;
        }
        let mut params = Params::new();
        let mut result = Map::new();
        let mut row_ok = true;
        for ((column, field), param) in columns.iter().zip(record.iter()).zip(&is_param) {
            let parsed = if *param {
                parse_param(field)
            } else {
                parse_metric(field).map(Value::Number)
            };
            match parsed {
                Ok(value) if *param => {
                    params.insert(column.clone(), value);
                }
                Ok(value) => {
                    result.insert(column.clone(), value);
                }
                Err(message) => {
                    issues.push(issue(line, Some(column), &message));
                    row_ok = false;
                }
            }
        }
        if !row_ok {
            continue;
        }
        if let Some(earlier) = rows.iter().find(|row| row.params == params) {
            issues.push(issue(
                line,
                None,
                &format!("the same parameters as line {}", earlier.line),
            ));
            continue;
        }
        rows.push(ImportRow {
            line,
            params,
            result,
        });
    }
    if rows.is_empty() && issues.is_empty() {
        issues.push(issue(header_line, None, "no data rows after the header"));
    }
    if issues.is_empty() {
        Ok(rows)
    } else {
        Err(fail(issues))
    }
}

fn issue(line: usize, column: Option<&str>, message: &str) -> ImportIssue {
    ImportIssue {
        line,
        column: column.map(str::to_string),
        message: message.to_string(),
    }
}

/// File lines of byte offsets. The CSV reader counts neither blank lines nor the
/// ones it skips before a record, so lines are counted here: from a record's byte
/// offset, past blank and comment lines, to its first field.
struct Lines<'a> {
    text: &'a [u8],
    /// Byte offsets of every `\n` in the text.
    breaks: Vec<u64>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        let breaks = text
            .match_indices('\n')
            .map(|(offset, _)| offset as u64)
            .collect();
        Lines {
            text: text.as_bytes(),
            breaks,
        }
    }

    /// The 1-based line of the first byte at or after `byte` that starts a record.
    fn at(&self, byte: u64) -> usize {
        let mut at = byte as usize;
        while let Some(&c) = self.text.get(at) {
            match c {
                b'\n' | b'\r' => at += 1,
                b'#' => at += self.text[at..].iter().take_while(|c| **c != b'\n').count(),
                _ => break,
            }
        }
        self.breaks.partition_point(|offset| *offset < at as u64) + 1
    }

    fn of_record(&self, record: &csv::StringRecord, fallback: usize) -> usize {
        record
            .position()
            .map(|position| self.at(position.byte()))
            .unwrap_or(fallback)
    }

    fn of_error(&self, error: &csv::Error, fallback: usize) -> ImportIssue {
        let line = error
            .position()
            .map(|position| self.at(position.byte()))
            .unwrap_or(fallback);
        issue(line, None, &format!("unreadable CSV: {error}"))
    }
}

fn header_issues(line: usize, columns: &[String], param_names: &[String]) -> Vec<ImportIssue> {
    let mut issues = Vec::new();
    for (index, column) in columns.iter().enumerate() {
        if column.is_empty() {
            issues.push(issue(
                line,
                None,
                &format!("header field {} is empty", index + 1),
            ));
        } else if columns[..index].contains(column) {
            issues.push(issue(line, Some(column), "named twice in the header"));
        }
    }
    for name in param_names {
        if !columns.contains(name) {
            issues.push(issue(
                line,
                Some(name),
                "missing: the header must name every axis of the stage",
            ));
        }
    }
    let metrics = columns
        .iter()
        .filter(|column| !param_names.contains(column) && column.as_str() != SEED_COLUMN)
        .count();
    if metrics == 0 && issues.is_empty() {
        issues.push(issue(
            line,
            None,
            "no metric column: every column is a parameter",
        ));
    }
    issues
}

fn parse_param(field: &str) -> Result<Value, String> {
    if field.is_empty() {
        return Err("empty value".to_string());
    }
    if let Ok(integer) = field.parse::<i64>() {
        return Ok(Value::from(integer));
    }
    match field.parse::<f64>().ok().and_then(Number::from_f64) {
        Some(number) => Ok(Value::Number(number)),
        None => Ok(Value::String(field.to_string())),
    }
}

fn parse_metric(field: &str) -> Result<Number, String> {
    if field.is_empty() {
        return Err("expected a number, found an empty cell".to_string());
    }
    if let Ok(integer) = field.parse::<i64>() {
        return Ok(Number::from(integer));
    }
    match field.parse::<f64>() {
        // `Number::from_f64` refuses NaN and the infinities.
        Ok(value) => Number::from_f64(value)
            .ok_or_else(|| format!("expected a finite number, found {field:?}")),
        Err(_) => Err(format!("expected a number, found {field:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn axes() -> Vec<String> {
        vec!["backbone".to_string(), "batch_size".to_string()]
    }

    #[test]
    fn params_keep_their_type_and_metrics_are_numbers() {
        let text = "backbone,batch_size,loss,train_images\nresnet50,64,4.26,30000\n";
        let rows = parse_import_csv(text, Path::new("a.csv"), &axes()).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].params.get("backbone"), Some(&json!("resnet50")));
        assert_eq!(rows[0].params.get("batch_size"), Some(&json!(64)));
        assert_eq!(rows[0].result.get("loss"), Some(&json!(4.26)));
        assert_eq!(rows[0].result.get("train_images"), Some(&json!(30000)));
    }

    #[test]
    fn infinite_and_nan_metrics_are_refused() {
        let text = "backbone,batch_size,loss\nresnet50,64,NaN\nresnet50,128,inf\n";
        let error = parse_import_csv(text, Path::new("a.csv"), &axes()).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("a.csv:2: column loss: expected a finite number"),
            "{message}"
        );
        assert!(
            message.contains("a.csv:3: column loss: expected a finite number"),
            "{message}"
        );
    }
}
