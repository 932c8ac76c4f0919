"""Opens a study with Optuna itself and prints it as JSON, for peftc's tests.

    python optuna_load.py STORAGE STUDY_NAME

STORAGE is `journal:PATH` (Optuna's JournalFileBackend) or an RDB URL
(`postgresql://...`). Prints {"directions", "metric_names", "user_attrs",
"trials": [{number, state, params, values, intermediate, user_attrs,
system_attrs}], "best": number or null, "dashboard": {...} or null}; the
dashboard part is optuna-dashboard's own API answer for the study, when
optuna-dashboard is installed. Exits non-zero on any error Optuna raises.
"""

import json
import sys
import wsgiref.util

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend


def storage_of(url):
    if url.startswith("journal:"):
        return JournalStorage(JournalFileBackend(url[len("journal:"):]))
    return optuna.storages.RDBStorage(url, skip_compatibility_check=False)


def dashboard(storage, study):
    try:
        import optuna_dashboard
    except ImportError:
        return None
    app = optuna_dashboard.wsgi(storage)
    sid = study._study_id

    def get(path):
        out = {}

        def start_response(status, headers, exc_info=None):
            out["status"] = status

        environ = {}
        wsgiref.util.setup_testing_defaults(environ)
        environ["PATH_INFO"] = path
        body = b"".join(app(environ, start_response))
        if not out["status"].startswith("200"):
            raise SystemExit(f"optuna-dashboard {path}: {out['status']} {body[:300]!r}")
        return json.loads(body)

    studies = get("/api/studies")
    detail = get(f"/api/studies/{sid}")
    return {
        "study_names": sorted(s["study_name"] for s in studies["study_summaries"]),
        "n_trials": len(detail["trials"]),
        "states": [t["state"] for t in detail["trials"]],
    }


def main():
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url, name = sys.argv[1], sys.argv[2]
    storage = storage_of(url)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = []
    for t in study.get_trials(deepcopy=False):
        trials.append({
            "number": t.number,
            "state": t.state.name,
            "params": t.params,
            "values": t.values,
            "intermediate": {str(k): v for k, v in t.intermediate_values.items()},
            "user_attrs": t.user_attrs,
            "system_attrs": t.system_attrs,
        })
    best = None
    if len(study.directions) == 1 and any(t["state"] == "COMPLETE" for t in trials):
        best = study.best_trial.number
    print(json.dumps({
        "directions": [d.name for d in study.directions],
        "metric_names": study.metric_names,
        "user_attrs": sorted(study.user_attrs),
        "trials": trials,
        "best": best,
        "dashboard": dashboard(storage, study),
    }))


if __name__ == "__main__":
    main()
