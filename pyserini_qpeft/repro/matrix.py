"""The reproduction matrix (``beir.yaml``): artifacts, conditions and profiles, with ``base:`` inheritance and
strict YAML loading. What the commands are made of; :mod:`.plan` turns them into command lines."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ..errors import InputError


DEFAULT_YAML = Path(__file__).with_name("beir.yaml")


@dataclass(frozen=True)
class Artifact:
    name: str
    output: str
    command: str
    needs: tuple[str, ...] = ()
    requires_split: str | None = None
    done: str | None = None  # a path (relative to output) whose existence means the artifact is complete


@dataclass(frozen=True)
class Condition:
    name: str
    run: str
    first_stage: str
    reranker: str
    checkpoint: str | None = None
    trained: bool = False
    expected: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    compare_to: tuple[str, ...] = ()  # conditions the report also tests this one against (besides the baseline)


@dataclass
class Matrix:
    artifacts: dict[str, Artifact]
    conditions: dict[str, Condition]
    profiles: dict[str, dict[str, str]]
    metrics: tuple[str, ...]
    seeds: dict[str, int] = field(default_factory=dict)  # base training seeds ({qpeft_seed}, {lmort_seed})
    dtype: str = "auto"  # {dtype}: the --dtype of every command that runs a model (a profile may set its own)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_YAML) -> "Matrix":
        data = _load_yaml_strict(path)
        artifacts = _resolve_artifacts(data["artifacts"], str(path))
        conditions = {name: Condition(name=name, run=c["run"], first_stage=c["first_stage"], reranker=c["reranker"],
                                      checkpoint=c.get("checkpoint"), trained=bool(c.get("trained", False)),
                                      expected=c.get("expected", {}) or {},
                                      compare_to=_names(c.get("compare_to")))
                      for name, c in data["conditions"].items()}
        for cond in conditions.values():
            if cond.run not in artifacts:
                raise InputError(f"condition {cond.name!r} names unknown artifact {cond.run!r}", str(path))
            for other in cond.compare_to:
                if other not in conditions or other == cond.name:
                    raise InputError(f"condition {cond.name!r} compares to unknown condition {other!r}", str(path))
        for art in artifacts.values():
            for need in art.needs:
                if need not in artifacts:
                    raise InputError(f"artifact {art.name!r} needs unknown artifact {need!r}", str(path))
        seeds = data.get("seeds", {}) or {}
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in seeds.values()):
            raise InputError(f"seeds must map names to integers, got {seeds!r}", str(path))
        from ..lm.backbone import DTYPES

        dtype = data.get("dtype", "auto")
        if dtype not in DTYPES:
            raise InputError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}", str(path))
        profiles = _resolve_profiles(data.get("profiles", {"full": {}}) or {}, str(path))
        return cls(artifacts, conditions, profiles, tuple(data["metrics"]), dict(seeds), dtype)


def _names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """A YAML list of names, or one name alone (``compare_to: bm25+upr``), as a tuple."""
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _resolve_artifacts(raw: Mapping[str, Mapping[str, Any]], path: str) -> dict[str, Artifact]:
    """Artifacts with ``base: OTHER`` resolved (:func:`_resolve_bases`): OTHER's command, needs, done and
    requires_split, the artifact's own keys on top (its ``output`` is required: two artifacts never share a path),
    then its ``options`` (``{--flag: value}``) set in the command (:func:`_set_options`). So another training of one
    recipe (e.g. on another seed) states only what differs and cannot drift from the first."""
    def finish(name: str, own: dict[str, Any], inherited: dict[str, Any] | None) -> dict[str, Any]:
        options = own.pop("options", None) or {}
        if inherited is None and options:
            raise InputError(f"artifact {name!r} sets options without a base command", path)
        if inherited is not None and "output" not in own:
            raise InputError(f"artifact {name!r} must name its own output (its base has one)", path)
        merged = {**(inherited or {}), **own}
        command = " ".join(str(merged.get("command", "")).split())
        if not command or "output" not in merged:
            raise InputError(f"artifact {name!r} needs an output and a command", path)
        return {**merged, "command": _set_options(command, options, f"artifact {name!r}", path)}

    return {name: Artifact(name=name, output=a["output"], command=a["command"], needs=tuple(a.get("needs", ())),
                           requires_split=a.get("requires_split"), done=a.get("done"))
            for name, a in _resolve_bases(raw, "artifact", path, finish).items()}


def _set_options(command: str, options: Mapping[str, Any], where: str, path: str) -> str:
    """``command`` (a template, one space between words) with each ``--flag: value`` of ``options`` set: replaced in
    place when the flag is there once, else inserted after the previous option of ``options`` (first: at the end)."""
    words = command.split(" ")
    insert_at = len(words)
    for flag, value in options.items():
        value = str(value)
        if not str(flag).startswith("--") or not value or value.split() != [value]:
            raise InputError(f"{where}: options must map --flags to one word each, got {flag!r}: {value!r}", path)
        if words.count(flag) > 1:
            raise InputError(f"{where}: {flag} appears more than once in the base command", path)
        if flag in words:
            at = words.index(flag) + 1
            if at == len(words) or words[at].startswith("--"):
                raise InputError(f"{where}: {flag} has no value in the base command", path)
            words[at] = value
            insert_at = at + 1
        else:
            words[insert_at:insert_at] = [flag, value]
            insert_at += 2
    return " ".join(words)


def _resolve_profiles(raw: Mapping[str, Mapping[str, Any]], path: str) -> dict[str, dict[str, Any]]:
    """Profiles with ``base: OTHER`` resolved (:func:`_resolve_bases`), so that a profile states only what it
    changes."""
    return _resolve_bases(raw, "profile", path)


Finish = Callable[[str, dict[str, Any], dict[str, Any] | None], dict[str, Any]]


def _resolve_bases(raw: Mapping[str, Mapping[str, Any]], what: str, path: str, finish: Finish | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Entries with ``base: OTHER`` resolved: OTHER's (resolved) values, then the entry's own on top, or what
    ``finish(name, own values, OTHER's resolved values or None)`` makes of them. An unknown base or a cycle is
    refused."""
    resolved: dict[str, dict[str, Any]] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
        if name in resolved:
            return resolved[name]
        if name in chain:
            raise InputError(f"{what} base cycle: {' -> '.join(chain + (name,))}", path)
        own = dict(raw[name] or {})
        base = own.pop("base", None)
        if base is not None and base not in raw:
            raise InputError(f"{what} {name!r} has unknown base {base!r}", path)
        inherited = resolve(base, chain + (name,)) if base is not None else None
        resolved[name] = finish(name, own, inherited) if finish else {**(inherited or {}), **own}
        return resolved[name]

    for name in raw:
        resolve(name, ())
    return resolved


def _load_yaml_strict(path: str | Path) -> dict:
    """``yaml.safe_load`` that refuses a mapping with a repeated key (plain YAML keeps the last one silently, which
    would drop expected scores without a word)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise InputError(f"repeated key {key!r} (line {key_node.start_mark.line + 1})", str(path))
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=StrictLoader)
