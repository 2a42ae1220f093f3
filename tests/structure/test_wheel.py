"""The installed wheel is the product: built from this checkout and installed outside it, it
carries the examples and the VM recipes, `tunlab example` writes them out, `vm-image ls` finds
the recipes, and the pytest marker finds a shipped example by its name."""

from __future__ import annotations

import subprocess
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.wheel import ROOT, build_wheel, install_wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return install_wheel(wheel, tmp_path_factory)


def run(env: dict[str, str], cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [env["TUNLAB_PYTHON"], *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_wheel_carries_examples_recipes_and_types(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in (
        "tunlab/_shipped/examples/demo.yaml",
        "tunlab/_shipped/examples/wireguard.yaml",
        "tunlab/_shipped/examples/test_gro.py",
        "tunlab/_shipped/vm-images/minimal/recipe.toml",
        "tunlab/_shipped/vm-images/minimal/init",
        "tunlab/_shipped/vm-images/debian/recipe.toml",
        "tunlab/py.typed",
        "pytest_tunlab/py.typed",
    ):
        assert shipped in names, f"{shipped} is not in the wheel"


def test_installed_tunlab_is_the_wheel_and_finds_what_it_ships(
    installed: dict[str, str], tmp_path: Path
) -> None:
    where = run(installed, tmp_path, "-c", "import tunlab; print(tunlab.__file__)")
    assert where.stdout.startswith(installed["TUNLAB_SITE"]), where  # the wheel, not the checkout
    listed = run(installed, tmp_path, "-m", "tunlab._cli.main", "example")
    assert listed.returncode == 0 and "wireguard.yaml" in listed.stdout, listed
    wrote = run(installed, tmp_path, "-m", "tunlab._cli.main", "example", "demo")
    assert wrote.returncode == 0, wrote
    assert (tmp_path / "demo.yaml").read_text() == (ROOT / "examples" / "demo.yaml").read_text()
    again = run(installed, tmp_path, "-m", "tunlab._cli.main", "example", "demo")
    assert again.returncode == 2 and "--force" in again.stderr, again
    valid = run(installed, tmp_path, "-m", "tunlab._cli.main", "validate", "demo.yaml")
    assert valid.returncode == 0, valid
    recipes = run(installed, tmp_path, "-m", "tunlab._cli.main", "vm-image", "ls")
    assert recipes.returncode == 0, recipes
    assert f"recipes: {installed['TUNLAB_SITE']}/tunlab/_shipped/vm-images" in recipes.stdout, recipes.stdout
    assert "minimal" in recipes.stdout and "debian" in recipes.stdout
    vm = run(installed, tmp_path, "-m", "tunlab._cli.main", "example", "vm.yaml", "-o", "vm.yaml")
    assert vm.returncode == 0
    assert run(installed, tmp_path, "-m", "tunlab._cli.main", "validate", "vm.yaml").returncode == 0


def test_the_marker_finds_a_shipped_example_by_name(
    installed: dict[str, str], tmp_path: Path, needs_root: None
) -> None:
    (tmp_path / "test_shipped.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.topology("demo.yaml")  # no demo.yaml here: the shipped one
            def test_it(topology):
                assert topology.node("h1").run(["ping", "-c1", "-W2", "198.18.2.2"]).ok
            """
        )
    )
    done = run(installed, tmp_path, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shipped.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
