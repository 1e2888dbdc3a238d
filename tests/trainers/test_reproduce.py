"""``trainers.reproductions.reproduce`` sweeps are valid specs, and ``docs/results.md``'s agree/disagree
text follows the numbers it prints (the same claim flips when the numbers do)."""

from __future__ import annotations

from trainers.reproductions import reproduce
from trainers.reproductions.results_text import render
from trainers.spec import ExperimentSpec


def _results(acc) -> dict:
    """Records of every sweep setting, with ``acc(rule, depth, bn, lr)`` as val accuracy."""
    out = {"sweeps": {}}
    for name, data in reproduce.sweep_specs(1, 2, 2).items():
        if name in reproduce.BREAKING_SWEEPS:  # one record per trial: point x searched lr
            out["sweeps"][name] = [
                {"rule": s.rule.name, "depth": s.model_params.get("depth", s.model_params.get(
                    "blocks")), "width": s.model_params.get("hidden", 0), "lr": lr,
                 "status": "FINISHED", "angle": 30.0,
                 "val_acc": acc(s.rule.name, s.model_params.get("depth", 2), False, lr)}
                for _, s in ExperimentSpec.model_validate(data).settings()
                for lr in data["search"]["space"]["optim.lr"]["grid"]
            ]  # fmt: skip
            continue
        if name in reproduce.SEARCHED:  # one record per trial: rule x searched lr
            out["sweeps"][name] = [
                {"rule": r, "lr": lr, "status": "FINISHED", "val_acc": acc(r, 2, False, lr)}
                for r in data["rule"]["name"]
                for lr in reproduce.LR_GRID
            ]
            continue
        records = []
        for _, setting in ExperimentSpec.model_validate(data).settings():
            mp = setting.model_params
            depth = mp.get("depth", mp.get("blocks"))
            value = acc(setting.rule.name, depth, mp.get("bn", False), 0.05)
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
    assert len(list(specs["digits-mlp"].settings())) == 12 * 3 * 2
    assert [s.rule.params for s in specs["digits-bp-decay"].expand()][0] == {"decay": 1e-4}
    assert {s.rule.name for s in specs["conv-synthetic"].expand()} == {
        "bp",
        "fa",
        "ss",
        "kp",
        "sa",
        "ia",
    }


def test_lr_search_covers_every_rule_with_the_same_grid() -> None:
    from trainers.names import RULE_NAMES

    spec = ExperimentSpec.model_validate(reproduce.sweep_specs(1, 2, 2)["digits-lr-search"])
    assert [label for label, _ in spec.settings()] == list(RULE_NAMES)
    assert spec.search.space["optim.lr"].grid == reproduce.LR_GRID and 0.05 in reproduce.LR_GRID
    assert spec.trial_count() == len(RULE_NAMES) * len(reproduce.LR_GRID)


def test_lr_table_names_each_rules_best_rate_and_what_bps_rate_understates() -> None:
    # fa peaks at 0.015 (90 %) and scores 80 % at 0.05; every other rule peaks at 0.05
    def acc(rule, depth, bn, lr):
        if rule == "fa":
            return {0.015: 0.90, 0.05: 0.80}.get(lr, 0.5)
        return 0.95 if lr == 0.05 else 0.6

    text = render(_results(acc), epochs=2, conv_epochs=2)
    part = text.split("## Learning rate per rule", 1)[1].split("\n## ", 1)[0]
    assert "| fa | 80.0 | 0.015 | 90.0 | 50.0 | 90.0 | 80.0 | 50.0 | 50.0 |" in part
    assert "| bp | 95.0 | 0.05 | 95.0 |" in part
    assert "by 2 points or more (the common objection" in part
    assert part.rstrip().endswith("fa +10.0 at lr 0.015.")


def test_claims_follow_the_numbers() -> None:
    claim = "FA falls behind BP as depth grows"
    growing = render(_results(lambda r, d, bn, lr: 0.95 - (0.02 * d if r == "fa" else 0)), epochs=2,
                     conv_epochs=2)  # fmt: skip
    flat = render(_results(lambda r, d, bn, lr: 0.95 - (0.05 if r == "fa" else 0)), epochs=2,
                  conv_epochs=2)  # fmt: skip
    assert _section(growing, "## Digits MLP", claim) == "agrees"
    assert _section(flat, "## Digits MLP", claim) == "disagrees"
    assert "| fa | 91.0 (30°) | 91.0 (30°) | 83.0 (30°)" in growing  # 0.95 - 0.02 * depth


def test_a_baseline_the_rules_beat_is_called_weak() -> None:
    caveat = "BP is a weak baseline"
    # BP at 60 % on ResNet-20 (3 blocks) while ss reaches 95 %: the caveat names where
    weak = render(_results(lambda r, d, bn, lr: 0.60 if (r, d) == ("bp", 3) else 0.95),
                  epochs=2, conv_epochs=2)  # fmt: skip
    conv = weak.split("## Conv nets", 1)[1].split("\n## ", 1)[0]
    assert caveat in conv and "fa, ss, kp, sa, ia at ResNet-20 (BP 60.0 %)" in conv
    assert caveat not in weak.split("## Conv nets", 1)[0]  # the digits BP is fine
    assert "(one seed, few epochs" in conv
    seeded = _results(lambda r, d, bn, lr: 0.60 if (r, d) == ("bp", 3) else 0.95)
    seeded["sweeps"]["conv-synthetic"] *= 2  # every setting finished twice: two seeds
    conv = render(seeded, epochs=2, conv_epochs=2).split("## Conv nets", 1)[1]
    assert caveat in conv and "(few epochs, one learning rate" in conv  # no "one seed"
    # BP best everywhere: no caveat anywhere
    strong = render(_results(lambda r, d, bn, lr: 0.97 if r == "bp" else 0.95), epochs=2,
                    conv_epochs=2)  # fmt: skip
    assert caveat not in strong


def test_a_page_without_the_breaking_point_study_says_where_it_is() -> None:
    results = _results(lambda r, d, bn, lr: 0.9)
    whole = render(results, epochs=2, conv_epochs=2)
    for name in reproduce.BREAKING_SWEEPS:
        del results["sweeps"][name]
    page = render(results, epochs=2, conv_epochs=2)
    pointer = "is not in this run: `--only breaking-mlp breaking-conv` runs it on its own"
    assert pointer in page and "[`breaking-point.md`](breaking-point.md)" in page
    assert pointer not in whole
    del results["sweeps"]["conv-synthetic"]
    assert "`docs/results.md` has the others" in render(results, epochs=2, conv_epochs=2)
