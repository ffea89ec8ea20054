"""Run a guarded model over labelled questions, record everything, resume, re-score.

::

    from uq_guard.evaluation.runner import load_questions, make_backend, run_eval, rescore

    items = load_questions("nq_open_dev.jsonl", limit=100)
    backend = make_backend("local", max_tokens=24)           # or "openai:http://host/v1#model"
    run = run_eval(items, backend, GuardConfig(n_perturbations=4, n_samples=3), out_dir="out")
    run.records        # one EvalRecord a question, also in out/records.jsonl
    rescored = rescore(run.records, similarity="abs_cosine")   # no model call

Each question runs through :class:`~uq_guard.Guard` (policy ``annotate``,
samples kept in the report) and its :class:`EvalRecord` is appended to
``records.jsonl`` and fsync'd as soon as it finishes. Started again on the same
folder, the run skips every question already recorded without an error and
makes no model call for them; ``run.json`` holds the settings, and a resume
with other settings is refused rather than mixing two configurations.

An optional ``system`` message (e.g. "Answer in a few words.") is sent with
every question as the product would send it: the guard perturbs only the
last user message, so the system message travels with every perturbation
and every sample. The reply is generated at the product's length
(``reply_max_tokens``) while the samples may stay shorter
(``GuardConfig.max_tokens``): a reply cut at the sample length is graded
wrong for never reaching its answer. Both caps, and the system message, are
recorded in ``run.json``.

Questions run concurrently up to ``concurrency`` (useful for API backends;
a local model batches each question's prompts already, so 1 suits it).

The runner is one module a job, all importable from here:

* :mod:`~uq_guard.evaluation.backends`: :func:`make_backend`, :class:`ReplayBackend`
  and the reply-length cap;
* :mod:`~uq_guard.evaluation.resume`: ``run.json``, :func:`run_settings`,
  :func:`eval_config` and the check that makes resuming safe;
* :mod:`~uq_guard.evaluation.eval_loop`: :func:`run_eval` / :func:`arun_eval`;
* :mod:`~uq_guard.evaluation.sweeps`: :func:`run_temperatures` (TSU's input);
* :mod:`~uq_guard.evaluation.verbalized`: :func:`add_verbalized` for finished runs;
* :mod:`~uq_guard.evaluation.rescoring`: :func:`rescore`.
"""

from uq_guard.evaluation.backends import ReplayBackend, make_backend
from uq_guard.evaluation.eval_loop import EvalRun, arun_eval, run_eval
from uq_guard.evaluation.questions import load_questions
from uq_guard.evaluation.rescoring import rescore
from uq_guard.evaluation.resume import RECORDS_FILE, SETTINGS_FILE, eval_config, run_settings
from uq_guard.evaluation.sweeps import run_temperatures, temperature_folder
from uq_guard.evaluation.verbalized import aadd_verbalized, add_verbalized

__all__ = [
    "RECORDS_FILE",
    "SETTINGS_FILE",
    "EvalRun",
    "ReplayBackend",
    "aadd_verbalized",
    "add_verbalized",
    "arun_eval",
    "eval_config",
    "load_questions",
    "make_backend",
    "rescore",
    "run_eval",
    "run_settings",
    "run_temperatures",
    "temperature_folder",
]
