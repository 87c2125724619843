//! A dataset's rules: its folder on disk, its labels and its split ratios.

use super::*;

impl Checker<'_> {
    pub(super) fn labels(
        &self,
        labels: &Spanned<Vec<Spanned<String>>>,
        field: &str,
    ) -> SweepResult<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for label in labels.get_ref() {
            if label.get_ref().is_empty() {
                return Err(self.invalid(label.span(), field, "a label name is empty"));
            }
            if out.contains(label.get_ref()) {
                return Err(self.invalid(
                    label.span(),
                    field,
                    format!("label {:?} is listed twice", label.get_ref()),
                ));
            }
            out.push(label.get_ref().clone());
        }
        Ok(out)
    }

    /// A dataset's folders must exist where the sweep says its data lives.
    pub(super) fn dataset_on_disk(
        &self,
        root: &Path,
        name: &str,
        dataset: &RawDataset,
    ) -> SweepResult<()> {
        let folders = std::iter::once(("folder", &dataset.folder)).chain(
            dataset
                .test_folder
                .as_ref()
                .map(|test| ("test_folder", test)),
        );
        for (key, folder) in folders {
            let path = root.join(folder.get_ref());
            if !path.is_dir() {
                let why = if root.is_dir() {
                    format!("{} is not a folder", path.display())
                } else {
                    format!("the data root {} does not exist", root.display())
                };
                return Err(self.invalid(
                    folder.span(),
                    format!("datasets.{name}.{key}"),
                    format!(
                        "{why} (set data_root or --data-root; --no-data-check skips this \
                         check when the data lives only on the workers)"
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn dataset(&self, dataset: &RawDataset, field: &str) -> SweepResult<DatasetSpec> {
        if dataset.folder.get_ref().as_os_str().is_empty() {
            return Err(self.invalid(dataset.folder.span(), format!("{field}.folder"), "is empty"));
        }
        let include_labels = match &dataset.include_labels {
            Some(labels) => {
                let labels = self.labels(labels, &format!("{field}.include_labels"))?;
                if labels.is_empty() {
                    return Err(self.invalid(
                        dataset.include_labels.as_ref().map_or(0..0, Spanned::span),
                        format!("{field}.include_labels"),
                        "is empty: it would keep no label (leave it out to keep every label)",
                    ));
                }
                Some(labels)
            }
            None => None,
        };
        let exclude_labels = match &dataset.exclude_labels {
            Some(labels) => self.labels(labels, &format!("{field}.exclude_labels"))?,
            None => Vec::new(),
        };
        if let (Some(included), Some(excluded)) = (&include_labels, &dataset.exclude_labels) {
            if let Some(both) = excluded
                .get_ref()
                .iter()
                .find(|label| included.contains(label.get_ref()))
            {
                return Err(self.invalid(
                    both.span(),
                    format!("{field}.exclude_labels"),
                    format!("label {:?} is both included and excluded", both.get_ref()),
                ));
            }
        }

        let optional_count = |value: &Option<Spanned<i64>>, name: &str, minimum: i64| {
            value
                .as_ref()
                .map(|value| self.count(value, &format!("{field}.{name}"), minimum))
                .transpose()
        };
        let min_images_per_label =
            optional_count(&dataset.min_images_per_label, "min_images_per_label", 0)?;
        let take_labels = optional_count(&dataset.take_labels, "take_labels", 1)?;
        let per_label = optional_count(&dataset.per_label, "per_label", 1)?;
        let max_total = optional_count(&dataset.max_total, "max_total", 1)?;
        let test_max_total = optional_count(&dataset.test_max_total, "test_max_total", 1)?;

        let test_folder = match &dataset.test_folder {
            Some(folder) if folder.get_ref().as_os_str().is_empty() => {
                return Err(self.invalid(folder.span(), format!("{field}.test_folder"), "is empty"))
            }
            Some(folder) => Some(folder.get_ref().clone()),
            None => None,
        };
        if let (None, Some(value)) = (&test_folder, &dataset.test_max_total) {
            return Err(self.invalid(
                value.span(),
                format!("{field}.test_max_total"),
                "needs `test_folder`: without it the test images come from `split`",
            ));
        }

        let split = match &dataset.split {
            Some(split) => self.split(split, &format!("{field}.split"), test_folder.is_some())?,
            None => vec![1.0],
        };

        Ok(DatasetSpec {
            folder: dataset.folder.get_ref().clone(),
            include_labels,
            exclude_labels,
            min_images_per_label,
            take_labels,
            per_label,
            max_total,
            split,
            test_folder,
            test_max_total,
        })
    }

    pub(super) fn split(
        &self,
        split: &Spanned<Vec<Spanned<f64>>>,
        field: &str,
        has_test_folder: bool,
    ) -> SweepResult<Vec<f64>> {
        let parts = split.get_ref();
        if parts.is_empty() || parts.len() > 3 {
            return Err(self.invalid(
                split.span(),
                field,
                format!(
                    "has {} entries: give 1 to 3 ratios (train, val, test)",
                    parts.len()
                ),
            ));
        }
        if has_test_folder && parts.len() == 3 {
            return Err(self.invalid(
                split.span(),
                field,
                "has a test ratio, but `test_folder` already holds the test images: \
                 give train and val only",
            ));
        }
        for part in parts {
            let ratio = *part.get_ref();
            if !(ratio > 0.0 && ratio <= 1.0) {
                return Err(self.invalid(part.span(), field, format!("{ratio} is outside (0, 1]")));
            }
        }
        let sum: f64 = parts.iter().map(|part| *part.get_ref()).sum();
        if (sum - 1.0).abs() > 1e-6 {
            // Rounded so 0.7 + 0.2 + 0.15 reads 1.05, not 1.0499999999999998.
            let sum = (sum * 1e6).round() / 1e6;
            return Err(self.invalid(split.span(), field, format!("ratios sum to {sum}, not 1")));
        }
        Ok(parts.iter().map(|part| *part.get_ref()).collect())
    }
}
