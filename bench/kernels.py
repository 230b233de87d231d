"""Sparse int8 kernels vs dense and vs LiteRT, per layer, in one run (medians, ratios).

    python bench/kernels.py [--quick] [--json OUT.json]

Layers: synthetic FULLY_CONNECTED 1024x1024, 4096x1024 and 1024x4096
(out x depth) and the matmul layers of the bundled models; sparsity 0-95 %;
every block shape; batch 1 and 16. Then the bundled MLP with 90 % of its
hidden layers' 16x4 blocks pruned, whole model, against LiteRT dense.
`edged bench --kernels` runs the same code (edged/kernel_bench.py).
"""

from __future__ import annotations

import argparse
import sys

from edged.kernel_bench import report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1024x1024 and the bundled layers, fewer sparsities")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    return report(args.quick, args.json)


if __name__ == "__main__":
    sys.exit(main())
