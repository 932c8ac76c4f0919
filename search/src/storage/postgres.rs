//! Optuna's RDB storage on PostgreSQL: the same tables, enums and alembic
//! revision Optuna's SQLAlchemy models create ([`SCHEMA`]), so
//! `optuna.load_study(storage=URL)` and `optuna-dashboard URL` read a study
//! while peftc workers on any number of hosts write it.
//!
//! Each [`Txn`] is one database transaction that first takes a
//! transaction-scoped advisory lock on the study's name: claims, retakes and
//! infeasible draws are serialized across hosts, and a worker killed inside
//! one leaves nothing (the server rolls it back). Liveness is Optuna's
//! heartbeat: a running trial has a `trial_heartbeats` row its worker
//! refreshes every `interval_s`; one silent for `grace_s` is stale.

use super::model::{
    Attrs, Direction, Distribution, NewTrial, Op, Param, Snapshot, StudyRow, TrialRow, TrialState,
};
use super::{Heartbeat, Member, Storage, StorageError, Txn, worker_id};
use postgres::{Client, NoTls};
use serde_json::Value as Json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Optuna's tables at alembic revision [`ALEMBIC_REVISION`].
pub const SCHEMA: &str = include_str!("schema.sql");
pub const ALEMBIC_REVISION: &str = "v3.2.0.a";
const SCHEMA_VERSION: i32 = 12;

/// Serializes schema creation between workers starting at once.
const SCHEMA_LOCK: i64 = 0x7065_6674_6373_716c; // "peftcsql"

pub struct Postgres {
    url: String,
    shown: String,
    study: String,
    beat: Heartbeat,
    client: Mutex<Client>,
}

fn db(what: &str, e: postgres::Error) -> StorageError {
    let detail = match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(x) = src {
                s.push_str(&format!(": {x}"));
                src = x.source();
            }
            s
        }
    };
    StorageError::Database(format!("{what}: {detail}"))
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

impl Postgres {
    pub fn connect(url: &str, study: &str, beat: Heartbeat) -> Result<Postgres, StorageError> {
        let shown = redact(url);
        let mut client =
            Client::connect(url, NoTls).map_err(|e| db(&format!("cannot open {shown}"), e))?;
        ensure_schema(&mut client, &shown)?;
        Ok(Postgres {
            url: url.to_string(),
            shown,
            study: study.to_string(),
            beat,
            client: Mutex::new(client),
        })
    }
}

/// Creates Optuna's tables in an empty database; refuses a schema revision
/// other than the one peftc writes.
fn ensure_schema(c: &mut Client, shown: &str) -> Result<(), StorageError> {
    let mut tx = c
        .transaction()
        .map_err(|e| db(&format!("{shown}: cannot begin"), e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .map_err(|e| db(shown, e))?;
    let exists = |tx: &mut postgres::Transaction, table: &str| -> Result<bool, StorageError> {
        let row = tx
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("public.{table}")],
            )
            .map_err(|e| db(shown, e))?;
        Ok(row.get(0))
    };
    if exists(&mut tx, "alembic_version")? {
        let rows = tx
            .query("SELECT version_num FROM alembic_version", &[])
            .map_err(|e| db(shown, e))?;
        let found: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if found != [ALEMBIC_REVISION] {
            return Err(StorageError::Refused(format!(
                "{shown} holds Optuna's schema at revision {} but peftc writes revision {ALEMBIC_REVISION} (Optuna 3.2 to 5.0); upgrade it with `optuna storage upgrade --storage URL`, or use another database",
                if found.is_empty() {
                    "(none)".to_string()
                } else {
                    found.join(", ")
                }
            )));
        }
    } else if exists(&mut tx, "studies")? || exists(&mut tx, "trials")? {
        return Err(StorageError::Refused(format!(
            "{shown} has `studies` / `trials` tables but no `alembic_version`: it is not an Optuna storage peftc can write to"
        )));
    } else {
        tx.batch_execute(SCHEMA).map_err(|e| db(shown, e))?;
        tx.execute(
            "INSERT INTO version_info (version_info_id, schema_version, library_version) VALUES (1, $1, $2)",
            &[&SCHEMA_VERSION, &format!("peftc-{}", env!("CARGO_PKG_VERSION"))],
        )
        .map_err(|e| db(shown, e))?;
        tx.execute(
            "INSERT INTO alembic_version (version_num) VALUES ($1)",
            &[&ALEMBIC_REVISION],
        )
        .map_err(|e| db(shown, e))?;
    }
    tx.commit().map_err(|e| db(shown, e))
}

impl Storage for Postgres {
    fn begin(&self) -> Result<Box<dyn Txn + '_>, StorageError> {
        let mut c = self
            .client
            .lock()
            .map_err(|_| StorageError::Database("the connection's lock was poisoned".into()))?;
        c.batch_execute("BEGIN").map_err(|e| db(&self.shown, e))?;
        let mut t = PgTxn {
            pg: self,
            c,
            snap: Snapshot::default(),
            stale: BTreeSet::new(),
            done: false,
        };
        t.load()?;
        Ok(Box::new(t))
    }

    fn join(&self) -> Result<Member, StorageError> {
        let mut client = Client::connect(&self.url, NoTls)
            .map_err(|e| db(&format!("cannot open {}", self.shown), e))?;
        let current: Arc<Mutex<Option<u64>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (cur, halt) = (current.clone(), stop.clone());
        let every = Duration::from_secs_f64(self.beat.interval_s.max(0.05));
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !halt.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50).min(every));
                if last.elapsed() < every {
                    continue;
                }
                last = Instant::now();
                let trial = cur.lock().ok().and_then(|c| *c);
                if let Some(id) = trial {
                    // A lost beat only makes the trial look stale sooner.
                    let _ = client.execute(
                        "UPDATE trial_heartbeats SET heartbeat = now() WHERE trial_id = $1",
                        &[&(id as i32)],
                    );
                }
            }
        });
        struct Stop(Arc<AtomicBool>);
        impl Drop for Stop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        Ok(Member::new(worker_id(), current, Box::new(Stop(stop))))
    }

    fn describe(&self) -> String {
        self.shown.clone()
    }
}

struct PgTxn<'a> {
    pg: &'a Postgres,
    c: MutexGuard<'a, Client>,
    snap: Snapshot,
    /// RUNNING trials whose heartbeat is older than the grace period.
    stale: BTreeSet<u64>,
    done: bool,
}

fn json_of(text: Option<String>) -> Json {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Json::Null)
}

fn value_type(v: f64, nan: &'static str) -> (Option<f64>, &'static str) {
    if v.is_nan() {
        (None, nan)
    } else if v == f64::INFINITY {
        (None, "INF_POS")
    } else if v == f64::NEG_INFINITY {
        (None, "INF_NEG")
    } else {
        (Some(v), "FINITE")
    }
}

fn stored_value(v: Option<f64>, kind: &str) -> f64 {
    match kind {
        "INF_POS" => f64::INFINITY,
        "INF_NEG" => f64::NEG_INFINITY,
        "NAN" => f64::NAN,
        _ => v.unwrap_or(f64::NAN),
    }
}

impl PgTxn<'_> {
    fn err(&self, e: postgres::Error) -> StorageError {
        db(&self.pg.shown, e)
    }

    fn load(&mut self) -> Result<(), StorageError> {
        let name = self.pg.study.clone();
        let q =
            |c: &mut Client, sql: &str, p: &[&(dyn postgres::types::ToSql + Sync)]| c.query(sql, p);
        let r = (|| -> Result<(), postgres::Error> {
            q(
                &mut self.c,
                "SELECT pg_advisory_xact_lock(hashtext($1))",
                &[&format!("peftc-study:{name}")],
            )?;
            let Some(row) = q(
                &mut self.c,
                "SELECT study_id FROM studies WHERE study_name = $1",
                &[&name],
            )?
            .into_iter()
            .next() else {
                return Ok(());
            };
            let sid: i32 = row.get(0);
            let mut study = StudyRow {
                id: sid as u64,
                name: name.clone(),
                directions: Vec::new(),
                user_attrs: Attrs::new(),
                system_attrs: Attrs::new(),
            };
            for r in q(
                &mut self.c,
                "SELECT direction::text FROM study_directions WHERE study_id = $1 ORDER BY objective",
                &[&sid],
            )? {
                let d: String = r.get(0);
                study.directions.extend(Direction::from_sql(&d));
            }
            for (table, attrs) in [
                ("study_user_attributes", &mut study.user_attrs),
                ("study_system_attributes", &mut study.system_attrs),
            ] {
                for r in q(
                    &mut self.c,
                    &format!("SELECT key, value_json FROM {table} WHERE study_id = $1"),
                    &[&sid],
                )? {
                    attrs.insert(r.get(0), json_of(r.get(1)));
                }
            }
            let mut trials: BTreeMap<i32, TrialRow> = BTreeMap::new();
            let mut order = Vec::new();
            for r in q(
                &mut self.c,
                "SELECT trial_id, number, state::text FROM trials WHERE study_id = $1 ORDER BY number, trial_id",
                &[&sid],
            )? {
                let id: i32 = r.get(0);
                let number: Option<i32> = r.get(1);
                let state: String = r.get(2);
                order.push(id);
                trials.insert(
                    id,
                    TrialRow {
                        id: id as u64,
                        number: number.unwrap_or(0) as u64,
                        state: TrialState::from_sql(&state).unwrap_or(TrialState::Fail),
                        params: BTreeMap::new(),
                        values: None,
                        intermediate: BTreeMap::new(),
                        user_attrs: Attrs::new(),
                        system_attrs: Attrs::new(),
                    },
                );
            }
            let of_study = "JOIN trials t ON t.trial_id = x.trial_id WHERE t.study_id = $1";
            for r in q(
                &mut self.c,
                &format!(
                    "SELECT x.trial_id, x.param_name, x.param_value, x.distribution_json FROM trial_params x {of_study}"
                ),
                &[&sid],
            )? {
                let id: i32 = r.get(0);
                let dist: Option<String> = r.get(3);
                let Some(distribution) = dist.and_then(|d| Distribution::from_json_str(&d).ok())
                else {
                    continue;
                };
                if let (Some(t), Some(name)) = (trials.get_mut(&id), r.get::<_, Option<String>>(1))
                {
                    t.params.insert(
                        name,
                        Param {
                            internal: r.get::<_, Option<f64>>(2).unwrap_or(f64::NAN),
                            distribution,
                        },
                    );
                }
            }
            for r in q(
                &mut self.c,
                &format!(
                    "SELECT x.trial_id, x.objective, x.value, x.value_type::text FROM trial_values x {of_study} ORDER BY x.trial_id, x.objective"
                ),
                &[&sid],
            )? {
                let id: i32 = r.get(0);
                if let Some(t) = trials.get_mut(&id) {
                    let kind: String = r.get(3);
                    t.values
                        .get_or_insert_with(Vec::new)
                        .push(stored_value(r.get(2), &kind));
                }
            }
            for r in q(
                &mut self.c,
                &format!(
                    "SELECT x.trial_id, x.step, x.intermediate_value, x.intermediate_value_type::text FROM trial_intermediate_values x {of_study}"
                ),
                &[&sid],
            )? {
                let id: i32 = r.get(0);
                if let Some(t) = trials.get_mut(&id) {
                    let step: i32 = r.get(1);
                    let kind: String = r.get(3);
                    t.intermediate
                        .insert(step as i64, stored_value(r.get(2), &kind));
                }
            }
            for user in [true, false] {
                let table = if user {
                    "trial_user_attributes"
                } else {
                    "trial_system_attributes"
                };
                for r in q(
                    &mut self.c,
                    &format!("SELECT x.trial_id, x.key, x.value_json FROM {table} x {of_study}"),
                    &[&sid],
                )? {
                    let id: i32 = r.get(0);
                    if let (Some(t), Some(key)) =
                        (trials.get_mut(&id), r.get::<_, Option<String>>(1))
                    {
                        let v = json_of(r.get(2));
                        if user {
                            t.user_attrs.insert(key, v);
                        } else {
                            t.system_attrs.insert(key, v);
                        }
                    }
                }
            }
            for r in q(
                &mut self.c,
                "SELECT t.trial_id FROM trials t JOIN trial_heartbeats h ON h.trial_id = t.trial_id \
                 WHERE t.study_id = $1 AND t.state = 'RUNNING' \
                 AND LOCALTIMESTAMP - h.heartbeat > make_interval(secs => $2)",
                &[&sid, &self.pg.beat.grace_s],
            )? {
                self.stale.insert(r.get::<_, i32>(0) as u64);
            }
            self.snap = Snapshot {
                study: Some(study),
                trials: order.iter().filter_map(|id| trials.remove(id)).collect(),
            };
            Ok(())
        })();
        r.map_err(|e| self.err(e))
    }

    fn study_id(&self) -> Result<i32, StorageError> {
        self.snap
            .study
            .as_ref()
            .map(|s| s.id as i32)
            .ok_or_else(|| StorageError::Refused("the study does not exist yet".into()))
    }

    fn upsert_attr(
        &mut self,
        table: &str,
        owner: &str,
        id: i32,
        key: &str,
        value: &Json,
    ) -> Result<(), StorageError> {
        let sql = format!(
            "INSERT INTO {table} ({owner}, key, value_json) VALUES ($1, $2, $3) \
             ON CONFLICT ({owner}, key) DO UPDATE SET value_json = EXCLUDED.value_json"
        );
        self.c
            .execute(&sql, &[&id, &key, &value.to_string()])
            .map(|_| ())
            .map_err(|e| db(&self.pg.shown, e))
    }
}

impl Txn for PgTxn<'_> {
    fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    fn create_study(&mut self, name: &str, directions: &[Direction]) -> Result<(), StorageError> {
        let row = self
            .c
            .query_one(
                "INSERT INTO studies (study_name) VALUES ($1) RETURNING study_id",
                &[&name],
            )
            .map_err(|e| db(&self.pg.shown, e))?;
        let sid: i32 = row.get(0);
        for (i, d) in directions.iter().enumerate() {
            self.c
                .execute(
                    "INSERT INTO study_directions (direction, study_id, objective) VALUES ($1::text::studydirection, $2, $3)",
                    &[&d.sql(), &sid, &(i as i32)],
                )
                .map_err(|e| db(&self.pg.shown, e))?;
        }
        self.snap.study = Some(StudyRow {
            id: sid as u64,
            name: name.to_string(),
            directions: directions.to_vec(),
            user_attrs: Attrs::new(),
            system_attrs: Attrs::new(),
        });
        Ok(())
    }

    fn create_trial(&mut self, t: NewTrial) -> Result<u64, StorageError> {
        let sid = self.study_id()?;
        let number = self.snap.trials.len() as i32;
        let row = self
            .c
            .query_one(
                "INSERT INTO trials (number, study_id, state, datetime_start) \
                 VALUES ($1, $2, 'RUNNING', now() AT TIME ZONE 'UTC') RETURNING trial_id",
                &[&number, &sid],
            )
            .map_err(|e| db(&self.pg.shown, e))?;
        let id: i32 = row.get(0);
        for (name, p) in &t.params {
            self.c
                .execute(
                    "INSERT INTO trial_params (trial_id, param_name, param_value, distribution_json) VALUES ($1, $2, $3, $4)",
                    &[&id, name, &p.internal, &p.distribution.to_json_string()],
                )
                .map_err(|e| db(&self.pg.shown, e))?;
        }
        for (k, v) in &t.user_attrs {
            self.upsert_attr("trial_user_attributes", "trial_id", id, k, v)?;
        }
        for (k, v) in &t.system_attrs {
            self.upsert_attr("trial_system_attributes", "trial_id", id, k, v)?;
        }
        self.c
            .execute(
                "INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES ($1, now())",
                &[&id],
            )
            .map_err(|e| db(&self.pg.shown, e))?;
        self.snap.push_trial(id as u64, t);
        Ok(id as u64)
    }

    fn write(&mut self, op: Op) -> Result<(), StorageError> {
        let open = |s: &Snapshot, id: u64| s.trial(id).is_some_and(|t| !t.state.is_finished());
        match &op {
            Op::StudyUserAttr { key, value } => {
                let sid = self.study_id()?;
                self.upsert_attr("study_user_attributes", "study_id", sid, key, value)?;
            }
            Op::StudySystemAttr { key, value } => {
                let sid = self.study_id()?;
                self.upsert_attr("study_system_attributes", "study_id", sid, key, value)?;
            }
            Op::TrialUserAttr { trial, key, value } => {
                if open(&self.snap, *trial) {
                    self.upsert_attr(
                        "trial_user_attributes",
                        "trial_id",
                        *trial as i32,
                        key,
                        value,
                    )?;
                }
            }
            Op::Intermediate { trial, step, value } => {
                if open(&self.snap, *trial) {
                    let (v, kind) = value_type(*value, "NAN");
                    self.c
                        .execute(
                            "INSERT INTO trial_intermediate_values (trial_id, step, intermediate_value, intermediate_value_type) \
                             VALUES ($1, $2, $3, $4::text::trialintermediatevaluetype) \
                             ON CONFLICT (trial_id, step) DO UPDATE SET intermediate_value = EXCLUDED.intermediate_value, \
                             intermediate_value_type = EXCLUDED.intermediate_value_type",
                            &[&(*trial as i32), &(*step as i32), &v, &kind],
                        )
                        .map_err(|e| db(&self.pg.shown, e))?;
                }
            }
            Op::Finish {
                trial,
                state,
                values,
            } => {
                let n = self
                    .c
                    .execute(
                        "UPDATE trials SET state = $2::text::trialstate, datetime_complete = now() AT TIME ZONE 'UTC' \
                         WHERE trial_id = $1 AND state = 'RUNNING'",
                        &[&(*trial as i32), &state.sql()],
                    )
                    .map_err(|e| db(&self.pg.shown, e))?;
                if n == 1 {
                    for (i, v) in values.iter().flatten().enumerate() {
                        // Optuna's trial values have no NaN type.
                        let (v, kind) = value_type(*v, "FINITE");
                        self.c
                            .execute(
                                "INSERT INTO trial_values (trial_id, objective, value, value_type) \
                                 VALUES ($1, $2, $3, $4::text::trialvaluetype)",
                                &[&(*trial as i32), &(i as i32), &v, &kind],
                            )
                            .map_err(|e| db(&self.pg.shown, e))?;
                    }
                }
            }
        }
        self.snap.apply(&op);
        Ok(())
    }

    fn is_stale(&self, trial: &TrialRow) -> bool {
        trial.state == TrialState::Running && self.stale.contains(&trial.id)
    }

    fn commit(mut self: Box<Self>) -> Result<(), StorageError> {
        self.done = true;
        self.c
            .batch_execute("COMMIT")
            .map_err(|e| db(&self.pg.shown, e))
    }
}

impl Drop for PgTxn<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.c.batch_execute("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgresql://u:secret@h:5432/db"),
            "postgresql://u@h:5432/db"
        );
        assert_eq!(redact("postgresql://h/db"), "postgresql://h/db");
    }
}
