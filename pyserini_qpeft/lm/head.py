"""Next-token logits at chosen positions, computed as the model's own forward computes them.

The scorer runs the LM body once and applies the output projection only to the hidden states that predict query
tokens (a few percent of a prompt), so it cannot take the model's ``logits`` output. Some architectures change the
projected logits inside that forward, and a score that skips the change ranks documents differently:

- ``final_logit_softcapping`` (Gemma 2/3/3n/4): ``cap * tanh(logits / cap)``;
- ``logit_scale`` (Cohere, Cohere2): ``logits * logit_scale``;
- ``logits_scaling`` (Granite, GraniteMoe*): ``logits / logits_scaling``;
- ``lm_head_multiplier`` (Falcon-H1): ``logits * lm_head_multiplier``.

:meth:`LogitHead.verified` reads those from the (text) config and then compares its logits with the model's own
on a short input, so an architecture that post-processes logits in a way not listed here is refused with a
:class:`~pyserini_qpeft.errors.ModelError` instead of being scored wrongly.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import ModelError

if TYPE_CHECKING:
    import torch

    from .backbone import FrozenLM

logger = logging.getLogger(__name__)

# the check's input length (token ids 1..N): long enough to exercise positions, negligible next to any real batch
CHECK_TOKENS = 8


class LogitHead:
    """``[N, H]`` final hidden states -> ``[N, V]`` float32 logits, the model's post-processing included.

    Args:
        projection: the model's output embeddings (``get_output_embeddings()``).
        scale: a factor applied to the projected logits (1.0: none).
        softcap: ``cap`` of ``cap * tanh(logits / cap)`` after scaling, or None.
    """

    def __init__(self, projection: "torch.nn.Module", scale: float = 1.0, softcap: float | None = None):
        self.projection = projection
        self.scale = float(scale)
        self.softcap = float(softcap) if softcap else None

    def __call__(self, states: "torch.Tensor") -> "torch.Tensor":
        import torch

        logits = self.projection(states).float()
        if self.scale != 1.0:
            logits = logits * self.scale
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def describe(self) -> str:
        parts = ([f"x {self.scale:g}"] if self.scale != 1.0 else []) + \
                ([f"soft-capped at {self.softcap:g}"] if self.softcap else [])
        return ", ".join(parts) or "plain projection"

    @classmethod
    def from_config(cls, lm: "FrozenLM") -> "LogitHead":
        """The head of ``lm``'s model with the post-processing its (text) config names."""
        projection = lm.model.get_output_embeddings()
        if projection is None:
            raise ModelError(f"{lm.model_id}: model has no output embeddings (LM head); not a causal LM")
        config = lm.text_config

        def factor(attr: str) -> float:
            value = getattr(config, attr, None)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value else 1.0

        scale = factor("logit_scale") * factor("lm_head_multiplier") / factor("logits_scaling")
        return cls(projection, scale, getattr(config, "final_logit_softcapping", None))

    @classmethod
    def verified(cls, lm: "FrozenLM") -> "LogitHead":
        """:meth:`from_config`, checked once against the model's own logits on ``CHECK_TOKENS`` tokens.

        Raises:
            ModelError: the model is not causal (a position's logits change with a later token: BERT-like), the
                two differ by more than the precision allows (the model post-processes its logits in a way this
                class does not know), or the model's forward cannot run on plain input ids.
        """
        import torch

        head = cls.from_config(lm)
        vocab = lm.vocab_size
        ids = (torch.arange(CHECK_TOKENS, device=lm.device) % max(vocab - 1, 1) + 1).unsqueeze(0)
        mask = torch.ones_like(ids)
        later = ids.clone()
        later[0, -1] = later[0, -1] % max(vocab - 1, 1) + 1  # another last token
        try:
            with torch.no_grad():
                want = lm.model(input_ids=ids, attention_mask=mask).logits[0].float()
                changed = lm.model(input_ids=later, attention_mask=mask).logits[0].float()
        except Exception as exc:  # noqa: BLE001 -- any failure here means the model cannot be scored this way
            raise ModelError(f"{lm.model_id}: cannot check its LM head against its own forward: {exc}") from exc
        # fp32: rounding only; bf16/fp16: the projection's output is rounded before or after the post-processing
        rel = 1e-4 if lm.dtype == torch.float32 else 2e-2
        leak = (changed[:-1] - want[:-1]).abs().max().item()
        if not leak <= rel * (1.0 + want.abs().max().item()):
            raise ModelError(f"{lm.model_id}: {type(lm.model).__name__} is not a causal LM: its logits at a position "
                             f"change (by up to {leak:.3g}) when a later token changes, so it cannot score a query's "
                             f"likelihood (a bidirectional encoder such as BERT; pass a decoder-only causal LM)")
        try:
            with torch.no_grad():
                got = head(lm.body(input_ids=ids, attention_mask=mask).last_hidden_state[0])
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{lm.model_id}: cannot check its LM head against its own forward: {exc}") from exc
        err = (got - want).abs().max().item()
        if not err <= rel * (1.0 + want.abs().max().item()):
            raise ModelError(
                f"{lm.model_id}: logits from its final hidden states ({head.describe()}) differ from the model's own "
                f"by up to {err:.3g}; {type(lm.model).__name__} post-processes its logits in a way pyserini_qpeft "
                f"does not know (known: final_logit_softcapping, logit_scale, logits_scaling, lm_head_multiplier), "
                f"so its scores would rank documents wrongly")
        if head.scale != 1.0 or head.softcap:
            logger.info("%s: LM head %s (from its config, checked against its forward)", lm.model_id,
                        head.describe())
        return head
