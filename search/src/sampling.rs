//! Choosing the next point, through the `optimizer` crate's samplers.
//!
//! **Sampling is a pure function of (seed, trial number, attempt, history)**: a
//! fresh sampler is built for every proposal and fed the journal's history, so
//! any worker, after any crash, proposes what another would have. Samplers see
//! one dimension at a time with a history cut down to that dimension (the
//! crate matches history to a dimension by its distribution, which two
//! dimensions of the same shape would share). Values are in minimization form.
//!
//! The grid and NSGA-II keep state between calls in the crate; here they are
//! stateless: the grid walks the points in order, skipping those already seen,
//! and NSGA-II breeds from the non-dominated sort of the whole history.

use crate::rng::Rng;
use crate::space::{Point, Space};
use optimizer::Direction;
use optimizer::TrialState;
use optimizer::multi_objective::{MultiObjectiveSampler, MultiObjectiveTrial};
use optimizer::parameter::ParamId;
use optimizer::sampler::{
    CompletedTrial, GpSampler, MotpeSampler, RandomSampler, Sampler, TpeSampler,
};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerKind {
    Tpe,
    Random,
    Grid,
    Gp,
    Nsga2,
}

impl SamplerKind {
    pub fn from_name(s: &str) -> Option<SamplerKind> {
        Some(match s {
            "tpe" => SamplerKind::Tpe,
            "random" => SamplerKind::Random,
            "grid" => SamplerKind::Grid,
            "gp" => SamplerKind::Gp,
            "nsga2" => SamplerKind::Nsga2,
            _ => return None,
        })
    }
}

/// What the sampler learns from one earlier trial or infeasible draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub point: Point,
    /// One per objective, minimization form; empty for an infeasible point.
    pub values: Vec<f64>,
}

/// Trials drawn at random before the model-based samplers take over.
pub const STARTUP_TRIALS: usize = 5;

/// Points per range in the grid.
pub const GRID_POINTS: usize = 5;

/// The next point to try; `None` when a grid has no unseen point left.
pub fn propose(
    space: &Space,
    kind: SamplerKind,
    seed: u64,
    number: u64,
    attempt: u64,
    history: &[Observation],
    seen: &dyn Fn(&Point) -> bool,
) -> Option<Point> {
    let call_seed = crate::rng::mix(&[seed, number, attempt]);
    let n_obj = history
        .iter()
        .map(|o| o.values.len())
        .max()
        .unwrap_or(1)
        .max(1);
    match kind {
        SamplerKind::Grid => grid(space, seen),
        SamplerKind::Nsga2 => Some(nsga2(space, call_seed, history)),
        SamplerKind::Random => Some(per_dim(space, history, |d| {
            Box::new(RandomSampler::with_seed(dim_seed(call_seed, d)))
        })),
        SamplerKind::Tpe if n_obj > 1 => Some(motpe(space, call_seed, history, n_obj)),
        SamplerKind::Tpe => Some(per_dim(space, history, |d| {
            Box::new(
                TpeSampler::builder()
                    .seed(dim_seed(call_seed, d))
                    .n_startup_trials(STARTUP_TRIALS)
                    .build()
                    .unwrap_or_else(|_| TpeSampler::new()),
            )
        })),
        SamplerKind::Gp => Some(per_dim(space, history, |d| {
            Box::new(
                GpSampler::builder()
                    .seed(dim_seed(call_seed, d))
                    .n_startup_trials(STARTUP_TRIALS)
                    .build(),
            )
        })),
    }
}

/// Each dimension draws from its own stream: two dimensions of the same shape
/// sampled with one seed would always move together.
fn dim_seed(seed: u64, d: usize) -> u64 {
    crate::rng::mix(&[seed, d as u64])
}

/// Single-objective history for one dimension. Infeasible points count as
/// worse than every trained one, so the sampler learns to avoid them.
fn history_for(
    space: &Space,
    d: usize,
    id: ParamId,
    history: &[Observation],
) -> Vec<CompletedTrial> {
    let worst = history
        .iter()
        .filter_map(|o| o.values.first().copied())
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    let penalty = if worst.is_finite() { worst + 1.0 } else { 1.0 };
    let dim = &space.dims[d];
    history
        .iter()
        .enumerate()
        .filter_map(|(i, o)| {
            let p = dim.param_of(&o.point[d])?;
            let value = o.values.first().copied().unwrap_or(penalty);
            Some(CompletedTrial::new(
                i as u64,
                HashMap::from([(id, p)]),
                HashMap::from([(id, dim.distribution())]),
                HashMap::new(),
                value,
            ))
        })
        .collect()
}

fn per_dim(
    space: &Space,
    history: &[Observation],
    make: impl Fn(usize) -> Box<dyn Sampler>,
) -> Point {
    let trial_id = history.len() as u64;
    space
        .dims
        .iter()
        .enumerate()
        .map(|(d, dim)| {
            let id = ParamId::new();
            let h = history_for(space, d, id, history);
            let p = make(d).sample(&dim.distribution(), trial_id, &h);
            dim.value_of(&p)
        })
        .collect()
}

fn motpe(space: &Space, seed: u64, history: &[Observation], n_obj: usize) -> Point {
    let directions = vec![Direction::Minimize; n_obj];
    let trial_id = history.len() as u64;
    space
        .dims
        .iter()
        .enumerate()
        .map(|(d, dim)| {
            let id = ParamId::new();
            let h: Vec<MultiObjectiveTrial> = history
                .iter()
                .enumerate()
                .filter(|(_, o)| o.values.len() == n_obj)
                .filter_map(|(i, o)| {
                    Some(MultiObjectiveTrial {
                        id: i as u64,
                        params: HashMap::from([(id, dim.param_of(&o.point[d])?)]),
                        distributions: HashMap::from([(id, dim.distribution())]),
                        param_labels: HashMap::new(),
                        values: o.values.clone(),
                        state: TrialState::Complete,
                        user_attrs: HashMap::new(),
                        constraints: Vec::new(),
                    })
                })
                .collect();
            let sampler = MotpeSampler::builder()
                .seed(dim_seed(seed, d))
                .n_startup_trials(STARTUP_TRIALS)
                .build();
            dim.value_of(&sampler.sample(&dim.distribution(), trial_id, &h, &directions))
        })
        .collect()
}

fn grid(space: &Space, seen: &dyn Fn(&Point) -> bool) -> Option<Point> {
    let size = space.grid_size(GRID_POINTS);
    (0..size.min(1 << 24))
        .map(|i| space.grid_point(GRID_POINTS, i))
        .find(|p| !seen(p))
}

fn random_point(space: &Space, rng: &mut Rng) -> Point {
    space
        .dims
        .iter()
        .map(|d| {
            let s = RandomSampler::with_seed(rng.next_u64());
            d.value_of(&s.sample(&d.distribution(), 0, &[]))
        })
        .collect()
}

/// NSGA-II, stateless: parents by binary tournament on (front rank, crowding
/// distance) over every trained point, uniform crossover, then each gene
/// resampled with probability 1/dims.
fn nsga2(space: &Space, seed: u64, history: &[Observation]) -> Point {
    let mut rng = Rng::new(seed);
    let trained: Vec<&Observation> = history.iter().filter(|o| !o.values.is_empty()).collect();
    let population = (2 * space.dims.len()).max(8);
    if trained.len() < population {
        return random_point(space, &mut rng);
    }
    let values: Vec<Vec<f64>> = trained.iter().map(|o| o.values.clone()).collect();
    let directions = vec![Direction::Minimize; values[0].len()];
    let fronts = optimizer::pareto::non_dominated_sort(&values, &directions);
    let mut rank = vec![(usize::MAX, 0.0f64); trained.len()];
    for (r, front) in fronts.iter().enumerate() {
        let pts: Vec<Vec<f64>> = front.iter().map(|&i| values[i].clone()).collect();
        let crowd = optimizer::pareto::crowding_distance(&pts, &directions);
        for (k, &i) in front.iter().enumerate() {
            rank[i] = (r, crowd.get(k).copied().unwrap_or(0.0));
        }
    }
    let better = |a: usize, b: usize| {
        let (ra, ca) = rank[a];
        let (rb, cb) = rank[b];
        if ra != rb { ra < rb } else { ca > cb }
    };
    let pick = |rng: &mut Rng| {
        let a = rng.below(trained.len());
        let b = rng.below(trained.len());
        if better(a, b) { a } else { b }
    };
    let (pa, pb) = (pick(&mut rng), pick(&mut rng));
    let fresh = random_point(space, &mut rng);
    let p_mut = 1.0 / space.dims.len().max(1) as f64;
    (0..space.dims.len())
        .map(|d| {
            if rng.next_f64() < p_mut {
                fresh[d].clone()
            } else if rng.next_f64() < 0.5 {
                trained[pa].point[d].clone()
            } else {
                trained[pb].point[d].clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::Value;

    fn space() -> Space {
        let src = "model \"m\"\npeft a {\n lora(r={0, 4, 8, 16}) on layers[*].attn.q\n prefix(len=1..=32 log) on layers[*].attn\n}\n";
        let file = peftc_grammar::parse(src).expect("parses");
        Space::from_spec(&file, src, "a")
    }

    fn in_domain(s: &Space, p: &Point) -> bool {
        s.dims.iter().zip(p).all(|(d, v)| d.param_of(v).is_some())
            && matches!(p[1], Value::Int(1..=32))
    }

    #[test]
    fn proposals_are_deterministic_and_in_the_domain() {
        let s = space();
        let never = |_: &Point| false;
        for kind in [
            SamplerKind::Tpe,
            SamplerKind::Random,
            SamplerKind::Gp,
            SamplerKind::Nsga2,
        ] {
            let mut history = Vec::new();
            for n in 0..12u64 {
                let p = propose(&s, kind, 7, n, 0, &history, &never).expect("a point");
                let again = propose(&s, kind, 7, n, 0, &history, &never).expect("a point");
                assert_eq!(p, again, "{kind:?} is not a function of its inputs");
                assert!(in_domain(&s, &p), "{kind:?} proposed {p:?}");
                let r = p[0].as_f64().unwrap_or(0.0);
                history.push(Observation {
                    point: p,
                    values: vec![(r - 8.0).abs()],
                });
            }
        }
    }

    #[test]
    fn tpe_concentrates_on_the_best_region() {
        // Objective: |r - 8|, minimized at r = 8. After the start-up trials, TPE
        // should pick r = 8 far more often than chance (1 in 4).
        let s = space();
        let never = |_: &Point| false;
        let mut history = Vec::new();
        let mut hits = 0;
        for n in 0..40u64 {
            let p = propose(&s, SamplerKind::Tpe, 1, n, 0, &history, &never).expect("a point");
            let r = p[0].as_f64().unwrap_or(0.0);
            if n >= 10 && r == 8.0 {
                hits += 1;
            }
            history.push(Observation {
                point: p,
                values: vec![(r - 8.0).abs()],
            });
        }
        assert!(
            hits >= 15,
            "r = 8 chosen {hits} times in 30 model-based draws"
        );
    }

    #[test]
    fn dimensions_of_the_same_shape_are_drawn_independently() {
        let src = "model \"m\"\npeft a {\n adapter(bottleneck={0, 8, 32}) after layers[0..3].mlp\n adapter(bottleneck={0, 8, 32}) after layers[3..6].mlp\n}\n";
        let file = peftc_grammar::parse(src).expect("parses");
        let s = Space::from_spec(&file, src, "a");
        let never = |_: &Point| false;
        for kind in [SamplerKind::Random, SamplerKind::Tpe, SamplerKind::Gp] {
            let distinct: std::collections::BTreeSet<String> = (0..40u64)
                .filter_map(|n| propose(&s, kind, 0, n, 0, &[], &never))
                .map(|p| format!("{p:?}"))
                .collect();
            // All 9 combinations, not just the 3 where both dimensions agree.
            assert_eq!(distinct.len(), 9, "{kind:?}: {distinct:?}");
        }
    }

    #[test]
    fn the_grid_walks_unseen_points_and_ends() {
        let src = "model \"m\"\npeft a {\n lora(r={4, 8}) on layers[*].attn.q\n}\n";
        let file = peftc_grammar::parse(src).expect("parses");
        let s = Space::from_spec(&file, src, "a");
        let seen_4 = |p: &Point| p[0] == Value::Int(4);
        assert_eq!(
            propose(&s, SamplerKind::Grid, 0, 0, 0, &[], &seen_4),
            Some(vec![Value::Int(8)])
        );
        let all = |_: &Point| true;
        assert_eq!(propose(&s, SamplerKind::Grid, 0, 0, 0, &[], &all), None);
    }
}
