//! What a study leaves in its folder after every finished trial:
//! `leaderboard.md`, `pareto.json`, `pareto.svg` and `best.peft`.

use crate::files::write_atomic;
use crate::state::Outcome;
use crate::state::{StudyState, TrialRecord};
use crate::study::{SearchError, Study};
use optimizer::Direction;
use serde_json::json;

/// The best complete trial by the first objective; ties go to fewer parameters.
pub fn best<'a>(study: &Study, state: &'a StudyState) -> Option<&'a TrialRecord> {
    state
        .finished()
        .filter(|t| matches!(t.outcome, Some(Outcome::Complete { .. })))
        .filter_map(|t| Some((t, study.objective_values(t)?)))
        .min_by(|(a, va), (b, vb)| {
            lexicographic(va, vb).then(a.cost.trainable.cmp(&b.cost.trainable))
        })
        .map(|(t, _)| t)
}

/// Complete trials on the front of (trained metric, trainable parameters).
pub fn pareto<'a>(study: &Study, state: &'a StudyState) -> Vec<&'a TrialRecord> {
    let metric = study.settings.trained_metric();
    let done: Vec<(&TrialRecord, f64)> = state
        .finished()
        .filter_map(|t| Some((t, t.metric(&metric.metric)?)))
        .collect();
    let values: Vec<Vec<f64>> = done
        .iter()
        .map(|(t, m)| vec![*m, t.cost.trainable as f64])
        .collect();
    let dirs = [
        if metric.maximize {
            Direction::Maximize
        } else {
            Direction::Minimize
        },
        Direction::Minimize,
    ];
    let mut front: Vec<&TrialRecord> = optimizer::pareto::pareto_front_indices(&values, &dirs)
        .into_iter()
        .map(|i| done[i].0)
        .collect();
    front.sort_by_key(|t| t.cost.trainable);
    front
}

/// Objective vectors (minimization form), first objective first.
fn lexicographic(a: &[f64], b: &[f64]) -> std::cmp::Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.total_cmp(y))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

pub fn write_all(study: &Study, state: &StudyState) -> Result<(), SearchError> {
    let dir = &study.dir;
    write_atomic(
        &dir.join("leaderboard.md"),
        leaderboard(study, state).as_bytes(),
    )?;
    let metric = study.settings.trained_metric().metric.clone();
    let front = pareto(study, state);
    let json = json!({
        "metric": metric,
        "maximize": study.settings.trained_metric().maximize,
        "front": front.iter().map(|t| json!({
            "trial": t.number,
            metric.clone(): t.metric(&metric),
            "trainable_params": t.cost.trainable,
            "trainable_percent": t.cost.percent(),
            "point": t.point,
        })).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&json).unwrap_or_default();
    write_atomic(&dir.join("pareto.json"), text.as_bytes())?;
    write_atomic(
        &dir.join("pareto.svg"),
        plot(study, state, &front).as_bytes(),
    )?;
    if let Some(b) = best(study, state)
        && let Some(p) = study.unnamed(&b.point)
    {
        let header = format!(
            "# best of search `{}` (trial {}): {}\n",
            study.settings.name,
            b.number,
            b.metric(&metric)
                .map(|v| format!(
                    "held-out {metric} {v:.4}, {} trainable params",
                    b.cost.trainable
                ))
                .unwrap_or_default()
        );
        let text = header + &study.spec_text(&p, Some(dir));
        write_atomic(&dir.join("best.peft"), text.as_bytes())?;
    }
    Ok(())
}

/// Trials best first (complete, then pruned, then failed), with infeasible
/// draws counted below.
pub fn leaderboard(study: &Study, state: &StudyState) -> String {
    let metric = study.settings.trained_metric();
    let mut rows: Vec<&TrialRecord> = state.trials.values().collect();
    let key = |t: &TrialRecord| {
        let rank = match t.outcome {
            Some(Outcome::Complete { .. }) => 0,
            Some(Outcome::Pruned { .. }) => 1,
            None => 2,
            Some(Outcome::Failed { .. }) => 3,
        };
        let v = study.objective_values(t).unwrap_or_default();
        (rank, v)
    };
    rows.sort_by(|a, b| {
        let (ra, va) = key(a);
        let (rb, vb) = key(b);
        ra.cmp(&rb).then(lexicographic(&va, &vb))
    });
    let mut out = format!(
        "# Search `{}`: {} trials ({} complete, {} pruned, {} failed, {} running), {} infeasible draws\n\n",
        study.settings.name,
        state.trials.len(),
        state
            .finished()
            .filter(|t| t.state_name() == "complete")
            .count(),
        state
            .finished()
            .filter(|t| t.state_name() == "pruned")
            .count(),
        state
            .finished()
            .filter(|t| t.state_name() == "failed")
            .count(),
        state.running().count(),
        state.infeasible.len()
    );
    out.push_str(&format!(
        "| rank | trial | state | {} | trainable params | % | est. memory | seconds | configuration |\n|---:|---:|---|---:|---:|---:|---:|---:|---|\n",
        metric.metric
    ));
    for (i, t) in rows.iter().enumerate() {
        let (value, seconds) = match &t.outcome {
            Some(Outcome::Complete { metrics, seconds }) => (
                metrics
                    .get(&metric.metric)
                    .map(|v| format!("{v:.4}"))
                    .unwrap_or_default(),
                format!("{seconds:.0}"),
            ),
            Some(Outcome::Pruned {
                step,
                value,
                seconds,
            }) => (format!("{value:.4} @{step}"), format!("{seconds:.0}")),
            Some(Outcome::Failed { reason }) => (reason.clone(), String::new()),
            None => (String::new(), String::new()),
        };
        let config = study
            .unnamed(&t.point)
            .map(|p| study.space.describe(&p))
            .unwrap_or_default();
        out.push_str(&format!(
            "| {} | {} | {} | {value} | {} | {:.3} | {} | {seconds} | `{config}` |\n",
            i + 1,
            t.number,
            t.state_name(),
            t.cost.trainable,
            t.cost.percent(),
            crate::cost::bytes(t.cost.memory),
        ));
    }
    out
}

/// Every complete trial as a point (trainable parameters, log scale; metric),
/// the Pareto front joined by a line.
pub fn plot(study: &Study, state: &StudyState, front: &[&TrialRecord]) -> String {
    let metric = &study.settings.trained_metric().metric;
    let pts: Vec<(f64, f64, u64)> = state
        .finished()
        .filter_map(|t| {
            Some((
                (t.cost.trainable.max(1) as f64).log10(),
                t.metric(metric)?,
                t.number,
            ))
        })
        .collect();
    let (w, h, m) = (640.0, 400.0, 60.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">search `{}`: {metric} vs trainable parameters (Pareto front in red)</text>\n",
        w / 2.0,
        study.settings.name
    );
    if pts.is_empty() {
        svg.push_str("<text x=\"320\" y=\"200\" text-anchor=\"middle\">no complete trial yet</text>\n</svg>\n");
        return svg;
    }
    let (x0, x1) = bounds(pts.iter().map(|p| p.0));
    let (y0, y1) = bounds(pts.iter().map(|p| p.1));
    let sx = |x: f64| m + (x - x0) / (x1 - x0) * (w - 2.0 * m);
    let sy = |y: f64| h - m - (y - y0) / (y1 - y0) * (h - 2.0 * m);
    svg.push_str(&format!(
        "<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - m, w - m, h - m, h - m
    ));
    for k in 0..=4 {
        let t = k as f64 / 4.0;
        let (xv, yv) = (x0 + t * (x1 - x0), y0 + t * (y1 - y0));
        svg.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{yv:.3}</text>\n",
            sx(xv),
            h - m + 16.0,
            human(10f64.powf(xv)),
            m - 6.0,
            sy(yv) + 4.0
        ));
    }
    svg.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">trainable parameters (log)</text>\n<text x=\"16\" y=\"{}\" transform=\"rotate(-90 16 {})\" text-anchor=\"middle\">{metric}</text>\n",
        w / 2.0, h - 16.0, h / 2.0, h / 2.0
    ));
    let line: Vec<String> = front
        .iter()
        .filter_map(|t| {
            let x = (t.cost.trainable.max(1) as f64).log10();
            Some(format!("{:.1},{:.1}", sx(x), sy(t.metric(metric)?)))
        })
        .collect();
    svg.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\"/>\n",
        line.join(" ")
    ));
    for (x, y, n) in &pts {
        let on_front = front.iter().any(|t| t.number == *n);
        svg.push_str(&format!(
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{}\"><title>trial {n}</title></circle>\n",
            sx(*x),
            sy(*y),
            if on_front { "#d62728" } else { "#1f77b4" }
        ));
    }
    svg.push_str("</svg>\n");
    svg
}

fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        let pad = 0.05 * (hi - lo);
        (lo - pad, hi + pad)
    }
}

fn human(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0}K", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}
