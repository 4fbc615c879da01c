"""The hookspecs are the plugin contract: each one documented, each parameter named, pluggy-safe."""

from __future__ import annotations

import inspect

import pytest

from lgvq_core import hookspecs
from lgvq_core.specs import HOOK_FOR_KIND

SPEC_MARKER = f"{hookspecs.PROJECT}_spec"
HOOKS = sorted(name for name, value in vars(hookspecs).items() if name.startswith("lgvq_") and callable(value))


def test_the_module_defines_the_hooks_of_the_design():
    registration = set(HOOK_FOR_KIND.values())
    loop = {
        "lgvq_train_start",
        "lgvq_after_quantize",
        "lgvq_train_batch_end",
        "lgvq_validation_end",
        "lgvq_save_checkpoint",
        "lgvq_load_checkpoint",
        "lgvq_train_end",
        "lgvq_exception",
        "lgvq_make_optimizers",
    }
    assert registration | loop <= set(HOOKS)


@pytest.mark.parametrize("name", HOOKS)
def test_every_lgvq_function_is_a_hookspec(name):
    assert hasattr(getattr(hookspecs, name), SPEC_MARKER), f"{name} is not decorated with @hookspec"


@pytest.mark.parametrize("name", HOOKS)
def test_every_hook_has_a_docstring_that_names_each_parameter(name):
    function = getattr(hookspecs, name)
    doc = inspect.getdoc(function) or ""

    assert len(doc.split()) >= 8, f"{name}: the docstring is the hook's contract; say what, when and which ranks"
    for parameter in inspect.signature(function).parameters:
        assert f":param {parameter}:" in doc or f"``{parameter}``" in doc, f"{name}: {parameter!r} is not documented"


@pytest.mark.parametrize("name", HOOKS)
def test_no_hook_has_keyword_only_parameters_or_defaults(name):
    for parameter in inspect.signature(getattr(hookspecs, name)).parameters.values():
        assert parameter.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, (
            f"{name}: {parameter.name} is {parameter.kind}"
        )
        assert parameter.default is inspect.Parameter.empty, f"{name}: {parameter.name} has a default"


@pytest.mark.parametrize("name", sorted(HOOK_FOR_KIND.values()))
def test_registration_hooks_take_no_arguments_and_say_what_they_return(name):
    function = getattr(hookspecs, name)

    assert list(inspect.signature(function).parameters) == []
    assert ":returns:" in (inspect.getdoc(function) or "")


@pytest.mark.parametrize("name", HOOKS)
def test_hooks_that_receive_the_run_take_it_first(name):
    parameters = list(inspect.signature(getattr(hookspecs, name)).parameters)

    if "run" in parameters:
        assert parameters[0] == "run"


def test_producer_hooks_stop_at_the_first_answer():
    for name in ("lgvq_make_optimizers", "lgvq_train_step"):
        options = getattr(getattr(hookspecs, name), SPEC_MARKER)
        assert options["firstresult"] is True, name
