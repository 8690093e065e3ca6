"""Record Intel auto-round 0.16.1's scheme presets (``auto_round.schemes.PRESET_SCHEMES``).

Runs ONLY inside the Intel venv (scripts/intel/setup_venv.sh); our packages never import
``auto_round``.

    ~/.cache/autoround-dev/intel-venv/bin/python scripts/intel/make_preset_fixture.py \
        [--out tests/fixtures/intel]

Writes ``presets.json``: ``{"auto_round_version": ..., "presets": {NAME: fields}}`` with every
field of Intel's ``QuantizationScheme`` as ``dataclasses.asdict`` gives it (a tuple group size,
FP8_BLOCK's (128, 128), becomes a JSON list). ``tests/core/test_schemes.py`` compares our
presets of the same names with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "intel")
    )
    args = ap.parse_args()

    import auto_round
    from auto_round.schemes import PRESET_SCHEMES

    presets = {name: dataclasses.asdict(scheme) for name, scheme in PRESET_SCHEMES.items()}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "presets.json")
    with open(path, "w") as f:
        json.dump(
            {"auto_round_version": auto_round.__version__, "presets": presets}, f, indent=1, sort_keys=True
        )
        f.write("\n")
    print(f"wrote {len(presets)} presets -> {path}")


if __name__ == "__main__":
    main()
