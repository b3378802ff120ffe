"""Installs diffusion_plugin, a fairseq --user-dir plugin for diffusion language models.

``pip install .`` pulls fairseq with its own dependencies, torchaudio included; beside
a CPU torch, PyPI's torchaudio (a CUDA build) cannot load, and the README's install
removes it (``scripts/check_pip_install.sh`` runs that path; scripts/setup_env.sh
builds an environment without torchaudio).
"""

from pathlib import Path

from setuptools import find_packages, setup


def read_requirements(name):
    lines = Path(__file__).with_name(name).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


FAIRSEQ = [
    'fairseq-fixed==0.12.3.1; python_version >= "3.11"',
    'fairseq==0.12.2; python_version < "3.11"',
]

setup(
    name="diffusion_plugin",
    version="0.1.0",
    description="fairseq plugin: diffusion language models adapted from pretrained masked LMs",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.8",
    packages=find_packages(include=["diffusion_plugin", "diffusion_plugin.*"]),
    install_requires=FAIRSEQ + read_requirements("requirements.txt"),
    extras_require={
        "test": read_requirements("requirements-test.txt"),
        "eval": ["lm-eval>=0.4.4,<0.5"],
        "lora": ["peft>=0.13"],
        "hf": ["transformers>=4.30", "safetensors>=0.3", "protobuf"],
        "plots": ["matplotlib>=3.5"],
    },
)
