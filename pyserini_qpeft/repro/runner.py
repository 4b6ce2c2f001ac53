"""Turn ``beir.yaml`` into CLI commands, run the missing ones (through a caller-given runner), evaluate and check.

An *artifact* is a file or folder made by one ``pyserini-qpeft`` command (index, run, checkpoint); a
*condition* names the artifact holding its final test run plus expected scores per dataset. Everything is
reused when present, so re-running is cheap and an interrupted matrix resumes. Each artifact repro makes gets a
record of its command beside it (``.<name>.repro.json``): an artifact at the path that another command made (another
profile's, an edited recipe's, one typed by hand from the README) is refused rather than reported as this
recipe's row; one without a record (made outside repro) is reused with a warning.

The pieces: :mod:`.matrix` (the YAML), :mod:`.plan` (commands, paths, records), :mod:`.execute` (running what is
missing), :mod:`.check` (evaluation and expected scores). This module keeps their names importable from here.
"""
from __future__ import annotations

from .matrix import (
    Artifact, Condition, DEFAULT_YAML, Finish, Matrix
)
from .plan import (
    Planner, RECORD_FORMAT, REPEATABLE_OPTIONS, SAMPLE_SEED, VARIANT_FLAGS, collapse_repeated_options,
    lmort_state_flags, record_path
)
from .execute import (
    CommandRunner, SELF_CHECKING, SHARED_RERANK_OPTIONS, UNSHAREABLE_RERANK_OPTIONS, execute, option_value,
    rerank_partners
)
from .check import (
    check_rows, evaluate_conditions, expected_for, raise_on_failures, write_rows_json
)

__all__ = [
    "Artifact", "Condition", "DEFAULT_YAML", "Finish", "Matrix", "Planner", "RECORD_FORMAT", "REPEATABLE_OPTIONS",
    "SAMPLE_SEED", "VARIANT_FLAGS", "collapse_repeated_options", "lmort_state_flags", "record_path",
    "CommandRunner", "SELF_CHECKING", "SHARED_RERANK_OPTIONS", "UNSHAREABLE_RERANK_OPTIONS", "execute",
    "option_value", "rerank_partners", "check_rows", "evaluate_conditions", "expected_for", "raise_on_failures",
    "write_rows_json"
]
