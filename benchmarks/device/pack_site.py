"""Pack tune-attn's dependencies for a GPU machine that has Python 3.12, torch and numpy but no package index:
Ray (without its Java, RLlib, Serve and dashboard web files: 79 MB of wheel to ~50 MB of .tar.xz, Optuna and
W&B beside it), at this venv's versions, for the packages that machine's image lacks.

    .venv/bin/python benchmarks/device/pack_site.py [--out .whl] [--have NAMES_FILE]

On the machine: ``mkdir -p /tmp/site && tar -xJf .whl/site.tar.xz -C /tmp/site; export PYTHONPATH=/tmp/site:$PWD``
(benchmarks/device/check.sh does it). ``--have``: a file of the package names the machine already has (one
per line or space-separated); without it, the image list of docs/benchmarks.md's GPU section is assumed.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# What the GPU machines' image held (the device tool's KINDS.md, read on one on 2026-11-17); their torch,
# torchvision, numpy, pyyaml, rich, typer, pillow and matplotlib are used as they are.
_IMAGE_NAMES = """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
    certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
    cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils
    execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py
    hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax
    jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator
    lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath
    msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda
    numpy numpyro nvidia-ml-py onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
    opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
    portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
    pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
    pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
    scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers
    setuptools shellingham simplejson six sortedcontainers statsmodels sympy tabulate tensorboard
    tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
    torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton
    typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash
    yarl zipp"""
IMAGE = set(_IMAGE_NAMES.split())
# Carried at this venv's version even where the image has one: what the tests and Ray pin closely.
FORCE = {"ray", "optuna", "wandb", "tensorboardx", "protobuf", "typing-extensions", "pytest", "pytest-xdist"}
DROP = ["ray/jars", "ray/rllib", "ray/serve", "ray/llm", "ray/dashboard/client/build", "bin"]
PLATFORMS = ["manylinux2014_x86_64", *(f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34))]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(roots: list[str], have: set[str]) -> list[str]:
    """``name==version`` of ``roots`` and everything they need (not extras), at this venv's versions, less
    what the machine has (``have``) unless forced."""
    seen: dict[str, str | None] = {}
    todo = list(roots)
    while todo:
        name = norm(todo.pop())
        if name in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            seen[name] = None
            continue
        seen[name] = dist.version
        for req in dist.requires or []:
            if "extra ==" not in req:
                todo.append(re.match(r"[A-Za-z0-9_.\-]+", req).group(0))  # type: ignore[union-attr]
    return [f"{n}=={v}" for n, v in sorted(seen.items()) if v and (n not in have or n in FORCE)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(".whl"))
    ap.add_argument("--have", type=Path, help="names of the packages the machine has")
    args = ap.parse_args()
    have = {norm(n) for n in args.have.read_text().split()} if args.have else IMAGE
    specs = closure(["ray", "optuna", "wandb", "tensorboardX", "protobuf", "pytest", "pytest-xdist"], have)
    print("carrying:", " ".join(specs), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        plat = [x for p in PLATFORMS for x in ("--platform", p)]
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site),
             "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", *plat, *specs],
            check=True,
        )  # fmt: skip
        for rel in DROP:
            shutil.rmtree(site / rel, ignore_errors=True)
        for junk in [*site.rglob("*.js.map"), *site.rglob("__pycache__")]:
            shutil.rmtree(junk) if junk.is_dir() else junk.unlink()
        args.out.mkdir(parents=True, exist_ok=True)
        target = args.out / "site.tar.xz"
        subprocess.run(["tar", "-cJf", str(target), "-C", str(site), "."], check=True)
    print(f"{target}: {target.stat().st_size / 2**20:.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
