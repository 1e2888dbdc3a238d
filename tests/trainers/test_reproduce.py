"""``trainers.reproduce`` sweeps are valid specs, and ``docs/results.md``'s agree/disagree
text follows the numbers it prints (the same claim flips when the numbers do)."""

from __future__ import annotations

from trainers import reproduce
from trainers.results_text import render
from trainers.spec import ExperimentSpec


def _results(acc) -> dict:
    """Records of every sweep setting, with ``acc(rule, depth, bn)`` as val accuracy."""
    out = {"sweeps": {}}
    for name, data in reproduce.sweep_specs(1, 2, 2).items():
        records = []
        for _, setting in ExperimentSpec.model_validate(data).settings():
            mp = setting.model_params
            depth = mp.get("depth", mp.get("blocks"))
            value = acc(setting.rule.name, depth, mp.get("bn", False))
            entry = {"status": "FINISHED", "metrics": {"val_acc": value, "align_mean_angle": 30}}
            records.append(reproduce._setting_record(setting, entry))
        out["sweeps"][name] = records
    out.update(commit="c0ffee", seeds=1, runtime_s=60, argv=["python"], machine="m", commands={})
    return out


def _section(text: str, title: str, claim: str) -> str:
    """'agrees' or 'disagrees': where ``claim`` stands in the section titled ``title``."""
    part = text.split(title, 1)[1].split("\n## ", 1)[0]
    agrees, disagrees = part.split("Disagrees or not reproduced:")
    disagrees = disagrees.split("Not measured")[0]
    return "agrees" if claim in agrees else "disagrees" if claim in disagrees else "missing"


def test_sweeps_cover_the_rules_depths_and_matched_decay() -> None:
    specs = {k: ExperimentSpec.model_validate(v) for k, v in reproduce.sweep_specs(1, 2, 2).items()}
    assert len(list(specs["digits-mlp"].settings())) == 9 * 3 * 2
    assert [s.rule.params for s in specs["digits-bp-decay"].expand()][0] == {"decay": 1e-4}
    assert {s.rule.name for s in specs["conv-synthetic"].expand()} == {"bp", "fa", "ss", "kp"}


def test_claims_follow_the_numbers() -> None:
    claim = "FA falls behind BP as depth grows"
    growing = render(_results(lambda r, d, bn: 0.95 - (0.02 * d if r == "fa" else 0)), epochs=2,
                     conv_epochs=2)  # fmt: skip
    flat = render(_results(lambda r, d, bn: 0.95 - (0.05 if r == "fa" else 0)), epochs=2,
                  conv_epochs=2)  # fmt: skip
    assert _section(growing, "## Digits MLP", claim) == "agrees"
    assert _section(flat, "## Digits MLP", claim) == "disagrees"
    assert "| fa | 91.0 (30°) | 91.0 (30°) | 83.0 (30°)" in growing  # 0.95 - 0.02 * depth
