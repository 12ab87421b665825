"""Print the README's quality table from the ``*.metrics.json`` files of bench/quality_gpu.sh.

  python bench/quality_table.py bench/results/quality_gpu bm25="BM25" zeroshot-cpu-fp32="dense, zero-shot" ...
"""

import json
import sys
from pathlib import Path

from dpr_jax.eval.metrics import format_table


def main(argv):
    folder, pairs = Path(argv[0]), [a.split("=", 1) for a in argv[1:]]
    rows = {label: json.loads((folder / f"{name}.metrics.json").read_text()) for name, label in pairs}
    print(format_table(rows, (1, 5, 20, 100)))


if __name__ == "__main__":
    main(sys.argv[1:])
