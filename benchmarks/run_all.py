"""``make bench``: run every benchmark script in this folder, each in its own process, and print its table."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "likelihood.py",
    "local_attention.py",
    "precision.py",
    "deblur.py",
    "hessian.py",
    "levin_solver.py",
    "synthetic_blind.py",
    "validation_cost.py",
    "prox_valid.py",
    "repetition.py",
]

if __name__ == "__main__":
    failed = 0
    for name in SCRIPTS:
        print(f"== {name}", flush=True)
        failed += subprocess.run([sys.executable, str(HERE / name)], check=False).returncode != 0
    sys.exit(1 if failed else 0)
