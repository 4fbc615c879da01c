"""The contract catches quantizer bugs that would otherwise surface far away, and config-class slips."""

from __future__ import annotations

import attrs
import pytest
import torch

from lgvq_core import ComponentSpec, option
from lgvq_core.config.walker import structure_component
from lgvq_core.errors import ConfigError
from lgvq_core.quantizers.base import Quantizer, QuantizerOutput, check_quantizer
from lgvq_core.registry import get_registry
from lgvq_core.specs import RegisteredComponent
from lgvq_core.testing.contract import ContractError, default_type_problems, schema_problem


class Nearest(Quantizer):
    """A correct 4-code nearest-neighbour quantizer of width 2; subclasses break one rule each."""

    codebook_size, dim = 4, 2

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]]))

    @property
    def codebook(self) -> torch.Tensor:
        return self.weight

    def lookup(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = z.permute(0, 2, 3, 1)  # b h w d
        indices = torch.cdist(flat.reshape(-1, 2), self.weight).argmin(1).view(flat.shape[:3])  # b h w
        return self.decode_indices(indices), indices

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        z_q, indices = self.lookup(z)
        return QuantizerOutput(quant=z + (z_q - z).detach(), indices=indices, loss=(z_q.detach() - z).pow(2).mean())

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        return self.weight[indices].permute(0, 3, 1, 2)


class IndicesTooLarge(Nearest):
    def forward(self, z):
        out = super().forward(z)
        out.indices = out.indices + 4
        return out


class FloatIndices(Nearest):
    def forward(self, z):
        out = super().forward(z)
        out.indices = out.indices.float()
        return out


class NoCodebook(Nearest):
    @property
    def codebook(self):
        raise NotImplementedError


class TransposedCodebook(Nearest):
    @property
    def codebook(self):
        return self.weight.t()


class ShiftedDecode(Nearest):
    def decode_indices(self, indices):
        return super().decode_indices((indices + 1) % 4)

    def forward(self, z):
        z_q = Nearest.decode_indices(self, self.lookup(z)[1])
        return QuantizerOutput(quant=z + (z_q - z).detach(), indices=self.lookup(z)[1], loss=torch.zeros(()))


class NoStraightThrough(Nearest):
    def forward(self, z):
        z_q, indices = self.lookup(z)
        return QuantizerOutput(quant=z_q.detach(), indices=indices, loss=torch.zeros(()))


class NoisyInEval(Nearest):
    def forward(self, z):
        return super().forward(z + 0.5 * torch.randn_like(z))


def test_a_correct_quantizer_passes():
    check_quantizer(Nearest())


@pytest.mark.parametrize(
    ("quantizer", "message"),
    [
        (IndicesTooLarge(), r"indices range over \[4, 7\] but codebook_size is 4: every index must be in \[0, 4\)"),
        (FloatIndices(), r"indices have dtype torch.float32; they index the codebook and must be torch.long"),
        (NoCodebook(), r"the codebook property fails: NotImplementedError"),
        (TransposedCodebook(), r"codebook is \(2, 4\); expected a \(codebook_size, dim\) = \(4, 2\) tensor"),
        (ShiftedDecode(), r"decode_indices\(indices\) differs from quant by up to 1 \(eval mode\)"),
        (NoStraightThrough(), r"quant carries no gradient: use the straight-through"),
        (NoisyInEval(), r"two calls in eval mode on the same input give different codes"),
    ],
    ids=["index-range", "index-dtype", "no-codebook", "codebook-shape", "decode", "gradient", "determinism"],
)
def test_a_quantizer_bug_fails_with_a_message_that_names_it(quantizer, message):
    torch.manual_seed(0)
    with pytest.raises(ContractError, match=message):
        check_quantizer(quantizer)


@attrs.define
class StringForInt:
    """A config whose default is a string on an int field."""

    channels: int = option("8", "Channels.")


@attrs.define
class ComplexField:
    """A config with a field no run file can hold."""

    gain: complex = option(1j, "A complex gain.")


def entry_of(config_cls: type) -> RegisteredComponent:
    spec = ComponentSpec(name="odd", summary="odd config", config_cls=config_cls, factory="x:y")
    return RegisteredComponent(kind="quantizer", spec=spec, plugin="odd", distribution="odd-dist", version="0")


def test_a_default_of_the_wrong_type_fails_the_contract_and_lgvq_check():
    [problem] = default_type_problems(StringForInt)
    registry = type("OneComponent", (), {"get": lambda self, kind, name, path: entry_of(StringForInt)})()

    with pytest.raises(ConfigError) as caught:
        structure_component("quantizer", {"type": "odd"}, "$.model.quantizer", registry=registry)

    assert problem.startswith("the default '8' of test_contract_quantizer.StringForInt.channels is not a int")
    assert problem.endswith("fix the config class's option(...)")
    assert caught.value.problems[0].startswith("$.model.quantizer.channels: the default '8' of")


def test_a_field_the_schema_cannot_render_as_toml_fails():
    problem = schema_problem(entry_of(ComplexField))

    assert problem is not None
    assert "defaults a run file cannot hold" in problem and "gain  complex  = 1j (not a TOML value)" in problem


def test_every_installed_quantizer_keeps_the_quantizer_contract(make_plugin_manager, tmp_path):
    from lgvq_core.testing.contract import build_component

    make_plugin_manager(["core", "testing", "backbones", "text-encoders"])
    registry = get_registry()

    for entry in registry.entries("quantizer"):
        quantizer, _, _ = build_component(entry, registry, str(tmp_path))
        check_quantizer(quantizer)
