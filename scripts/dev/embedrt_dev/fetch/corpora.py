"""Text corpora: the Debian fortunes (cleaned into one JSON-lines file) and the Lee benchmark from gensim."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from .archives import extract_files
from .cache import BuildContext
from .common import FetchError, log, run, sha256_file
from .sources import FORTUNE_PACKAGES

# ---- Debian fortunes -----------------------------------------------------------------------

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# C0/C1 control characters other than tab and newline (bells, stray mojibake bytes).
_CTRL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _overstrike(line: str) -> str:
    """Resolve terminal backspace overstrike (``_\\bX`` underline, ``X\\bX`` bold) to plain text."""
    if "\b" not in line:
        return line
    buf: list[str] = []
    pos = 0
    for ch in line:
        if ch == "\b":
            pos = max(0, pos - 1)
            continue
        if pos < len(buf):
            if ch != "_":  # an underscore struck over a letter underlines it: keep the letter
                buf[pos] = ch
        else:
            buf.append(ch)
        pos += 1
    return "".join(buf)


def clean_fortune(text: str) -> str:
    """Turn one raw fortune record into plain text.

    Strips terminal colour codes (fortunes-zh colours its titles), resolves backspace overstrike,
    drops other control characters, strips trailing whitespace on every line and removes leading
    and trailing blank lines.  Leading spaces stay: they carry ASCII-art and poem layout.
    """
    text = _ANSI_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    lines = [_CTRL_RE.sub("", _overstrike(line)).rstrip() for line in text.split("\n")]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines)


def split_fortunes(data: bytes) -> tuple[list[str], int]:
    """Split a fortune file into records (separated by lines holding a single ``%``).

    Returns the decoded records and how many were skipped for not being valid UTF-8.
    """
    records: list[bytes] = []
    current: list[bytes] = []
    for line in data.split(b"\n"):
        if line.rstrip(b"\r") == b"%":
            records.append(b"\n".join(current))
            current = []
        else:
            current.append(line)
    records.append(b"\n".join(current))
    out: list[str] = []
    bad = 0
    for rec in records:
        try:
            text = rec.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
            continue
        out.append(text)
    return out, bad


def _fortune_files(root: Path) -> list[tuple[str, Path]]:
    """List (source name, path) of the fortune text files under an unpacked ``fortunes`` folder.

    Skips ``.dat`` indexes, symlinks (the ``*.u8`` links and fortunes-it's top-level aliases point
    at files we read anyway) and the offensive ``off/`` collections.  Where a real ``X.u8`` file
    sits next to ``X``, ``X.u8`` is the UTF-8 copy and is read instead of ``X``.
    """
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_symlink() or not path.is_file() or path.suffix == ".dat" or "off" in rel.parts[:-1]:
            continue
        source = rel.as_posix()
        if source.endswith(".u8"):
            found[source[: -len(".u8")]] = path
        else:
            found.setdefault(source, path)
    return sorted(found.items())


def build_fortunes(ctx: BuildContext, out: Path) -> None:
    """Download the fortunes .debs with apt-get, unpack them with dpkg and write one JSONL corpus."""
    debs = ctx.work / "debs"
    debs.mkdir()
    packages = [p for p, _ in FORTUNE_PACKAGES]
    log(f"    apt-get download {' '.join(packages)}")
    try:
        run(["apt-get", "download", *packages], cwd=debs, what="apt-get download")
    except FetchError as first:
        # A fresh container often has no package lists yet; refresh them once and retry.
        log("    apt-get download failed; running apt-get update once and retrying")
        try:
            run(["apt-get", "update"], what="apt-get update")
        except FetchError as e:
            raise FetchError(f"{first}\n(and apt-get update failed too; run it as root: {e})") from e
        run(["apt-get", "download", *packages], cwd=debs, what="apt-get download (after update)")

    by_package: dict[str, Path] = {}
    for deb in sorted(debs.glob("*.deb")):
        fields = run(["dpkg-deb", "--field", str(deb), "Package", "Version"], what="dpkg-deb --field").stdout
        meta = dict(line.split(": ", 1) for line in fields.strip().splitlines())
        by_package[meta["Package"]] = deb
        ctx.sources[f"{meta['Package']}_{meta['Version']}.deb"] = sha256_file(deb)
    if sorted(by_package) != sorted(packages):
        raise FetchError(f"apt-get download gave {sorted(by_package)}, expected {sorted(packages)}")

    counts: dict[str, int] = defaultdict(int)
    skipped = 0
    with open(out, "w", encoding="utf-8", newline="\n") as fh:
        for package, lang in FORTUNE_PACKAGES:
            tree = ctx.work / "x" / package
            tree.parent.mkdir(exist_ok=True)
            run(["dpkg", "-x", str(by_package[package]), str(tree)], what=f"dpkg -x {package}")
            root = tree / "usr" / "share" / "games" / "fortunes"
            files = _fortune_files(root)
            if not files:
                raise FetchError(f"{package}: no fortune files under {root}")
            for source, path in files:
                records, bad = split_fortunes(path.read_bytes())
                skipped += bad
                for raw in records:
                    text = clean_fortune(raw)
                    if text:
                        fh.write(json.dumps({"lang": lang, "source": source, "text": text}, ensure_ascii=False) + "\n")
                        counts[lang] += 1
    ctx.info["records_per_lang"] = dict(counts)
    ctx.info["records_total"] = sum(counts.values())
    ctx.info["records_skipped_not_utf8"] = skipped
    log(
        f"    {sum(counts.values()):,} records: "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items())
        + (f"; {skipped} non-UTF-8 records skipped" if skipped else "")
    )


# ---- Lee corpus ----------------------------------------------------------------------------


def build_lee(ctx: BuildContext, out: Path) -> None:
    """Take the Lee document-similarity benchmark out of gensim's test data."""
    base = "gensim/test/test_data/"
    names = ("lee.cor", "similarities0-1.txt", "lee_background.cor")
    extract_files(ctx.wheel("gensim"), {base + n: n for n in names}, out)
    docs = (out / "lee.cor").read_text(encoding="utf-8", errors="replace").splitlines()
    if len(docs) != 50:
        raise FetchError(f"lee.cor: expected 50 documents, found {len(docs)}")


