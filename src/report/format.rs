//! How the report writes names and numbers: the study's backbone and model names,
//! image counts with `.` thousands separators, trimmed decimals, mean ± std.

use serde_json::Value;

/// The backbone as the seed report's headings write it (`ResNet-50`).
pub fn pretty_backbone(backbone: &str) -> String {
    match backbone {
        "resnet18" => "ResNet-18".to_string(),
        "resnet50" => "ResNet-50".to_string(),
        "resnet101" => "ResNet-101".to_string(),
        "inception_v3" => "Inception-V3".to_string(),
        "inception_resnet_v2" => "InceptionResNet-V2".to_string(),
        "small_resnet" => "Small ResNet".to_string(),
        other => other.to_string(),
    }
}

/// The backbone as the seed report's model names write it (`ResNet50`); other
/// backbones are written in CamelCase (`my_net` → `MyNet`).
pub fn model_backbone(backbone: &str) -> String {
    match backbone {
        "resnet18" => "ResNet18".to_string(),
        "resnet50" => "ResNet50".to_string(),
        "resnet101" => "ResNet101".to_string(),
        "inception_v3" => "InceptionV3".to_string(),
        "inception_resnet_v2" => "InceptionResNetV2".to_string(),
        "small_resnet" => "SmallResNet".to_string(),
        other => other
            .split(['_', '-', ' '])
            .filter(|part| !part.is_empty())
            .map(|part| {
                let mut chars = part.chars();
                match chars.next() {
                    Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
                    None => String::new(),
                }
            })
            .collect(),
    }
}

/// A selected model's name, like the seed's `ResNet50_projection64`.
pub fn model_name(backbone: Option<&Value>, projection_dim: Option<&Value>) -> String {
    let backbone = match backbone {
        Some(value) => model_backbone(&plain(value)),
        None => "Model".to_string(),
    };
    match projection_dim {
        Some(dim) => format!("{backbone}_projection{}", plain(dim)),
        None => backbone,
    }
}

/// A parameter value as text: strings without quotes, numbers as written.
pub fn plain(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => "—".to_string(),
        other => other.to_string(),
    }
}

/// Whether two parameter values are the same, comparing numbers by value so that
/// `1` and `1.0` match.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// `value` rounded to `decimals`, without trailing zeros but with at least one
/// decimal: `4.26`, `5.0`, `2.7` (the seed's style); `0.568`, `0.58` with three.
pub fn trimmed(value: f64, decimals: usize) -> String {
    let rounded = format!("{value:.decimals$}");
    // `-0.00` reads as a sign error; it is zero at this precision.
    let rounded = if rounded
        .trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        format!("{:.decimals$}", 0.0)
    } else {
        rounded
    };
    if !rounded.contains('.') {
        return rounded;
    }
    let without_zeros = rounded.trim_end_matches('0');
    if without_zeros.ends_with('.') {
        format!("{without_zeros}0")
    } else {
        without_zeros.to_string()
    }
}

/// An image count with `.` as the thousands separator, as the seed writes it.
pub fn thousands(count: u64) -> String {
    let digits = count.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push('.');
        }
        out.push(digit);
    }
    out
}

/// Mean and sample standard deviation (n − 1); the deviation is `None` for fewer
/// than two values.
pub fn mean_std(values: &[f64]) -> Option<(f64, Option<f64>)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return Some((mean, None));
    }
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, Some(variance.sqrt())))
}

/// NT-Xent's chance level for a batch of `batch_size` pairs: every anchor has
/// 2N − 1 candidates, so a network that tells none apart scores ln(2N − 1).
pub fn chance_level(batch_size: u64) -> f64 {
    ((2 * batch_size - 1) as f64).ln()
}

/// How a stored NT-Xent loss was summed. sweeper's training writes the mean over the
/// 2N anchors; google-research/simclr logs the sum of its two halves, twice that, and
/// results imported from such a run say so (`import --loss-convention sum`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, clap::ValueEnum)]
pub enum LossConvention {
    /// The mean over the 2N anchors; chance ln(2N−1).
    #[default]
    Mean,
    /// Twice the mean (both halves summed); chance 2·ln(2N−1).
    Sum,
}

impl LossConvention {
    /// The result field an imported job records its convention in.
    pub const FIELD: &'static str = "loss_convention";

    pub fn as_str(self) -> &'static str {
        match self {
            LossConvention::Mean => "mean",
            LossConvention::Sum => "sum",
        }
    }

    /// The one parser of a stored convention name.
    pub fn parse(name: &str) -> Option<LossConvention> {
        [LossConvention::Mean, LossConvention::Sum]
            .into_iter()
            .find(|convention| convention.as_str() == name)
    }

    /// The loss of an encoder that tells no sample apart, at this batch size.
    pub fn chance(self, batch_size: u64) -> f64 {
        match self {
            LossConvention::Mean => chance_level(batch_size),
            LossConvention::Sum => 2.0 * chance_level(batch_size),
        }
    }

    /// `ln(127)` or `2·ln(127)`: how the chance level is written.
    pub fn chance_formula(self, batch_size: u64) -> String {
        match self {
            LossConvention::Mean => format!("ln({})", 2 * batch_size - 1),
            LossConvention::Sum => format!("2·ln({})", 2 * batch_size - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trimmed_keeps_the_seed_style() {
        assert_eq!(trimmed(4.26, 2), "4.26");
        assert_eq!(trimmed(5.0, 2), "5.0");
        assert_eq!(trimmed(2.7, 2), "2.7");
        assert_eq!(trimmed(6.10, 2), "6.1");
        assert_eq!(trimmed(2.845, 2), "2.85");
        assert_eq!(trimmed(-0.001, 2), "0.0");
        assert_eq!(trimmed(0.58, 3), "0.58");
        assert_eq!(trimmed(0.6, 3), "0.6");
        assert_eq!(trimmed(0.5684, 3), "0.568");
    }

    #[test]
    fn thousands_use_dots() {
        assert_eq!(thousands(30_000), "30.000");
        assert_eq!(thousands(1_281_167), "1.281.167");
        assert_eq!(thousands(600), "600");
        assert_eq!(thousands(0), "0");
    }

    #[test]
    fn a_summed_loss_has_twice_the_chance_level() {
        // REFERENCE.md: google-research/simclr's logged loss at chance, batch 64, is
        // 2·ln(127) = 9.6884; the seed's 9.78 for ResNet-50 at batch 64 lies above it.
        assert!((LossConvention::Sum.chance(64) - 9.6884).abs() < 1e-4);
        assert!(LossConvention::Sum.chance(64) < 9.78);
        assert_eq!(LossConvention::parse("sum"), Some(LossConvention::Sum));
        assert_eq!(LossConvention::parse("total"), None);
        assert_eq!(LossConvention::Sum.chance_formula(64), "2·ln(127)");
    }

    #[test]
    fn chance_level_matches_the_reference_table() {
        // REFERENCE.md: 4.8442 (N=64), 5.5413 (N=128), 6.2364 (N=256).
        assert!((chance_level(64) - 4.8442).abs() < 1e-4);
        assert!((chance_level(128) - 5.5413).abs() < 1e-4);
        assert!((chance_level(256) - 6.2364).abs() < 1e-4);
    }

    #[test]
    fn sample_standard_deviation() {
        let (mean, std) = mean_std(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(mean, 5.0);
        // Sum of squared deviations 32 over n − 1 = 7.
        assert!((std.unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(mean_std(&[3.0]), Some((3.0, None)));
        assert_eq!(mean_std(&[]), None);
    }

    #[test]
    fn names_follow_the_seed() {
        assert_eq!(
            model_name(Some(&json!("resnet50")), Some(&json!(64))),
            "ResNet50_projection64"
        );
        assert_eq!(
            model_name(Some(&json!("inception_resnet_v2")), Some(&json!(128))),
            "InceptionResNetV2_projection128"
        );
        assert_eq!(model_backbone("my_tiny-net"), "MyTinyNet");
        assert_eq!(pretty_backbone("inception_v3"), "Inception-V3");
        assert!(same_value(&json!(1), &json!(1.0)));
        assert!(!same_value(&json!("1"), &json!(1)));
    }
}
