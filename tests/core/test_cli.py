"""The `lgvq` command: plugins, list, schema, check, version; broken plugins; torch stays out."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lgvq_core.config.describe import dumps_toml

DISTRIBUTIONS = ("lgvq-core", "lgvq-backbones", "lgvq-text-encoders", "lgvq-tasks", "lgvq-loggers")
ALL_PLUGINS = ["core", "testing", "backbones", "text-encoders", "tasks", "loggers"]


def lgvq(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m lgvq_core.cli ARGS`` in a fresh interpreter (real entry-point discovery)."""
    return subprocess.run(
        [sys.executable, "-m", "lgvq_core.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture
def sample(fixture_plugin, make_plugin_manager):
    fixture_plugin("sample")
    return make_plugin_manager(["core", "testing", "sample"])


# ------------------------------------------------------------------------------------------
# lgvq plugins
# ------------------------------------------------------------------------------------------
def test_plugins_lists_each_plugin_with_its_distribution_and_components(plugin_manager, lgvq_cli):
    result = lgvq_cli("plugins")

    version = importlib.metadata.version("lgvq-core")
    lines = result.out.splitlines()
    assert result.code == 0
    assert f"testing  (lgvq-core {version}, lgvq_core.testing._plugin)" in lines
    assert "    backbone: tiny-ae" in lines
    assert "    text-encoder: tiny-text" in lines
    assert f"core  (lgvq-core {version}, lgvq_core._plugin)" in lines
    assert "FAILED" not in result.out


def test_plugins_json_lists_the_five_distributions_with_versions_and_components(make_plugin_manager, lgvq_cli):
    make_plugin_manager(ALL_PLUGINS)

    result = lgvq_cli("plugins", "--json")

    report = json.loads(result.out)
    assert result.code == 0
    assert report["failed"] == [] and report["conflicts"] == [] and report["disabled"] == []
    by_dist: dict[str, dict[str, list[str]]] = {}
    for plugin in report["plugins"]:
        assert plugin["version"] == importlib.metadata.version(plugin["distribution"])
        kinds = by_dist.setdefault(plugin["distribution"], {})
        for kind, names in plugin["components"].items():
            kinds.setdefault(kind, []).extend(names)
    assert set(DISTRIBUTIONS) <= set(by_dist)
    core = by_dist["lgvq-core"]
    assert {"vq", "vq-ema", "cosine"} <= set(core["quantizer"])
    assert {"semantic-nce", "masked-text", "relation"} <= set(core["alignment-loss"])
    assert "shapes" in core["dataset"]
    assert {"tiny-ae"} <= set(core["backbone"])
    assert {"vqvae", "vqgan", "vqct"} <= set(by_dist["lgvq-backbones"]["backbone"])
    assert "cvq" in by_dist["lgvq-backbones"]["quantizer"]
    assert "minilm" in by_dist["lgvq-text-encoders"]["text-encoder"]
    assert by_dist["lgvq-tasks"].get("task"), "lgvq-tasks registers no task"


def test_a_broken_plugin_is_shown_as_failed_and_the_others_keep_working(fixture_plugin, make_plugin_manager, lgvq_cli):
    folder = fixture_plugin("broken")
    make_plugin_manager(["core", "testing", "broken"], strict=False)

    text = lgvq_cli("plugins")
    report = json.loads(lgvq_cli("plugins", "--json").out)
    listing = lgvq_cli("list", "backbone")

    source = folder / "lgvq_test_broken" / "_plugin.py"
    line = next(i for i, text in enumerate(source.read_text().splitlines(), 1) if text.startswith("raise ImportError"))
    location = f"{source}:{line}"
    assert text.code == 0
    assert (
        "FAILED broken  (lgvq-test-broken 0.0.1): ImportError: lgvq_test_broken needs the package "
        f"'imaginary-dependency'; pip install imaginary-dependency  (at {location})"
    ) in text.out.splitlines()
    assert "    backbone: tiny-ae" in text.out.splitlines()
    assert report["failed"] == [
        {
            "name": "broken",
            "distribution": "lgvq-test-broken",
            "version": "0.0.1",
            "error": "ImportError: lgvq_test_broken needs the package 'imaginary-dependency'; "
            "pip install imaginary-dependency",
            "hook": "",
            "location": location,
        }
    ]
    assert {p["name"] for p in report["plugins"]} == {"core", "testing"}
    assert listing.code == 0
    assert listing.out.startswith("tiny-ae  ")
    assert "note: plugin 'broken' (lgvq-test-broken 0.0.1) failed: ImportError" in listing.err


def test_a_broken_installed_plugin_does_not_stop_the_command(fixture_plugin):
    fixture_plugin("broken")

    plugins = lgvq("plugins", env={"LGVQ_STRICT_PLUGINS": "0"})
    listing = lgvq("list", "backbone", env={"LGVQ_STRICT_PLUGINS": "0"})
    version = lgvq("version", env={"LGVQ_STRICT_PLUGINS": "0"})

    assert plugins.returncode == 0, plugins.stderr
    assert "FAILED broken  (lgvq-test-broken 0.0.1): ImportError:" in plugins.stdout
    assert "core  (lgvq-core" in plugins.stdout
    assert listing.returncode == 0 and "tiny-ae" in listing.stdout
    assert version.returncode == 0 and "lgvq-core" in version.stdout


def test_strict_plugins_make_the_command_fail_with_the_plugins_error(fixture_plugin):
    fixture_plugin("broken")

    result = lgvq("plugins", env={"LGVQ_STRICT_PLUGINS": "1"})

    assert result.returncode == 1
    assert result.stderr.startswith(
        "lgvq plugins: error: plugin 'broken' (lgvq-test-broken 0.0.1) failed: ImportError: lgvq_test_broken needs"
    )
    assert "(set LGVQ_STRICT_PLUGINS=0 to continue without it)" in result.stderr
    assert result.stdout == ""


def test_disabled_plugins_are_listed_as_disabled_and_not_loaded(fixture_plugin):
    fixture_plugin("broken")

    result = lgvq("plugins", env={"LGVQ_STRICT_PLUGINS": "1", "LGVQ_DISABLE_PLUGINS": "broken,testing"})

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "disabled broken  (LGVQ_DISABLE_PLUGINS)" in lines
    assert "disabled testing  (LGVQ_DISABLE_PLUGINS)" in lines
    assert "FAILED" not in result.stdout and "tiny-ae" not in result.stdout


def test_plugins_shows_a_name_claimed_twice_as_a_conflict(fixture_plugin, make_plugin_manager, lgvq_cli):
    fixture_plugin("sample")
    fixture_plugin("clash")
    make_plugin_manager(["sample", "clash"], strict=False)

    result = lgvq_cli("plugins")

    [conflict] = [line for line in result.out.splitlines() if line.startswith("CONFLICT ")]
    assert "backbone 'sample-ae' is provided by both" in conflict
    assert "lgvq-test-sample 0.3.0" in conflict and "lgvq-test-clash 2.0.0" in conflict


# ------------------------------------------------------------------------------------------
# lgvq list / schema / version
# ------------------------------------------------------------------------------------------
def test_list_prints_name_summary_and_provider(sample, lgvq_cli):
    result = lgvq_cli("list", "backbone")

    assert result.code == 0
    assert result.out.splitlines() == [
        "sample-ae  two-stage conv autoencoder of the sample plugin  [sample: lgvq-test-sample 0.3.0]",
        f"tiny-ae    test double: two-conv autoencoder (optionally adversarial) for fast CPU tests  "
        f"[testing: lgvq-core {importlib.metadata.version('lgvq-core')}]",
    ]


def test_list_filters_with_a_pattern(sample, lgvq_cli):
    result = lgvq_cli("list", "quantizers", "SAMPLE*")

    assert [line.split()[0] for line in result.out.splitlines()] == ["sample-vq"]


def test_list_says_when_nothing_matches(sample, lgvq_cli):
    result = lgvq_cli("list", "backbone", "zzz*")

    assert result.code == 0 and result.out == ""
    assert "no backbone matches 'zzz*'" in result.err


def test_list_of_an_unknown_kind_exits_2_listing_the_kinds(sample, lgvq_cli):
    result = lgvq_cli("list", "backbon")

    assert result.code == 2
    assert "unknown component kind 'backbon'; kinds are: backbone, quantizer" in result.err


def test_schema_prints_fields_types_defaults_and_docs(plugin_manager, lgvq_cli):
    result = lgvq_cli("schema", "backbone", "tiny-ae")

    lines = result.out.splitlines()
    assert result.code == 0
    assert (
        lines[0] == "backbone 'tiny-ae': test double: two-conv autoencoder (optionally adversarial) for fast CPU tests"
    )
    assert lines[1] == "config class: lgvq_core.testing.config.TinyAutoencoderConfig"
    assert "  hidden       int  = 16" in lines
    assert "                 Channels of the hidden convolutions." in lines
    assert "  adversarial  bool  = false" in lines
    assert "  disc_weight  float  = 0.1" in lines


def test_schema_shows_choices_and_required_keys(sample, lgvq_cli):
    quantizer = lgvq_cli("schema", "quantizer", "sample_vq")
    folder = lgvq_cli("schema", "dataset", "sample-folder")

    assert '  beta_placement  "codebook" | "commitment"  = "codebook"' in quantizer.out.splitlines()
    assert "  root        str  = (required)" in folder.out.splitlines()


def test_schema_of_an_unknown_name_suggests_one_and_exits_2(sample, lgvq_cli):
    result = lgvq_cli("schema", "backbone", "sampel-ae")

    assert result.code == 2
    assert result.err.startswith("lgvq schema: unknown backbone 'sampel-ae'; did you mean 'sample-ae'?")


def test_schema_without_a_name_exits_2_with_usage(sample, lgvq_cli):
    result = lgvq_cli("schema", "backbone")

    assert result.code == 2
    assert "give KIND NAME" in result.err


def test_schema_run_prints_the_run_file_sections(plugin_manager, lgvq_cli):
    result = lgvq_cli("schema", "run")

    assert result.code == 0
    for line in ("section '[run]': Where the run lives and what it runs on.", "  max_steps ", "  layers "):
        assert line in result.out


def test_version_names_lgvq_core_and_its_key_dependencies(plugin_manager, lgvq_cli):
    result = lgvq_cli("version")

    lines = result.out.splitlines()
    assert lines[0] == f"lgvq-core {importlib.metadata.version('lgvq-core')}"
    assert any(line.startswith("pluggy ") for line in lines)
    assert lines[-1].startswith("python ")


# ------------------------------------------------------------------------------------------
# lgvq check
# ------------------------------------------------------------------------------------------
@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """An empty working directory; the run files live elsewhere."""
    path = tmp_path / "work"
    path.mkdir()
    monkeypatch.chdir(path)
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "files" / "run.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


GOOD = """
[run]
output_dir = "{out}"

[model.backbone]
type = "sample-ae"

[data]
type = "sample-shapes"
"""


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('[model.backbone]\ntype = "sample-ae"\nhidden = = 3\n', "$: invalid TOML at line 3, column 10: "),
        (GOOD + "hiden = 3\n", "$.data.hiden: unknown key 'hiden'; allowed keys: image_size, size, captions"),
        (
            GOOD.replace("[data]", "[data]\nimage_sise = 64"),
            "$.data.image_sise: unknown key 'image_sise'; did you mean 'image_size'?",
        ),
        (GOOD + "size = 'eight'\n", "$.data.size: expected an integer, got string 'eight'"),
        (GOOD.replace("sample-shapes", "sample-folder"), "$.data.root: missing required key (str)"),
        (GOOD + "image_size = 2\n", "$.data.image_size: must be in [8, 256], got 2"),
        (
            GOOD + '[model.quantizer]\ntype = "sample-vq"\nbeta_placement = "codebok"\n',
            '$.model.quantizer.beta_placement: must be one of "codebook", "commitment", got \'codebok\'; '
            'did you mean "codebook"?',
        ),
        (GOOD + "[[callbacks]]\npatience = 2\n", "$.callbacks[0].type: missing; choose one of: "),
        (
            GOOD.replace('"sample-ae"', '"sampleae"'),
            "$.model.backbone.type: unknown backbone 'sampleae'; did you mean 'sample-ae'?",
        ),
        (
            GOOD + '[model.quantizer]\ntype = "sample-vq"\ndim = 4\n',
            "$.model.backbone.code_dim: is 8 but $.model.quantizer.dim is 4; make them equal",
        ),
    ],
    ids=[
        "toml-syntax",
        "unknown-key",
        "unknown-key-suggestion",
        "wrong-type",
        "missing-required",
        "validator",
        "literal-choice",
        "missing-type",
        "unknown-type",
        "cross-field",
    ],
)
def test_check_reports_each_kind_of_problem_exits_2_and_creates_nothing(
    sample, lgvq_cli, tmp_path, workdir, text, problem
):
    out = tmp_path / "out"
    path = write(tmp_path, text.replace("{out}", str(out)))

    result = lgvq_cli("check", str(path))

    assert result.code == 2
    lines = result.err.splitlines()
    assert lines[0].startswith(problem)
    assert lines[-1] == f"{path}: 1 problem(s); nothing was run"
    assert result.out == ""
    assert list(workdir.iterdir()) == []
    assert not out.exists()


def test_check_reports_several_problems_one_per_line(sample, lgvq_cli, tmp_path, workdir):
    text = """
[run]
precision = "fp33"
output_dir = "{out}"

[train]
max_stpes = 3
batch_size = 0

[model.backbone]
type = "sample-ae"
hidden = "8"

[data]
type = "sample-folder"
""".replace("{out}", str(tmp_path / "out"))
    path = write(tmp_path, text)

    result = lgvq_cli("check", str(path))

    assert result.code == 2
    assert result.err.splitlines() == [
        "$.model.backbone.hidden: expected an integer, got string '8'",
        "$.data.root: missing required key (str)",
        '$.run.precision: must be one of "fp32", "bf16", "fp16", got \'fp33\'; did you mean "fp32"?',
        "$.train.max_stpes: unknown key 'max_stpes'; did you mean 'max_steps'?",
        "$.train.batch_size: must be > 0, got 0",
        f"{path}: 5 problem(s); nothing was run",
    ]
    assert list(workdir.iterdir()) == []
    assert not (tmp_path / "out").exists()


def test_check_of_a_good_file_says_ok(sample, lgvq_cli, tmp_path, workdir):
    path = write(tmp_path, GOOD.replace("{out}", str(tmp_path / "out")))

    result = lgvq_cli("check", str(path))

    assert (result.code, result.out, result.err) == (0, f"{path}: ok\n", "")
    assert list(workdir.iterdir()) == []


def test_check_applies_set_overrides_typed_by_the_schema(sample, lgvq_cli, tmp_path, workdir):
    path = write(tmp_path, GOOD.replace("{out}", str(tmp_path / "out")))

    good = lgvq_cli("check", str(path), "--set", "data.size=3", "--set", "run.name=42")
    bad = lgvq_cli("check", str(path), "--set", "data.size=three")
    unknown = lgvq_cli("check", str(path), "--set", "data.sise=3")

    assert good.code == 0
    assert (bad.code, bad.err.splitlines()[0]) == (2, "$.data.size: expected an integer, got string 'three'")
    assert (unknown.code, unknown.err.splitlines()[0]) == (2, "$.data.sise: unknown key 'sise'; did you mean 'size'?")


def test_check_of_a_missing_file_exits_2(sample, lgvq_cli, tmp_path, workdir):
    result = lgvq_cli("check", str(tmp_path / "absent.toml"))

    assert result.code == 2
    assert result.err.startswith(f"$: run file not found: {tmp_path / 'absent.toml'}")


def test_the_tiny_run_file_passes_check(make_plugin_manager, lgvq_cli, tiny_run_file, run_dir):
    make_plugin_manager(["core", "testing"])

    result = lgvq_cli("check", str(tiny_run_file))

    assert result.code == 0, result.err
    assert result.out == f"{tiny_run_file}: ok\n"
    assert list(run_dir.iterdir()) == []


# ------------------------------------------------------------------------------------------
# no torch for plugins, list, schema, check
# ------------------------------------------------------------------------------------------
TORCH_FREE = """
import sys
from lgvq_core.cli import main
code = main(sys.argv[1:])
assert "torch" not in sys.modules, "torch was imported"
sys.exit(code)
"""


@pytest.mark.parametrize(
    "args",
    [["plugins"], ["plugins", "--json"], ["list", "backbone"], ["schema", "quantizer", "vq"], ["check", "{run_file}"]],
    ids=["plugins", "plugins-json", "list", "schema", "check"],
)
def test_metadata_commands_never_import_torch(tiny_run_file, args):
    args = [a.replace("{run_file}", str(tiny_run_file)) for a in args]

    result = subprocess.run([sys.executable, "-c", TORCH_FREE, *args], capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr


def test_run_file_written_by_dumps_toml_is_what_check_reads(sample, lgvq_cli, tmp_path, workdir):
    path = tmp_path / "files" / "dumped.toml"
    path.parent.mkdir()
    path.write_text(
        dumps_toml({"model": {"backbone": {"type": "sample-ae", "widths": [2, 4]}}, "data": {"type": "sample-shapes"}})
    )

    assert lgvq_cli("check", str(path)).code == 0


def _as_torchrun_worker(*args: str) -> subprocess.CompletedProcess:
    """``lgvq ARGS`` in a subprocess that believes it is rank 1 of 2 (no process group is joined)."""
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-c", "import sys; from lgvq_core.cli import main; sys.exit(main(sys.argv[1:]))", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_a_torchrun_worker_ends_without_finalisation_but_keeps_its_output_and_exit_code(tmp_path):
    done = _as_torchrun_worker("version")
    assert done.returncode == 0, done.stderr
    assert "lgvq-core" in done.stdout  # block-buffered into a pipe: flushed before the process ends
    missing = tmp_path / "missing.toml"
    refused = _as_torchrun_worker("check", str(missing))
    assert refused.returncode == 2
    assert "missing.toml" in refused.stderr
