"""Figure styles the sweep summary (``sweep_summary.png``) and the comparison report
(``sweep_report.html``) share, so a rule has one colour everywhere: per rule a fixed colour,
per setting of a rule a dash pattern."""

from __future__ import annotations

from typing import Any

__all__ = ["ANGLE", "DASHES", "RULE_COLOURS", "rule_colour", "setting_styles"]

ANGLE = "align_mean_angle"

#: One fixed colour per rule (``trainers.names.RULE_NAMES``), in every figure and report.
RULE_COLOURS = {
    "bp": "#1f77b4",
    "fa": "#ff7f0e",
    "ss": "#2ca02c",
    "kp": "#d62728",
    "wm": "#9467bd",
    "pfa": "#8c564b",
    "pfa_o": "#c49c94",
    "dfa": "#e377c2",
    "sc": "#7f7f7f",
    "usf": "#bcbd22",
    "brsf": "#17becf",
    "frsf": "#393b79",
    "sa": "#637939",
    "ia": "#8c6d31",
    "aa": "#843c39",
}
#: Dash patterns telling apart the settings of one rule: (matplotlib, SVG stroke-dasharray).
DASHES = (("-", ""), ("--", "6 3"), (":", "2 3"), ("-.", "8 3 2 3"))


def rule_colour(rule: str | None) -> str:
    """The rule's colour; a rule missing from :data:`RULE_COLOURS` gets one by its name's
    CRC, so it is still the same in every sweep."""
    import zlib

    if rule in RULE_COLOURS:
        return RULE_COLOURS[rule]
    palette = list(RULE_COLOURS.values())
    return palette[zlib.crc32(str(rule).encode()) % len(palette)]


def setting_styles(rows: list[dict[str, Any]]) -> dict[str, tuple[str, int]]:
    """Per setting (in row order): its rule's colour and the index of its dash pattern
    among the settings of that rule (0, 1, ... in row order)."""
    seen: dict[str, int] = {}
    styles = {}
    for row in rows:
        rule = row.get("rule") or row["setting"]
        styles[row["setting"]] = (rule_colour(rule), seen.get(rule, 0))
        seen[rule] = seen.get(rule, 0) + 1
    return styles
