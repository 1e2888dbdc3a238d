"""``docs/results.md`` from the records :mod:`trainers.reproductions.reproduce` collects: the tables, and
what agrees and disagrees with the papers, decided from the printed numbers.

Every claim is a function of the table it follows (``_digits_claims``, ``_conv_claims``):
it states the paper's number, the measured numbers it compares and the threshold, and files
itself under "Agrees" or "Disagrees" by that comparison. Nothing here is hand-written
about the outcome; thresholds are named constants (``NEAR`` points of accuracy).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from trainers.contracts import RunStatus
from trainers.reproductions import reproduce_grid as plan

__all__ = ["render"]

NEAR = 2.0  # points of accuracy within which two rules "match"
GAP_GROWS = 2.0  # points by which a gap must widen with depth to "grow"
BN_HELPS = 2.0  # points BatchNorm must add at the deepest net to "rescue" a rule

Key = tuple[str, float, int, bool]  # rule, extra decay, depth or blocks, bn


def _key(rec: dict[str, Any], depth_field: str) -> Key:
    mp = rec["model_params"]
    return (
        rec["rule"],
        float(rec["params"].get("decay", 0.0)) if rec["rule"] == "bp" else 0.0,
        int(mp.get(depth_field, 0)),
        bool(mp.get("bn", False)),
    )


class Table:
    """Mean accuracy (%) and angles over seeds, per (rule, decay, depth, bn)."""

    def __init__(self, records: Iterable[dict[str, Any]], depth_field: str) -> None:
        acc: dict[Key, list[float]] = defaultdict(list)
        ang: dict[Key, list[float]] = defaultdict(list)
        failed: list[tuple[Key, str]] = []
        for rec in records:
            key = _key(rec, depth_field)
            if rec["status"] != RunStatus.FINISHED or rec["val_acc"] is None:
                failed.append((key, f"{key[0]} {depth_field}={key[2]} bn={key[3]}"))
                continue
            acc[key].append(100 * rec["val_acc"])
            if rec["angle"] is not None:
                ang[key].append(rec["angle"])
        self.acc, self.ang = dict(acc), dict(ang)
        # a failed run of a setting that later finished (rerun) is not a missing setting
        self.failed = [text for key, text in failed if key not in self.acc]

    @property
    def seeds(self) -> int:
        """The most seeds any setting finished with."""
        return max((len(v) for v in self.acc.values()), default=0)

    def mean(self, rule: str, depth: int, bn: bool = False, decay: float = 0.0) -> float | None:
        values = self.acc.get((rule, decay, depth, bn))
        return statistics.mean(values) if values else None

    def spread(self, rule: str, depth: int, bn: bool = False, decay: float = 0.0) -> float:
        values = self.acc.get((rule, decay, depth, bn)) or []
        return statistics.stdev(values) if len(values) > 1 else 0.0

    def angle(self, rule: str, depth: int, bn: bool = False) -> float | None:
        values = self.ang.get((rule, 0.0, depth, bn))
        return statistics.mean(values) if values else None

    def cell(self, rule: str, depth: int, bn: bool, decay: float = 0.0) -> str:
        acc = self.mean(rule, depth, bn, decay)
        if acc is None:
            return "—"
        text = f"{acc:.1f}"
        if len(self.acc[(rule, decay, depth, bn)]) > 1:
            text += f" ± {self.spread(rule, depth, bn, decay):.1f}"
        angle = self.angle(rule, depth, bn) if decay == 0.0 else None
        if angle is not None and rule != "bp" and angle == angle:
            text += f" ({angle:.0f}°)"
        return text


def _fmt(values: list[float | None]) -> str:
    return " / ".join("—" if v is None else f"{v:.1f}" for v in values)


CHANCE_X = 2.0  # a baseline under twice chance (10 classes: 20 %) did not train


def _gap(t: Table, rule: str, depth: int, bn: bool = False, base: str = "bp", decay=0.0):
    """``base - rule`` in points; None when either is missing or the baseline did not train
    (a gap to an untrained BP says nothing about the rule)."""
    a, b = t.mean(base, depth, bn, decay), t.mean(rule, depth, bn)
    if a is None or b is None or a < CHANCE_X * 10.0:
        return None
    return a - b


class Claims:
    def __init__(self) -> None:
        self.agrees: list[str] = []
        self.disagrees: list[str] = []
        self.unmeasured: list[str] = []

    def add(self, ok: bool | None, text: str) -> None:
        if ok is None:
            self.unmeasured.append(text)
        else:
            (self.agrees if ok else self.disagrees).append(text)

    def markdown(self) -> list[str]:
        lines = ["Agrees:"] + [f"- {c}" for c in self.agrees or ["(none)"]]
        lines += ["", "Disagrees or not reproduced:"]
        lines += [f"- {c}" for c in self.disagrees or ["(none)"]]
        if self.unmeasured:
            lines += [
                "",
                "Not measured (a setting it needs did not finish, or BP itself stayed under "
                f"{CHANCE_X:g}x chance there):",
            ]
            lines += [f"- {c}" for c in self.unmeasured]
        return lines


def _all(values: list[float | None], test) -> bool | None:
    return None if any(v is None for v in values) else all(test(v) for v in values)


def _digits_claims(t: Table, depths: list[int], decays: list[float]) -> Claims:
    c = Claims()
    lo, hi = depths[0], depths[-1]
    fa = [_gap(t, "fa", d) for d in depths]
    grows = None if None in (fa[0], fa[-1]) else fa[-1] - fa[0] >= GAP_GROWS
    c.add(
        grows,
        f"**FA falls behind BP as depth grows** (Xiao 2018 ImageNet ResNet-18: FA 91.17 % "
        f"vs BP 33.14 % top-1 error; BioTorch CIFAR-10 ResNet-20: 32.16 vs 8.63 %): FA's gap "
        f"to BP, plain SGD, at {' / '.join(map(str, depths))} hidden layers: {_fmt(fa)} points "
        f"(widening by ≥ {GAP_GROWS:g} from depth {lo} to {hi} counts as agreement).",
    )
    for rule, paper in (
        ("ss", "Xiao 2018: SS 37.91 vs BP 33.14 % top-1 error"),
        ("usf", "BioTorch CIFAR-10: uSF 10.05 vs BP 8.63 % error"),
        ("frsf", "BioTorch CIFAR-10: frSF 11.2 vs BP 8.63 % error"),
    ):
        for bn in (False, True):
            gaps = [_gap(t, rule, d, bn) for d in depths]
            c.add(
                _all(gaps, lambda g: g <= NEAR),
                f"**{rule} is not far behind BP** ({paper}), {'BN' if bn else 'plain SGD'}: "
                f"BP − {rule} = {_fmt(gaps)} points at {' / '.join(map(str, depths))} hidden "
                f"layers (at most {NEAR:g} behind everywhere counts as agreement).",
            )
    for rule in ("fa", "ss", "frsf", "dfa"):
        plain, bn = t.mean(rule, hi), t.mean(rule, hi, True)
        lift = None if plain is None or bn is None else bn - plain
        c.add(
            None if lift is None else lift >= BN_HELPS or plain >= t.mean("bp", hi) - NEAR,
            f"**BatchNorm keeps {rule} trainable at depth** (Liao 2016: BN indispensable for "
            f"asymmetric feedback): {rule} at {hi} hidden layers {_fmt([plain])} % plain, "
            f"{_fmt([bn])} % with BN (BN adding ≥ {BN_HELPS:g} points, or the plain net "
            f"already within {NEAR:g} of BP, counts as agreement).",
        )
    for decay in decays:
        for bn in (False, True):
            gaps = [_gap(t, "kp", d, bn, decay=decay) for d in depths]
            c.add(
                _all(gaps, lambda g: abs(g) <= NEAR),
                f"**KP matches BP given the same decay** (Akrout 2019: within about a point on "
                f"ImageNet), {'BN' if bn else 'plain SGD'}: BP(decay {decay:g}) − KP = "
                f"{_fmt(gaps)} points at {' / '.join(map(str, depths))} hidden layers.",
            )
    for rule, paper in (
        ("wm", "Akrout 2019: within about a point of BP"),
        ("pfa", "Ji-An & Benna: BP-level accuracy"),
    ):
        for bn in (False, True):
            gaps = [_gap(t, rule, d, bn) for d in depths]
            c.add(
                _all(gaps, lambda g: abs(g) <= NEAR),
                f"**{rule} matches BP** ({paper}), {'BN' if bn else 'plain SGD'}: BP − "
                f"{rule} = {_fmt(gaps)} points at {' / '.join(map(str, depths))} hidden layers.",
            )
    dfa = _gap(t, "dfa", lo)
    c.add(
        None if dfa is None else dfa > 0,
        f"**DFA lags BP on a shallow net** (BioTorch MNIST: DFA 1.61 vs BP 0.91 % error): "
        f"BP − DFA = {_fmt([dfa])} points at {lo} hidden layers.",
    )
    angles = {r: t.angle(r, lo) for r in ("fa", "kp", "wm", "pfa")}
    learned = [angles[r] for r in ("kp", "wm", "pfa")]
    c.add(
        None if angles["fa"] is None else _all(learned, lambda a: a < angles["fa"]),
        f"**Learned feedback aligns better than fixed random feedback** (Akrout 2019: W^T vs "
        f"B 2-20° for WM and KP vs 40-90° for FA in their toy runs; Ji-An & Benna: "
        f"PFA path angle {17.5:.1f}° predicted at expansion 10): mean angle at {lo} hidden "
        f"layers, plain SGD: fa {_fmt([angles['fa']])}°, kp {_fmt([angles['kp']])}°, "
        f"wm {_fmt([angles['wm']])}°, pfa {_fmt([angles['pfa']])}°.",
    )
    return c


def _conv_claims(t: Table, blocks: list[int]) -> Claims:
    c = Claims()
    names = [f"ResNet-{6 * b + 2}" for b in blocks]
    fa = [_gap(t, "fa", b) for b in blocks]
    c.add(
        None if None in (fa[0], fa[-1]) else fa[-1] - fa[0] >= GAP_GROWS,
        f"**FA's gap to BP grows with depth in a conv net** (Xiao 2018; BioTorch CIFAR-10 "
        f"ResNet-20: FA 32.16 vs BP 8.63 % error): BP − FA = {_fmt(fa)} points for "
        f"{' / '.join(names)}.",
    )
    c.add(
        _all(fa, lambda g: g > NEAR),
        f"**FA lags BP in conv nets** (same sources): BP − FA = {_fmt(fa)} points "
        f"(more than {NEAR:g} everywhere counts as agreement).",
    )
    ss = [_gap(t, "ss", b) for b in blocks]
    c.add(
        _all(ss, lambda g: g <= NEAR),
        f"**ss is not far behind BP in conv nets** (Xiao 2018: SS within 5 points of BP on "
        f"ImageNet): BP − ss = {_fmt(ss)} points for {' / '.join(names)} (at most {NEAR:g} "
        f"behind everywhere counts as agreement).",
    )
    kp = [_gap(t, "kp", b) for b in blocks]
    c.add(
        _all(kp, lambda g: abs(g) <= NEAR),
        f"**kp matches BP in conv nets** (Akrout 2019: KP within about a point of BP): "
        f"BP − kp = {_fmt(kp)} points for {' / '.join(names)} (within {NEAR:g} either way "
        f"everywhere counts as agreement).",
    )
    return c


def _weak_baseline(t: Table, rules: list[str], cols: list[tuple[int, bool, str]]) -> list[str]:
    """A caveat, computed from the table, where BP (the baseline every claim subtracts)
    trails another rule by more than ``NEAR`` points: the opposite of every paper's
    ordering, so a sign that the setting is too small or short to rank the rules."""
    beaten = []
    for depth, bn, name in cols:
        bp = t.mean("bp", depth, bn)
        ahead = [r for r in rules if r != "bp" and bp is not None and (t.mean(r, depth, bn)
                 or 0.0) - bp > NEAR]  # fmt: skip
        if ahead:
            beaten.append(f"{', '.join(ahead)} at {name} (BP {_fmt([bp])} %)")
    if not beaten:
        return []
    return [
        f"Caveat: BP trails by more than {NEAR:g} points: {'; '.join(beaten)}. No paper has "
        "a rule beat BP by that much, so in those columns BP is a weak baseline ("
        + ("one seed, " if t.seeds == 1 else "")
        + "few epochs, one learning rate for every depth) and the claims below that subtract "
        "it say little there.",
        "",
    ]


def _digits_table(t: Table, rules: list[str], depths: list[int], decays: list[float]) -> list:
    head = " | ".join(f"{d} plain | {d} BN" for d in depths)
    lines = [f"| rule | {head} |", "| --- |" + " ---: |" * (2 * len(depths))]
    rows: list[tuple[str, str, float]] = [(r, r, 0.0) for r in rules]
    rows += [("bp", f"bp, decay {d:g}", d) for d in decays]
    for rule, label, decay in rows:
        cells = [t.cell(rule, d, bn, decay) for d in depths for bn in (False, True)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _conv_table(t: Table, rules: list[str], blocks: list[int]) -> list[str]:
    names = [f"ResNet-{6 * b + 2}" for b in blocks]
    lines = ["| rule | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(blocks)]
    for rule in rules:
        lines.append(f"| {rule} | " + " | ".join(t.cell(rule, b, False) for b in blocks) + " |")
    return lines


def _lr_search(records: list[dict[str, Any]], epochs: int) -> list[str]:
    """The per-rule learning-rate table: accuracy at BP's rate, the best rate and its
    accuracy (mean over seeds per rate), and which rules BP's rate understates."""
    from trainers.names import RULE_NAMES

    acc: dict[tuple[str, float], list[float]] = {}
    for rec in records:
        if rec.get("status") == RunStatus.FINISHED and rec.get("val_acc") is not None:
            acc.setdefault((rec["rule"], rec["lr"]), []).append(100 * rec["val_acc"])
    mean = {k: sum(v) / len(v) for k, v in acc.items()}
    grid = ", ".join(f"{lr:g}" for lr in plan.LR_GRID)
    lines = [
        f"## Learning rate per rule: a search on digits ({epochs} epochs)",
        "",
        "scikit-learn's digits, the ReLU MLP with 2 hidden layers of 128 units (plain), SGD",
        "momentum 0.9, weight decay 1e-4, batch 32, rules at their defaults; every rule of",
        "`trainers.rules.RULES` with the same budget: one `search:` sweep (Ray Tune) over",
        f"`optim.lr` on the grid {grid}, one trial per rule and rate. Val accuracy %: at",
        "BP's learning rate 0.05 (the rate of the digits tables), at each rule's best rate",
        "of the grid, and at every rate.",
        "",
        "| rule | at lr 0.05 | best lr | at best lr | "
        + " | ".join(f"{lr:g}" for lr in plan.LR_GRID)
        + " |",
        "| --- | ---: | ---: | ---: |" + " ---: |" * len(plan.LR_GRID),
    ]
    gains = []
    for rule in RULE_NAMES:
        row = {lr: mean.get((rule, lr)) for lr in plan.LR_GRID}
        done = {lr: v for lr, v in row.items() if v is not None}
        best = max(done, key=done.get) if done else None
        at_bp = row.get(0.05)
        cells = [
            _fmt([at_bp]),
            f"{best:g}" if best is not None else "—",
            _fmt([done[best]]) if best is not None else "—",
        ]
        cells += [_fmt([row[lr]]) for lr in plan.LR_GRID]
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
        if best is not None and at_bp is not None and done[best] - at_bp >= 2:
            gains.append(f"{rule} +{done[best] - at_bp:.1f} at lr {best:g}")
    lines += [
        "",
        "Rules that BP's learning rate understates by 2 points or more (the common objection",
        "to comparing rules at BP's rate): " + ("; ".join(gains) if gains else "none") + ".",
        "",
    ]
    return lines


def render(results: dict[str, Any], *, epochs: int, conv_epochs: int) -> str:
    """The whole of ``docs/results.md``."""

    sweeps = results["sweeps"]
    digits = Table(sweeps.get("digits-mlp", []) + sweeps.get("digits-bp-decay", []), "depth")
    conv = Table(sweeps.get("conv-synthetic", []), "blocks")
    decays = plan.extra_decays(plan.DIGITS_RULES)
    seeds = results["seeds"]
    minutes = results["runtime_s"] / 60
    out = [
        "# Results: CPU-scale reproductions through `bioprop run`",
        "",
        "Generated by one command; every number and every agree/disagree line below comes",
        "from `trainers/reproductions/reproduce.py` and `trainers/reproductions/results_text.py`, not by hand:",
        "",
        "```",
        " ".join(results["argv"]),
        "```",
        "",
        f"Runtime {minutes:.0f} min on {results['machine']}"
        + (" (shared with other jobs)" if results.get("stopped") or results.get("shared") else "")
        + ". Code "
        f"commit `{results['commit']}`. Seeds: {', '.join(map(str, range(seeds)))} "
        f"(model init, feedback draws, data order); values are the mean over seeds"
        + (" ± sample std." if seeds > 1 else ", one seed: differences of a point or two are")
        + ("" if seeds > 1 else " within run-to-run noise on these small sets."),
        "",
        *(
            [
                f"**Partial**: the run was stopped after {minutes:.0f} min, before every "
                "setting had run (the 2-core machine was shared with other jobs, load average "
                "above 30); cells without a number did not run or did not finish, and claims "
                "that need them are listed as not measured. The same command at the same "
                "commit resumes the missing settings (finished ones are kept). Rendered by "
                "`python -m trainers.reproductions.reproduce --render-only COMMIT` from every part's MLflow "
                "store; spec files named `*-bp` and `*-core` below are narrowed parts (fewer "
                "rules, the same settings) run to fill in settings a shared machine's memory "
                "limit had killed.",
                "",
            ]
            if results.get("stopped")
            else []
        ),
        "Every sweep is a spec file run as `bioprop run` runs it (one worker, trained in its Ray Tune trial, the",
        "data pipelines, MLflow experiment `bioprop-reproduce`); the files are written under",
        "`bioprop-runs/reproduce/`: "
        + "; ".join(f"`{cmd}`" for cmd in results.get("commands", {}).values())
        + ". Rules run at their defaults (`kp` decay 1e-4 per step, `wm` a mirror phase every"
        " 4 steps, mirror batch = fan-in, rate 0.01 per step, `pfa` expansion 10, `sa` `ia`"
        " `aa` Kunin et al.'s code coefficients"
        + ("" if {"digits-lr-search", *plan.BREAKING_SWEEPS} & set(sweeps) else ", `pfa_o` not run")
        + "); accuracy is the final val"
        " accuracy; the angle in brackets is `align_mean_angle`, the mean angle between `W`"
        " and the backward matrix over rule layers (for `pfa` the path `(R B)^T`; `dfa`'s"
        " hidden layers have none, so its angle is the output layer's).",
        "",
    ]
    missing = set(plan.SWEEPS) - set(sweeps)
    if missing and missing <= set(plan.BREAKING_SWEEPS):
        out += [
            "The breaking-point study (every rule over depth x width of the digits MLP and a "
            "ResNet ladder, each at its own best learning rate) is not in this run: `--only "
            + " ".join(plan.BREAKING_SWEEPS)
            + "` runs it on its own, and its last section, tables and heat maps are in "
            "[`breaking-point.md`](breaking-point.md).",
            "",
        ]
    elif missing:
        out += [
            "This file holds the sweeps " + ", ".join(f"`{n}`" for n in sweeps) + " only "
            "(`--only`); `docs/results.md` has the others.",
            "",
        ]
    if "digits-mlp" in sweeps:
        out += _digits_section(digits, decays, epochs)
    if "digits-lr-search" in sweeps:
        out += _lr_search(sweeps["digits-lr-search"], epochs)
    if "conv-synthetic" in sweeps:
        out += _conv_section(conv, conv_epochs)
    if any(name in sweeps for name in plan.BREAKING_SWEEPS):
        from trainers.reproductions.breaking_point import section

        out += section(sweeps, epochs, conv_epochs)
    failed = digits.failed + conv.failed
    if failed:
        out += ["Settings that did not finish: " + ", ".join(failed) + ".", ""]
    out += PUBLISHED
    return "\n".join(out)


def _digits_section(digits: Table, decays: list[float], epochs: int) -> list[str]:

    return [
        f"## Digits MLP: depth, BatchNorm, and every rule ({epochs} epochs)",
        "",
        "scikit-learn's 1,797 handwritten digits (8x8, 80/20 split: 1,437 train, 360 val),",
        "a ReLU MLP with 2, 6 or 10 hidden layers of 128 units, plain or Linear-BN-ReLU;",
        "SGD lr 0.05, momentum 0.9, weight decay 1e-4, batch 32, no lr decay. Val accuracy %",
        "(mean angle to `W`). The `bp, decay` row is BP with the same extra per-step decay",
        "`W <- (1 - decay) W` that `kp` applies: KP's matched baseline.",
        "",
        *_digits_table(digits, plan.DIGITS_RULES, plan.DEPTHS, decays),
        "",
        *_weak_baseline(digits, plan.DIGITS_RULES, _digits_columns(plan.DEPTHS)),
        *_digits_claims(digits, plan.DEPTHS, decays).markdown(),
        "",
    ]


def _digits_columns(depths: list[int]) -> list[tuple[int, bool, str]]:
    return [(d, bn, f"{d} {'BN' if bn else 'plain'}") for d in depths for bn in (False, True)]


def _conv_section(conv: Table, conv_epochs: int) -> list[str]:

    return [
        f"## Conv nets: ResNet-8 and ResNet-20 on a synthetic image set ({conv_epochs} epochs)",
        "",
        "The synthetic JPEG set (10 classes of coloured stripes, 480 train / 160 val images",
        "of 40 px, 32 px ImageNet-style random-resized crops and flips, DALI on CPU);",
        "`resnet20` with 1 and 3 blocks per stage; SGD lr 0.05, momentum 0.9, weight decay",
        "1e-4, batch 32. Val accuracy % (mean angle to `W`).",
        "",
        *_conv_table(conv, plan.CONV_RULES, plan.CONV_BLOCKS),
        "",
        *_weak_baseline(
            conv, plan.CONV_RULES, [(b, False, f"ResNet-{6 * b + 2}") for b in plan.CONV_BLOCKS]
        ),
        *_conv_claims(conv, plan.CONV_BLOCKS).markdown(),
        "",
    ]


PUBLISHED = [
    "## Published numbers these are compared with",
    "",
    "From `papers.md`: Xiao et al. 2018 ImageNet top-1 error, ResNet-18: BP 33.14, SS +",
    "last-layer BP 36.95, SS 37.91, FA + last-layer BP 73.01, FA 91.17 (21 epochs);",
    "AlexNet-BN: BP 49.14, SS 47.57. BioTorch (Sanfiz & Akrout 2021) CIFAR-10 ResNet-20",
    "error: BP 8.63, FA 32.16, DFA 45.94, uSF 10.05, brSF 11.02, frSF 11.2; MNIST: BP",
    "0.91, FA 1.7, uSF 0.94, DFA 1.61. Akrout et al. 2019: KP and WM within about a",
    "point of BP on ImageNet ResNet-18 and -50, with feedback angles near zero; their",
    "released toy runs: W^T vs B 2-4° at the output layer and 10-20° at the input layer",
    "for WM and KP, 40-90° for FA. Ji-An & Benna: PFA at BP level on MNIST, CIFAR-10",
    "ResNet-20 and ImageNet ResNet-18 (expansion 10; path angle acos(sqrt(r/(1+r))) =",
    "17.5° at r = 10). The ImageNet-scale experiments themselves are the spec files in",
    "`specs/` (`bioprop run specs/xiao2018-resnet18-rules.yaml --set",
    "data.root=/data/imagenet`); they need GPUs and are not run here.",
    "",
    "`wm`'s defaults: with `W` fixed, the steady-state angle of the mirror estimate is",
    "about atan(sqrt(rate / (2 - rate) * fan_in / batch)); the old fixed batch 64 and",
    "rate 0.1 gave 12.7° at fan-in 64, 34.6° at 576 and 62.7° at 4,608 (ResNet-18's",
    "layer4), far from Akrout's near-zero angles; the mirror batch now equals the fan-in",
    "(5.7° at rate 0.02 at any width, under 10° within about 35 mirror steps on a",
    "512x4608 layer: `tests/trainers/test_rules.py`).",
    "",
]
