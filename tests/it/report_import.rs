//! Import files are checked row by row: every bad row is named by its file line and
//! column, and one bad row refuses the whole file.

use std::path::Path;

use serde_json::json;
use sweeper::report::{parse_import_csv, ReportError};

fn axes() -> Vec<String> {
    ["backbone", "data_fraction", "batch_size", "projection_dim"]
        .iter()
        .map(|axis| axis.to_string())
        .collect()
}

fn refused(text: &str) -> Vec<String> {
    match parse_import_csv(text, Path::new("runs.csv"), &axes()) {
        Ok(rows) => panic!("accepted {} rows of a bad file", rows.len()),
        Err(error @ ReportError::Import { .. }) => {
            let message = error.to_string();
            assert!(message.starts_with("runs.csv refused ("), "{message}");
            assert!(message.contains("nothing imported"), "{message}");
            message.lines().skip(1).map(str::to_string).collect()
        }
        Err(other) => panic!("unexpected error {other}"),
    }
}

const HEADER: &str = "backbone,data_fraction,batch_size,projection_dim,loss";

#[test]
fn good_rows_parse_with_their_types_and_lines() {
    let text = format!(
        "# runs from the old cluster\n{HEADER}\n\nresnet50,1.0,64,32,4.26\n\"inception_v3\", 0.7 ,128,64,3.06\n"
    );
    let rows = parse_import_csv(&text, Path::new("runs.csv"), &axes()).unwrap();
    assert_eq!(rows.len(), 2);
    // A comment and a blank line do not shift the line numbers.
    assert_eq!(rows[0].line, 4);
    assert_eq!(rows[1].line, 5);
    assert_eq!(rows[1].params["backbone"], json!("inception_v3"));
    assert_eq!(rows[1].params["data_fraction"], json!(0.7));
    assert_eq!(rows[1].params["batch_size"], json!(128));
    assert_eq!(rows[1].result["loss"], json!(3.06));
    assert_eq!(rows[1].result.len(), 1);
}

#[test]
fn a_seed_column_is_a_parameter() {
    let text = format!("{HEADER},seed\nresnet50,1.0,64,32,4.26,0\nresnet50,1.0,64,32,4.3,1\n");
    let rows = parse_import_csv(&text, Path::new("runs.csv"), &axes()).unwrap();
    assert_eq!(rows[1].params["seed"], json!(1));
    assert!(!rows[1].result.contains_key("seed"));
}

#[test]
fn every_bad_row_is_named_and_nothing_is_accepted() {
    let text = format!(
        "{HEADER}\n\
         resnet50,1.0,64,32,4.26\n\
         resnet50,1.0,64,64,four\n\
         resnet50,1.0,64,128\n\
         ,1.0,128,32,3.87\n\
         resnet50,1.0,64,32,4.3\n\
         resnet50,0.7,64,32,\n\
         resnet50,0.7,\"64\",64,6.13\n"
    );
    let issues = refused(&text);
    assert_eq!(
        issues,
        vec![
            "runs.csv:3: column loss: expected a number, found \"four\"",
            "runs.csv:4: expected 5 fields, found 4",
            "runs.csv:5: column backbone: empty value",
            "runs.csv:6: the same parameters as line 2",
            "runs.csv:7: column loss: expected a number, found an empty cell",
        ]
    );
}

#[test]
fn a_quoted_line_break_keeps_later_line_numbers_true() {
    let text = format!("{HEADER}\n\"resnet\n50\",1.0,64,32,4.26\nresnet50,1.0,64,64,x\n");
    assert_eq!(
        refused(&text),
        vec!["runs.csv:4: column loss: expected a number, found \"x\""]
    );
}

#[test]
fn header_problems_are_refused_before_any_row() {
    assert_eq!(
        refused("backbone,data_fraction,batchsize,projection_dim,loss\nresnet50,1.0,64,32,4.26\n"),
        vec![
            "runs.csv:1: column batch_size: missing: the header must name every axis of the stage"
        ]
    );
    assert_eq!(
        refused(&format!("{HEADER},loss\nresnet50,1.0,64,32,4.26,4.2\n")),
        vec!["runs.csv:1: column loss: named twice in the header"]
    );
    assert_eq!(
        refused("backbone,data_fraction,batch_size,projection_dim\nresnet50,1.0,64,32\n"),
        vec!["runs.csv:1: no metric column: every column is a parameter"]
    );
    assert_eq!(
        refused(""),
        vec!["runs.csv:1: the file is empty; expected a header row"]
    );
    assert_eq!(
        refused(&format!("{HEADER}\n")),
        vec!["runs.csv:1: no data rows after the header"]
    );
}
