"""Attacks on duplicates and leakage: hostile samples.csv hash cells, odd paths, many copies."""

from __future__ import annotations

import csv
import os

import pytest
from conftest import run, write_image
from test_leakage import CONFIG, make_source

from imgshard import build


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_source(tmp_path_factory.mktemp("attack_dupes"))


def edit_hashes(out, change) -> None:
    """Apply ``change(rows)`` to samples.csv's rows (dicts) and write it back."""
    path = os.path.join(out, "samples.csv")
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        fields, rows = reader.fieldnames, list(reader)
    change(rows)
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fields)
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("column, cell", [
    ("dhash", "-fffffffffffffff"),  # int(..., 16) takes a sign: a negative 64-bit hash
    ("dhash", "0x00000000000001"),  # ... and a 0x prefix
    ("dhash", " 00000000000001 "),  # ... and spaces
    ("dhash", "0000_0000_000001"),  # ... and underscores
    ("pixel_hash", "00 11 22 33 44 55 66 77 88 99 aa"),  # fromhex skips spaces: 11 bytes
])
def test_hash_cells_python_parses_but_a_build_never_writes_are_left_out(source, tmp_path,
                                                                         column, cell):
    out = tmp_path / "out"
    build(source, str(out), CONFIG, workers=1)
    edit_hashes(out, lambda rows: rows[0].update({column: cell}))
    result = run("verify", out, "--deep")
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1)


@pytest.mark.parametrize("edit", [{"index": "-1"}, {"index": "999999"}, {"shard": "../../x.npy"}])
def test_an_append_leaves_out_rows_that_name_no_stored_sample(tmp_path, edit):
    """An edited old row (sharing another's fingerprint, so it would be read back) that names a
    row or shard the manifest does not hold: the append finishes, its groups without that row."""
    src = make_source(tmp_path)
    out = tmp_path / "out"
    build(src, str(out), CONFIG, workers=1)

    def change(rows):
        rows[0].update(pixel_hash=rows[1]["pixel_hash"], **edit)
    edit_hashes(out, change)
    write_image(os.path.join(src, "train", "c0", "new.png"), seed=100)
    result = run("append", src, out, "--workers", "1")
    assert result.exit_code == 0, result.output
