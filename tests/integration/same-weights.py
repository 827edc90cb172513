#!/usr/bin/python3
"""Exit 0 when two dipaco checkpoints hold bitwise the same weights, optimizer
state and step: every dataset under /paths and /modules, and the step attributes.
Usage: same-weights.py A.h5 B.h5"""
import sys

import h5py
import numpy as np


def state(path):
    out = {}
    with h5py.File(path, "r") as f:
        out["inner_step"] = int(f.attrs["inner_step"])
        out["outer_round"] = int(f.attrs["outer_round"])

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]

        for group in ("paths", "modules"):
            f[group].visititems(lambda n, o, g=group: visit(g + "/" + n, o))
    return out


a, b = state(sys.argv[1]), state(sys.argv[2])
diff = [k for k in sorted(set(a) | set(b))
        if k not in a or k not in b or np.asarray(a[k]).tobytes() != np.asarray(b[k]).tobytes()]
if diff:
    print("differ: " + ", ".join(diff[:8]) + (" ..." if len(diff) > 8 else ""))
    sys.exit(1)
print(f"bitwise equal ({len(a)} entries)")
