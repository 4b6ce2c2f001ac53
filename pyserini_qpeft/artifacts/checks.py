"""The checks an artifact's weights pass before use: made with this frozen LM, finite."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import ModelError

if TYPE_CHECKING:
    from ..lm.backbone import FrozenLM


def check_base_model(saved: Mapping[str, Any] | None, lm: "FrozenLM | Mapping[str, Any]", source: str | os.PathLike,
                     made: str = "trained on") -> None:
    """Refuse an artifact made with another frozen LM.

    Args:
        saved: the LM identity the artifact recorded (``FrozenLM.identity()`` at save time).
        lm: the loaded LM, or its identity.
        source: the artifact, for the message.
        made: how the artifact used its LM, for the message ("trained on", "encoded with", "analysed with").

    Raises:
        ModelError: the identities differ (exit code 6); the message names both models and the differing keys.
    """
    saved = dict(saved or {})
    current = dict(lm.identity() if hasattr(lm, "identity") else lm)
    if saved == current:
        return
    # the full-content digest, when both sides have it, decides over the sampled fingerprint; an artifact made
    # before the digest existed is compared by the fingerprint alone
    saved_digest, current_digest = saved.pop("weights_sha256", None), current.pop("weights_sha256", None)
    saved_weights, current_weights = saved.pop("weights", None), current.pop("weights", None)
    if saved_digest and current_digest:
        saved_weights, current_weights = saved_digest, current_digest
    shape = sorted(k for k in set(saved) | set(current) if k != "model_id" and saved.get(k) != current.get(k))
    if saved_weights and current_weights and not shape:
        if saved_weights == current_weights:
            return  # the same weight files, wherever they are now (a moved folder, a Hub name and its snapshot)
        raise ModelError(f"{source}: {made} base model {saved.get('model_id')!r} whose weight files differ from "
                         f"those of the loaded {current.get('model_id')!r} (fingerprint {saved_weights} vs "
                         f"{current_weights}): the model was changed or replaced since; load the weights it was "
                         f"made with (--model), or make it again")
    if not shape and same_model(saved.get("model_id"), current.get("model_id")):
        return  # recorded before weights were (or without them): the same name or the same folder
    differs = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
    raise ModelError(f"{source}: {made} base model {saved.get('model_id')!r}, but the loaded LM is "
                     f"{current.get('model_id')!r} (differs in {', '.join(differs)}: saved "
                     f"{ {k: saved.get(k) for k in differs} }, loaded { {k: current.get(k) for k in differs} }); "
                     f"pass the matching --model (Python: LMConfig(model=...))")


def same_model(a: Any, b: Any) -> bool:
    """Whether two recorded model ids name the same model: equal, or the same existing folder (a trailing slash, a
    relative path recorded by an older version)."""
    if a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.is_dir() and pb.is_dir() and pa.resolve() == pb.resolve()


def check_finite_weights(state: Mapping[str, Any], source: str | os.PathLike) -> None:
    """Refuse weights holding NaN or Inf (they would turn every score into NaN): ModelError, exit code 6.

    ``state`` maps names to tensors (duck-typed: ``is_floating_point``, ``isfinite``; torch is not imported here).
    """
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    if bad:
        raise ModelError(f"{source}: weights hold NaN or Inf values ({', '.join(sorted(bad)[:5])}"
                         f"{' ...' if len(bad) > 5 else ''}); this checkpoint cannot score anything (retrain it)")

