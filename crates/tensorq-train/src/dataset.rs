//! In-memory labelled datasets and the seeded generator shaped like the source document's data.
//!
//! Owns the row-major feature matrix + 0/1 labels, the generator (`generate`), deterministic
//! train/test splits and CSV export for the Keras benchmark. It does not own on-disk durability of
//! streamed examples (the training worker's dataset log does that) nor batching (`trainer.rs`).
//!
//! # The generator
//!
//! `generate(n, seed)` draws 8 standard-normal features and labels each example with a fixed,
//! known, linear-ish rule:
//!
//! ```text
//! z = 0.9 x0 - 0.6 x1 + 0.4 x2 + 0.8 x3 - 0.7 x4 + 0.3 x5 - 0.5 x6 + 0.6 x7 + 0.2 x0 x1 + 0.1
//! label = 1 if z > 0 else 0
//! ```
//!
//! Draws with `|z| < MARGIN` are rejected and redrawn, so the two classes are separated by a
//! margin and a small ReLU network can exceed 95% accuracy in a few epochs.

use std::io::Write;
use std::path::Path;

use crate::rng::SplitMix64;

/// Features per example of the generated data (the source model's `input_shape=(8,)`).
pub const GEN_FEATURES: usize = 8;
/// Linear weights of the labelling rule.
pub const RULE_WEIGHTS: [f64; GEN_FEATURES] = [0.9, -0.6, 0.4, 0.8, -0.7, 0.3, -0.5, 0.6];
/// Weight of the `x0 * x1` interaction term.
pub const RULE_INTERACTION: f64 = 0.2;
/// Bias of the labelling rule.
pub const RULE_BIAS: f64 = 0.1;
/// Draws whose rule score is closer than this to 0 are rejected.
pub const MARGIN: f64 = 0.25;

/// Errors building or exporting a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// A row had the wrong number of features.
    #[error("example has {got} features, expected {expected}")]
    Width {
        /// Expected width.
        expected: usize,
        /// Actual width.
        got: usize,
    },
    /// A feature was NaN or infinite.
    #[error("feature {index} is not a finite number")]
    NonFinite {
        /// Index of the bad feature.
        index: usize,
    },
    /// A label other than 0 or 1.
    #[error("label must be 0 or 1, got {0}")]
    Label(f64),
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A labelled dataset: `len` rows of `width` f32 features and a 0/1 label.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    width: usize,
    features: Vec<f32>,
    labels: Vec<f32>,
}

impl Dataset {
    /// An empty dataset of rows `width` wide.
    pub fn new(width: usize) -> Self {
        Dataset {
            width,
            features: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Appends one example after checking width, finiteness and label.
    pub fn push(&mut self, features: &[f32], label: f64) -> Result<(), DatasetError> {
        if features.len() != self.width {
            return Err(DatasetError::Width {
                expected: self.width,
                got: features.len(),
            });
        }
        if let Some(index) = features.iter().position(|x| !x.is_finite()) {
            return Err(DatasetError::NonFinite { index });
        }
        let label = if label == 0.0 {
            0.0
        } else if label == 1.0 {
            1.0
        } else {
            return Err(DatasetError::Label(label));
        };
        self.features.extend_from_slice(features);
        self.labels.push(label);
        Ok(())
    }

    /// Appends every row of `other` (same width required).
    pub fn extend(&mut self, other: &Dataset) -> Result<(), DatasetError> {
        if other.width != self.width {
            return Err(DatasetError::Width {
                expected: self.width,
                got: other.width,
            });
        }
        self.features.extend_from_slice(&other.features);
        self.labels.extend_from_slice(&other.labels);
        Ok(())
    }

    /// Features per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Row-major features, `len * width` values.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// Labels (0.0 or 1.0), `len` values.
    pub fn labels(&self) -> &[f32] {
        &self.labels
    }

    /// Features of row `i`, if it exists.
    pub fn row(&self, i: usize) -> Option<&[f32]> {
        self.features.get(i * self.width..(i + 1) * self.width)
    }

    /// Splits into (first `len - k`, last `k`) rows where `k = round(len * fraction)`.
    pub fn split_tail(&self, fraction: f64) -> (Dataset, Dataset) {
        let fraction = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let k = ((self.len() as f64) * fraction).round() as usize;
        let cut = self.len().saturating_sub(k);
        let head = Dataset {
            width: self.width,
            features: self.features[..cut * self.width].to_vec(),
            labels: self.labels[..cut].to_vec(),
        };
        let tail = Dataset {
            width: self.width,
            features: self.features[cut * self.width..].to_vec(),
            labels: self.labels[cut..].to_vec(),
        };
        (head, tail)
    }

    /// Writes `f0,...,f{w-1},label` CSV with a header (for the Keras benchmark).
    pub fn write_csv(&self, path: &Path) -> Result<(), DatasetError> {
        let io = |source| DatasetError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::create(path).map_err(io)?;
        let mut out = std::io::BufWriter::new(file);
        let header: Vec<String> = (0..self.width).map(|i| format!("f{i}")).collect();
        writeln!(out, "{},label", header.join(",")).map_err(io)?;
        for (row, label) in self.features.chunks(self.width.max(1)).zip(&self.labels) {
            for x in row {
                write!(out, "{x},").map_err(io)?;
            }
            writeln!(out, "{}", *label as u8).map_err(io)?;
        }
        out.flush().map_err(io)?;
        Ok(())
    }
}

impl Dataset {
    /// Reads CSV written by [`Dataset::write_csv`]: a header, then `width` features and a 0/1
    /// label per line. Errors name the line.
    pub fn read_csv(path: &Path) -> Result<Dataset, DatasetError> {
        let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let bad = |line: usize, what: String| DatasetError::Io {
            path: path.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {line}: {what}"),
            ),
        };
        let mut lines = text.lines();
        let header = lines
            .next()
            .ok_or_else(|| bad(1, "missing header".into()))?;
        let width = header.split(',').count().saturating_sub(1);
        let mut data = Dataset::new(width);
        let mut row = Vec::with_capacity(width);
        for (i, line) in lines.enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            row.clear();
            let mut label = None;
            for (j, cell) in line.split(',').enumerate() {
                let v: f64 = cell
                    .trim()
                    .parse()
                    .map_err(|e| bad(i + 2, format!("column {j}: {e}")))?;
                if j < width {
                    row.push(v as f32);
                } else {
                    label = Some(v);
                }
            }
            let label = label.ok_or_else(|| bad(i + 2, "missing label".into()))?;
            data.push(&row, label)
                .map_err(|e| bad(i + 2, e.to_string()))?;
        }
        Ok(data)
    }
}

/// The labelling rule's score for one example (positive means label 1).
pub fn rule_score(x: &[f32; GEN_FEATURES]) -> f64 {
    let linear: f64 = RULE_WEIGHTS
        .iter()
        .zip(x)
        .map(|(w, v)| w * f64::from(*v))
        .sum();
    linear + RULE_INTERACTION * f64::from(x[0]) * f64::from(x[1]) + RULE_BIAS
}

/// `n` examples of 8 features with labels from the known rule, reproducible from `seed`.
pub fn generate(n: usize, seed: u64) -> Dataset {
    let mut rng = SplitMix64::new(seed ^ 0x0074_656e_736f_7271); // "tensorq"
    let mut data = Dataset {
        width: GEN_FEATURES,
        features: Vec::with_capacity(n * GEN_FEATURES),
        labels: Vec::with_capacity(n),
    };
    while data.len() < n {
        let mut x = [0f32; GEN_FEATURES];
        for v in x.iter_mut() {
            *v = rng.normal() as f32;
        }
        let z = rule_score(&x);
        if z.abs() < MARGIN {
            continue;
        }
        data.features.extend_from_slice(&x);
        data.labels.push(if z > 0.0 { 1.0 } else { 0.0 });
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_is_deterministic_and_seed_dependent() {
        assert_eq!(generate(100, 1), generate(100, 1));
        assert_ne!(generate(100, 1), generate(100, 2));
        assert_eq!(generate(100, 1).len(), 100);
    }

    #[test]
    fn labels_follow_the_rule_with_margin_and_are_balanced() {
        let d = generate(2000, 9);
        let mut ones = 0;
        for i in 0..d.len() {
            let row = d.row(i).unwrap();
            let x: [f32; GEN_FEATURES] = row.try_into().unwrap();
            let z = rule_score(&x);
            assert!(z.abs() >= MARGIN);
            assert_eq!(d.labels()[i], if z > 0.0 { 1.0 } else { 0.0 });
            ones += d.labels()[i] as usize;
        }
        assert!((800..1200).contains(&ones), "{ones} positives of 2000");
    }

    #[test]
    fn push_rejects_bad_rows() {
        let mut d = Dataset::new(2);
        assert!(matches!(
            d.push(&[1.0], 0.0),
            Err(DatasetError::Width { .. })
        ));
        assert!(matches!(
            d.push(&[1.0, f32::NAN], 0.0),
            Err(DatasetError::NonFinite { index: 1 })
        ));
        assert!(matches!(
            d.push(&[1.0, 2.0], 0.5),
            Err(DatasetError::Label(_))
        ));
        d.push(&[1.0, 2.0], 1.0).unwrap();
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn split_tail_sizes() {
        let d = generate(10, 3);
        let (a, b) = d.split_tail(0.2);
        assert_eq!((a.len(), b.len()), (8, 2));
        assert_eq!(b.row(1), d.row(9));
    }

    #[test]
    fn csv_has_header_and_rows() {
        let d = generate(3, 3);
        let path = std::env::temp_dir().join(format!("tq-train-csv-{}.csv", std::process::id()));
        d.write_csv(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).ok();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "f0,f1,f2,f3,f4,f5,f6,f7,label");
        assert_eq!(lines.len(), 4);
        let first: Vec<f32> = lines[1].split(',').map(|v| v.parse().unwrap()).collect();
        assert_eq!(&first[..8], d.row(0).unwrap());
        let back = Dataset::read_csv(&path);
        assert!(back.is_err(), "file was removed");
        d.write_csv(&path).unwrap();
        assert_eq!(Dataset::read_csv(&path).unwrap(), d);
        std::fs::write(&path, "f0,label\n1.0,0.5\n").unwrap();
        let err = Dataset::read_csv(&path).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
        std::fs::remove_file(&path).ok();
    }
}
