"""A damaged run directory is one error naming the file, on every command that reads one."""

from __future__ import annotations

import json
import os

import pytest

from lgvq_core.cli import main

RESOLVED = {
    "binary": os.urandom(300).replace(b"\n", b"\xff").replace(b"[", b"\xfe") + b"\xff",
    "invalid TOML": b"x = [\n",
}


@pytest.mark.parametrize("name", list(RESOLVED))
def test_lgvq_eval_names_a_resolved_toml_that_is_not_a_run_file(tmp_path, capsys, name):
    run = tmp_path / "run"
    run.mkdir()
    (run / "resolved.toml").write_bytes(RESOLVED[name])
    assert main(["eval", str(run)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lgvq eval: error: {run / 'resolved.toml'}: ") and len(err.splitlines()) == 1
    assert "it is not the run file `lgvq run` wrote" in err


@pytest.mark.parametrize("name", list(RESOLVED))
def test_lgvq_compare_table_names_a_resolved_toml_that_is_not_a_run_file(tmp_path, capsys, name):
    runs = []
    for label in ("a", "b"):
        run = tmp_path / label
        (run / "eval").mkdir(parents=True)
        (run / "eval" / "reconstruction.json").write_text(json.dumps({"metrics": {"psnr": 20.0}}))
        (run / "resolved.toml").write_bytes(RESOLVED[name])
        runs.append(str(run))
    assert main(["compare", *runs, "--labels", "a", "b", "--out", str(tmp_path / "table")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lgvq compare: error: {tmp_path / 'a' / 'resolved.toml'}: cannot be read")
    assert len(err.splitlines()) == 1
