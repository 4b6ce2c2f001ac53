"""Token states of chosen layers of a frozen LLM (what LMORT's analysis, cache and encoders read).

Layer numbering follows ``transformers``' ``output_hidden_states``: layer 0 is the input to the first decoder block
(the embeddings), layer ``l`` (1 <= l < N) the output of block ``l``, and layer ``N = lm.num_layers`` the last
block's output after the final norm. :func:`layer_token_states` runs the LLM only up to the deepest layer asked for
(forward hooks; the forward is cut short by an exception raised in a hook and the hooks are always removed).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..errors import ModelError
from ..lm.forward import positions

if TYPE_CHECKING:
    import torch

    from ..lm.backbone import FrozenLM

POOLINGS = ("mean", "last")


class _StopForward(Exception):
    """Raised from a forward hook once the deepest wanted layer has run."""


def decoder_blocks(body) -> Sequence:
    """The ModuleList of decoder blocks of a causal LM's body (:attr:`FrozenLM.body`): ``layers`` (Llama-style
    models, GPT-NeoX, a multimodal model's language model), ``h`` (GPT-2, Falcon, Bloom) or ``decoder.layers``
    (OPT)."""
    from torch import nn

    for path in ("layers", "h", "decoder.layers"):
        obj = body
        for name in path.split("."):
            obj = getattr(obj, name, None)
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ModelError(f"cannot find the decoder blocks of {type(body).__name__}")


def tokenize(lm: "FrozenLM", texts: Sequence[str], max_length: int, padding_side: str = "right") -> dict:
    """Tokenize ``texts`` into ``input_ids``/``attention_mask`` ``[B, T]`` on the LM's device."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    check = getattr(lm, "check_context", None)
    if check is not None:
        check(max_length, "--max-length", "lower --max-length")
    tok = lm.tokenizer
    saved = tok.padding_side
    tok.padding_side = padding_side
    try:
        batch = tok(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    finally:
        tok.padding_side = saved
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if ids.shape[1] == 0:  # only empty texts (a tokenizer without BOS): one masked pad position each, as such a
        # text has in a batch with others (the LM cannot run on zero positions; pooling gives it a zero vector)
        import torch

        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        ids = torch.full((ids.shape[0], 1), pad, dtype=ids.dtype)
        mask = torch.zeros((ids.shape[0], 1), dtype=mask.dtype)
    return {"input_ids": ids.to(lm.device), "attention_mask": mask.to(lm.device)}


def layer_token_states(lm: "FrozenLM", input_ids: "torch.Tensor", attention_mask: "torch.Tensor",
                       layers: Sequence[int]) -> dict[int, "torch.Tensor"]:
    """Token states of the frozen LM at ``layers``, running it no deeper than needed.

    Args:
        input_ids, attention_mask: ``[B, T]``; any padding side (position ids are derived from the mask, so a
            text gets the same states whether it is left- or right-padded).
        layers: layer numbers in ``[0, lm.num_layers]`` (see the module docstring).

    Returns:
        layer -> ``[B, T, H]`` in the LM's dtype. Padding positions hold arbitrary values: mask them.
    """
    import torch

    n = lm.num_layers
    wanted = sorted(set(int(x) for x in layers))
    if not wanted or wanted[0] < 0 or wanted[-1] > n:
        raise ValueError(f"layers must be in [0, {n}], got {list(layers)}")
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask),
                  use_cache=False)
    body = lm.body
    with torch.no_grad():
        if wanted[-1] == n:  # the last layer carries the final norm: a full forward is needed anyway
            out = body(**kwargs, output_hidden_states=True)
            return {layer: out.hidden_states[layer] for layer in wanted}
        blocks = decoder_blocks(body)
        captured: dict[int, torch.Tensor] = {}
        deepest = wanted[-1]
        handles = []

        def pre_hook(module, args, kw):  # layer 0 = the first block's input
            captured[0] = args[0] if args else kw["hidden_states"]
            if deepest == 0:
                raise _StopForward

        def make_hook(layer: int):
            def hook(module, args, output):
                captured[layer] = output[0] if isinstance(output, (tuple, list)) else output
                if layer == deepest:
                    raise _StopForward
            return hook

        try:
            if 0 in wanted:
                handles.append(blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True))
            for layer in wanted:
                if layer > 0:
                    handles.append(blocks[layer - 1].register_forward_hook(make_hook(layer)))
            try:
                body(**kwargs)
            except _StopForward:
                pass
        finally:
            for handle in handles:
                handle.remove()
        return {layer: captured[layer] for layer in wanted}


def pool(states: "torch.Tensor", mask: "torch.Tensor", pooling: str = "mean") -> "torch.Tensor":
    """Pool token states ``[B, T, H]`` with mask ``[B, T]`` into ``[B, H]`` (fp32).

    ``mean`` averages real tokens; ``last`` takes the last real token, found from the mask so left and right
    padding give the same result. Padding values never leak in (``where``, not multiplication, so NaN/inf in
    padded rows cannot spread).
    """
    import torch

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    states = states.float()
    keep = mask.bool()
    if pooling == "mean":
        summed = torch.where(keep.unsqueeze(-1), states, torch.zeros((), dtype=states.dtype, device=states.device)).sum(1)
        return summed / keep.sum(1, keepdim=True).clamp(min=1).to(states.dtype)
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(keep, positions, torch.full_like(positions, -1)).max(dim=1).values.clamp(min=0)
    return states[torch.arange(states.shape[0], device=states.device), last]
