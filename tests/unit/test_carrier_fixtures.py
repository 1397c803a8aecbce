"""The committed carrier samples: the signing script reproduces their signature files byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.paths import CARRIER_FIXTURES

REPO = Path(__file__).resolve().parents[2]
SCRIPT = "tests.fixtures.make_carrier_fixtures"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", SCRIPT, *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def signature_files(root: Path) -> list[Path]:
    return sorted(path.relative_to(root) for path in root.glob("*/_signatures.json"))


def test_the_script_reproduces_every_committed_signature_file(tmp_path: Path) -> None:
    run = run_script("--out", str(tmp_path))

    assert run.returncode == 0, run.stderr
    committed = signature_files(CARRIER_FIXTURES)
    rebuilt = signature_files(tmp_path)
    assert rebuilt == committed
    assert len(committed) == len([path for path in CARRIER_FIXTURES.iterdir() if path.is_dir()])
    for relative in committed:
        assert (tmp_path / relative).read_bytes() == (CARRIER_FIXTURES / relative).read_bytes(), relative


def test_the_script_explains_itself() -> None:
    run = run_script("--help")

    assert run.returncode == 0, run.stderr
    assert "--out" in run.stdout
    assert "_signatures.json" in run.stdout


def test_the_script_refuses_a_folder_without_samples(tmp_path: Path) -> None:
    run = run_script("--bodies", str(tmp_path), "--out", str(tmp_path / "out"))

    assert run.returncode != 0
    assert "no sample bodies" in run.stderr
    assert not (tmp_path / "out").exists()
