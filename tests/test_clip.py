"""CLIP: image preprocessing parity, the tiny CLIP twin exported to text + vision graphs, bad image input.

References: openai/CLIP's own preprocessing of ``franz-kafka.jpg`` (``expected_preprocessed_image.npy``),
transformers' ``CLIPImageProcessor`` (PIL backend, what sentence-transformers runs) and
sentence-transformers' ``encode`` on the twin.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import embedrt
import numpy as np
import pytest
from embedrt import images
from embedrt.manifest import ArtifactError, ImageSpec, Manifest
from embedrt_dev.fetch.items import asset_dir

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_SPEC = ImageSpec(shortest_edge=224, crop_height=224, crop_width=224, resample="bicubic",
                      do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                      image_mean=CLIP_MEAN, image_std=CLIP_STD)
MAX_ONE_MINUS_COS = 1e-6

TEXTS = [
    "a photo of a cat",
    "a photo of a dog",
    "Ein Foto von einer Katze auf dem Sofa, Grüße aus München!",
    "Фотография кошки на диване",
    "沙发上的一只猫的照片",
    "emoji 🐱📷 and   irregular\twhitespace\n",
    "",
    "A very long caption that goes on and on about the picture, " * 20,  # far past 77 tokens
]


@pytest.fixture(scope="session")
def clip_assets() -> Path:
    path = asset_dir() / "clip"
    for name in ("bpe_simple_vocab_16e6.txt.gz", "franz-kafka.jpg", "expected_preprocessed_image.npy"):
        if not (path / name).is_file():
            pytest.fail(f"{path / name} missing: run `python scripts/fetch_models.py tokenizers` first", pytrace=False)
    return path


@pytest.fixture(scope="session")
def kafka(clip_assets):
    from PIL import Image

    with Image.open(clip_assets / "franz-kafka.jpg") as image:
        image.load()
        return image


@pytest.fixture(scope="session")
def hf_processor():
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil()


@pytest.fixture(scope="session")
def clip_twin(tmp_path_factory, clip_assets) -> Path:
    from embedrt_dev import twins

    return twins.build_clip_twin(tmp_path_factory.mktemp("twins") / "clip", clip_assets)


@pytest.fixture(scope="session")
def clip_artifact(tmp_path_factory, clip_twin):
    from embedrt_export import export

    out = tmp_path_factory.mktemp("artifacts") / "clip-twin"
    return out, export(clip_twin, out)


@pytest.fixture(scope="session")
def clip_reference(clip_twin):
    from embedrt_export.builders.base import load_sentence_transformer

    return load_sentence_transformer(str(clip_twin))


def _one_minus_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from embedrt_export import fidelity

    return fidelity.one_minus_cos(np.asarray(a), np.asarray(b))


# -- preprocessing ----------------------------------------------------------------------------------


def test_preprocessing_matches_original_clip(clip_assets, kafka):
    expected = np.load(clip_assets / "expected_preprocessed_image.npy")
    for item in (kafka, str(clip_assets / "franz-kafka.jpg"), clip_assets / "franz-kafka.jpg"):
        ours = images.preprocess([item], CLIP_SPEC)
        assert ours.shape == expected.shape == (1, 3, 224, 224) and ours.dtype == np.float32
        assert np.abs(ours - expected).max() <= 1e-2


def test_preprocessing_matches_transformers_processor(kafka, hf_processor):
    from embedrt_export.builders.clip import probe_images
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((61, 300, 3), (230, 229, 4), (40, 50))]
    pil_inputs = [kafka, *probe_images()]
    ours = images.preprocess(pil_inputs + arrays, CLIP_SPEC)
    reference = hf_processor(pil_inputs + [Image.fromarray(a) for a in arrays], return_tensors="np")["pixel_values"]
    assert ours.shape == reference.shape == (len(pil_inputs) + len(arrays), 3, 224, 224)
    assert np.abs(ours - reference).max() <= 1e-5


def test_path_input_is_exif_rotated_like_transformers(tmp_path, hf_processor):
    from PIL import Image

    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, (120, 300, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise on display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    ours = images.preprocess([str(path)], CLIP_SPEC)
    reference = hf_processor([str(path)], return_tensors="np")["pixel_values"]
    assert np.abs(ours - reference).max() <= 1e-5
    with Image.open(path) as unrotated:  # a PIL image is used as given, as transformers does
        assert np.abs(images.preprocess([unrotated], CLIP_SPEC) - ours).max() > 0.1


def test_data_uri_matches_path(clip_assets):
    path = clip_assets / "franz-kafka.jpg"
    uri = "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    assert images.is_image_input(uri)
    np.testing.assert_array_equal(images.preprocess([uri], CLIP_SPEC), images.preprocess([path], CLIP_SPEC))


def test_routing_matches_sentence_transformers(tmp_path, clip_assets, kafka):
    from sentence_transformers.base.modality import infer_modality

    text_named_jpg = tmp_path / "notes.jpg"
    text_named_jpg.write_text("not an image", encoding="utf-8")
    upper = tmp_path / "KAFKA.JPEG"
    upper.write_bytes((clip_assets / "franz-kafka.jpg").read_bytes())
    strings = ["a photo of a cat", "photo.jpg", str(clip_assets / "franz-kafka.jpg"), str(upper), "missing/file.PNG",
               str(text_named_jpg), "https://example.com/cat.png", "see https://example.com/cat.png",
               "https://example.com/page", "data:image/png;base64,AAAA", str(clip_assets)]
    for s in strings:
        assert images.is_image_input(s) == (infer_modality(s, ["text", "image"]) == "image"), s
    assert images.is_image_input(kafka) and images.is_image_input(clip_assets / "franz-kafka.jpg")
    assert images.is_image_input(np.zeros((4, 4, 3), dtype=np.uint8))
    assert not any(images.is_image_input(x) for x in (None, 3, b"bytes", ("a", "b")))


def test_bad_image_inputs_name_the_index(tmp_path, clip_assets, kafka):
    from PIL import Image

    text_named_jpg = tmp_path / "notes.jpg"
    text_named_jpg.write_text("not an image", encoding="utf-8")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes((clip_assets / "franz-kafka.jpg").read_bytes()[:2000])

    with pytest.raises(TypeError, match=r"images\[1\].*object"):
        images.preprocess([kafka, object()], CLIP_SPEC)
    with pytest.raises(ValueError, match=r"images\[1\]: not a readable image"):
        images.preprocess([kafka, str(text_named_jpg)], CLIP_SPEC)
    with pytest.raises(ValueError, match=r"images\[0\]: not a readable image"):
        images.preprocess([truncated], CLIP_SPEC)
    with Image.open(truncated) as lazy, pytest.raises(ValueError, match=r"images\[1\]: not a readable image"):
        images.preprocess([kafka, lazy], CLIP_SPEC)
    with pytest.raises(ValueError, match=r"images\[0\]: no such image file"):
        images.preprocess([str(tmp_path / "missing.png")], CLIP_SPEC)
    with pytest.raises(ValueError, match=r"images\[0\].*URL"):
        images.preprocess(["https://example.com/cat.png"], CLIP_SPEC)
    with pytest.raises(TypeError, match=r"images\[0\].*uint8"):
        images.preprocess([np.zeros((3, 224, 224), dtype=np.float32)], CLIP_SPEC)
    with pytest.raises(ValueError, match=r"images\[0\].*shape"):
        images.preprocess([np.zeros((8, 8, 2), dtype=np.uint8)], CLIP_SPEC)
    with pytest.raises(ValueError, match=r"sentences\[7\]: not a readable image"):
        images.preprocess([kafka, str(text_named_jpg)], CLIP_SPEC, positions=[3, 7], name="sentences")


def test_image_spec_in_the_manifest_is_typed_and_validated(clip_artifact):
    data = json.loads((clip_artifact[0] / "manifest.json").read_text())
    assert Manifest.from_dict(data).image == CLIP_SPEC
    for change, message in (({"resample": "cubic"}, r"field image"), ({"image_std": [0.2, 0.0, 0.3]}, "image"),
                            ({"shortest_edge": 0}, "image"), ({"size": 224}, "image"),
                            ({"crop_height": 256}, "larger than image.shortest_edge")):
        with pytest.raises(ArtifactError, match=message):
            Manifest.from_dict({**data, "image": {**data["image"], **change}})


def test_exporter_refuses_preprocessing_it_cannot_reproduce():
    from embedrt_export.builders.clip import image_spec
    from embedrt_export.source import SourceError
    from transformers import CLIPImageProcessorPil

    assert image_spec(CLIPImageProcessorPil(), "clip") == CLIP_SPEC
    with pytest.raises(SourceError, match="do_center_crop=False"):
        image_spec(CLIPImageProcessorPil(do_center_crop=False), "clip")
    with pytest.raises(SourceError, match="size="):
        image_spec(CLIPImageProcessorPil(size={"height": 224, "width": 224}), "clip")


def test_images_module_does_not_import_pillow_until_needed():
    script = textwrap.dedent("""
        import sys
        import embedrt.images as images
        assert not images.is_image_input("a caption")
        assert "PIL" not in sys.modules, "embedrt.images imported Pillow eagerly"
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr


# -- the twin exported ------------------------------------------------------------------------------


def test_clip_bpe_vocab_is_clips(clip_assets, clip_artifact):
    import embedrt
    from embedrt_dev.twins import clip_bpe_vocab

    vocab, merges = clip_bpe_vocab(clip_assets / "bpe_simple_vocab_16e6.txt.gz")
    assert len(vocab) == 49408 and len(merges) == 48894
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    model = embedrt.SentenceTransformer(clip_artifact[0])
    assert model.tokenizer.encode(["a photo of a cat"]).ids[0].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_cli_export_reports_both_towers_and_drops_the_traced_guards(clip_twin, tmp_path, capsys):
    """``embedrt export`` on CLIP prints each tower's parity (its towers have no token outputs), and
    the text tower leaves the trace's softmax NaN guards and duplicate mask ``Where`` nodes behind."""
    import onnx
    from embedrt.cli import main

    assert main(["export", str(clip_twin), "-o", str(tmp_path / "clip")]) == 0
    out = capsys.readouterr().out
    assert "text max_one_minus_cos" in out and "vision max_one_minus_cos" in out and "pixel_max_abs" in out
    ops = [n.op_type for n in onnx.load(str(tmp_path / "clip" / "text" / "model.onnx")).graph.node]
    assert "IsNaN" not in ops and ops.count("Where") <= 2


def test_manifest_describes_both_towers(clip_artifact):
    out, manifest = clip_artifact
    assert set(manifest.towers) == {"text", "vision"}
    assert manifest.towers["text"].variants["fp32"].inputs == ("input_ids", "attention_mask")
    assert manifest.towers["vision"].variants["fp32"].inputs == ("pixel_values",)
    for tower in manifest.towers.values():
        assert tower.variants["fp32"].outputs == ("sentence_embedding",)
        assert tower.variants["fp32"].parity["max_one_minus_cos"] <= MAX_ONE_MINUS_COS
    assert manifest.towers["vision"].variants["fp32"].parity["pixel_max_abs"] <= 1e-5
    assert manifest.image == CLIP_SPEC
    assert manifest.input_kinds == ("text", "image")
    assert (manifest.tokenizer.max_seq_length, manifest.tokenizer.pad_token_id) == (77, 49407)
    assert manifest.embedding_dimension == 24 and not manifest.normalized
    assert manifest.source["modules"] == [{"type": "CLIPModel"}]


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_text_tower_matches_sentence_transformers(clip_artifact, clip_reference, batch_size):
    import embedrt
    from embedrt_export import verify

    texts = TEXTS + verify.probe_texts(77)
    model = embedrt.SentenceTransformer(clip_artifact[0])
    ours = model.encode(texts, batch_size=batch_size)
    reference = clip_reference.encode(texts, batch_size=batch_size, convert_to_numpy=True)
    assert ours.shape == reference.shape == (len(texts), 24)
    assert _one_minus_cos(ours, reference).max() <= MAX_ONE_MINUS_COS
    # The twin is not degenerate: different captions point different ways.
    assert _one_minus_cos(ours[:1], ours[1:2])[0] > 1e-3


@pytest.mark.parametrize("batch_size", [1, 4])
def test_vision_tower_matches_sentence_transformers(clip_artifact, clip_reference, clip_assets, kafka, batch_size):
    from embedrt_export.builders.clip import probe_images

    inputs = [kafka, str(clip_assets / "franz-kafka.jpg"), *probe_images()]
    encoder = embedrt.load_engine(clip_artifact[0], tower="vision")
    ours = encoder.encode(inputs, batch_size=batch_size)
    reference = clip_reference.encode(inputs, batch_size=batch_size, convert_to_numpy=True)
    assert ours.shape == reference.shape == (len(inputs), 24)
    assert _one_minus_cos(ours, reference).max() <= MAX_ONE_MINUS_COS
    assert encoder.encode([]).shape == (0, 24)


def test_vision_parity_threshold_would_catch_a_one_pixel_crop_shift(clip_artifact, kafka):
    encoder = embedrt.load_engine(clip_artifact[0], tower="vision")
    pixels = images.preprocess([kafka], CLIP_SPEC)
    shifted = np.roll(pixels, 1, axis=3)
    assert _one_minus_cos(encoder.run_batch(pixels), encoder.run_batch(shifted))[0] > 100 * MAX_ONE_MINUS_COS
    assert np.array_equal(encoder.submit(pixels).result(), encoder.run_batch(pixels))
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        encoder.run_batch(pixels[:, :, :200])


def test_sentence_transformers_6_layout_exports_too(tmp_path, clip_assets, clip_artifact):
    from embedrt_dev import twins
    from embedrt_export import export

    twin = twins.build_clip_twin(tmp_path / "twin", clip_assets, legacy_layout=False)
    manifest = export(twin, tmp_path / "artifact")
    assert manifest.image == clip_artifact[1].image
    for name, tower in manifest.towers.items():
        assert tower.variants["fp32"].parity["max_one_minus_cos"] <= MAX_ONE_MINUS_COS, name


def test_encode_mixes_texts_and_images_in_input_order(clip_artifact, clip_reference, clip_assets, kafka):
    import embedrt

    mixed = ["a photo of a writer", kafka, str(clip_assets / "franz-kafka.jpg"), "another caption"]
    ours = embedrt.SentenceTransformer(clip_artifact[0]).encode(mixed, batch_size=2)
    # sentence-transformers 6.2 refuses batches that mix modalities; one input per batch is its way.
    reference = clip_reference.encode(mixed, batch_size=1, convert_to_numpy=True)
    assert ours.shape == reference.shape == (4, 24)
    assert _one_minus_cos(ours, reference).max() <= MAX_ONE_MINUS_COS


def test_torchvision_image_backend_is_swapped_for_the_pil_one_embedrt_reproduces(clip_twin):
    from types import SimpleNamespace

    from embedrt_export.builders.clip import image_spec, reference_image_processor
    from embedrt_export.source import read_source

    processor = SimpleNamespace(image_processor=SimpleNamespace(backend="torchvision"))
    chosen = reference_image_processor([SimpleNamespace(processor=processor)], read_source(clip_twin))
    assert chosen.backend == "pil" and processor.image_processor is chosen
    assert image_spec(chosen, clip_twin) == CLIP_SPEC


def test_both_towers_run_where_the_torch_stack_cannot_be_imported(clip_artifact, clip_assets):
    script = textwrap.dedent(f"""
        import importlib.abc, sys
        FORBIDDEN = ("torch", "transformers", "optimum", "sentence_transformers")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in FORBIDDEN:
                    raise ImportError(f"blocked import of {{name}}")
        sys.meta_path.insert(0, Block())
        import embedrt
        from embedrt import images
        model = embedrt.SentenceTransformer({str(clip_artifact[0])!r})
        encoder = embedrt.load_engine(model.artifact, tower="vision")
        print(model.encode(["a caption"]).shape, encoder.encode([{str(clip_assets / "franz-kafka.jpg")!r}]).shape)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 24) (1, 24)"


def test_server_embeds_data_uri_images_as_encode_does(clip_artifact, clip_assets):
    """``embedrt serve`` on CLIP: a data-URI image (bare, OpenAI-style item, or infinity's modality form) gets
    in-process ``encode``'s embedding of the same image, and a caption the text tower's, in one space."""
    import httpx

    from tests.fast import serving

    path = clip_assets / "franz-kafka.jpg"
    uri = "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    model = embedrt.SentenceTransformer(clip_artifact[0])
    want_image, want_text = model.encode([str(path)]), model.encode(["a photo of a writer"])
    requests = [{"input": [uri, "a photo of a writer"]},
                {"input": [{"type": "image_url", "image_url": uri}]},
                {"input": [uri], "modality": "image"}]
    with serving.running(str(clip_artifact[0]), args=("--name", "clip")) as server:
        rows = []
        for body in requests:
            response = httpx.post(f"{server.url}/v1/embeddings", json={"model": "clip", **body}, timeout=60)
            assert response.status_code == 200, response.text
            rows.append(np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32))
    np.testing.assert_array_equal(rows[0][:1], want_image)
    np.testing.assert_array_equal(rows[0][1:], want_text)
    np.testing.assert_array_equal(rows[1], want_image)
    np.testing.assert_array_equal(rows[2], want_image)
