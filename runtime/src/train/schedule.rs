//! Learning-rate schedules as transformers defines them
//! (`get_linear_schedule_with_warmup`, `get_cosine_schedule_with_warmup`):
//! step `k` (0-based) uses `lr * factor(k)`.

use peftc_compiler::train::Schedule;

pub fn factor(schedule: Schedule, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / total.saturating_sub(warmup).max(1) as f64;
    match schedule {
        Schedule::Constant => 1.0,
        Schedule::Linear => (1.0 - progress).max(0.0),
        Schedule::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()).max(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_linear_decay() {
        assert_eq!(factor(Schedule::Linear, 0, 10, 110), 0.0);
        assert_eq!(factor(Schedule::Linear, 5, 10, 110), 0.5);
        assert_eq!(factor(Schedule::Linear, 10, 10, 110), 1.0);
        assert!((factor(Schedule::Linear, 60, 10, 110) - 0.5).abs() < 1e-12);
        assert_eq!(factor(Schedule::Linear, 0, 0, 100), 1.0);
        assert!((factor(Schedule::Cosine, 55, 10, 100) - 0.5).abs() < 1e-12);
    }
}
