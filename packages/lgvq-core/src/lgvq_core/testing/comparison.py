"""A comparison runner that trains nothing: evaluated run directories with preset numbers.

``lgvq_core.runner.compare_seeds.run_comparison(file, runner=PresetRunner(...))`` then tests the
whole comparison (seeds, resume, parallel jobs, the table) on numbers the test knows, in
milliseconds. Every call is appended to ``calls_file``, so a test counts the trainings, also
across the processes of ``jobs > 1``. Picklable; imports no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lgvq_core.runner.compare_seeds import RunOutcome, RunSpec


def _override(spec: RunSpec, key: str) -> str:
    values = [o.split("=", 1)[1] for o in spec.overrides if o.startswith(f"{key}=")]
    if not values:
        raise KeyError(f"{key} is not among the overrides {spec.overrides}")
    return values[-1]


@dataclass(frozen=True)
class PresetRunner:
    """Writes ``results[arm][seed]`` (``{task: metrics}``, plus ``"run": {"val_rec_loss": x}``).

    ``stop`` lists ``(arm, seed)`` pairs that stop early instead (a SIGINT, as the trainer reports
    it): their run directory gets a ``checkpoints/last.json`` but no results.
    """

    results: dict[str, dict[int, dict[str, Any]]]
    calls_file: str
    stop: tuple[tuple[str, int], ...] = ()
    steps: int = 10

    def __call__(self, spec: RunSpec) -> RunOutcome:
        with open(self.calls_file, "a", encoding="utf-8") as calls:
            calls.write(json.dumps({"arm": spec.arm, "seed": spec.seed, "resume_dir": spec.resume_dir}) + "\n")
        name = _override(spec, "run.name")
        if spec.resume_dir is not None:
            run_dir = Path(spec.resume_dir)
        else:
            root = Path(spec.output_dir) / name
            root.mkdir(parents=True, exist_ok=True)
            run_dir = root / f"run-{len(list(root.iterdir())):03d}"
            run_dir.mkdir()
        (run_dir / "resolved.toml").write_text(f'[run]\nname = "{name}"\nseed = {spec.seed}\n', encoding="utf-8")
        if (spec.arm, spec.seed) in self.stop:
            (run_dir / "checkpoints").mkdir(exist_ok=True)
            (run_dir / "checkpoints" / "last.json").write_text('{"dir": "step-3"}', encoding="utf-8")
            return RunOutcome(str(run_dir), "signal", 0.5, spec.threads)
        preset = dict(self.results[spec.arm][spec.seed])
        run_numbers = preset.pop("run", {})
        records = [{"step": self.steps, "split": "val", **run_numbers}]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        (run_dir / "eval").mkdir(exist_ok=True)
        for task, metrics in preset.items():
            document = {"task": task, "step": self.steps, "metrics": metrics}
            (run_dir / "eval" / f"{task}.json").write_text(json.dumps(document), encoding="utf-8")
        return RunOutcome(str(run_dir), "max_steps", 1.0, spec.threads, cpu_seconds=0.75)

    def calls(self) -> list[dict[str, Any]]:
        path = Path(self.calls_file)
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
