"""The exporter refuses sources it cannot export faithfully, naming the problem."""

from __future__ import annotations

import json
import shutil

import pytest
from embedrt_export import SourceError, export, read_source


def test_reads_real_module_chain(model_path):
    spec = read_source(model_path("all-MiniLM-L6-v2"))
    assert [m.kind for m in spec.modules] == ["Transformer", "Pooling", "Normalize"]
    assert spec.normalized
    assert spec.modules[1].describe() == {"type": "Pooling", "mode": "mean"}


def test_unknown_module_is_named(model_path, tmp_path):
    src = tmp_path / "model"
    shutil.copytree(model_path("paraphrase-MiniLM-L3-v2"), src)
    modules = json.loads((src / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": "x", "path": "x", "type": "my_package.FancyReranker"})
    (src / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(SourceError, match="my_package.FancyReranker"):
        export(src, tmp_path / "out", variants=())
    assert not (tmp_path / "out").exists()


def test_folder_that_is_not_sentence_transformers(tmp_path):
    with pytest.raises(SourceError, match="not a sentence-transformers model folder"):
        read_source(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SourceError, match="not a sentence-transformers model folder"):
        read_source(tmp_path)


def test_folder_without_modules_json_reads_as_sentence_transformers_loads_it(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "xlm-roberta"}')
    spec = read_source(tmp_path)
    assert [m.describe() for m in spec.modules] == [{"type": "Transformer"}, {"type": "Pooling", "mode": "mean"}]
    assert not spec.normalized


def test_missing_folder(tmp_path):
    with pytest.raises(SourceError, match="not found"):
        read_source(tmp_path / "absent")


def test_existing_output_needs_overwrite(model_path, tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError, match="overwrite"):
        export(model_path("paraphrase-MiniLM-L3-v2"), tmp_path / "out")
