"""BEIR datasets: the folder layout, the search path for dataset names, and safe downloading.

A BEIR dataset is a folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``. Datasets are found
by path, or by name on a search path: the folders in ``$PYSERINI_QPEFT_DATA`` (``os.pathsep``-separated), then
``<cache_dir>/beir`` where :func:`download_beir` puts the official zips.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Iterator

from ..artifacts import sweep_stale, temp_prefix
from ..errors import InputError
from ..paths import cache_dir
from ..types import Query
from .corpus import Document, corpus_dict, read_corpus_jsonl
from .formats import read_qrels_file, read_queries_jsonl

logger = logging.getLogger(__name__)

ENV_VAR = "PYSERINI_QPEFT_DATA"
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
# BEIR zips that hold several datasets, one sub-folder each (Pyserini: beir-v1.0.0-cqadupstack-android-test).
NESTED_DATASETS = ("cqadupstack",)
DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DATASET_NAME_RULE = "ASCII letters, digits, '_', '.' and '-' (not starting with one of the last three)"


# --------------------------------------------------------------------------------------------------------------
# Finding datasets


def _data_path_entries() -> list[Path]:
    """The folders ``$PYSERINI_QPEFT_DATA`` names, in order."""
    return [Path(p).expanduser() for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]


def data_search_path() -> list[Path]:
    """Folders searched for BEIR datasets by name: ``$PYSERINI_QPEFT_DATA`` entries, then ``cache_dir()/beir``."""
    entries = _data_path_entries()
    try:
        return entries + [cache_dir() / "beir"]
    except InputError:  # no cache root here (no home folder): the data path alone
        return entries


def _is_beir_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "corpus.jsonl").is_file() or (path / "corpus.jsonl.gz").is_file())


def _candidates(root: Path, name: str) -> list[Path]:
    """Where dataset ``name`` may lie under ``root`` (``cqadupstack-android`` is ``cqadupstack/android`` in BEIR)."""
    out = [root / name]
    for nested in NESTED_DATASETS:
        if name.startswith(nested + "-"):
            out.append(root / nested / name[len(nested) + 1:])
    return out


def find_dataset(name_or_path: str | os.PathLike, download: bool = False) -> Path:
    """A BEIR dataset folder given its path or its name on :func:`data_search_path`.

    Args:
        name_or_path: a folder holding ``corpus.jsonl``, or a BEIR dataset name such as ``scifact``.
        download: fetch the official BEIR zip into ``cache_dir()/beir`` when the name is not found.

    Raises:
        InputError: the path is not a BEIR folder, or the name is nowhere on the search path (the message lists
            the folders searched).
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if _is_beir_folder(path):
        return path
    looks_like_path = os.sep in text or (os.altsep is not None and os.altsep in text) or path.exists()
    if looks_like_path:
        raise InputError("not a BEIR dataset folder (no corpus.jsonl)" if path.exists() else "no such file or folder",
                         text)
    if not DATASET_NAME.match(text):
        raise InputError(f"invalid dataset name {text!r}: a name is {DATASET_NAME_RULE}; give the folder's path "
                         f"instead")
    searched = []
    for root in data_search_path():
        for candidate in _candidates(root, text):
            searched.append(str(candidate))
            if _is_beir_folder(candidate):
                return candidate
    if download:
        zip_name = next((n for n in NESTED_DATASETS if text.startswith(n + "-")), text)
        folder = download_beir(zip_name)
        for candidate in _candidates(folder.parent, text):
            if _is_beir_folder(candidate):
                return candidate
        raise InputError(f"downloaded {zip_name}.zip but found no dataset {text!r} in it", str(folder))
    # a data path naming the folder above the datasets (e.g. data/ for data/beir/scifact): say which entry to give
    nearby = [root / "beir" for root in _data_path_entries()
              if any(_is_beir_folder(c) for c in _candidates(root / "beir", text))]
    hint = f" ({nearby[0]} holds it: add that folder to ${ENV_VAR})" if nearby else ""
    raise InputError(
        f"BEIR dataset {text!r} not found{hint}; looked in: {', '.join(searched)}. Put the dataset folder in one of "
        f"the folders of ${ENV_VAR} ({os.pathsep}-separated), pass its path, or download it "
        f"(`index --download` or `repro --download` on the CLI, download=True in Python, fetches "
        f"{BEIR_URL.format(name=text)})"
    )


# --------------------------------------------------------------------------------------------------------------
# Downloading


def _fetch(url: str, dest: IO[bytes], progress: bool) -> None:
    """Stream ``url`` into ``dest`` (http(s) or file://), with a progress bar when the size is known."""
    import urllib.error
    import urllib.request

    try:
        response = urllib.request.urlopen(url, timeout=60)  # noqa: S310 (URL is the user's choice or BEIR's)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise InputError(f"could not download {url}: {exc}") from exc
    with response:
        total = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(total) if total and total.isdigit() else None, unit="B", unit_scale=True,
                       desc=url.rsplit("/", 1)[-1])
        try:
            while True:
                chunk = response.read(1 << 20)
                if not chunk:
                    break
                dest.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        except OSError as exc:
            raise InputError(f"download of {url} failed: {exc}") from exc
        finally:
            if bar is not None:
                bar.close()


def _safe_extract(archive: zipfile.ZipFile, target: Path, source: str) -> None:
    """Extract every member below ``target``; refuse the whole archive if any member would land outside it."""
    root = target.resolve()
    for info in archive.infolist():
        name = info.filename
        dest = (root / name).resolve()
        if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in Path(name.replace("\\", "/")).parts \
                or (dest != root and root not in dest.parents):
            raise InputError(f"refusing zip member {name!r}: it would be written outside {target}", source)
    size = sum(info.file_size for info in archive.infolist())
    free = shutil.disk_usage(root).free
    if size > free:  # a zip that unpacks to more than the disk holds (a damaged or hostile one)
        raise InputError(f"the zip unpacks to {size / 2**30:.1f} GiB and {root} has {free / 2**30:.1f} GiB free",
                         source)
    try:
        archive.extractall(root)
    except (zipfile.BadZipFile, RuntimeError, EOFError) as exc:  # bad CRC, encrypted, truncated
        raise InputError(f"damaged zip, cannot unpack it ({exc}); download it again", source) from None
    except OSError as exc:  # a member clashing with another, or the disk (full, quota)
        raise InputError(f"cannot unpack the zip into {root}: {exc}", source) from None


def download_beir(name: str, url: str | None = None, target_dir: str | os.PathLike | None = None,
                  progress: bool = True) -> Path:
    """Download and unpack a BEIR dataset zip; returns ``target_dir/name``.

    The zip is streamed to a temp file, checked member by member (a member that would land outside the target,
    e.g. ``../evil``, aborts the whole extraction), extracted into a temp folder beside the target and renamed
    into place, so an interrupted or refused download leaves nothing behind. An existing ``target_dir/name``
    is returned as is.

    Args:
        name: BEIR dataset name (``scifact``); also the folder name created.
        url: where to fetch the zip (default: the official BEIR URL); ``file://`` URLs work.
        target_dir: folder that receives the dataset (default ``cache_dir()/beir``).
        progress: show a download progress bar.
    """
    if not DATASET_NAME.match(name):
        raise InputError(f"invalid dataset name {name!r}")
    url = url or BEIR_URL.format(name=name)
    target_root = Path(target_dir) if target_dir is not None else cache_dir() / "beir"
    final = target_root / name
    if final.is_dir():
        return final
    target_root.mkdir(parents=True, exist_ok=True)
    sweep_stale(final)  # a download killed earlier
    work = Path(tempfile.mkdtemp(prefix=temp_prefix(final), suffix=".tmp", dir=target_root))
    try:
        zip_path = work / f"{name}.zip"
        logger.info("downloading %s", url)
        with open(zip_path, "wb") as out:
            _fetch(url, out, progress)
        if not zipfile.is_zipfile(zip_path):
            raise InputError("downloaded file is not a zip archive", url)
        extracted = work / "x"
        extracted.mkdir()
        try:
            archive = zipfile.ZipFile(zip_path)
        except (zipfile.BadZipFile, OSError) as exc:  # a damaged central directory
            raise InputError(f"damaged zip, cannot read it ({exc}); download it again", url) from None
        with archive:
            _safe_extract(archive, extracted, url)
        zip_path.unlink()
        entries = [p for p in extracted.iterdir() if p.name != "__MACOSX"]
        if (extracted / name).is_dir():
            folder = extracted / name
        elif any(p.name in ("corpus.jsonl", "corpus.jsonl.gz") for p in entries):
            folder = extracted
        elif len(entries) == 1 and entries[0].is_dir():
            folder = entries[0]
        else:
            raise InputError(f"zip holds no folder {name!r} and no corpus.jsonl", url)
        if not _is_beir_folder(folder) and name not in NESTED_DATASETS:  # installed, it would stay "found" broken
            raise InputError(f"zip holds no corpus.jsonl in {folder.relative_to(extracted) or '.'}: not a BEIR "
                             f"dataset, nothing installed", url)
        try:
            os.rename(folder, final)
        except OSError:
            if not final.is_dir():  # not a concurrent download that won the race
                raise
        return final
    finally:
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# A dataset folder


class BeirDataset:
    """A BEIR dataset folder: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError("BEIR dataset folder not found", str(self.path))
        corpus = self.path / "corpus.jsonl"
        if not corpus.is_file() and (self.path / "corpus.jsonl.gz").is_file():
            corpus = self.path / "corpus.jsonl.gz"
        if not corpus.is_file():
            raise InputError("not a BEIR dataset folder (no corpus.jsonl)", str(self.path))
        self.corpus_path = corpus
        self.name = self.path.name
        self._corpus: dict[str, Document] | None = None
        self._queries: dict[str, str] | None = None

    @classmethod
    def find(cls, name_or_path: str | os.PathLike, download: bool = False) -> "BeirDataset":
        """The dataset at a path or with a name on the search path (see :func:`find_dataset`)."""
        return cls(find_dataset(name_or_path, download=download))

    def __repr__(self) -> str:
        return f"BeirDataset({str(self.path)!r})"

    def iter_corpus(self) -> Iterator[Document]:
        """Stream the corpus in file order."""
        return read_corpus_jsonl(self.corpus_path)

    def load_corpus(self, progress: bool = False) -> dict[str, Document]:
        """docid -> Document, read once and cached on this instance. Duplicate docids are an error."""
        if self._corpus is None:
            self._corpus = corpus_dict(self.iter_corpus(), self.corpus_path, progress, f"{self.name} corpus")
        return self._corpus

    def queries(self) -> dict[str, str]:
        """qid -> query text, all queries of the dataset (every split)."""
        if self._queries is None:
            self._queries = read_queries_jsonl(self.path / "queries.jsonl")
        return dict(self._queries)

    def splits(self) -> list[str]:
        """Split names with a qrels file, sorted."""
        folder = self.path / "qrels"
        return sorted(p.stem for p in folder.glob("*.tsv")) if folder.is_dir() else []

    def qrels_path(self, split: str) -> Path:
        """``qrels/<split>.tsv``; InputError naming the available splits when it is missing."""
        path = self.path / "qrels" / f"{split}.tsv"
        if not path.is_file():
            available = ", ".join(self.splits()) or "none"
            raise InputError(f"dataset {self.name} has no split {split!r} (splits: {available})", str(self.path))
        return path

    def qrels(self, split: str) -> dict[str, dict[str, int]]:
        """qid -> docid -> relevance for ``split``."""
        return read_qrels_file(self.qrels_path(split))

    def topics(self, split: str) -> list[Query]:
        """The queries judged in ``split``, in order of first appearance in its qrels file."""
        qrels = self.qrels(split)
        queries = self.queries()
        missing = [qid for qid in qrels if qid not in queries]
        if missing:
            raise InputError(f"{len(missing)} query ids of qrels/{split}.tsv are not in queries.jsonl "
                             f"(first: {missing[0]})", str(self.path))
        return [Query(qid, queries[qid]) for qid in qrels]
