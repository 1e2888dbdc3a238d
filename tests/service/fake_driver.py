"""Stand-in for the trainers' driver (``python -m trainers.launch``), which this suite does not
own: same command line and exit contract, behaviour chosen by the spec's name prefix.

``ok*``: a few log lines, result.json, exit 0. ``sleep-S*``: the same after S seconds.
``fail*``: exit 3 with an error line. ``partial*``: result.json with one FAILED setting, exit 1. ``hang*``: runs until SIGTERM (then exits 143).
``stubborn*``: ignores SIGTERM (needs SIGKILL). Every one first checks ``data.root`` against the
folder the service admitted, as ``trainers.launch`` does (exit 2 when it was re-pointed).
"""

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("spec")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    with open(args.spec) as fh:
        spec = json.load(fh)
    name = spec["name"]
    print(f"fake driver job={args.job_id} name={name}", flush=True)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo, for trainers
    from trainers.storage import StorageError, check_data_root  # as trainers.launch does

    try:
        check_data_root(spec.get("data", {}).get("root"))
    except StorageError as exc:
        print(f"StorageError: {exc}", flush=True)
        return 2
    if name.startswith("fail"):
        print("RuntimeError: boom in the training loop", flush=True)
        return 3
    if name.startswith("partial"):  # one setting failed; the sweep went on; exit 1
        result = {
            "parent_run_id": f"parent-{args.job_id}",
            "status": "FAILED",
            "children": [
                {"rule": "bp", "status": "FINISHED", "metrics": {}},
                {"rule": "fa", "status": "FAILED", "error": "ValueError: nan loss"},
            ],
        }
        with open(args.result, "w") as fh:
            json.dump(result, fh)
        return 1
    if name.startswith("hang"):

        def on_term(signum, frame):
            print("got SIGTERM, marking runs KILLED", flush=True)
            sys.exit(143)

        signal.signal(signal.SIGTERM, on_term)
        print("hanging until SIGTERM", flush=True)
        while True:
            time.sleep(0.05)
    if name.startswith("stubborn"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # a helper in a process group of its own, as a local Ray node's processes are
        helper = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import signal, time; signal.signal(signal.SIGTERM, "
                "signal.SIG_IGN); time.sleep(600)",
            ],
            process_group=0,
        )
        with open(args.result + ".helper", "w") as fh:
            fh.write(str(helper.pid))
        while True:
            time.sleep(0.05)
    seconds = float(name.split("-")[1]) if name.startswith("sleep-") else 0.1
    rules = spec["rule"]["name"]
    rules = rules if isinstance(rules, list) else [rules]
    steps = 5
    for i in range(steps):
        print(f"epoch {i + 1}/{steps}", flush=True)
        time.sleep(seconds / steps)
    result = {
        "parent_run_id": f"parent-{args.job_id}",
        "children": [
            {
                "rule": r,
                "run_id": f"{r}-{args.job_id}",
                "status": "FINISHED",
                "metrics": {"val_acc": 0.5},
            }
            for r in rules
        ],
    }
    with open(args.result, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
