//! Plots: PNG and SVG files for the loss curves and the heat maps, drawn with the
//! embedded font.

use std::path::PathBuf;

use sweeper::report;

use crate::common::report::demo_input;

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn plots_write_png_and_svg_for_curves_and_heat_maps() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("plots");
    let written = report::plots(&demo_input(), &out).unwrap();
    if let Some(keep) = std::env::var_os("KEEP_PLOTS") {
        report::plots(&demo_input(), std::path::Path::new(&keep)).unwrap();
    }
    assert_eq!(
        names(&written),
        vec![
            "pretext-small_resnet-loss.png",
            "pretext-small_resnet-loss.svg",
            "pretext-small_resnet-heatmap.png",
            "pretext-small_resnet-heatmap.svg",
            "pretext-resnet18-loss.png",
            "pretext-resnet18-loss.svg",
            "pretext-resnet18-heatmap.png",
            "pretext-resnet18-heatmap.svg",
        ]
    );
    for path in &written {
        let bytes = std::fs::read(path).unwrap();
        assert!(
            bytes.len() > 1000,
            "{} has {} bytes",
            path.display(),
            bytes.len()
        );
        if path.extension().unwrap() == "png" {
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
        } else {
            let text = String::from_utf8(bytes).unwrap();
            assert!(text.starts_with("<svg"), "{}", path.display());
            assert!(text.trim_end().ends_with("</svg>"), "{}", path.display());
        }
    }

    let loss_svg = std::fs::read_to_string(out.join("pretext-small_resnet-loss.svg")).unwrap();
    assert!(loss_svg.contains("Small ResNet: NT-Xent loss per epoch"));
    assert!(loss_svg.contains("batch 64, 600, proj 32, seed 1"));
    // The chance levels of both batch sizes are drawn and named.
    assert!(loss_svg.contains("chance ln(63), batch 32"));
    assert!(loss_svg.contains("chance ln(127), batch 64"));
    // Eleven jobs have curves, each named once in the legend; the failed one has none.
    assert_eq!(loss_svg.matches(", proj ").count(), 11);

    let heat_svg = std::fs::read_to_string(out.join("pretext-resnet18-heatmap.svg")).unwrap();
    for text in [
        "batch 32 (chance 4.14)",
        "batch 64 (chance 4.84)",
        "3.8",
        "▶",
        "…",
        "⊘",
        "–",
    ] {
        assert!(heat_svg.contains(text), "no {text:?} in the heat map");
    }
}

#[test]
fn heat_map_colours_run_from_the_lowest_to_the_highest_loss() {
    let dir = tempfile::tempdir().unwrap();
    let written = report::plots(&demo_input(), dir.path()).unwrap();
    let png = written
        .iter()
        .find(|p| p.ends_with("pretext-small_resnet-heatmap.png"))
        .unwrap();
    let image = image::open(png).unwrap().to_rgb8();
    // Two panels of 420 px and the colour bar.
    assert_eq!(image.dimensions(), (950, 480));
    let count = |rgb: [u8; 3]| image.pixels().filter(|p| p.0 == rgb).count();
    // The lowest loss (3.87) is filled with viridis' dark end, the highest (4.73) with
    // its yellow end; each cell covers thousands of pixels.
    assert!(
        count([68, 1, 84]) > 2000,
        "dark end: {}",
        count([68, 1, 84])
    );
    assert!(
        count([253, 231, 37]) > 2000,
        "yellow end: {}",
        count([253, 231, 37])
    );
    // The text is drawn: white and black glyph pixels lie inside the cells.
    assert!(count([0, 0, 0]) > 100);
}

#[test]
fn a_sweep_without_curves_still_gets_heat_maps() {
    let mut input = demo_input();
    input.curves.clear();
    let dir = tempfile::tempdir().unwrap();
    let written = report::plots(&input, dir.path()).unwrap();
    assert_eq!(
        names(&written),
        vec![
            "pretext-small_resnet-heatmap.png",
            "pretext-small_resnet-heatmap.svg",
            "pretext-resnet18-heatmap.png",
            "pretext-resnet18-heatmap.svg",
        ]
    );
}
