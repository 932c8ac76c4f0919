"""Writes tests/fixtures/optuna/optuna-written.jsonl with Optuna itself, and
beside it optuna-written.json: the study as Optuna reads it back
(tests/reference/optuna_load.py). peftc's journal reader must read the same.

    python make_optuna_journal.py OUT_DIR

Covers every operation a study makes: two studies in one file, int / log-int /
float / stepped-float / categorical parameters, intermediate values, user and
system attributes, complete, pruned, failed and waiting (enqueued) trials, a
RetryFailedTrialCallback-style retry.
"""

import os
import subprocess
import sys

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

out = sys.argv[1]
path = os.path.join(out, "optuna-written.jsonl")
if os.path.exists(path):
    os.remove(path)
optuna.logging.set_verbosity(optuna.logging.ERROR)
storage = JournalStorage(JournalFileBackend(path))

other = optuna.create_study(study_name="other", storage=storage)
other.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=2)

study = optuna.create_study(study_name="s", storage=storage, direction="maximize",
                            sampler=optuna.samplers.RandomSampler(seed=7))
study.set_user_attr("owner", {"team": "peftc", "n": 3})
study.set_metric_names(["accuracy"])


def objective(trial):
    r = trial.suggest_int("lora.r", 1, 64, log=True)
    lr = trial.suggest_float("train.lr", 1e-5, 1e-2, log=True)
    drop = trial.suggest_float("lora.dropout", 0.0, 0.3, step=0.1)
    act = trial.suggest_categorical("adapter.act", ["relu", "gelu", 4, True])
    trial.set_user_attr("spec", f"lora(r={r})")
    for step in range(3):
        trial.report(r * lr + step, step)
        if trial.number == 1 and step == 1:
            raise optuna.TrialPruned()
    if trial.number == 2:
        raise ValueError("diverged")
    return r * lr + drop + (1 if act == "gelu" else 0)


study.optimize(objective, n_trials=4, catch=(ValueError,))
failed = study.trials[2]
study.add_trial(optuna.create_trial(
    state=optuna.trial.TrialState.WAITING, params=failed.params,
    distributions=failed.distributions, user_attrs=failed.user_attrs,
    system_attrs={"failed_trial": failed.number, "retry_history": [failed.number]}))
study.enqueue_trial({"lora.r": 8, "train.lr": 1e-3, "lora.dropout": 0.1, "adapter.act": "relu"})

here = os.path.dirname(os.path.abspath(__file__))
read = subprocess.run([sys.executable, os.path.join(here, "optuna_load.py"), "journal:" + path, "s"],
                      check=True, capture_output=True, text=True).stdout
with open(os.path.join(out, "optuna-written.json"), "w") as f:
    f.write(read)
print(f"wrote {path} ({optuna.__version__})")
