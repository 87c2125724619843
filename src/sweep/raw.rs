//! What the user wrote: a serde model of the sweep file, before any cross-field rule.
//!
//! Every struct refuses unknown keys, and every value a later rule may complain about is
//! kept [`Spanned`], so [`check`](super::check) can point at the exact `line:column`.
//! Nothing here is seen outside `sweep`: [`check`](super::check) turns it into a
//! [`Spec`](super::Spec).

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use super::{SweepError, SweepResult};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub sweep: Spanned<RawSweep>,
    #[serde(default)]
    pub datasets: OrderedTable<Spanned<RawDataset>>,
    #[serde(default)]
    pub stages: Vec<Spanned<RawStage>>,
    #[serde(default)]
    pub selections: Vec<Spanned<RawSelection>>,
}

/// `[sweep]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSweep {
    pub name: Spanned<String>,
    pub data_root: Option<Spanned<PathBuf>>,
    pub seeds: Option<Spanned<Vec<Spanned<i64>>>>,
    pub max_attempts: Option<Spanned<i64>>,
    pub priority: Option<Spanned<i64>>,
    /// Random-init baselines beside every linear and fine-tune stage (on when absent).
    pub baselines: Option<Spanned<bool>>,
}

/// `[datasets.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDataset {
    pub folder: Spanned<PathBuf>,
    pub include_labels: Option<Spanned<Vec<Spanned<String>>>>,
    pub exclude_labels: Option<Spanned<Vec<Spanned<String>>>>,
    pub min_images_per_label: Option<Spanned<i64>>,
    pub take_labels: Option<Spanned<i64>>,
    pub per_label: Option<Spanned<i64>>,
    pub max_total: Option<Spanned<i64>>,
    pub split: Option<Spanned<Vec<Spanned<f64>>>>,
    pub test_folder: Option<Spanned<PathBuf>>,
    pub test_max_total: Option<Spanned<i64>>,
}

/// One `[[stages]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub name: Spanned<String>,
    /// Kept as a string so an unknown kind gets a message listing the known ones.
    pub kind: Spanned<String>,
    pub dataset: Option<Spanned<String>>,
    pub grid: Option<Spanned<RawGrid>>,
    pub params: Option<Spanned<RawParams>>,
    pub exclude: Option<Spanned<Vec<Spanned<RawParams>>>>,
    pub from: Option<Spanned<String>>,
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
    pub seeds: Option<Spanned<Vec<Spanned<i64>>>>,
    pub priority: Option<Spanned<i64>>,
    pub max_attempts: Option<Spanned<i64>>,
    pub halving: Option<Spanned<RawHalving>>,
}

/// `[stages.halving]`: see [`crate::sweep::halving::HalvingSpec`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHalving {
    pub metric: Spanned<String>,
    pub mode: Option<Spanned<String>>,
    pub rungs: Spanned<Vec<Spanned<i64>>>,
    /// A fraction as a string (`"1/3"`) or a decimal.
    pub keep: Spanned<toml::Value>,
    #[serde(default)]
    pub per: Vec<Spanned<String>>,
}

/// Axis name → its values, each value with its position.
pub type RawGrid = OrderedTable<Spanned<Vec<Spanned<toml::Value>>>>;

/// Parameter name → value: `[stages.params]` and each `exclude` entry.
pub type RawParams = OrderedTable<Spanned<toml::Value>>;

/// One `[[selections]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSelection {
    pub name: Spanned<String>,
    pub from: Spanned<String>,
    #[serde(default)]
    pub per: Vec<Spanned<String>>,
    pub prefer: Spanned<Vec<Spanned<RawPreference>>>,
    pub top: Option<Spanned<i64>>,
    pub on_failure: Option<Spanned<String>>,
}

/// `{ max = "field" }` or `{ min = "field" }`; exactly one of the two.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPreference {
    pub max: Option<Spanned<String>>,
    pub min: Option<Spanned<String>>,
}

/// A table whose entries keep file order (the grid's axes expand in the order they
/// are written). TOML already refuses duplicate keys, so a list is enough.
///
/// Keys are plain strings: a spanned key would hide the key from the error path
/// (`stages[0].grid` instead of `stages[0].grid.batch_size`), so errors about a key
/// point at its value, which sits on the same line.
#[derive(Debug)]
pub struct OrderedTable<V>(pub Vec<(String, V)>);

impl<V> Default for OrderedTable<V> {
    fn default() -> Self {
        OrderedTable(Vec::new())
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedTable<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor<V>(PhantomData<V>);

        impl<'de, V: Deserialize<'de>> Visitor<'de> for TableVisitor<V> {
            type Value = OrderedTable<V>;

            fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
                formatter.write_str("a table")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(OrderedTable(entries))
            }
        }

        deserializer.deserialize_map(TableVisitor(PhantomData))
    }
}

/// Parses `text`; a syntax error, an unknown key or a wrong type comes back as
/// [`SweepError::Invalid`] with its position and the path of the field.
pub fn parse(text: &str, origin: &Path) -> SweepResult<RawFile> {
    let deserializer = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let field = field_path(error.path());
        let inner = error.into_inner();
        let span = inner.span().unwrap_or(0..0);
        SweepError::Invalid {
            location: location(origin, text, span.start),
            field: if field.is_empty() {
                "toml".to_owned()
            } else {
                field
            },
            // One line: the parser puts its "expected ..." hint on a line of its own.
            message: inner.message().trim_end().replace('\n', "; "),
        }
    })
}

/// `stages[0].grid.batch_size`, without the private field names [`Spanned`] uses to
/// carry its position through serde.
fn field_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if key.starts_with("$__serde_spanned_private") {
                    continue;
                }
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

/// `file:line:column` of a byte offset; line and column count from 1, the column in
/// characters.
pub fn location(origin: &Path, text: &str, offset: usize) -> String {
    let (line, column) = line_column(text, offset);
    format!("{}:{line}:{column}", origin.display())
}

/// The 1-based line and character column of a byte offset into `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    // A span from the parser always starts on a character boundary; step back anyway
    // so a stray offset can never panic the slicing below.
    let offset = (0..=offset)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> (String, String, String) {
        match parse(text, Path::new("x.toml")) {
            Err(SweepError::Invalid {
                location,
                field,
                message,
            }) => (location, field, message),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn line_column_counts_from_one_in_characters() {
        let text = "ab\ncdé f\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 3), (2, 1));
        // `f` sits after a two-byte `é`: byte 8, character column 5.
        assert_eq!(line_column(text, 8), (2, 5));
        assert_eq!(line_column(text, 1000), (3, 1));
    }

    #[test]
    fn grid_axes_keep_file_order() {
        let text = "[sweep]\nname = \"s\"\n[[stages]]\nname = \"a\"\nkind = \"command\"\n\
                    [stages.grid]\nzeta = [1]\nalpha = [2, 3]\nmid = [\"x\"]\n";
        let raw = parse(text, Path::new("x.toml")).expect("valid file");
        let grid = raw.stages[0].get_ref().grid.as_ref().expect("grid present");
        let names: Vec<&str> = grid.get_ref().0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
    }

    #[test]
    fn unknown_key_names_its_path_and_position() {
        let text =
            "[sweep]\nname = \"s\"\n[[stages]]\nname = \"a\"\nkind = \"command\"\nbogus = 1\n";
        let (location, field, message) = parse_err(text);
        assert_eq!(location, "x.toml:6:1");
        assert_eq!(field, "stages[0].bogus");
        assert!(message.contains("unknown field `bogus`"), "{message}");
    }

    #[test]
    fn wrong_type_names_its_path_and_position() {
        let text = "[sweep]\nname = \"s\"\nmax_attempts = \"three\"\n";
        let (location, field, message) = parse_err(text);
        assert_eq!(location, "x.toml:3:16");
        assert_eq!(field, "sweep.max_attempts");
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn wrong_type_inside_a_grid_names_the_axis() {
        let text = "[sweep]\nname = \"s\"\n[[stages]]\nname = \"a\"\nkind = \"command\"\n\
                    [stages.grid]\nbatch_size = 64\n";
        let (location, field, message) = parse_err(text);
        assert_eq!(location, "x.toml:7:14");
        assert_eq!(field, "stages[0].grid.batch_size");
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn syntax_error_has_a_position() {
        let (location, field, _) = parse_err("[sweep]\nname = \n");
        assert_eq!(location, "x.toml:2:8");
        assert_eq!(field, "toml");
    }
}
