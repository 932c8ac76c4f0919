//! Claiming a trial, under the study's lock: retake a dead worker's trial, or
//! sample a new point, price it, and record it infeasible or claimed.

use crate::cost::fits;
use crate::journal::{Event, NamedPoint, Outcome, now, worker_alive};
use crate::sampling::{Observation, SamplerKind, propose};
use crate::space::Point;
use crate::state::TrialRecord;
use crate::study::{SearchError, Study};
use std::collections::BTreeMap;

/// Draws tried per trial before the sampler is deemed unable to find a new
/// feasible point.
const MAX_DRAWS: u64 = 200;

/// Workers that may die on one trial before it is failed.
const MAX_CLAIMS: u32 = 3;

/// Draws from the study's sampler before falling back to random ones.
const MODEL_DRAWS: u64 = 20;

impl Study {
    /// Under the lock: retake a crashed worker's trial, or sample, check and
    /// claim a new one. `None` when the study has all its trials.
    pub(crate) fn claim(
        &self,
        me: &str,
        log: &mut dyn FnMut(&str),
    ) -> Result<Option<(TrialRecord, bool)>, SearchError> {
        let g = self.journal.lock()?;
        let (state, skipped) = self.read(&g)?;
        if skipped > 0 {
            log(&format!(
                "journal: skipped {skipped} torn line(s) of a killed worker"
            ));
        }
        match &state.spec_hash {
            None => self.journal.append(
                &g,
                &Event::Study {
                    spec_hash: self.spec_hash.clone(),
                    dims: self.space.names().into_iter().map(String::from).collect(),
                    time: now(),
                },
            )?,
            Some(h) if *h != self.spec_hash => {
                return Err(SearchError::Invalid(format!(
                    "`{}` holds a study of a different spec; use another --study folder (to run more trials of the same spec, pass --trials N)",
                    self.dir.display()
                )));
            }
            Some(_) => {}
        }
        let orphans: Vec<&TrialRecord> = state
            .running()
            .filter(|t| t.worker != me && !worker_alive(&self.dir, &t.worker))
            .collect();
        // A configuration that killed its worker every time (out of memory, an
        // abort) is failed rather than retaken forever.
        for t in orphans.iter().filter(|t| t.claims >= MAX_CLAIMS) {
            self.journal.append(
                &g,
                &Event::Finish {
                    trial: t.number,
                    worker: me.to_string(),
                    outcome: Outcome::Failed {
                        reason: format!(
                            "its worker process died {} times (out of memory?)",
                            t.claims
                        ),
                    },
                    time: now(),
                },
            )?;
        }
        if let Some(orphan) = orphans.into_iter().find(|t| t.claims < MAX_CLAIMS) {
            let mut t = orphan.clone();
            t.worker = me.to_string();
            t.claims += 1;
            self.journal.append(
                &g,
                &Event::Claim {
                    trial: t.number,
                    worker: me.to_string(),
                    point: t.point.clone(),
                    cost: t.cost,
                    time: now(),
                },
            )?;
            return Ok(Some((t, true)));
        }
        if state.trials.len() as u64 >= self.settings.trials {
            return Ok(None);
        }
        let number = state.next_number();
        let mut history = self.history(&state);
        // Infeasible points, including those found by this claim's draws.
        let infeasible: std::cell::RefCell<Vec<NamedPoint>> =
            std::cell::RefCell::new(state.infeasible.iter().map(|(p, _, _)| p.clone()).collect());
        let seen = |p: &Point| {
            let n = self.named(p);
            state.has_point(&n) || infeasible.borrow().contains(&n)
        };
        for attempt in 0..MAX_DRAWS {
            // A model-based sampler that keeps proposing seen points has
            // converged; random draws find what is left.
            let kind = if attempt < MODEL_DRAWS {
                self.settings.sampler
            } else {
                SamplerKind::Random
            };
            let Some(point) = propose(
                &self.space,
                kind,
                self.settings.seed,
                number,
                attempt,
                &history,
                &seen,
            ) else {
                log("every point of the grid has been tried");
                return Ok(None);
            };
            let named = self.named(&point);
            if state.has_point(&named) {
                continue;
            }
            // A point the checker rejects has no cost; one over the budget has one.
            let verdict = match self.cost(&point) {
                Ok(c) => fits(&c, &self.settings.budgets)
                    .map(|()| c)
                    .map_err(|r| (Some(c), r)),
                Err(reason) => Err((None, reason)),
            };
            let cost = match verdict {
                Ok(c) => c,
                Err((cost, reason)) => {
                    if !infeasible.borrow().contains(&named) {
                        infeasible.borrow_mut().push(named.clone());
                        self.journal.append(
                            &g,
                            &Event::Infeasible {
                                point: named,
                                cost,
                                reason,
                            },
                        )?;
                    }
                    history.push(Observation {
                        point,
                        values: Vec::new(),
                    });
                    continue;
                }
            };
            self.journal.append(
                &g,
                &Event::Claim {
                    trial: number,
                    worker: me.to_string(),
                    point: named.clone(),
                    cost,
                    time: now(),
                },
            )?;
            let record = TrialRecord {
                number,
                point: named,
                cost,
                worker: me.to_string(),
                claims: 1,
                reports: BTreeMap::new(),
                outcome: None,
            };
            return Ok(Some((record, false)));
        }
        log(&format!(
            "no new configuration within the budget after {MAX_DRAWS} draws; stopping"
        ));
        Ok(None)
    }
}
