"""TREC CAR: tiny paragraph and outline CBOR files written here, read back through trec-car-tools."""
from __future__ import annotations

from pathlib import Path

import pytest

cbor = pytest.importorskip("cbor")
pytest.importorskip("trec_car.read_data")

from pyserini_qpeft.data import Document, load_topics, read_car_outlines, read_car_paragraphs  # noqa: E402
from pyserini_qpeft.errors import InputError  # noqa: E402
from pyserini_qpeft.types import Query  # noqa: E402

# CBOR layouts parsed by trec_car.read_data (v2.x):
#   Paragraph: [0, para_id (bytes), [ParaBody...]]
#   ParaBody:  [0, text] | [1, [tag, page_name, [link_section?], target_page_id (bytes), anchor_text]]
#   Page:      [0|1, page_name, page_id (bytes), [PageSkeleton...]]
#   Section:   [0, heading, heading_id (bytes), [PageSkeleton...]];  Para: [1, Paragraph]
#   File:      optional header ['CAR', [file_type]] (1 = outlines, 2 = paragraphs) followed by an indefinite-length
#              array (0x9f ... 0xff); without a header the items are simply concatenated.
PARAGRAPHS = [
    [0, b"6a3f0c", [[0, "Smoking "], [1, [0, "Lung cancer", [], b"enwiki:Lung%20cancer", "causes cancer"]], [0, "."]]],
    [0, b"b91e22", [[0, "Aspirin reduces the risk of heart attack."]]],
]
PARA_IN_PAGE = [1, [0, b"77aa01", [[0, "Bitter notes linger."]]]]
OUTLINES = [
    [1, "Aftertaste", b"enwiki:Aftertaste", [
        [0, "Aftertaste perception", b"Aftertaste%20perception", [
            PARA_IN_PAGE,
            [0, "Taste buds", b"Taste%20buds", []],
        ]],
        [0, "Wine", b"Wine", []],
    ]],
    [1, "Mitosis", b"enwiki:Mitosis", []],
]


def write_car(path: Path, items: list, file_type: int | None) -> Path:
    with open(path, "wb") as f:
        if file_type is None:
            for item in items:
                f.write(cbor.dumps(item))
        else:
            f.write(cbor.dumps(["CAR", [file_type]]))
            f.write(b"\x9f")
            for item in items:
                f.write(cbor.dumps(item))
            f.write(b"\xff")
    return path


@pytest.mark.parametrize("header", [True, False])
def test_read_paragraphs(tmp_path, header):
    path = write_car(tmp_path / "paragraphs.cbor", PARAGRAPHS, 2 if header else None)
    assert list(read_car_paragraphs(path)) == [
        Document("6a3f0c", "", "Smoking causes cancer."),
        Document("b91e22", "", "Aspirin reduces the risk of heart attack."),
    ]


EXPECTED_OUTLINE_QUERIES = [
    Query("enwiki:Aftertaste", "Aftertaste"),
    Query("enwiki:Aftertaste/Aftertaste%20perception", "Aftertaste Aftertaste perception"),
    Query("enwiki:Aftertaste/Aftertaste%20perception/Taste%20buds", "Aftertaste Aftertaste perception Taste buds"),
    Query("enwiki:Aftertaste/Wine", "Aftertaste Wine"),
    Query("enwiki:Mitosis", "Mitosis"),
]


@pytest.mark.parametrize("header", [True, False])
def test_read_outlines(tmp_path, header):
    path = write_car(tmp_path / "test.pages.cbor-outlines.cbor", OUTLINES, 1 if header else None)
    assert read_car_outlines(path) == EXPECTED_OUTLINE_QUERIES
    assert load_topics(str(path)) == EXPECTED_OUTLINE_QUERIES  # .cbor topics are CAR outlines


def test_wrong_or_broken_files(tmp_path):
    paragraphs = write_car(tmp_path / "paragraphs.cbor", PARAGRAPHS, 2)
    with pytest.raises(InputError, match="TREC CAR"):
        read_car_outlines(paragraphs)  # a paragraph file is not an outline file
    junk = tmp_path / "junk.cbor"
    junk.write_bytes(cbor.dumps({"not": "car"}))
    with pytest.raises(InputError, match=str(junk)):
        list(read_car_paragraphs(junk))
    with pytest.raises(InputError, match="not found"):
        read_car_paragraphs(tmp_path / "missing.cbor")  # raised at the call, not at the first next()


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("cut", [1, 3, 5, 9])
def test_a_truncated_file_is_refused_not_spun_on(tmp_path, header, cut):
    """A CBOR file cut inside a record: exit-3 error naming the file (cbor's C decoder retried the empty read
    forever at 100 % CPU). Run in a subprocess with a timeout, so a hang fails the test instead of the suite."""
    import subprocess
    import sys

    whole = write_car(tmp_path / "whole.cbor", PARAGRAPHS, 2 if header else None).read_bytes()
    cut_path = tmp_path / "cut.cbor"
    cut_path.write_bytes(whole[:-cut - (1 if header else 0)])
    outlines = write_car(tmp_path / "o.cbor", OUTLINES, 1 if header else None).read_bytes()
    (tmp_path / "cut-outlines.cbor").write_bytes(outlines[:-cut - (1 if header else 0)])
    code = ("import sys\nfrom pyserini_qpeft.data import read_car_paragraphs, read_car_outlines\n"
            "from pyserini_qpeft.errors import InputError\n"
            "for read, path in ((lambda p: list(read_car_paragraphs(p)), sys.argv[1]), (read_car_outlines, sys.argv[2])):\n"
            "    try:\n        read(path)\n        print('read')\n"
            "    except InputError as exc:\n        print('refused', exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(cut_path), str(tmp_path / "cut-outlines.cbor")],
                          capture_output=True, text=True, timeout=60)
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("refused") and "TREC CAR" in line for line in lines), done
