"""`make demo`: restore the bundled quarter-dose head CT with the CT bundle and score it against full dose.

Runs the real MONAI bundle CLI twice on the bundled sample (real full-dose slices of a head CT and their
simulated quarter-dose scan, see bundles/restore_rwkv_ct_denoise/sample/DATA_LICENSE.txt):

1. ``python -m monai.bundle run`` with configs/inference.json: the quarter-dose NIfTI is restored slice by
   slice with a sliding window and written as NIfTI to ``demo_output/restored``.
2. the same with configs/evaluate.json added: the paper's protocol (CT window [-160, 240] HU, per-slice data
   range) scores the quarter-dose input and the restoration against the full-dose reference.

It prints the table and where the files are. Outputs are replaced on every run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "restore_rwkv_ct_denoise"
OUT = ROOT / "demo_output"


def bundle_run(configs: list[str], **overrides: str) -> None:
    config_files = [str(BUNDLE / "configs" / c) for c in configs]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", repr(config_files)]
    for key, value in overrides.items():
        cmd += [f"--{key}", value]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)


def main() -> int:
    weights = BUNDLE / "models" / "model.pt"
    if not weights.exists():
        print(
            f"error: {weights}: trained weights are missing; the demo never runs an untrained network", file=sys.stderr
        )
        return 1
    try:
        bundle_run(["inference.json"], output_dir=str(OUT / "restored"), overwrite="true")
        bundle_run(
            ["inference.json", "evaluate.json"],
            degraded_dir=str(BUNDLE / "sample" / "lowdose"),
            output_dir=str(OUT / "evaluation"),
            overwrite="true",
        )
    except subprocess.CalledProcessError as err:
        print(f"error: demo step failed with exit code {err.returncode}", file=sys.stderr)
        return 1
    summary = json.loads((OUT / "evaluation" / "summary.json").read_text())
    print(f"\nQuarter-dose head CT, {summary['slices_used']} slices, window [-160, 240] HU:")
    print(f"{'':>22} {'PSNR dB':>9} {'SSIM':>8} {'RMSE HU':>9}")
    for label, key in (("quarter-dose input", "input"), ("restored (light)", "pred")):
        m = summary[key]
        print(f"{label:>22} {m['psnr']['mean']:9.2f} {m['ssim']['mean']:8.4f} {m['rmse']['mean']:9.2f}")
    print(f"\nrestored NIfTI: {OUT / 'restored'}\nper-slice metrics: {OUT / 'evaluation' / 'metrics.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
