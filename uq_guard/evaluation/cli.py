"""``uq-guard eval`` and ``uq-guard calibrate``: the command-line side of the eval runner.

Each command lives in its own module: :mod:`~uq_guard.evaluation.eval_command`
(run a model over questions, write the records and the report) and
:mod:`~uq_guard.evaluation.calibrate_command` (fit a calibrator and a
risk-controlled threshold from the records). ``uq_guard.cli`` finds the
runner of each as ``run_<command>_command`` here.

::

    uq-guard eval --data nq_open_dev.jsonl --model local --out runs/nq --limit 100 \\
        --n-perturbations 4 --n-samples 3 --max-tokens 24 --system "Answer in a few words."
    uq-guard calibrate --records runs/nq/records.jsonl --score guard_confidence \\
        --method isotonic --alpha 0.2 --delta 0.1 --out calib.json
    uq-guard calibrate --records runs/nq/records.jsonl --records runs/countries/records.jsonl \\
        --fuse --out calib.json
"""

from uq_guard.evaluation.calibrate_command import add_calibrate_arguments, run_calibrate_command
from uq_guard.evaluation.eval_command import (
    DEFAULT_REPLY_MAX_TOKENS,
    EVAL_DEFAULTS,
    add_eval_arguments,
    run_eval_command,
)

__all__ = [
    "DEFAULT_REPLY_MAX_TOKENS",
    "EVAL_DEFAULTS",
    "add_calibrate_arguments",
    "add_eval_arguments",
    "run_calibrate_command",
    "run_eval_command",
]
