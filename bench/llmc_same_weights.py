"""Does oneshot + SignRoundModifier tune the same weights as our API on the real model?

SmolLM2-135M cut to its first ``--blocks`` decoder blocks; the cpu-small rows in AutoRound's
sampling order (``bench/llmc_compare.py`` writes them to ``<out>/llmc_work/calib_ids_autoround_order.pt``);
W4A16 group 64, 20 iters, batch 4. Runs ``autoround.quantize`` (attention ``--attn``: ``sdpa``, the
model's default, or ``eager``, which llm-compressor forces while calibrating) and ``oneshot`` with
``SignRoundModifier``, then prints each block's RTN / tuned loss for both and how many layers are
bit-identical.

    .venv/bin/python bench/llmc_same_weights.py IDS.pt --attn eager
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ids", help="a (nsamples, seqlen) int64 tensor saved with torch.save")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from autoround import quantize
    from autoround.algorithms import SignRoundSettings
    from autoround.model_sources import materialize_smollm2
    from autoround.schemes import parse_scheme
    from autoround_llmc import SignRoundModifier

    src = materialize_smollm2()
    tok = AutoTokenizer.from_pretrained(src)
    cut = tempfile.mkdtemp(prefix="smollm2-cut-")
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    model.model.layers = model.model.layers[: args.blocks]
    model.config.num_hidden_layers = args.blocks
    model.save_pretrained(cut)
    tok.save_pretrained(cut)
    ids = torch.load(args.ids)

    start = time.perf_counter()
    api = AutoModelForCausalLM.from_pretrained(cut, dtype=torch.float32, attn_implementation=args.attn)
    settings = SignRoundSettings(iters=args.iters, batch_size=4)
    ours = quantize(
        api, parse_scheme("W4A16", group_size=64), tuning=settings, calibration=ids, progress=False
    )
    print(f"API ({args.attn}): {time.perf_counter() - start:.1f} s")

    hosted = AutoModelForCausalLM.from_pretrained(cut, dtype=torch.float32)
    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 64}
    modifier = SignRoundModifier(
        config_groups={"g": {"targets": ["Linear"], "weights": weights}},
        ignore=["lm_head"],
        iters=args.iters,
        batch_size=4,
    )
    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    start = time.perf_counter()
    oneshot(
        model=hosted,
        dataset=ds,
        recipe=[modifier],
        processor=tok,
        max_seq_length=ids.shape[1],
        num_calibration_samples=ids.shape[0],
        shuffle_calibration_samples=False,
    )
    print(f"oneshot + SignRoundModifier: {time.perf_counter() - start:.1f} s")
    for a, b in zip(ours.reports, modifier.block_reports, strict=True):
        print(
            f"{a.name}: RTN {a.rtn_loss:.9g} / {b.rtn_loss:.9g}, tuned {a.tuned_loss:.9g} / {b.tuned_loss:.9g}"
        )
    state = hosted.state_dict()
    same = sum(torch.equal(ours.model.get_submodule(n).weight, state[f"{n}.weight"]) for n in ours.layers)
    print(f"{same} of {len(ours.layers)} quantized layers bit-identical")


if __name__ == "__main__":
    main()
