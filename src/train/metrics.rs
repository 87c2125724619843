//! Classification metrics on a test split: accuracy, macro precision / recall / F1,
//! per-class figures and the confusion matrix.
//!
//! The definitions are scikit-learn's `precision_recall_fscore_support` with
//! `labels=range(K)`, `average="macro"` and `zero_division=0`: a class never predicted
//! has precision 0, a class absent from the truth has recall 0, and the macro figures
//! are plain means over all `K` classes (the macro F1 is the mean of the per-class F1,
//! not the F1 of the macro precision and recall).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassFigures {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub per_class: Vec<ClassFigures>,
    /// `confusion[truth][predicted]`.
    pub confusion: Vec<Vec<i64>>,
}

/// Metrics of predictions against the truth, both indices into `labels`.
///
/// An empty input has accuracy 0 (and every other figure 0).
///
/// # Panics
///
/// When the two slices differ in length or an index is outside `labels`: both are
/// bugs in the caller (predictions come from an argmax over `labels.len()` logits).
pub fn classification(predicted: &[i64], truth: &[i64], labels: &[String]) -> Classification {
    assert_eq!(
        predicted.len(),
        truth.len(),
        "classification: {} predictions for {} true labels",
        predicted.len(),
        truth.len()
    );
    let classes = labels.len();
    let class_index = |value: i64, what: &str| -> usize {
        usize::try_from(value)
            .ok()
            .filter(|&index| index < classes)
            .unwrap_or_else(|| panic!("classification: {what} label {value} outside 0..{classes}"))
    };

    let mut confusion = vec![vec![0i64; classes]; classes];
    for (&p, &t) in predicted.iter().zip(truth) {
        confusion[class_index(t, "true")][class_index(p, "predicted")] += 1;
    }

    let per_class: Vec<ClassFigures> = labels
        .iter()
        .enumerate()
        .map(|(class, label)| {
            let true_positives = confusion[class][class];
            let support: i64 = confusion[class].iter().sum();
            let predicted_as: i64 = confusion.iter().map(|row| row[class]).sum();
            let false_positives = predicted_as - true_positives;
            let false_negatives = support - true_positives;
            ClassFigures {
                label: label.clone(),
                precision: ratio(true_positives, predicted_as),
                recall: ratio(true_positives, support),
                // 2TP / (2TP + FP + FN) equals 2PR / (P + R) and stays defined when
                // either is 0/0.
                f1: ratio(
                    2 * true_positives,
                    2 * true_positives + false_positives + false_negatives,
                ),
                support,
            }
        })
        .collect();

    let correct: i64 = (0..classes).map(|class| confusion[class][class]).sum();
    let macro_mean = |figure: fn(&ClassFigures) -> f64| -> f64 {
        if per_class.is_empty() {
            0.0
        } else {
            per_class.iter().map(figure).sum::<f64>() / per_class.len() as f64
        }
    };
    Classification {
        accuracy: ratio(correct, truth.len() as i64),
        precision: macro_mean(|c| c.precision),
        recall: macro_mean(|c| c.recall),
        f1: macro_mean(|c| c.f1),
        per_class,
        confusion,
    }
}

/// `numerator / denominator`, 0 when the denominator is 0 (`zero_division=0`).
fn ratio(numerator: i64, denominator: i64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(count: usize) -> Vec<String> {
        (0..count).map(|i| format!("c{i}")).collect()
    }

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() < 1e-9,
            "expected {expected}, got {actual}"
        );
    }

    /// scikit-learn's documentation example for `precision_recall_fscore_support`:
    /// y_true = [0, 1, 2, 0, 1, 2], y_pred = [0, 2, 1, 0, 0, 1] gives macro precision
    /// 0.2222222, recall 0.3333333, F1 0.2666667; accuracy 2/6.
    #[test]
    fn sklearn_documentation_example() {
        let truth = [0, 1, 2, 0, 1, 2];
        let predicted = [0, 2, 1, 0, 0, 1];
        let result = classification(&predicted, &truth, &names(3));
        close(result.accuracy, 2.0 / 6.0);
        close(result.precision, 2.0 / 9.0);
        close(result.recall, 1.0 / 3.0);
        close(result.f1, 4.0 / 15.0);
        close(result.per_class[0].precision, 2.0 / 3.0);
        close(result.per_class[0].recall, 1.0);
        close(result.per_class[0].f1, 0.8);
        for class in 1..3 {
            close(result.per_class[class].precision, 0.0);
            close(result.per_class[class].f1, 0.0);
            assert_eq!(result.per_class[class].support, 2);
        }
        assert_eq!(
            result.confusion,
            vec![vec![2, 0, 0], vec![1, 0, 1], vec![0, 2, 0]]
        );
    }

    /// Hand-computed: class 0 has TP 3, FP 1, FN 1; class 1 TP 0, FP 1, FN 2; class 2
    /// never appears in the truth but is predicted once (recall 0 by zero_division,
    /// precision 0), class 3 neither appears nor is predicted (all zero).
    #[test]
    fn absent_classes_count_as_zero_in_the_macro_mean() {
        let truth = [0, 0, 0, 0, 1, 1];
        let predicted = [0, 0, 0, 1, 0, 2];
        let result = classification(&predicted, &truth, &names(4));
        close(result.accuracy, 3.0 / 6.0);
        close(result.per_class[0].precision, 0.75);
        close(result.per_class[0].recall, 0.75);
        close(result.per_class[0].f1, 0.75);
        close(result.per_class[1].precision, 0.0);
        close(result.per_class[1].recall, 0.0);
        close(result.per_class[2].precision, 0.0);
        assert_eq!(result.per_class[2].support, 0);
        assert_eq!(result.per_class[3].support, 0);
        close(result.precision, 0.75 / 4.0);
        close(result.recall, 0.75 / 4.0);
        close(result.f1, 0.75 / 4.0);
    }

    /// Binary case where macro F1 differs from the F1 of macro precision and recall:
    /// class 0: P = 1/3, R = 1, F1 = 1/2; class 1: P = 1, R = 1/3, F1 = 1/2, so the
    /// macro F1 is 1/2 while the F1 of the macro P and R (both 2/3) would be 2/3.
    #[test]
    fn macro_f1_is_the_mean_of_per_class_f1() {
        let truth = [0, 1, 1, 1];
        let predicted = [0, 0, 0, 1];
        let result = classification(&predicted, &truth, &names(2));
        close(result.precision, 2.0 / 3.0);
        close(result.recall, 2.0 / 3.0);
        close(result.f1, 0.5);
        close(result.per_class[0].precision, 1.0 / 3.0);
        assert_eq!(result.per_class[1].label, "c1");
    }

    #[test]
    fn perfect_predictions_score_one() {
        let truth = [2, 0, 1, 2];
        let result = classification(&truth, &truth, &names(3));
        for figure in [result.accuracy, result.precision, result.recall, result.f1] {
            close(figure, 1.0);
        }
    }

    #[test]
    fn empty_input_scores_zero() {
        let result = classification(&[], &[], &names(2));
        close(result.accuracy, 0.0);
        close(result.f1, 0.0);
        assert_eq!(result.confusion, vec![vec![0, 0], vec![0, 0]]);
    }

    #[test]
    #[should_panic(expected = "outside 0..2")]
    fn out_of_range_prediction_is_a_bug() {
        classification(&[2], &[0], &names(2));
    }
}
