"""Every run file under examples/ is valid, and the paper presets carry the paper's settings.

Downstream run files name a tokenizer run that does not exist until someone trains it: they are
checked with ``--set tokenizer.run_dir=`` pointing at a tiny real tokenizer run, and without it
``lgvq check`` must say which key to set.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import tomli
from tiny_runs import tokenizer_run_file

from lgvq_core.errors import ConfigError
from lgvq_core.run_file import load_run_file
from lgvq_core.runner.loop import train
from lgvq_core.runner.optim import effective_lr

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def is_downstream(path: Path) -> bool:
    return "downstream" in tomli.loads(path.read_text(encoding="utf-8"))


RUN_FILES = sorted(p for p in EXAMPLES.rglob("*.toml") if "plugins" not in p.parts)
TOKENIZER_FILES = [p for p in RUN_FILES if not is_downstream(p)]
DOWNSTREAM_FILES = [p for p in RUN_FILES if is_downstream(p)]
PRESETS = sorted(p for p in (EXAMPLES / "paper").rglob("*.toml") if not is_downstream(p))


def example_id(path: Path) -> str:
    return path.relative_to(EXAMPLES).as_posix()


# LG-VQ weights (semantic-nce, masked-text, relation) of the official configs (docs/method.md: Training objective).
WEIGHTS = {
    "celeba-hq": (0.001, 0.01, 0.0001),
    "textcaps": (0.001, 0.01, 0.0001),
    "cub-200": (0.001, 0.001, 0.001),
    "mscoco": (0.001, 0.01, 0.0001),
}

# Paper App. A.1 and the table "downstream (frozen codes)": model, batch, and the training length
# where the paper gives one in epochs (epochs x training items / batch, rounded up).
MM_CELEBA_HQ_TRAIN_IMAGES = 24_000
CUB_TRAIN_IMAGES = 5_994
COCO_QA_TRAIN_QUESTIONS = 78_736
REFCOCO_UNC_TRAIN_EXPRESSIONS = 120_624
GPT_PAPER = {"layers": 16, "heads": 16, "width": 1024, "block_size": 512}
DOWNSTREAM_PRESETS = {
    "paper/celeba-hq/code-gpt-unconditional.toml": {
        "model": "code-gpt",
        "options": {**GPT_PAPER, "condition": "unconditional"},
        "batch": 36,
        "tokenizer": "celeba-hq-vqgan-lg",
        "task": "generation-fid",
    },
    "paper/celeba-hq/code-gpt-completion.toml": {
        "model": "code-gpt",
        "options": {**GPT_PAPER, "condition": "completion", "completion_fraction": 0.5},
        "batch": 36,
        "tokenizer": "celeba-hq-vqgan-lg",
        "task": "generation-fid",
    },
    "paper/celeba-hq/code-gpt-semantic.toml": {
        "model": "code-gpt",
        "options": {**GPT_PAPER, "condition": "semantic", "semantic_source": "grid", "condition_vocab": 19},
        "batch": 15,
        "data": "celebamask-hq",
        "tokenizer": "celeba-hq-vqgan-lg",
        "task": "generation-fid",
    },
    "paper/celeba-hq/code-gpt-text.toml": {
        "model": "code-gpt",
        "options": {**GPT_PAPER, "condition": "text"},
        "batch": 36,
        "tokenizer": "celeba-hq-vqgan-lg",
        "task": "generation-fid",
    },
    "paper/celeba-hq/text-to-image.toml": {
        "model": "text-to-image",
        "options": {"layers": 19, "width": 1024, "steps": 100},
        "batch": 24,
        "steps": math.ceil(90 * MM_CELEBA_HQ_TRAIN_IMAGES / 24),
        "tokenizer": "celeba-hq-vqgan-lg",
        "task": "generation-fid",
    },
    "paper/cub-200/captioning.toml": {
        "model": "captioning",
        "options": {},
        "batch": 60,
        "steps": math.ceil(100 * CUB_TRAIN_IMAGES / 60),
        "tokenizer": "cub-200-vqgan-lg",
        "task": "caption-scores",
    },
    "paper/mscoco/vqa-coco-qa.toml": {
        "model": "vqa",
        "options": {"wups_thresholds": [0.9, 0.0]},
        "batch": 60,
        "steps": math.ceil(50 * COCO_QA_TRAIN_QUESTIONS / 60),
        "data": "coco-qa",
        "tokenizer": "mscoco-vqgan-lg",
        "task": "vqa-scores",
    },
    "paper/mscoco/grounding-refcoco.toml": {
        "model": "grounding",
        "options": {},
        "batch": 30,
        "steps": math.ceil(100 * REFCOCO_UNC_TRAIN_EXPRESSIONS / 30),
        "data": "refcoco",
        "tokenizer": "mscoco-vqgan-lg",
        "task": "grounding-scores",
    },
}


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory) -> Path:
    """A tiny trained tokenizer run whose training split holds a batch of every preset (60 images)."""
    root = tmp_path_factory.mktemp("examples-tokenizer")
    return train(load_run_file(tokenizer_run_file(root), overrides=["data.num_train=64"])).run_dir


def test_the_examples_include_the_quickstart_and_every_table_1_row():
    names = {example_id(p) for p in RUN_FILES}
    assert "quickstart.toml" in names
    for dataset in WEIGHTS:
        for row in ("vqvae", "vqgan", "cvq"):
            assert f"paper/{dataset}/{row}.toml" in names
            assert f"paper/{dataset}/{row}-lg.toml" in names


def test_every_downstream_file_is_a_known_preset_the_worked_example_or_a_comparison_task():
    names = {example_id(p) for p in DOWNSTREAM_FILES}
    comparisons = ("compare/", "gpu/")  # the downstream models of examples/compare.toml and examples/gpu/compare.toml
    assert {n for n in names if not n.startswith(comparisons)} == {*DOWNSTREAM_PRESETS, "downstream/code-gpt.toml"}


@pytest.mark.parametrize("path", TOKENIZER_FILES, ids=example_id)
def test_example_run_file_passes_check(path):
    loaded = load_run_file(path)
    assert loaded.config.model.backbone.type


@pytest.mark.parametrize("path", DOWNSTREAM_FILES, ids=example_id)
def test_downstream_example_passes_check_with_a_trained_tokenizer_run(path, tokenizer_run):
    loaded = load_run_file(path, overrides=[f"tokenizer.run_dir={tokenizer_run}"])
    assert loaded.config.tokenizer.run_dir == str(tokenizer_run)
    assert loaded.config.downstream.type


@pytest.mark.parametrize("path", DOWNSTREAM_FILES, ids=example_id)
def test_downstream_example_placeholder_is_reported_with_the_key_to_set(path):
    with pytest.raises(ConfigError) as info:
        load_run_file(path)
    placeholder = tomli.loads(path.read_text(encoding="utf-8"))["tokenizer"]["run_dir"]
    assert info.value.problems == [
        f"$.tokenizer.run_dir: no such run directory: {placeholder}; give the run directory `lgvq run` printed "
        "(in the file, or on the command line: --set tokenizer.run_dir=runs/<name>/<timestamp>-<id>)"
    ]


@pytest.mark.parametrize("path", PRESETS, ids=example_id)
def test_paper_presets_use_the_paper_settings(path):
    config = load_run_file(path).config
    assert config.data.config.image_size == 256
    assert config.train.batch_size == 8
    assert tuple(config.train.betas) == (0.5, 0.9)
    if path.stem.endswith("-lg"):
        assert [a.type for a in config.alignment] == ["semantic-nce", "masked-text", "relation"]
        assert tuple(a.config.weight for a in config.alignment) == WEIGHTS[path.parent.name]
        assert config.text_encoder.type == "open_clip" and config.text_encoder.config.context_length == 30
    else:
        assert config.alignment == []
    if config.model.backbone.type in ("vqgan", "cvq"):
        assert config.model.backbone.config.disc_start == 10000
        assert config.model.quantizer.config.codebook_size == 1024


def stage_one_run_names() -> dict[str, Path]:
    return {tomli.loads(p.read_text(encoding="utf-8"))["run"]["name"]: p for p in PRESETS}


@pytest.mark.parametrize("name", sorted(DOWNSTREAM_PRESETS))
def test_downstream_presets_use_the_paper_settings(name, tokenizer_run):
    expected = DOWNSTREAM_PRESETS[name]
    path = EXAMPLES / name
    raw = tomli.loads(path.read_text(encoding="utf-8"))
    config = load_run_file(path, overrides=[f"tokenizer.run_dir={tokenizer_run}"]).config

    # The placeholder names the run directory of a stage-1 preset of the same dataset, with LG.
    tokenizer_name = raw["tokenizer"]["run_dir"].split("/")[1]
    assert tokenizer_name == expected["tokenizer"]
    assert stage_one_run_names()[tokenizer_name].parent == path.parent
    assert raw["tokenizer"]["run_dir"] == f"runs/{tokenizer_name}/<timestamp>-<id>"

    assert config.downstream.type == expected["model"]
    for key, value in expected["options"].items():
        assert getattr(config.downstream.config, key) == value, key
    assert config.train.batch_size == expected["batch"]
    if "steps" in expected:
        assert config.train.max_steps == expected["steps"]
    if "data" in expected:
        assert config.data.type == expected["data"] and config.data.config.image_size == 256
    else:
        assert "data" not in raw  # the tokenizer run's own dataset
    assert [t.type for t in config.tasks] == [expected["task"]]
    assert config.run.device == "cuda"

    if expected["model"] == "code-gpt":  # taming: AdamW (0.9, 0.95), lr = 4.5e-6 x batch
        assert tuple(config.train.betas) == (0.9, 0.95)
        assert effective_lr(config.train, 1) == pytest.approx(4.5e-6 * expected["batch"])
    if expected["model"] == "text-to-image":  # VQ-Diffusion's optimizer (after its warm-up)
        assert tuple(config.train.betas) == (0.9, 0.96) and config.train.weight_decay == 0.045
        assert effective_lr(config.train, 1) == 4.5e-4 and config.train.grad_clip == 0.5


def test_the_semantic_preset_has_one_condition_token_per_celebamask_hq_class():
    from lgvq_core.data.celebamask import CLASSES

    raw = tomli.loads((EXAMPLES / "paper/celeba-hq/code-gpt-semantic.toml").read_text(encoding="utf-8"))
    assert raw["downstream"]["condition_vocab"] == len(CLASSES) == 19


def test_the_quickstart_uses_the_leak_free_input_and_a_learnable_temperature():
    config = load_run_file(EXAMPLES / "quickstart.toml").config
    losses = {a.type: a.config for a in config.alignment}

    assert losses["masked-text"].text_input == "token-embedding"
    assert losses["semantic-nce"].learn_temperature is True
    assert losses["semantic-nce"].temperature == 0.07


@pytest.mark.parametrize(
    "path", [p for p in PRESETS if p.stem.endswith("-lg")], ids=lambda p: p.relative_to(EXAMPLES).as_posix()
)
def test_paper_presets_keep_the_official_masked_text_input_and_fixed_temperature(path):
    losses = {a.type: a.config for a in load_run_file(path).config.alignment}

    assert losses["masked-text"].text_input == "unmasked-contextual"
    assert losses["semantic-nce"].learn_temperature is False
    assert losses["semantic-nce"].temperature == 1.0


#: The run files that use the small-scale recipe (examples/small/tokenizer.toml), and what each may add.
RECIPE = EXAMPLES / "small" / "tokenizer.toml"
RECIPE_USERS = ["quickstart.toml", "downstream/tokenizer.toml", "compare.toml"]
RECIPE_TABLES = ("model", "text_encoder", "code_vit", "alignment", "data", "train")
#: Users that train the recipe for fewer steps: the [train] keys that may differ.
SHORTER = {"compare.toml": {"max_steps", "val_every", "checkpoint_every", "sample_every"}}


@pytest.mark.parametrize("name", RECIPE_USERS)
def test_the_quickstart_the_worked_example_and_the_comparison_train_the_small_recipe(name):
    recipe = tomli.loads(RECIPE.read_text(encoding="utf-8"))
    user = tomli.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    for table in RECIPE_TABLES:
        mine, theirs = user.get(table), recipe.get(table)
        if table == "train" and name in SHORTER:  # the same recipe over fewer steps
            mine, theirs = ({k: v for k, v in t.items() if k not in SHORTER[name]} for t in (mine, theirs))
            assert user["train"]["max_steps"] < recipe["train"]["max_steps"]
        assert mine == theirs, f"{name}: [{table}] differs from {RECIPE.name}'s"
    assert user["run"]["precision"] == recipe["run"]["precision"] and user["run"]["seed"] == recipe["run"]["seed"]


def test_the_small_recipe_keeps_the_official_defaults_off_the_paper_presets():
    # every lever of the recipe is a run-file option: the paper presets set none of them
    levers = {("train", "warmup_steps"), ("train", "lr_schedule"), ("model.quantizer", "dead_code_threshold")}
    for path in PRESETS:
        data = tomli.loads(path.read_text(encoding="utf-8"))
        for section, key in levers:
            table = data
            for part in section.split("."):
                table = table.get(part, {})
            assert key not in table, f"{example_id(path)} sets {section}.{key}"


def test_the_comparison_has_a_file_for_every_condition_of_the_code_prior():
    conditions = set()
    for path in sorted((EXAMPLES / "compare").glob("*.toml")):
        downstream = tomli.loads(path.read_text(encoding="utf-8")).get("downstream", {})
        if downstream.get("type") == "code-gpt":
            conditions.add(downstream.get("condition", "unconditional"))
    assert conditions == {"unconditional", "completion", "semantic", "text"}
