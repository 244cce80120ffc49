"""Packaging and command-line manners: --version, pins, environment.yml, LICENSE, CITATION.cff,
``make help`` and ``make clean``."""

from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from nlrepro.cli import main, version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def constraints() -> dict[str, Requirement]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    reqs = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {r.name.lower(): r for r in reqs}


def test_version_flag_prints_the_package_metadata_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"nlrepro {md.version('nlrepro')}" == f"nlrepro {version()}"


def test_requires_python_is_what_the_pinned_numpy_and_pandas_need():
    ours = SpecifierSet(PYPROJECT["project"]["requires-python"])
    for name in ("numpy", "pandas"):
        needs = SpecifierSet(md.metadata(name)["Requires-Python"])
        for minor in range(8, 16):
            if f"3.{minor}" in ours:
                assert f"3.{minor}.0" in needs, (name, minor)
    assert "3.11" in ours


@pytest.mark.parametrize("where, installs", [
    ({"sys_platform": "linux", "platform_machine": "x86_64"}, True),
    ({"sys_platform": "win32", "platform_machine": "AMD64"}, True),
    ({"sys_platform": "darwin", "platform_machine": "arm64"}, False),
    ({"sys_platform": "linux", "platform_machine": "aarch64"}, False),
])
def test_decord_is_only_required_where_it_has_wheels(where, installs):
    deps = {Requirement(d).name: Requirement(d) for d in PYPROJECT["project"]["dependencies"]}
    pinned = constraints()["decord"]
    for req in (deps["decord"], pinned):
        assert req.marker is not None and req.marker.evaluate(where) is installs
    assert "av" in deps and deps["av"].marker is None  # the decoder that works everywhere


def test_every_dependency_is_pinned_in_constraints_and_the_pin_satisfies_it():
    pins = constraints()
    project = PYPROJECT["project"]
    for line in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        req = Requirement(line)
        pin = pins[req.name.lower()]
        (spec,) = pin.specifier
        assert spec.operator == "==" and spec.version in req.specifier, line


def test_environment_yml_is_conda_forge_only_and_installs_with_constraints():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert [c for c in env["channels"] if c != "nodefaults"] == ["conda-forge"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    (pip,) = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    python = next(d for d in conda if d.startswith("python="))
    assert python.split("=")[1] in SpecifierSet(PYPROJECT["project"]["requires-python"])
    assert "pip" in conda
    assert "-c constraints.txt" in pip and any(p.startswith("-e .") for p in pip)
    # Anything else conda installs must carry constraints.txt's version.
    pins = constraints()
    for dep in conda:
        name, _, ver = dep.partition("=")
        if name not in ("python", "pip"):
            assert pins[name].specifier.contains(ver), dep


def test_license_and_citation():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "the nlrepro authors" in (ROOT / "LICENSE").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    paper = cff["preferred-citation"]
    assert paper["title"] == "Non-local Neural Networks" and paper["year"] == 2018
    assert [a["family-names"] for a in paper["authors"]] == ["Wang", "Girshick", "Gupta", "He"]
    assert "CVPR" in paper["conference"]["name"]
    assert cff["version"] == PYPROJECT["project"]["version"] and cff["type"] == "software"


needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


@needs_make
def test_make_help_lists_every_target_and_each_table(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    out = subprocess.run(["make", "--no-print-directory", "help"], cwd=tmp_path, check=True,
                         capture_output=True, text=True).stdout
    shown = {line.split()[0] for line in out.splitlines() if line.strip()}
    tables = {f"table2{t}" for t in "abcdefg"}
    assert tables <= shown
    assert {"help", "setup", "test", "test-fast", "tables", "status", "figure3", "clean"} <= shown
    assert not any("%" in t or "$" in t for t in shown)


@needs_make
def test_make_clean_keeps_prepared_kinetics_and_other_data(tmp_path):
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    keep = [tmp_path / "data" / "kinetics400" / "val" / "a" / "x.mp4",
            tmp_path / "data" / "kinetics400" / "val.csv",
            tmp_path / "data" / "pretrained" / "my_imagenet.pth",
            tmp_path / "results" / "proxy" / "runs.csv"]
    gone = [tmp_path / "data" / "proxy" / "train.csv",
            tmp_path / "data" / "proxy-long" / "decoded" / "test.npy",
            tmp_path / "data" / "timeline" / "train.csv",
            tmp_path / "data" / "timeline-long" / "test.csv",
            tmp_path / "data" / "relations" / "train.csv",
            tmp_path / "data" / "relations-long" / "test.csv",
            tmp_path / "data" / "pretrained" / "frames_0123abcd.pt",
            tmp_path / ".venv" / "bin" / "python"]
    for path in keep + gone:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    subprocess.run(["make", "--no-print-directory", "clean"], cwd=tmp_path, check=True,
                   capture_output=True)
    assert all(p.exists() for p in keep), [p for p in keep if not p.exists()]
    assert not any(p.exists() for p in gone), [p for p in gone if p.exists()]
    assert not (tmp_path / ".venv").exists()
