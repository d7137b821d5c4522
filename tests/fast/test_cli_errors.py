"""The CLI on the tiny artifact: every error is one line naming the file (and line), exit status 2."""

from __future__ import annotations

import numpy as np
import pytest
from embedrt.cli import build_parser, main


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("embedrt "), err
    return err


def test_encode_writes_exactly_the_npy_file_asked_for(tiny_artifact, tmp_path, capsys):
    texts = tmp_path / "in.txt"
    texts.write_text("hello world\nthe cat\n", encoding="utf-8")
    out = tmp_path / "emb.npy"
    assert main(["encode", str(tiny_artifact), "-i", str(texts), "-o", str(out), "-q"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb.npy", "in.txt"]
    emb = np.load(out)
    assert emb.shape == (2, 8) and emb.dtype == np.float32
    assert f"-> {out} (2, 8) float32" in capsys.readouterr().err


def test_empty_input_gives_zero_rows_of_the_right_width(tiny_artifact, tmp_path):
    (tmp_path / "in.txt").write_text("", encoding="utf-8")
    assert main(["encode", str(tiny_artifact), "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / "e.npy")]) == 0
    emb = np.load(tmp_path / "e.npy")
    assert emb.shape == (0, 8) and emb.dtype == np.float32


@pytest.mark.parametrize("output", ["out.txt", "existing_dir"])
def test_encode_refuses_an_output_it_would_not_write_as_named(tiny_artifact, tmp_path, capsys, output):
    (tmp_path / "in.txt").write_text("hi\n", encoding="utf-8")
    (tmp_path / "existing_dir").mkdir()
    assert main(["encode", str(tiny_artifact), "-i", str(tmp_path / "in.txt"), "-o", str(tmp_path / output)]) == 2
    assert str(tmp_path / output) in _one_line_error(capsys)
    assert not (tmp_path / f"{output}.npy").exists()


def test_non_utf8_input_names_file_and_line(tiny_artifact, tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("fine\nalso fine\ncaf\xe9\n".encode("latin-1"))
    assert main(["encode", str(tiny_artifact), "-i", str(bad), "-o", str(tmp_path / "e.npy")]) == 2
    assert f"{bad}:3: not UTF-8 text (byte 0xe9)" in _one_line_error(capsys)


@pytest.mark.parametrize("damage", ["garbage", "missing", "folder"])
def test_info_on_a_damaged_artifact_is_one_line(tiny_copy, capsys, damage):
    manifest = tiny_copy / "manifest.json"
    if damage == "garbage":
        manifest.write_bytes(b"\x00\xff{")
    else:
        manifest.unlink()
        if damage == "folder":
            manifest.mkdir()
    assert main(["info", str(tiny_copy)]) == 2
    assert "manifest.json" in _one_line_error(capsys)


def test_info_says_what_would_run_here_and_why(tiny_artifact, capsys):
    assert main(["info", str(tiny_artifact)]) == 0
    out = capsys.readouterr().out
    assert "text/fp32" in out and "(picked)" in out
    assert "text: fp32: the fastest variant in this artifact that runs here" in out


def test_parser_refuses_bad_numbers_before_loading_anything(capsys):
    for argv in (["encode", "A", "-o", "x.npy", "--batch-size", "0"], ["encode", "A", "-o", "x.npy", "--threads", "x"]):
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args(argv)
        assert exit_.value.code == 2
    assert "must be a positive integer" in capsys.readouterr().err
