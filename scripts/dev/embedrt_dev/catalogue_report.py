"""One row per catalogue model: family, head, the published layout's facts, twin parity, real-weight parity.

Each twin is laid out file by file like the model's published folder (:mod:`embedrt_dev.twins.published`)
and exported by its catalogue name, as ``embedrt export NAME`` resolves it.

    python scripts/catalogue_report.py [--only NAME ...] [--workdir DIR] [--markdown FILE]
    python -m embedrt_dev.catalogue_report ...

Exit status 1 if any row fails (export refused, or parity above 1e-6).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub

from embedrt import catalogue  # noqa: E402
from embedrt.paths import cache_dir  # noqa: E402

from .twins import catalogue as catalogue_twins  # noqa: E402
from .twins import default_assets  # noqa: E402
from .twins.published import layout_facts  # noqa: E402

GATE = 1e-6
# Registries ship no weights for the seed models themselves; GloVe 6B 50-d has the exact structure of
# average_word_embeddings_glove.6B.300d (same tokenizer, vocabulary and pooling), so it stands in.
REAL_STANDINS = {"average_word_embeddings_glove.6B.300d": "average_word_embeddings_glove.6B.50d"}


def real_parity(name: str, workdir: Path) -> float | None:
    """Max 1-cos of the stand-in's export on its probe set, or None where no real weights exist."""
    standin = REAL_STANDINS.get(name)
    if standin is None or not (cache_dir() / "models" / standin).is_dir():
        return None
    from embedrt_export import export

    manifest = export(cache_dir() / "models" / standin, workdir / "real", name=standin, overwrite=True, variants=())
    return manifest.towers["text"].variants["fp32"].parity["max_one_minus_cos"]


def rows(names: list[str], workdir: Path) -> list[dict]:
    """Check every named entry; a refused export is a failed row, not a crash."""
    assets = default_assets()
    out = []
    for name in names:
        entry = catalogue.get(name)
        facts = layout_facts(entry)
        row = {"model": name, "family": entry.family, "head": " → ".join(entry.module_stack()[1:]) or "-",
               "modules.json": "yes" if facts["modules_json"] else "no",
               "declared similarity": facts["declared_similarity"] or "none",
               "dense bias": "/".join("yes" if b else "no" for b in facts["dense_bias"]) or "-",
               "lower-case": "yes" if facts["do_lower_case"] else "no", "twin": "", "real": "n/a", "ok": False}
        try:
            result = catalogue_twins.check(entry, workdir / name, assets, cache_dir() / "assets" / "clip")
            row["source"], row["artifact"] = result.source, result.artifact
            row["twin"] = ", ".join(f"{t} {v:.1e}" for t, v in result.parity.items())
            row["similarity"] = f"{entry.similarity} ({result.similarity_source})"
            real = real_parity(name, workdir / name)
            if real is not None:
                row["real"] = f"{REAL_STANDINS[name]} {real:.1e}"
            row["ok"] = result.worst <= GATE and (real is None or real <= GATE)
        except Exception as exc:  # report the failure in the row and carry on with the others
            row["twin"] = f"{type(exc).__name__}: {exc}"[:200]
            traceback.print_exc(file=sys.stderr)
        out.append(row)
    return out


def markdown(table: list[dict]) -> str:
    """The report as a Markdown table."""
    lines = ["| model | family | head | modules.json | declared similarity | Dense bias | lower-case | exported "
             "similarity | twin parity (max 1−cos) | real weights | pass |", "|" + " --- |" * 11]
    lines += [f"| {r['model']} | {r['family']} | {r['head']} | {r['modules.json']} | {r['declared similarity']} | "
              f"{r['dense bias']} | {r['lower-case']} | {r.get('similarity', '–')} | {r['twin']} | {r['real']} | "
              f"{'pass' if r['ok'] else 'FAIL'} |" for r in table]
    passed = sum(r["ok"] for r in table)
    return "\n".join(lines) + f"\n\n{passed} passed, {len(table) - passed} failed\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(prog="catalogue_report.py", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="catalogue names (default: all)")
    parser.add_argument("--workdir", type=Path, help="where twins and artifacts go (default: a temp dir)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    names = args.only or [e.name for e in catalogue.ENTRIES]
    with tempfile.TemporaryDirectory() as tmp:
        table = rows(names, args.workdir or Path(tmp))
    text = markdown(table)
    print(text)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    return 0 if all(r["ok"] for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())
