"""Run-file validation: every kind of problem, reported at once with its path; --set overrides; schema rows.

The components come from the sample test plugin (tests/fixtures/plugins/lgvq-test-sample), whose
config classes use every field type the loader handles.
"""

from __future__ import annotations

import copy

import pytest

from lgvq_core.config.describe import dumps_toml, schema_rows, unstructure
from lgvq_core.config.loader import load_run_file, validate
from lgvq_core.config.overrides import apply_overrides
from lgvq_core.errors import ConfigError
from lgvq_core.registry import get_registry, get_spec

MINIMAL = {"model": {"backbone": {"type": "sample-ae"}}, "data": {"type": "sample-shapes"}}


@pytest.fixture
def registry(fixture_plugin, make_plugin_manager):
    fixture_plugin("sample")
    make_plugin_manager(["core", "testing", "sample"])
    return get_registry()


def problems_of(raw, registry) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        validate(raw, registry=registry)
    return caught.value.problems


def run_file(**sections):
    raw = copy.deepcopy(MINIMAL)
    for name, table in sections.items():
        if name in ("backbone", "quantizer"):
            raw["model"][name] = table
        else:
            raw[name] = table
    return raw


# ------------------------------------------------------------------------------------------
# valid files
# ------------------------------------------------------------------------------------------
def test_a_minimal_run_file_gets_every_default_and_the_backbones_quantizer(registry):
    loaded = validate(MINIMAL, registry=registry)

    config = loaded.config
    assert config.model.backbone.type == "sample-ae"
    assert config.model.backbone.config == get_spec("backbone", "sample-ae").config_cls()
    assert config.model.quantizer.type == "sample-vq"
    assert config.model.quantizer.config.dim == 8  # from the backbone's default_quantizer table
    assert (config.run.name, config.run.device, config.train.betas) == ("lgvq", "cpu", (0.5, 0.9))
    assert config.text_encoder is None and config.alignment == []
    assert loaded.warnings == ()


def test_a_quantizer_table_without_type_overrides_keys_of_the_backbones_default(registry):
    # e.g. `--set model.quantizer.beta=0.5` on a file that relies on the default quantizer
    loaded = validate(run_file(quantizer={"beta": 0.5}), registry=registry)

    quantizer = loaded.config.model.quantizer
    assert quantizer.type == "sample-vq"
    assert (quantizer.config.dim, quantizer.config.beta) == (8, 0.5)


def test_component_names_are_stored_in_their_registered_spelling(registry):
    loaded = validate(run_file(backbone={"type": "SAMPLE_AE"}), registry=registry)

    assert loaded.config.model.backbone.type == "sample-ae"


def test_a_float_field_accepts_an_integer_as_a_float(registry):
    loaded = validate(run_file(quantizer={"type": "sample-vq", "beta": 0}), registry=registry)

    beta = loaded.config.model.quantizer.config.beta
    assert beta == 0.0 and isinstance(beta, float)


def test_a_resolved_run_file_written_as_toml_loads_back_equal(registry, tmp_path):
    raw = run_file(text_encoder={"type": "tiny-text"}, alignment=[{"type": "relation", "weight": 0.5}])
    loaded = validate(raw, registry=registry)
    path = tmp_path / "resolved.toml"
    path.write_text(dumps_toml(unstructure(loaded.config)))

    again = load_run_file(path, registry=registry)

    assert again.config == loaded.config


def test_a_warning_is_reported_without_failing_the_file(registry):
    raw = run_file(
        text_encoder={"type": "tiny-text"},
        alignment=[{"type": "semantic-nce", "negatives": "gathered"}],
        train={"batch_size": 1},
    )

    loaded = validate(raw, registry=registry)

    [warning] = loaded.warnings
    assert str(warning).startswith("$.train.batch_size: warning: batch_size 1: $.alignment[0] (semantic-nce)")


# ------------------------------------------------------------------------------------------
# every kind of problem
# ------------------------------------------------------------------------------------------
def test_a_toml_syntax_error_gives_line_and_column(registry, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('[model.backbone]\ntype = "sample-ae"\nhidden = = 3\n')

    with pytest.raises(ConfigError) as caught:
        load_run_file(path, registry=registry)

    [problem] = caught.value.problems
    assert problem.startswith("$: invalid TOML at line 3, column 10: ")
    assert caught.value.source == str(path)


def test_a_missing_run_file_is_a_config_error_naming_it(registry, tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_run_file(tmp_path / "nope.toml", registry=registry)

    assert caught.value.problems == [f"$: run file not found: {tmp_path / 'nope.toml'}"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (
            run_file(backbone={"type": "sample-ae", "hiden": 3}),
            "$.model.backbone.hiden: unknown key 'hiden'; did you mean 'hidden'?",
        ),
        (
            run_file(backbone={"type": "sample-ae", "colour": 3}),
            "$.model.backbone.colour: unknown key 'colour'; allowed keys: hidden, downsample, code_dim, widths, "
            "adversarial, label",
        ),
        (run_file(trian={"max_steps": 3}), "$.trian: unknown key 'trian'; did you mean 'train'?"),
        (run_file(train={"max_stpes": 3}), "$.train.max_stpes: unknown key 'max_stpes'; did you mean 'max_steps'?"),
    ],
    ids=["close-match", "no-close-match", "section", "section-key"],
)
def test_an_unknown_key_is_rejected_with_a_suggestion(registry, raw, problem):
    assert problems_of(raw, registry) == [problem]


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"hidden": "8"}, "$.model.backbone.hidden: expected an integer, got string '8'"),
        ({"hidden": 8.0}, "$.model.backbone.hidden: expected an integer, got float 8.0"),
        ({"hidden": True}, "$.model.backbone.hidden: expected an integer, got boolean True"),
        ({"adversarial": 1}, "$.model.backbone.adversarial: expected true or false, got integer 1"),
        ({"adversarial": "yes"}, "$.model.backbone.adversarial: expected true or false, got string 'yes'"),
        ({"label": 3}, "$.model.backbone.label: expected a string, got integer 3"),
        ({"widths": [8, "x"]}, "$.model.backbone.widths[1]: expected an integer, got string 'x'"),
        ({"widths": "8, 16"}, "$.model.backbone.widths: expected an array, got string '8, 16'"),
        ({"widths": 8}, "$.model.backbone.widths: expected an array, got integer 8"),
    ],
)
def test_a_value_of_the_wrong_type_is_rejected_without_conversion(registry, table, problem):
    assert problems_of(run_file(backbone={"type": "sample-ae", **table}), registry) == [problem]


def test_a_validator_is_run_even_when_another_key_of_its_table_is_wrong(registry):
    raw = run_file(train={"max_stpes": 3, "batch_size": 0, "accumulate": "two"})

    assert problems_of(raw, registry) == [
        "$.train.max_stpes: unknown key 'max_stpes'; did you mean 'max_steps'?",
        "$.train.accumulate: expected an integer, got string 'two'",
        "$.train.batch_size: must be > 0, got 0",
    ]


def test_a_tuple_field_checks_its_length(registry):
    [problem] = problems_of(run_file(train={"betas": [0.5, 0.9, 0.99]}), registry)

    assert problem.startswith("$.train.betas: ")


def test_a_missing_required_key_names_its_type(registry):
    assert problems_of(run_file(data={"type": "sample-folder"}), registry) == [
        "$.data.root: missing required key (str)"
    ]


def test_missing_required_tables_list_the_components_to_choose_from(registry):
    problems = problems_of({"model": {}}, registry)

    assert problems[0] == "$.model.backbone: missing required table (a backbone with type = one of: sample-ae, tiny-ae)"
    assert problems[1].startswith("$.data: missing required table (a dataset with type = one of: ")
    assert "sample-shapes" in problems[1]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (run_file(quantizer={"type": "sample-vq", "beta": 1.5}), "$.model.quantizer.beta: must be in [0, 1], got 1.5"),
        (
            run_file(backbone={"type": "sample-ae", "downsample": 3}),
            "$.model.backbone.downsample: must be a power of 2, got 3",
        ),
        (run_file(data={"type": "sample-shapes", "image_size": 4}), "$.data.image_size: must be in [8, 256], got 4"),
        (run_file(run={"device": "gpu"}), '$.run.device: must be "cpu", "cuda" or "cuda:N", got \'gpu\''),
        (run_file(train={"max_steps": 0}), "$.train.max_steps: must be > 0, got 0"),
    ],
)
def test_a_validator_message_is_kept_as_it_is(registry, raw, problem):
    assert problems_of(raw, registry) == [problem]


def test_a_choice_outside_its_literal_lists_the_choices_and_suggests_one(registry):
    raw = run_file(quantizer={"type": "sample-vq", "beta_placement": "comitment"})

    assert problems_of(raw, registry) == [
        '$.model.quantizer.beta_placement: must be one of "codebook", "commitment", got \'comitment\'; '
        'did you mean "commitment"?'
    ]


def test_a_choice_with_nothing_close_lists_the_choices_only(registry):
    [problem] = problems_of(run_file(run={"precision": "double"}), registry)

    assert problem == '$.run.precision: must be one of "fp32", "bf16", "fp16", got \'double\''


def test_a_component_table_without_type_lists_the_choices(registry):
    assert problems_of(run_file(text_encoder={"context_length": 8}), registry) == [
        "$.text_encoder.type: missing; choose one of: tiny-text"
    ]


def test_an_unknown_type_is_reported_where_it_is_with_a_suggestion(registry):
    [problem] = problems_of(run_file(backbone={"type": "sampel-ae"}), registry)

    assert problem == (
        "$.model.backbone.type: unknown backbone 'sampel-ae'; did you mean 'sample-ae'? Available: sample-ae, tiny-ae."
    )


def test_an_unknown_type_in_an_array_of_tables_has_its_index_in_the_path(registry):
    raw = run_file(text_encoder={"type": "tiny-text"}, alignment=[{"type": "relation"}, {"type": "semantic-nse"}])

    [problem] = problems_of(raw, registry)

    assert problem.startswith("$.alignment[1].type: unknown alignment-loss 'semantic-nse'; did you mean 'semantic-nce'")


def test_an_array_of_tables_given_as_a_table_is_rejected(registry):
    raw = run_file(text_encoder={"type": "tiny-text"}, alignment={"type": "relation"})

    assert problems_of(raw, registry) == ["$.alignment: expected an array of tables ([[alignment]]), got table"]


def test_a_section_given_as_a_value_is_rejected(registry):
    assert problems_of(run_file(train=3), registry) == ["$.train: expected a table, got integer 3"]


def test_a_component_cross_check_sees_the_whole_run_file(registry):
    raw = run_file(quantizer={"type": "sample-vq", "dim": 4})

    assert problems_of(raw, registry) == [
        "$.model.backbone.code_dim: is 8 but $.model.quantizer.dim is 4; make them equal"
    ]


def test_alignment_losses_without_a_text_encoder_are_a_cross_field_problem(registry):
    raw = run_file(alignment=[{"type": "relation"}])

    assert problems_of(raw, registry) == ["$.text_encoder: missing: the [[alignment]] losses need a text encoder"]


def test_the_code_vit_width_must_be_positive(registry):
    raw = run_file(text_encoder={"type": "tiny-text"}, alignment=[{"type": "relation"}], code_vit={"width": 0})

    assert problems_of(raw, registry) == ["$.code_vit.width: must be > 0, got 0"]


def test_code_vit_heads_must_divide_its_width_once_set_and_the_code_dim_otherwise(registry):
    alignment = {"text_encoder": {"type": "tiny-text"}, "alignment": [{"type": "relation"}]}

    assert problems_of(run_file(**alignment, code_vit={"width": 6, "heads": 4}), registry) == [
        "$.code_vit.heads: 4 heads do not divide the code ViT width 6 ($.code_vit.width); use one of [1, 2, 3, 6]"
    ]
    assert problems_of(run_file(**alignment, code_vit={"heads": 3}), registry) == [
        "$.code_vit.heads: 3 heads do not divide the code dim 8 ($.model.quantizer.dim), the width of the code ViT; "
        "use one of [1, 2, 4, 8]"
    ]
    loaded = validate(run_file(**alignment, code_vit={"width": 6, "heads": 3}), registry=registry)  # 3 ∤ 8: fine
    assert (loaded.config.code_vit.width, validate(MINIMAL, registry=registry).config.code_vit.width) == (6, None)


def test_the_same_alignment_loss_twice_is_a_cross_field_problem(registry):
    raw = run_file(text_encoder={"type": "tiny-text"}, alignment=[{"type": "relation"}, {"type": "Relation"}])

    assert problems_of(raw, registry) == ["$.alignment[1].type: 'relation' is already given as $.alignment[0]"]


def test_every_problem_is_reported_at_once_one_per_line(registry):
    raw = {
        "model": {"backbone": {"type": "sample-ae", "hiden": 3, "downsample": 3}, "quantizer": {"type": "vqq"}},
        "data": {"type": "sample-folder"},
        "run": {"precision": "fp33", "seed": "zero"},
        "train": {"batch_size": -1},
    }

    with pytest.raises(ConfigError) as caught:
        validate(raw, registry=registry, source="run.toml")

    assert caught.value.problems == [
        "$.model.backbone.hiden: unknown key 'hiden'; did you mean 'hidden'?",
        "$.model.backbone.downsample: must be a power of 2, got 3",
        "$.model.quantizer.type: unknown quantizer 'vqq'; did you mean 'vq'? Available: cosine, sample-vq, vq, vq-ema.",
        "$.data.root: missing required key (str)",
        "$.run.seed: expected an integer, got string 'zero'",
        '$.run.precision: must be one of "fp32", "bf16", "fp16", got \'fp33\'; did you mean "fp32"?',
        "$.train.batch_size: must be > 0, got -1",
    ]
    assert str(caught.value).splitlines()[0] == "run.toml: 7 problems in the run file"


# ------------------------------------------------------------------------------------------
# --set overrides
# ------------------------------------------------------------------------------------------
def overridden(registry, *items, raw=None):
    raw = raw or run_file(quantizer={"type": "sample-vq"})
    return validate(apply_overrides(raw, list(items), registry), registry=registry).config


@pytest.mark.parametrize(
    ("item", "read", "expected"),
    [
        ("train.max_steps=3", lambda c: c.train.max_steps, 3),
        ("train.base_lr=1e-4", lambda c: c.train.base_lr, 1e-4),
        ("train.base_lr=2", lambda c: c.train.base_lr, 2.0),
        ("model.backbone.adversarial=true", lambda c: c.model.backbone.config.adversarial, True),
        ("train.betas=[0.9, 0.99]", lambda c: c.train.betas, (0.9, 0.99)),
        ("model.backbone.widths=[4,8,16]", lambda c: c.model.backbone.config.widths, [4, 8, 16]),
        ("run.name=123", lambda c: c.run.name, "123"),
        ("model.backbone.label=3.5", lambda c: c.model.backbone.config.label, "3.5"),
        ("model.backbone.label=two words", lambda c: c.model.backbone.config.label, "two words"),
        ("model.quantizer.beta_placement=commitment", lambda c: c.model.quantizer.config.beta_placement, "commitment"),
        ("run.device=cuda:1", lambda c: c.run.device, "cuda:1"),
        ("train.grad_clip=1.0", lambda c: c.train.grad_clip, 1.0),
    ],
)
def test_set_reads_the_value_as_the_schema_types_it(registry, item, read, expected):
    value = read(overridden(registry, item))

    assert value == expected
    assert type(value) is type(expected)


def test_set_addresses_array_of_table_entries_by_index(registry):
    raw = run_file(text_encoder={"type": "tiny-text"}, alignment=[{"type": "relation"}, {"type": "masked-text"}])

    config = overridden(registry, "alignment.1.weight=0.01", "alignment[0].weight=0.5", raw=raw)

    assert [a.config.weight for a in config.alignment] == [0.5, 0.01]


def test_set_can_add_a_table_the_file_does_not_have(registry):
    config = overridden(registry, "text_encoder.type=tiny-text", "text_encoder.width=16")

    assert config.text_encoder.type == "tiny-text"
    assert config.text_encoder.config.width == 16


def test_set_can_change_a_components_type(registry):
    config = overridden(registry, "model.quantizer.type=vq", "model.quantizer.dim=8")

    assert config.model.quantizer.type == "vq"


def test_set_does_not_change_the_table_it_was_given(registry):
    raw = copy.deepcopy(MINIMAL)

    apply_overrides(raw, ["model.backbone.hidden=3"], registry)

    assert raw == MINIMAL


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        (
            "train.max_steps",
            "$.train.max_steps: --set 'train.max_steps': expected KEY=VALUE, e.g. --set train.max_steps=3",
        ),
        ("=3", "$: --set '=3': expected KEY=VALUE, e.g. --set train.max_steps=3"),
        ("train..max_steps=3", "$: --set 'train..max_steps=3': empty part in key 'train..max_steps'"),
        ("alignment.2.weight=1", "$.alignment[2]: --set 'alignment.2.weight=1': no such entry (the run file has 0)"),
        ("train.max_steps.x=1", "$.train.max_steps: --set 'train.max_steps.x=1': is a value, not a table"),
    ],
)
def test_set_rejects_a_malformed_or_impossible_override(registry, item, problem):
    with pytest.raises(ConfigError) as caught:
        apply_overrides(run_file(train={"max_steps": 3}), [item], registry)

    assert caught.value.problems == [problem]


def test_set_of_an_unknown_key_fails_validation_with_a_suggestion(registry):
    with pytest.raises(ConfigError) as caught:
        overridden(registry, "train.max_stpes=3")

    assert caught.value.problems == ["$.train.max_stpes: unknown key 'max_stpes'; did you mean 'max_steps'?"]


def test_set_of_a_value_of_the_wrong_type_fails_validation(registry):
    with pytest.raises(ConfigError) as caught:
        overridden(registry, "train.max_steps=many")

    assert caught.value.problems == ["$.train.max_steps: expected an integer, got string 'many'"]


def test_set_is_applied_by_load_run_file(registry, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(dumps_toml(MINIMAL))

    loaded = load_run_file(path, overrides=["train.max_steps=7", "run.name=sweep-1"], registry=registry)

    assert (loaded.config.train.max_steps, loaded.config.run.name) == (7, "sweep-1")


# ------------------------------------------------------------------------------------------
# schema rows
# ------------------------------------------------------------------------------------------
def test_schema_rows_give_name_type_default_and_doc_of_every_field(registry):
    rows = {row["name"]: row for row in schema_rows(get_spec("quantizer", "sample-vq").config_cls)}

    assert list(rows) == ["codebook_size", "dim", "beta", "beta_placement"]
    assert rows["codebook_size"] == {
        "name": "codebook_size",
        "type": "int",
        "default": "16",
        "doc": "Number of codes K.",
    }
    assert rows["beta"]["type"] == "float" and rows["beta"]["default"] == "0.25"
    assert rows["beta_placement"]["type"] == '"codebook" | "commitment"'
    assert rows["beta_placement"]["default"] == '"codebook"'


def test_schema_rows_show_required_keys_and_factory_defaults(registry):
    folder = {row["name"]: row for row in schema_rows(get_spec("dataset", "sample-folder").config_cls)}
    backbone = {row["name"]: row for row in schema_rows(get_spec("backbone", "sample-ae").config_cls)}

    assert folder["root"]["default"] == "(required)"
    assert backbone["widths"] == {
        "name": "widths",
        "type": "list[int]",
        "default": "[8, 16]",
        "doc": "Channel widths per stage.",
    }
