"""Provider choice, GPU option building, bucketing and IO binding — on real CPU sessions; no GPU is faked,
only (in one test) the provider a session reports."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from dataclasses import replace

import embedrt
import numpy as np
import pytest
from embedrt.engine import Engine, bucket_width, default_buckets
from embedrt.iobinding import IOBindingRunner
from embedrt.providers import ProviderUnavailableError, ShapeProfile, plan_providers, specialize
from embedrt_export.fidelity import one_minus_cos

TEXTS = ["short", "a somewhat longer sentence about providers", "x " * 300, "", "Привет, мир"]


def test_device_strings_become_provider_lists():
    assert plan_providers().requested == ("CPUExecutionProvider",)
    cuda = plan_providers("cuda:1")
    assert cuda.device == "cuda" and cuda.device_id == 1 and cuda.on_gpu
    name, options = cuda.requested[0]
    assert name == "CUDAExecutionProvider" and options["device_id"] == 1
    assert options["arena_extend_strategy"] == "kSameAsRequested"
    assert options["use_tf32"] == 0  # exact fp32, as torch keeps it
    assert cuda.requested[-1] == "CPUExecutionProvider"
    trt = plan_providers("tensorrt")
    assert [p if isinstance(p, str) else p[0] for p in trt.requested] == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    custom = plan_providers(providers=[("CPUExecutionProvider", {})])
    assert custom.device == "cpu" and custom.explicit
    # An explicit list runs on its first provider's device: a CUDA list is a GPU plan, never a CPU one.
    listed = plan_providers(providers=[("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"])
    assert listed.device == "cuda" and listed.device_id == 1 and listed.on_gpu
    for bad in ("gpu", "cuda:x", "tpu:0", "", "cpu:7", "cuda:-1"):
        with pytest.raises(ValueError, match="device"):
            plan_providers(bad)
    for bad in (5, 1.0, b"cpu"):
        with pytest.raises(TypeError, match="device must be a str"):
            plan_providers(bad)
    with pytest.raises(TypeError, match=r"providers\[0\]"):
        plan_providers(providers=[5])
    with pytest.raises(ValueError, match="not both"):
        plan_providers("cpu", ["CPUExecutionProvider"])


def test_workers_change_speed_not_results(minilm_artifact, corpus_1000):
    one = embedrt.SentenceTransformer(minilm_artifact, threads=2, workers=1)
    two = embedrt.SentenceTransformer(minilm_artifact, threads=2, workers=2)
    assert one.engine.session.get_session_options().intra_op_num_threads == 2
    assert two.engine.session.get_session_options().intra_op_num_threads == 1
    texts = corpus_1000[:200]  # 13 batches of 16: the same batches either way
    assert np.array_equal(one.encode(texts, batch_size=16), two.encode(texts, batch_size=16))
    # A one-batch call is halved for the two workers; batch invariance keeps it within fp32 rounding.
    assert one_minus_cos(one.encode(texts[:16], batch_size=16), two.encode(texts[:16], batch_size=16)).max() <= 1e-6


def test_models_can_share_one_cpu_thread_pool(minilm_artifact, corpus_1000, tmp_path):
    """embedrt.share_cpu_threads: later CPU sessions run on ONNX Runtime's one global pool, one batch at a time,
    with the results of sessions on their own pools; a model's own `threads` is ignored aloud; the pool's size
    cannot change. In a subprocess: the pool is process-wide."""
    with pytest.raises(ValueError, match="threads"):
        embedrt.share_cpu_threads(0)  # refused before anything is set
    texts = corpus_1000[:48]
    out = tmp_path / "shared.npy"
    script = textwrap.dedent(f"""
        import json, logging, sys
        import numpy as np
        import embedrt
        logging.basicConfig(stream=sys.stdout, level=logging.WARNING)
        texts = json.loads(sys.argv[1])
        assert embedrt.share_cpu_threads(2) == 2 and embedrt.share_cpu_threads(2) == 2
        models = [embedrt.SentenceTransformer({str(minilm_artifact)!r}), embedrt.SentenceTransformer(
            {str(minilm_artifact)!r}, threads=1)]
        for model in models:
            assert model.engine.workers == 1
            assert model.engine.session.get_session_options().use_per_session_threads is False
        np.save({str(out)!r}, np.stack([model.encode(texts, batch_size=16) for model in models]))
        try:
            embedrt.share_cpu_threads(1)
        except ValueError as e:
            print("refused:", e)
    """)
    run = subprocess.run([sys.executable, "-c", script, json.dumps(texts)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "threads=1 ignored: this process's CPU sessions share one pool of 2 threads" in run.stdout
    assert "refused: share_cpu_threads: this process already shares a pool of 2 threads; it cannot become 1" \
        in run.stdout
    own = embedrt.SentenceTransformer(minilm_artifact, threads=2).encode(texts, batch_size=16)
    for shared in np.load(out):
        assert one_minus_cos(shared, own).max() <= 1e-6


def test_tensorrt_profile_and_cache_are_keyed_by_graph():
    profile = ShapeProfile(max_batch=64, opt_seq=128, max_seq=256)
    plan = specialize(plan_providers("tensorrt:2"), "a" * 64, ("input_ids", "attention_mask"), profile, "/c")
    name, options = plan.requested[0]
    assert name == "TensorrtExecutionProvider" and options["device_id"] == 2
    assert options["trt_profile_min_shapes"] == "input_ids:1x1,attention_mask:1x1"
    assert options["trt_profile_opt_shapes"] == "input_ids:64x128,attention_mask:64x128"
    assert options["trt_profile_max_shapes"] == "input_ids:64x256,attention_mask:64x256"
    assert options["trt_engine_cache_enable"] and options["trt_fp16_enable"]
    other = specialize(plan_providers("tensorrt:2"), "b" * 64, ("input_ids", "attention_mask"), profile, "/c")
    assert other.requested[0][1]["trt_engine_cache_path"] != options["trt_engine_cache_path"]
    assert specialize(plan_providers("cuda"), "a" * 64, ("input_ids",), profile) == plan_providers("cuda")


def test_buckets_bound_the_number_of_shapes():
    assert default_buckets(256) == (16, 32, 64, 128, 256)
    assert default_buckets(384) == (16, 32, 64, 128, 256, 384)
    assert [bucket_width(n, (16, 32, 64)) for n in (0, 1, 16, 17, 64, 65)] == [16, 16, 16, 32, 64, 65]
    assert bucket_width(7, None) == 7


def test_missing_gpu_provider_warns_and_says_what_runs(minilm_artifact, caplog):
    with caplog.at_level(logging.WARNING, logger="embedrt.providers"):
        model = embedrt.SentenceTransformer(minilm_artifact, device="cuda")
    assert "CUDAExecutionProvider" in caplog.text and "not available" in caplog.text
    assert model.providers["active"] == ["CPUExecutionProvider"]
    assert model.providers["requested"][0][0] == "CUDAExecutionProvider"
    assert model.encode("still works").shape == (384,)


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_strict_refuses_instead_of_falling_back(minilm_artifact, device):
    with pytest.raises(ProviderUnavailableError, match="not available"):
        embedrt.SentenceTransformer(minilm_artifact, device=device, strict=True)


class _StrictOrt:
    """Stands in for onnxruntime with a GPU: the session checks what ORT 1.31 checks on a GPU build
    (seen on an H200: an explicit CPU EP plus disabled CPU fallback is refused), then reports
    the providers a GPU build without TensorRT's libraries activates."""

    def __init__(self, real):
        self.real, self.seen, self.disabled = real, [], []

    def __getattr__(self, name):
        return getattr(self.real, name)

    def get_available_providers(self):
        return ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]

    def InferenceSession(self, path, sess_options=None, providers=(), disabled_optimizers=None):  # noqa: N802
        names = [p if isinstance(p, str) else p[0] for p in providers]
        self.seen.append(names)
        self.disabled.append(disabled_optimizers)
        try:
            no_cpu_fallback = sess_options.get_session_config_entry("session.disable_cpu_ep_fallback") == "1"
        except RuntimeError:  # ORT raises for a key that was never set
            no_cpu_fallback = False
        if "CPUExecutionProvider" in names and no_cpu_fallback:
            raise RuntimeError("Conflicting session configuration: explicitly added the CPU EP to the session, "
                               "but also disabled fallback to the CPU EP via session configuration options.")

        class Session:
            def get_providers(self):
                return [n for n in names if n != "TensorrtExecutionProvider"]
        return Session()


@pytest.mark.parametrize("device", ["cuda", "tensorrt"])
def test_strict_gpu_session_is_one_ort_accepts(minilm_artifact, monkeypatch, device):
    """strict=True on a GPU: the session is created (CUDA keeps ORT's CPU EP for shape nodes), and a
    provider ORT did not activate (TensorRT without libnvinfer) is an error, not a quiet CUDA run."""
    from embedrt import providers

    fake = _StrictOrt(providers.import_onnxruntime())
    monkeypatch.setattr(providers, "import_onnxruntime", lambda: fake)
    path = str(minilm_artifact / "text" / "model.onnx")
    plan = plan_providers(device=device)
    if device == "cuda":
        assert providers.create_session(path, plan, strict=True).get_providers()[0] == "CUDAExecutionProvider"
    else:
        with pytest.raises(ProviderUnavailableError, match="activated"):
            providers.create_session(path, plan, strict=True)
    assert fake.seen[-1][-1] == "CPUExecutionProvider"
    # ORT's fused BiasGelu and SkipLayerNorm are kept on GPUs; on CPU they are slower than their parts.
    assert fake.disabled[-1] == []
    providers.create_session(path, plan_providers("cpu"), strict=True)
    assert fake.disabled[-1] == ["BiasGeluFusion", "SkipLayerNormFusion"]


def test_tensorrt_profile_reaches_the_position_limit(minilm_artifact):
    """max_seq_length raised after load (256 -> 512, MiniLM's position limit) stays inside the
    TensorRT engine's profile, which is built for the position limit, not the default length."""
    model = embedrt.SentenceTransformer(minilm_artifact, device="tensorrt")  # falls back to CPU here, with a warning
    options = model.engine.info.requested_providers[0][1]
    assert model.max_seq_length == 256 and model.manifest.tokenizer.model_max_length == 512
    assert options["trt_profile_max_shapes"].endswith("x512") and "x128" in options["trt_profile_opt_shapes"]


def test_max_seq_length_past_the_tensorrt_profile_is_refused(minilm_artifact, tmp_path, monkeypatch):
    """Without a known position limit the profile ends at max_seq_length: going past it on an active
    TensorRT session is a ValueError at the setter, not an ONNX Runtime error at the next encode."""
    import json
    import shutil

    import embedrt.loader

    copy = tmp_path / "artifact"
    shutil.copytree(minilm_artifact, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["tokenizer"]["model_max_length"] = None
    (copy / "manifest.json").write_text(json.dumps(manifest))
    real = embedrt.loader.create_session

    class ReportsTensorRT(_SpySession):
        def get_providers(self):
            return ["TensorrtExecutionProvider", "CPUExecutionProvider"]

    monkeypatch.setattr(embedrt.loader, "create_session", lambda *a, **k: ReportsTensorRT(real(*a, **k)))
    model = embedrt.SentenceTransformer(copy, device="tensorrt")
    model.max_seq_length = 128
    with pytest.raises(ValueError, match="max_seq_length 300 exceeds 256, the longest sequence this model's TensorRT"):
        model.max_seq_length = 300
    assert model.max_seq_length == 128


class _SpySession:
    """A real session that records the shapes it is given."""

    def __init__(self, session):
        self._session = session
        self.shapes = set()

    def __getattr__(self, name):
        return getattr(self._session, name)

    def run(self, outputs, feeds):
        self.shapes.add(feeds["input_ids"].shape[1])
        return self._session.run(outputs, feeds)


def test_bucketed_and_io_bound_runs_match_plain_runs(minilm_artifact, corpus_1000):
    model = embedrt.SentenceTransformer(minilm_artifact)
    session = model.engine.session
    texts = corpus_1000[:300] + TEXTS
    encoded = model.tokenizer.encode(texts)
    plain = model.engine.run(encoded).sentence_embedding

    info = model.engine.info
    spy = _SpySession(session)
    bucketed = Engine(spy, info, model.tokenizer.pad_token_id, seq_buckets=default_buckets(256)).run(encoded)
    assert spy.shapes <= set(default_buckets(256))
    assert one_minus_cos(plain, bucketed.sentence_embedding).max() <= 1e-6

    bound = Engine(session, info, model.tokenizer.pad_token_id, runner=IOBindingRunner(session, "cpu", 0))
    out = bound.run(encoded, outputs=("sentence_embedding", "token_embeddings"))
    assert one_minus_cos(plain, out.sentence_embedding).max() <= 1e-6
    assert [t.shape for t in out.token_embeddings] == [(len(i), 384) for i in encoded.ids]
    capped = Engine(session, replace(info, max_batch_size=4), model.tokenizer.pad_token_id)
    assert max(len(b) for b in capped.plan(encoded.lengths(), 64)) <= 4
    assert one_minus_cos(plain, capped.run(encoded, batch_size=64).sentence_embedding).max() <= 1e-6


def test_warmup_runs(minilm_artifact):
    model = embedrt.SentenceTransformer(minilm_artifact)
    model.warmup(batch_size=2)
    assert np.isfinite(model.encode(TEXTS)).all()
