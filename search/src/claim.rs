//! Claiming a trial, in one storage transaction: fail and retake a dead
//! worker's trial, or sample a new point, price it, and record it infeasible
//! or claimed.

use crate::cost::fits;
use crate::record::{self, key};
use crate::sampling::{Observation, SamplerKind, propose};
use crate::space::Point;
use crate::state::{NamedPoint, StudyState, TrialRecord};
use crate::storage::model::{NewTrial, Op, TrialState};
use crate::storage::{Member, Txn};
use crate::study::{SearchError, Study};
use serde_json::json;
use std::collections::BTreeMap;

/// Draws tried per trial before the sampler is deemed unable to find a new
/// feasible point.
const MAX_DRAWS: u64 = 200;

/// Workers that may die on one configuration before it is failed.
const MAX_CLAIMS: u32 = 3;

/// Draws from the study's sampler before falling back to random ones.
const MODEL_DRAWS: u64 = 20;

/// What a worker does next.
pub(crate) enum Claim {
    /// Train this configuration (`true`: retaken from a dead worker).
    Trial(TrialRecord, bool),
    /// Every configuration is claimed but this many still run on other
    /// workers: wait, and retake any whose worker dies.
    Wait(usize),
    Done,
}

impl Study {
    /// Creates the study on first use; refuses one of another spec.
    pub(crate) fn ensure_study(&self, tx: &mut dyn Txn) -> Result<(), SearchError> {
        let Some(study) = &tx.snapshot().study else {
            let directions = self.settings.directions();
            tx.create_study(&self.name, &directions)?;
            let attrs = [
                (key::SPEC_HASH, json!(self.spec_hash)),
                (key::SEARCH_SPEC, json!(self.source)),
            ];
            for (k, v) in attrs {
                tx.write(Op::StudyUserAttr {
                    key: k.into(),
                    value: v,
                })?;
            }
            let names: Vec<&str> = self
                .settings
                .objectives
                .iter()
                .map(|o| o.metric.as_str())
                .collect();
            tx.write(Op::StudySystemAttr {
                key: key::METRIC_NAMES.into(),
                value: json!(names),
            })?;
            return Ok(());
        };
        match study
            .user_attrs
            .get(key::SPEC_HASH)
            .and_then(|v| v.as_str())
        {
            Some(h) if h == self.spec_hash => Ok(()),
            Some(_) => Err(SearchError::Invalid(format!(
                "{} holds a study `{}` of a different spec; use another --study folder or --study-name (to run more trials of the same spec, pass --trials N)",
                self.storage.describe(),
                self.name
            ))),
            None => Err(SearchError::Invalid(format!(
                "{} holds a study `{}` that peftc did not create; name another with --study-name",
                self.storage.describe(),
                self.name
            ))),
        }
    }

    /// Creates the study in its storage, or checks that the one there is
    /// this spec's.
    pub fn create(&self) -> Result<(), SearchError> {
        let mut tx = self.storage.begin()?;
        self.ensure_study(tx.as_mut())?;
        Ok(tx.commit()?)
    }

    /// Retakes a crashed worker's configuration, or samples, checks and
    /// claims a new one. `None` when the study has all its trials.
    pub(crate) fn claim(
        &self,
        me: &Member,
        log: &mut dyn FnMut(&str),
    ) -> Result<Claim, SearchError> {
        let mut tx = self.storage.begin()?;
        self.ensure_study(tx.as_mut())?;
        let state = StudyState::from_snapshot(tx.snapshot(), &self.space);
        let claim = self.claim_in(tx.as_mut(), &state, me, log)?;
        tx.commit()?;
        Ok(match claim {
            Some((t, retry)) => Claim::Trial(t, retry),
            None => {
                let others = state.running().filter(|t| t.worker != me.id).count();
                if others > 0 {
                    Claim::Wait(others)
                } else {
                    Claim::Done
                }
            }
        })
    }

    fn claim_in(
        &self,
        tx: &mut dyn Txn,
        state: &StudyState,
        me: &Member,
        log: &mut dyn FnMut(&str),
    ) -> Result<Option<(TrialRecord, bool)>, SearchError> {
        // Open configurations whose latest attempt lost its worker.
        let mut orphans: Vec<TrialRecord> = Vec::new();
        for t in state.running() {
            let Some(row) = tx.snapshot().trial(t.trial_id).cloned() else {
                continue;
            };
            let stale = row.state == TrialState::Running && t.worker != me.id && tx.is_stale(&row);
            if stale {
                // A configuration that killed its worker every time (out of
                // memory, an abort) is failed rather than retaken forever.
                let last = t.claims >= MAX_CLAIMS;
                let reason = if last {
                    format!(
                        "its worker process died {} times (out of memory?)",
                        t.claims
                    )
                } else {
                    "its worker process died; retaken by another".to_string()
                };
                tx.write(Op::TrialUserAttr {
                    trial: row.id,
                    key: key::FAIL_REASON.into(),
                    value: json!(reason),
                })?;
                if !last {
                    tx.write(Op::TrialUserAttr {
                        trial: row.id,
                        key: key::RETAKEN.into(),
                        value: json!(true),
                    })?;
                }
                tx.write(Op::Finish {
                    trial: row.id,
                    state: TrialState::Fail,
                    values: None,
                })?;
                if !last {
                    orphans.push(t.clone());
                }
            } else if row.state == TrialState::Fail {
                // Failed and marked retaken by an earlier claim.
                orphans.push(t.clone());
            }
        }
        if let Some(orphan) = orphans.into_iter().next() {
            let old = tx
                .snapshot()
                .trial(orphan.trial_id)
                .cloned()
                .ok_or_else(|| SearchError::Invalid("a retaken trial vanished".into()))?;
            let mut user_attrs = old.user_attrs.clone();
            for k in [key::FAIL_REASON, key::RETAKEN] {
                user_attrs.remove(k);
            }
            user_attrs.insert(key::WORKER.into(), json!(me.id));
            let mut system_attrs = old.system_attrs.clone();
            system_attrs.insert(key::FAILED_TRIAL.into(), json!(orphan.number));
            system_attrs.insert(key::RETRY_HISTORY.into(), json!(orphan.attempts));
            let id = tx.create_trial(NewTrial {
                params: old.params.clone(),
                user_attrs,
                system_attrs,
            })?;
            let number = tx.snapshot().trial(id).map_or(0, |t| t.number);
            let mut t = orphan;
            t.worker = me.id.clone();
            t.claims += 1;
            t.attempts.push(number);
            t.trial_id = id;
            t.reports.clear();
            return Ok(Some((t, true)));
        }
        if state.trials.len() as u64 >= self.settings.trials {
            return Ok(None);
        }
        let number = tx.snapshot().trials.len() as u64;
        let mut history = self.history(state);
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
                        let k = format!("{}{:06}", key::INFEASIBLE, infeasible.borrow().len());
                        infeasible.borrow_mut().push(named.clone());
                        tx.write(Op::StudyUserAttr {
                            key: k,
                            value: record::infeasible_json(&named, cost.as_ref(), &reason),
                        })?;
                    }
                    history.push(Observation {
                        point,
                        values: Vec::new(),
                    });
                    continue;
                }
            };
            let mut user_attrs = record::cost_attrs(&cost);
            user_attrs.insert(key::WORKER.into(), json!(me.id));
            user_attrs.insert(key::SPEC.into(), json!(self.spec_text(&point, None)));
            let id = tx.create_trial(NewTrial {
                params: record::params(&self.space, &named),
                user_attrs,
                system_attrs: BTreeMap::new(),
            })?;
            let record = TrialRecord {
                number,
                point: named,
                cost,
                worker: me.id.clone(),
                claims: 1,
                attempts: vec![number],
                trial_id: id,
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
