"""On-disk artifacts: atomic files and folders, one metadata format, the base-model check, library versions.

Every artifact the package writes (Q-PEFT and LMORT checkpoints, FAISS and Lucene index folders, runs, reports)
goes through this module:

* :func:`atomic_write` for one file and :func:`staging_dir` for a folder: written under a temporary name next
  to the target, given the permissions a plain ``open``/``mkdir`` would give under the current umask, then
  renamed into place; on error nothing is left behind and an older version stays intact. Temporary names carry
  the writer's process id, and what a killed process left is swept by the next writer (:func:`sweep_stale`).
* :func:`write_meta` / :func:`read_meta`: the one JSON metadata file of an artifact (``indent=2,
  sort_keys=True``) with a type field (see :class:`MetaSpec`), read back with a clear error when it is missing,
  corrupt or of another type.
* :func:`check_base_model`: refuses to use an artifact made with another frozen LM (exit code 6);
  :func:`save_module_folder` / :func:`load_weights` write a trained module's folder and read its weights back,
  checked against the module built to hold them.
* :func:`library_versions`: the library versions an artifact records.

Nothing heavy is imported here (no torch, no faiss).

The package's modules: :mod:`.files` (atomic files and folders, temporaries), :mod:`.outputs` (checks before work),
:mod:`.meta` (metadata and JSON), :mod:`.checks` (base model, finite weights), :mod:`.weights` (a trained module's
folder), :mod:`.provenance` (versions, commit, model card); their names are importable from here.
"""
from __future__ import annotations

from .files import (
    atomic_write, current_umask, file_sha256, is_temporary_name, publish_dir, replace_dir, staging_dir, sweep_stale,
    temp_prefix
)
from .meta import MetaSpec, dump_json, read_json, read_meta, write_json, write_meta
from .outputs import (
    check_output_path, check_replaceable, check_replaceable_file, lock_exclusively, refuse_output_over_inputs, resolve_best
)
from .checks import check_base_model, check_finite_weights
from .weights import load_weights, save_module_folder
from .provenance import CORE_PACKAGES, library_versions, model_card, provenance_lines, source_commit

__all__ = [
    "CORE_PACKAGES", "MetaSpec", "atomic_write", "check_base_model", "check_finite_weights", "check_output_path",
    "check_replaceable", "check_replaceable_file", "current_umask", "dump_json", "file_sha256", "is_temporary_name", "library_versions", "load_weights",
    "lock_exclusively", "model_card", "provenance_lines", "publish_dir", "read_json", "read_meta",
    "refuse_output_over_inputs", "replace_dir", "resolve_best", "save_module_folder", "source_commit", "staging_dir",
    "sweep_stale", "temp_prefix", "write_json", "write_meta"
]
