"""The package as a user installs it: the wheel carries the built-in data and finds it away from the repository.

The wheel is built once (pip, no build isolation, a copy of the sources git knows) and its file list is compared
with the repository's folders; then its unpacked files run from a folder outside the repository.
"""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
#: Repository folder -> where its files sit in the wheel (pyproject's package-data, clir_eval/data's symlinks).
SHIPPED = {"collections": "**/*", "topics": "**/*", "qrels": "**/*", "regressions": "*", "configs": "*.yaml"}


def _git_files() -> list[str]:
    return subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                          capture_output=True, text=True, check=True).stdout.split("\0")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    import setuptools

    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the wheel is built from the files git knows")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (pyproject's build requirement; the test extra has it)")
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    for name in filter(None, _git_files()):  # a copy: an in-tree build would leave build/ and *.egg-info behind
        source, target = REPO / name, src / name
        if not os.path.lexists(source):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():  # clir_eval/data/* stay links; the build copies what they point to
            target.symlink_to(os.readlink(source))
        else:
            target.write_bytes(source.read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(root / "dist"), str(src)], check=True, capture_output=True, text=True)
    (built,) = (root / "dist").glob("clir_eval-*.whl")
    return built


def test_wheel_carries_the_builtin_data_configs_and_licences(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        symlinks = [i.filename for i in archive.infolist() if (i.external_attr >> 16) & 0o170000 == 0o120000]
    expected = {f"clir_eval/data/{folder}/{path.relative_to(REPO / folder)}"
                for folder, pattern in SHIPPED.items() for path in (REPO / folder).glob(pattern) if path.is_file()}
    assert {"clir_eval/data/collections/ntrex/corpus.jsonl", "clir_eval/data/configs/default.yaml",
            "clir_eval/data/topics/ntrex/test/sw.tsv", "clir_eval/data/qrels/ntrex/test.qrels",
            "clir_eval/data/regressions/ntrex.yaml"} <= expected
    assert sorted(expected - names) == []
    assert symlinks == []
    assert not any(n.startswith("clir_eval/data/configs/dev/") for n in names)  # dev rounds stay in the repository
    licences = {n.split(".dist-info/licenses/", 1)[1] for n in names if ".dist-info/licenses/" in n}
    assert {"LICENSE", "collections/ntrex/LICENSE.md", "collections/xquad-r/LICENSE",
            "collections/lafand/SOURCE_README.md"} <= licences
    assert "License-Expression: Apache-2.0 AND CC-BY-SA-4.0 AND CC-BY-NC-4.0" in metadata.splitlines()
    assert "Version: 0.1.0" in metadata.splitlines()


def _unpacked(wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(into)
    return into


def _run_installed(site: Path, cwd: Path, code: str) -> subprocess.CompletedProcess:
    """``code`` in a Python that imports clir_eval from ``site`` only (no checkout on the path), run in ``cwd``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLIR_EVAL_DATA")}
    env.update(PYTHONPATH=str(site), COLUMNS="200")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_wheel_finds_its_data_and_default_config_away_from_the_repository(wheel, tmp_path):
    site = _unpacked(wheel, tmp_path / "site")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _run_installed(site, elsewhere, """
import clir_eval, sys
from clir_eval.collections.registry import list_collections, load_collection
from clir_eval.experiment.config import load_config
from clir_eval.regressions import list_specs
print(clir_eval.__file__)
print(list_collections(), list_specs(), load_config().name, load_collection("ntrex").qrels_path("test"))
sys.argv = ["clir-eval", "collections", "list", "ntrex"]
from clir_eval.cli import main
main()
""")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == str(site / "clir_eval" / "__init__.py")
    collections = sorted(p.parent.name for p in (REPO / "collections").glob("*/collection.yaml"))
    specs = sorted(p.stem for p in (REPO / "regressions").glob("*.yaml"))
    assert "ntrex" in collections and "ntrex" in specs
    assert lines[1] == f"{collections} {specs} default {site / 'clir_eval/data/qrels/ntrex/test.qrels'}"
    assert str(REPO) not in result.stdout
    assert any("ntrex" in line and "│ sw " in line and "1,327" in line and "123" in line for line in lines)


def test_an_installed_wheel_records_no_commit_of_a_checkout_around_its_venv(wheel, tmp_path):
    # A venv inside a checkout (.venv/) is common; that checkout's HEAD is not the wheel's code.
    repo = tmp_path / "project"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    repo.mkdir()
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    site = _unpacked(wheel, repo / ".venv" / "site-packages")
    result = _run_installed(site, repo, "from clir_eval.experiment.provenance import git_commit; print(repr(git_commit()))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "''"


def test_collections_list_refuses_an_empty_table_naming_where_it_looked(tmp_path):
    from clir_eval.cli import app

    result = CliRunner().invoke(app, ["collections", "list"], env={"CLIR_EVAL_DATA": str(tmp_path), "COLUMNS": "200"})
    assert result.exit_code == 2
    assert f"error: no built-in collections: {tmp_path / 'collections'} ($CLIR_EVAL_DATA is set) does not exist" \
        in " ".join(result.output.split())
    assert "┃ collection" not in result.output


def test_version_and_python_dash_m():
    import importlib.metadata

    from clir_eval.cli import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"clir-eval {importlib.metadata.version('clir-eval')}\n"
    module = subprocess.run([sys.executable, "-m", "clir_eval", "--version"], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert module.returncode == 0, module.stderr
    assert module.stdout == result.output
