//! The run's record: `metrics.jsonl` (one JSON object per line: training
//! steps and evaluations) and `loss.svg`, a plot of both.

use crate::atomic::write_atomic;
use crate::error::{Result, RuntimeError};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

pub struct Metrics {
    path: PathBuf,
    pub rows: Vec<Value>,
}

impl Metrics {
    /// Opens `metrics.jsonl` in `dir`, keeping only rows up to `keep_until`
    /// (a resumed run drops what the killed one wrote after its checkpoint).
    pub fn open(dir: &Path, keep_until: usize) -> Result<Metrics> {
        let path = dir.join("metrics.jsonl");
        let mut rows = Vec::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                if let Ok(v) = serde_json::from_str::<Value>(line)
                    && v["step"].as_u64().is_some_and(|s| s as usize <= keep_until)
                {
                    rows.push(v);
                }
            }
        }
        let m = Metrics { path, rows };
        m.rewrite()?;
        Ok(m)
    }

    fn rewrite(&self) -> Result<()> {
        let mut text = String::new();
        for r in &self.rows {
            let _ = writeln!(text, "{r}");
        }
        write_atomic(&self.path, text.as_bytes())
    }

    pub fn push(&mut self, row: Value) -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| RuntimeError::write(&self.path, e))?;
        writeln!(f, "{row}").map_err(|e| RuntimeError::write(&self.path, e))?;
        self.rows.push(row);
        Ok(())
    }

    pub fn train_point(step: usize, loss: f32, lr: f64, tokens_per_s: f64, elapsed: f64) -> Value {
        json!({ "step": step, "loss": loss, "lr": lr, "tokens_per_s": tokens_per_s, "elapsed_s": elapsed })
    }

    /// Writes `loss.svg`: training loss per step and held-out loss per evaluation.
    pub fn plot(&self, dir: &Path, title: &str) -> Result<()> {
        let train: Vec<(f64, f64)> = self
            .rows
            .iter()
            .filter_map(|r| Some((r["step"].as_f64()?, r["loss"].as_f64()?)))
            .collect();
        let eval: Vec<(f64, f64)> = self
            .rows
            .iter()
            .filter_map(|r| Some((r["step"].as_f64()?, r["eval_loss"].as_f64()?)))
            .collect();
        let svg = svg_plot(
            title,
            &[
                ("train loss", "#1f77b4", &train),
                ("held-out loss", "#d62728", &eval),
            ],
        );
        write_atomic(&dir.join("loss.svg"), svg.as_bytes())
    }
}

/// A named, coloured line: (name, colour, points).
pub type Series<'a> = (&'a str, &'a str, &'a [(f64, f64)]);

/// A small line chart of one or more series.
pub fn svg_plot(title: &str, series: &[Series]) -> String {
    let (w, h, l, r, t, b) = (720.0, 420.0, 70.0, 20.0, 40.0, 50.0);
    let pts = series.iter().flat_map(|(_, _, s)| s.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        if y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let sx = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
    let sy = |y: f64| h - b - (y - y0) / (y1 - y0) * (h - t - b);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        w / 2.0,
        escape(title)
    );
    let _ = write!(
        s,
        r#"<line x1="{l}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#,
        h - b,
        w - r,
        h - b
    );
    let _ = write!(
        s,
        r#"<line x1="{l}" y1="{t}" x2="{l}" y2="{}" stroke="black"/>"#,
        h - b
    );
    for i in 0..=4 {
        let fy = y0 + (y1 - y0) * i as f64 / 4.0;
        let fx = x0 + (x1 - x0) * i as f64 / 4.0;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{:.3}</text>"#,
            l - 6.0,
            sy(fy) + 4.0,
            fy
        );
        let _ = write!(
            s,
            r##"<line x1="{l}" y1="{0}" x2="{1}" y2="{0}" stroke="#eee"/>"##,
            sy(fy),
            w - r
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{:.0}</text>"#,
            sx(fx),
            h - b + 18.0,
            fx
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">step</text>"#,
        (l + w - r) / 2.0,
        h - 10.0
    );
    for (i, (name, color, pts)) in series.iter().enumerate() {
        if pts.is_empty() {
            continue;
        }
        let path: Vec<String> = pts
            .iter()
            .filter(|(_, y)| y.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        if pts.len() < 50 {
            for &(x, y) in pts.iter() {
                let _ = write!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                    sx(x),
                    sy(y)
                );
            }
        }
        let ly = t + 16.0 * i as f64 + 10.0;
        let _ = write!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/>"#,
            w - r - 150.0,
            w - r - 130.0
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            w - r - 125.0,
            ly + 4.0,
            escape(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
