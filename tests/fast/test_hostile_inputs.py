"""Careless and hostile callers: every bad argument or input is a clear TypeError/ValueError at call time."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import embedrt
import numpy as np
import pytest


@pytest.fixture(scope="module")
def model(tiny_artifact):
    return embedrt.SentenceTransformer(tiny_artifact)


# -- threads and workers: capped at the cores, said aloud --------------------------------------------
def test_threads_beyond_the_cores_are_capped_in_a_subprocess(tiny_artifact):
    """threads=10**6 once grew RSS by 60 MB/s until the kernel killed it; now it is the core count, with a
    warning, and a load takes well under a second."""
    script = textwrap.dedent(f"""
        import logging, os, sys, time
        logging.basicConfig(stream=sys.stdout, level=logging.WARNING)
        import embedrt
        start = time.perf_counter()
        m = embedrt.SentenceTransformer({str(tiny_artifact)!r}, threads=10**6, workers=64)
        m.encode(["hello world"] * 64)
        cores = len(os.sched_getaffinity(0))
        opts = m.engine.session.get_session_options()
        # VmHWM: this process's peak RSS (ru_maxrss would carry the forking parent's across exec)
        peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) // 1024
        print("RESULT", opts.intra_op_num_threads * m.engine.workers <= cores, time.perf_counter() - start, peak)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "threads=1000000 is more than the" in run.stdout and "workers=64 is more than" in run.stdout
    within, seconds, rss_mb = run.stdout.split("RESULT ")[1].split()
    assert within == "True" and float(seconds) < 10 and int(rss_mb) < 1000


def test_share_cpu_threads_is_capped_too():
    from embedrt.selection import available_cpus, bounded

    assert bounded("threads", 10 ** 6, available_cpus()) == available_cpus()


# -- encode_stream checks everything when called ------------------------------------------------------
def _counting(n):
    pulled = [0]

    def gen():
        for i in range(n):
            pulled[0] += 1
            yield f"text {i}"
    return gen(), pulled


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"chunk_size": -1}, ValueError, "chunk_size"), ({"chunk_size": 1.5}, ValueError, "chunk_size"),
    ({"chunk_size": "10"}, ValueError, "chunk_size"), ({"chunk_size": 0}, ValueError, "chunk_size"),
    ({"batch_size": 0}, ValueError, "batch_size"), ({"truncate_dim": "3"}, TypeError, "truncate_dim"),
    ({"prompt_name": "nope"}, ValueError, "prompt_name 'nope' not found"),
])
def test_encode_stream_refuses_bad_arguments_before_reading_anything(model, kwargs, error, match):
    stream, pulled = _counting(5000)
    with pytest.raises(error, match=match):
        model.encode_stream(stream, **kwargs)
    assert pulled[0] == 0


@pytest.mark.parametrize("bad", ["hello world", b"bytes", None, 42])
def test_encode_stream_takes_an_iterable_of_texts_only(model, bad):
    with pytest.raises(TypeError, match="iterable of texts"):
        model.encode_stream(bad)


def test_encode_stream_stays_bounded_and_equals_encode(model):
    stream, pulled = _counting(5000)
    first = next(model.encode_stream(stream, chunk_size=100))
    assert first.shape == (100, 8) and pulled[0] <= 300  # this chunk, the next one read ahead, no more
    texts = [f"text {i}" for i in range(250)]
    assert np.array_equal(np.concatenate(list(model.encode_stream(iter(texts), chunk_size=64))), model.encode(texts))


def test_encode_stream_names_a_bad_text_by_its_index_in_the_stream(model):
    texts = ["ok"] * 150 + [None]
    with pytest.raises(TypeError, match=r"sentences\[150\] must be a str"):
        list(model.encode_stream(iter(texts), chunk_size=64))


# -- numpy and odd containers -----------------------------------------------------------------------
def test_zero_dimensional_numpy_string_is_one_text(model):
    one = model.encode(np.array("hello"))
    assert one.shape == (8,) and np.array_equal(one, model.encode("hello"))
    assert model.encode(np.array(["hello", "world"])).shape == (2, 8)
    for bad in (b"bytes", 3, 2.5, {"a": 1}, None):
        with pytest.raises(TypeError, match="sentences must be a str or a list of str"):
            model.encode(bad)


# -- text that is not valid Unicode -----------------------------------------------------------------
@pytest.mark.parametrize("texts", [["ok", "\ud800"], ["ok", "word " * 1000 + "\ud800"], ["ok", "a\udfffb"]])
def test_lone_surrogates_are_refused_wherever_they_sit(model, texts):
    position = texts[1].index(texts[1][-1] if texts[1][-1] != "b" else "\udfff")
    with pytest.raises(ValueError, match=rf"sentences\[1\] is not valid Unicode: .* at character {position}"):
        model.encode(texts)


def test_surrogates_in_prompts_pairs_and_streams(model, tiny_artifact, tmp_path):
    import tiny

    with pytest.raises(ValueError, match=r"prompt is not valid Unicode"):
        model.encode(["ok"], prompt="\ud800 ")
    with pytest.raises(ValueError, match=r"sentences\[70\] is not valid Unicode"):
        list(model.encode_stream(iter(["ok"] * 70 + ["x\ud800"]), chunk_size=32))
    paired = embedrt.SentenceTransformer(tiny.build(tmp_path / "pairs", pairs=True))
    with pytest.raises(ValueError, match=r"sentences\[0\]\[1\] is not valid Unicode"):
        paired.encode([["title", "text \udc00"]])


# -- progress bar -----------------------------------------------------------------------------------
def test_progress_bar_without_stderr_or_tqdm_falls_back_to_none(model, monkeypatch):
    monkeypatch.setattr(sys, "stderr", None)
    assert model.encode(["a", "b"], show_progress_bar=True).shape == (2, 8)
    monkeypatch.undo()
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # "not installed": importing it raises ImportError
    logging.getLogger("embedrt").setLevel(logging.INFO)
    try:
        assert model.encode(["a", "b"]).shape == (2, 8)
    finally:
        logging.getLogger("embedrt").setLevel(logging.NOTSET)


# -- argument checks --------------------------------------------------------------------------------
def test_numpy_integers_count_as_ints(model):
    assert model.encode(["a", "b", "c"], batch_size=np.int64(2)).shape == (3, 8)


def test_truncate_dim_slices_as_sentence_transformers_does(model):
    assert model.encode(["a"], truncate_dim=-1).shape == (1, 7)  # as ST: [..., :-1]
    assert model.encode(["a"], truncate_dim=3).shape == (1, 3)


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"max_batch_tokens": 0}, ValueError, "max_batch_tokens"), ({"max_batch_tokens": -5}, ValueError, "max_batch"),
    ({"variant": ""}, ValueError, "non-empty str"), ({"variant": "int4"}, ValueError, "not in artifact"),
    ({"device": 5}, TypeError, "device must be a str"), ({"device": ""}, ValueError, "unknown device"),
    ({"device": "cpu:7"}, ValueError, "the CPU takes no index"), ({"threads": 0}, ValueError, "threads"),
    ({"workers": 1.5}, ValueError, "workers"), ({"providers": "CPUExecutionProvider"}, TypeError, "providers"),
    ({"truncate_dim": 1.5}, TypeError, "truncate_dim"), ({"max_batch_size": 0}, ValueError, "max_batch_size"),
])
def test_bad_load_arguments(tiny_artifact, kwargs, error, match):
    with pytest.raises(error, match=match):
        embedrt.SentenceTransformer(tiny_artifact, **kwargs)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "8", True, None])
def test_bad_batch_size(model, bad):
    with pytest.raises(ValueError, match="batch_size"):
        model.encode(["a"], batch_size=bad)


def test_bad_model_path_types(tiny_artifact):
    for bad in (None, 5, ["a"]):
        with pytest.raises(TypeError, match="model_name_or_path"):
            embedrt.SentenceTransformer(bad)
