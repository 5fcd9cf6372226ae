//! Order statistics of a sample: median, p99 (nearest rank), min, max, mean.

/// Summary of a sample of measurements (all in the same unit).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of measurements.
    pub n: usize,
    /// Smallest.
    pub min: f64,
    /// Median (nearest rank, the lower middle for even counts).
    pub p50: f64,
    /// 99th percentile, nearest rank: the smallest value with at least 99% of the
    /// sample at or below it.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// The value at percentile `p` (0..=100) of an ascending sample, nearest-rank method.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarises a sample; `None` when it is empty.
pub fn summarize(sample: &[f64]) -> Option<Summary> {
    if sample.is_empty() {
        return None;
    }
    let mut s: Vec<f64> = sample.iter().copied().filter(|v| !v.is_nan()).collect();
    if s.is_empty() {
        return None;
    }
    s.sort_by(f64::total_cmp);
    Some(Summary {
        n: s.len(),
        min: s[0],
        p50: percentile_sorted(&s, 50.0),
        p99: percentile_sorted(&s, 99.0),
        max: s[s.len() - 1],
        mean: s.iter().sum::<f64>() / s.len() as f64,
    })
}

/// Median of a small sample (e.g. repetitions); NaN when empty.
pub fn median(sample: &[f64]) -> f64 {
    summarize(sample).map(|s| s.p50).unwrap_or(f64::NAN)
}

/// Self-checks run by `cargo test --benches` (which starts the bench without `--bench`).
pub fn self_check() {
    let s = summarize(&[5.0, 1.0, 4.0, 2.0, 3.0]).expect("non-empty");
    assert_eq!((s.n, s.min, s.p50, s.max, s.mean), (5, 1.0, 3.0, 5.0, 3.0));
    assert_eq!(s.p99, 5.0);
    let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
    let s = summarize(&hundred).expect("non-empty");
    assert_eq!((s.p50, s.p99), (50.0, 99.0));
    let thousand: Vec<f64> = (1..=1000).rev().map(f64::from).collect();
    assert_eq!(summarize(&thousand).expect("non-empty").p99, 990.0);
    assert!(summarize(&[]).is_none());
    assert!(median(&[]).is_nan());
    assert_eq!(median(&[2.0, 9.0, 1.0]), 2.0);
}
