"""The runtime never needs torch & co, and the wheel's base requirements do not name them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from email.parser import Parser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "transformers", "optimum", "sentence_transformers")


def test_runtime_encodes_where_torch_stack_cannot_be_imported(minilm_artifact):
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        FORBIDDEN = {FORBIDDEN!r}
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in FORBIDDEN:
                    raise ImportError(f"blocked import of {{name}}")
        sys.meta_path.insert(0, Block())
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("blocker does not work")
        import embedrt
        from embedrt import util
        model = embedrt.SentenceTransformer({str(minilm_artifact)!r})
        emb = model.encode(["a torch-free sentence", "another one"])
        print(emb.shape, float(util.cos_sim(emb, emb)[0, 1]))
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
        assert not loaded, loaded
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("(2, 384)")


def test_runtime_source_has_no_torch_stack_imports():
    for path in (ROOT / "runtime" / "embedrt").rglob("*.py"):
        for line in path.read_text().splitlines():
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("import", "from"):
                assert words[1].split(".")[0] not in FORBIDDEN, f"{path}: {line}"
                # Only `embedrt export` may reach the exporter, lazily, inside the command.
                if words[1].split(".")[0] == "embedrt_export":
                    assert line.startswith(" "), f"{path}: module-level import of the exporter: {line}"


def test_built_wheel_base_requirements_have_no_torch(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(ROOT)], check=True, timeout=300)
    wheel = next(tmp_path.glob("embedrt-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        # The kernel library is built into the wheel, beside the package it is loaded from.
        names = zf.namelist()
        assert any(n.startswith("embedrt/_kernels") and n.endswith((".so", ".pyd")) for n in names)
        # Every subpackage ships; the dev tooling and the test twins do not.
        assert {"embedrt/serve/app.py", "embedrt/serve/batcher.py", "embedrt_export/export.py",
                "embedrt_export/builders/transformer.py", "embedrt_export/passes/simplify.py",
                "embedrt_export/variants/rowwise.py"} <= set(names)
        assert not any("twins" in n or n.startswith("embedrt_dev/") for n in names), names
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_name).decode())
    requires = meta.get_all("Requires-Dist") or []
    base = [r for r in requires if "extra ==" not in r]
    assert base, requires
    for req in base:
        name = req.split(";")[0].split("[")[0].split("=")[0].split(">")[0].split("<")[0].strip().lower()
        assert name not in ("torch", "transformers", "optimum", "sentence-transformers", "onnxruntime-gpu"), req
    export_extra = [r for r in requires if 'extra == "export"' in r]
    assert any(r.startswith("torch") for r in export_extra)
