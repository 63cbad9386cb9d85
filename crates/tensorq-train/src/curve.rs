//! Training-curve picture: loss and accuracy per epoch as a self-contained SVG.
//!
//! Owns rendering (two panels, polylines with point markers, axis ticks and labels) and writing
//! the file atomically. The SVG is written by hand, so no plotting or font crate is needed; text is
//! left to the viewer's default sans-serif font. It does not own the statistics (`trainer.rs`).

use std::fmt::Write as _;
use std::path::Path;

use crate::atomic::write_atomic;
use crate::trainer::EpochStats;

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 300.0;
const MARGIN_L: f64 = 60.0;
const MARGIN_R: f64 = 20.0;
const MARGIN_T: f64 = 40.0;
const MARGIN_B: f64 = 50.0;

fn nice_range(values: &[f64], force_zero: bool) -> (f64, f64) {
    let mut lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let mut hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if force_zero {
        lo = lo.min(0.0);
    }
    if (hi - lo).abs() < 1e-9 {
        hi = lo + 1.0;
    }
    let pad = (hi - lo) * 0.05;
    (lo - if force_zero { 0.0 } else { pad }, hi + pad)
}

fn panel(svg: &mut String, x0: f64, title: &str, color: &str, values: &[f64], force_zero: bool) {
    let (lo, hi) = nice_range(values, force_zero);
    let plot_w = PANEL_W - MARGIN_L - MARGIN_R;
    let plot_h = PANEL_H - MARGIN_T - MARGIN_B;
    let n = values.len();
    let px = |i: usize| {
        let t = if n > 1 {
            i as f64 / (n - 1) as f64
        } else {
            0.5
        };
        x0 + MARGIN_L + t * plot_w
    };
    let py = |v: f64| MARGIN_T + (1.0 - (v - lo) / (hi - lo)) * plot_h;
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="24" text-anchor="middle" font-size="16">{title}</text>"##,
        x0 + MARGIN_L + plot_w / 2.0
    );
    let _ = write!(
        svg,
        r##"<rect x="{:.1}" y="{MARGIN_T}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="#444"/>"##,
        x0 + MARGIN_L
    );
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        let y = py(v);
        let _ = write!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11">{v:.3}</text>"##,
            x0 + MARGIN_L,
            x0 + MARGIN_L + plot_w,
            x0 + MARGIN_L - 6.0,
            y + 4.0
        );
    }
    let step = n.div_ceil(10).max(1);
    for i in (0..n).step_by(step) {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="11">{}</text>"##,
            px(i),
            MARGIN_T + plot_h + 16.0,
            i + 1
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">epoch</text>"##,
        x0 + MARGIN_L + plot_w / 2.0,
        PANEL_H - 10.0
    );
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", px(i), py(*v)))
        .collect();
    let _ = write!(
        svg,
        r##"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"##,
        points.join(" ")
    );
    for (i, v) in values.iter().enumerate() {
        let _ = write!(
            svg,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>epoch {}: {v:.4}</title></circle>"##,
            px(i),
            py(*v),
            i + 1
        );
    }
}

/// Renders loss (left) and accuracy (right) per epoch as SVG text.
pub fn render_svg(history: &[EpochStats]) -> String {
    let losses: Vec<f64> = history.iter().map(|s| f64::from(s.loss)).collect();
    let accs: Vec<f64> = history.iter().map(|s| f64::from(s.accuracy)).collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>"##,
        w = PANEL_W * 2.0,
        h = PANEL_H
    );
    panel(&mut svg, 0.0, "training loss", "#d62728", &losses, true);
    panel(
        &mut svg,
        PANEL_W,
        "training accuracy",
        "#1f77b4",
        &accs,
        false,
    );
    svg.push_str("</svg>\n");
    svg
}

/// Writes the SVG atomically to `path`.
pub fn write_curve(history: &[EpochStats], path: &Path) -> std::io::Result<()> {
    write_atomic(path, render_svg(history).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(epoch: usize, loss: f32, accuracy: f32) -> EpochStats {
        EpochStats {
            epoch,
            loss,
            accuracy,
            examples: 100,
            seconds: 0.1,
        }
    }

    #[test]
    fn svg_has_one_point_per_epoch_per_panel() {
        let h: Vec<EpochStats> = (1..=10)
            .map(|e| stats(e, 1.0 / e as f32, 0.5 + e as f32 * 0.04))
            .collect();
        let svg = render_svg(&h);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 20);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("epoch 10: 0.1000"));
    }

    #[test]
    fn empty_and_flat_histories_render() {
        assert_eq!(render_svg(&[]).matches("<circle").count(), 0);
        let flat = render_svg(&[stats(1, 0.5, 0.5), stats(2, 0.5, 0.5)]);
        assert!(!flat.contains("NaN"));
    }
}
