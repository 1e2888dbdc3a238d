"""Terminal tables: detection jobs show COCO mAP where classification jobs show accuracy."""

from __future__ import annotations

from rich.console import Console

from service.tables import progress_table, results_table


def _text(table) -> str:
    console = Console(record=True, width=160)
    console.print(table)
    return console.export_text()


DETECT_CHILDREN = [
    {"setting": "bp", "status": "FINISHED", "metrics": {"epoch": 2, "map": 0.4321}},
    {"setting": "ss", "status": "RUNNING", "metrics": {"epoch": 1, "map": 0.1234}},
]


def test_detection_tables_print_map():
    job = {
        "id": "j1",
        "name": "det",
        "state": "RUNNING",
        "spec": {"task": "detect", "rule": {"name": ["bp", "ss"]}, "schedule": {"epochs": 2}},
        "progress": {"children": DETECT_CHILDREN},
    }
    text = _text(progress_table(job))
    assert "mAP" in text and "accuracy" not in text
    assert "0.432" in text and "0.123" in text and "2/2" in text
    done = _text(results_table(DETECT_CHILDREN, title="det", task="detect"))
    assert "final mAP" in done and "0.432" in done
    # without the spec's task, children that log map and no val_acc are detection too
    assert "final mAP" in _text(results_table(DETECT_CHILDREN, title="det"))


def test_classification_tables_print_accuracy():
    children = [{"setting": "fa", "status": "FINISHED", "metrics": {"val_acc": 0.875}}]
    text = _text(results_table(children, title="cls", task="classify"))
    assert "final val accuracy" in text and "0.875" in text and "mAP" not in text
