"""The detector's confusion matrix on the labeled evaluation set built from real runs.

.venv/bin/python benchmarks/detector_eval.py [--set tests/data/mask_eval]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tune_attn.degeneracy import HEALTHY
from tune_attn.detector_eval import evaluate, load_eval_set


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--set", dest="path", type=Path, default=Path("tests/data/mask_eval"))
    args = ap.parse_args()
    items = load_eval_set(args.path)
    report = evaluate(items)
    print(report.markdown())
    print()
    print(
        f"false-alarm rate (healthy called degenerate): {report.false_alarm_rate():.3f} "
        f"of {report.total(HEALTHY)} healthy batches"
    )
    for label in report.labels:
        if label != HEALTHY:
            print(
                f"{label}: recall {report.recall(label):.3f}, called degenerate at all {report.detected(label):.3f}"
            )
    print(f"\n{len(report.mistakes)} of {len(items)} batches not named as labeled:")
    for source, label, kind in report.mistakes:
        print(f"  {source}: labeled {label}, detector says {kind}")


if __name__ == "__main__":
    main()
