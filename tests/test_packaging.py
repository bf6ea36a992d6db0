"""Packaging: `python -m build` makes a wheel and an sdist, and the wheel installed into a fresh
virtualenv trains, imported from outside the checkout.

The build runs on a copy of the sources (the checkout gets no build/ or egg-info) without build
isolation (no download of setuptools); the virtualenv sees the system site-packages so torch is
not installed again, and the wheel goes in with --no-deps --no-index (no network needed).
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

import triton_softmax

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("TRITON_INTERPRET", None)  # the installed package runs as a user's would
    return env


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    pytest.importorskip("build")
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "results")
    for name in ("triton_softmax", "bench"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")

    def build(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "build", *flags, "--outdir", str(out), str(src)],
            capture_output=True,
            text=True,
            timeout=300,
            env=_clean_env(),
        )

    proc = build("--no-isolation")
    if proc.returncode != 0 and "Unmet dependencies" in proc.stdout + proc.stderr:
        # this environment's setuptools is too old to build wheels alone: build in an
        # isolated environment (pip fetches setuptools from PyPI)
        proc = build()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_build_makes_wheel_and_sdist_with_the_one_version(dist):
    version = triton_softmax.__version__
    wheels = list(dist.glob("*.whl"))
    sdists = list(dist.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"triton_softmax-{version}-py3-none-any.whl"]
    assert [s.name for s in sdists] == [f"triton_softmax-{version}.tar.gz"]
    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
        meta = whl.read(f"triton_softmax-{version}.dist-info/METADATA").decode()
    assert "triton_softmax/integrations/hf.py" in names
    assert "triton_softmax/crossovers/default.json" in names
    assert f"Version: {version}\n" in meta
    for extra, requirement in (
        ("faiss", "faiss-cpu"),
        ("gpu", "faiss-gpu-cu12"),
        ("hf", "transformers"),
    ):
        assert f"Provides-Extra: {extra}" in meta
        assert any(
            line.startswith(f"Requires-Dist: {requirement}") and f'extra == "{extra}"' in line
            for line in meta.splitlines()
        ), (extra, requirement)


STEP = textwrap.dedent(
    """
    import sys, torch, triton_softmax
    from triton_softmax import SampledSoftmaxLoss
    assert "{venv}" in triton_softmax.__file__, triton_softmax.__file__
    assert triton_softmax.__version__ == "{version}"
    torch.manual_seed(0)
    hidden = torch.randn(32, 16)
    target = torch.randint(0, 5000, (32,))
    for method in ("full", "lsh"):
        layer = SampledSoftmaxLoss(5000, 16, method=method, num_candidates=32, num_uniform=32)
        opt = torch.optim.SGD(layer.parameters(), lr=0.5)
        before = layer(hidden, target)
        before.backward()
        opt.step()
        after = SampledSoftmaxLoss(weight=layer.weight, method="full")(hidden, target)
        assert float(after) < float(before), (method, float(before), float(after))
    try:
        import transformers
    except ImportError:
        print("transformers not installed: HF step skipped")
    else:
        from triton_softmax.integrations.hf import patch
        cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=16, intermediate_size=32,
            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
        model = patch(transformers.LlamaForCausalLM(cfg))
        ids = torch.randint(0, 256, (2, 8))
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        assert torch.isfinite(loss) and model.lm_head.weight.grad is not None
        print("hf step", float(loss))
    print("ok", triton_softmax.__file__)
    """
)


def test_wheel_installs_into_fresh_venv_and_trains(dist, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120
    )
    python = venv / "bin" / "python"
    if sys.prefix != sys.base_prefix:  # the tests run in a virtualenv: --system-site-packages
        # would show the base interpreter's packages, not this one's torch; list them instead
        site_dir = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        Path(site_dir, "_parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    wheel = next(dist.glob("*.whl"))
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    script = tmp_path / "step.py"
    script.write_text(STEP.format(venv=str(venv), version=triton_softmax.__version__))
    run_dir = tmp_path / "elsewhere"  # not the checkout: the import must find the wheel's copy
    run_dir.mkdir()
    proc = subprocess.run(
        [str(python), str(script)],
        cwd=run_dir,
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ok " + str(venv) in proc.stdout
