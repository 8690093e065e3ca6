import pytest
import torch

from autoround.errors import CheckpointError
from autoround.formats import awq_layout, gptq_layout
from autoround.schemes import Scheme


def test_pack_order_matches_autoawq():
    # AutoAWQ: word |= code[col * 8 + AWQ_ORDER[i]] << (4 * i)
    codes = torch.arange(8, dtype=torch.int32).reshape(1, 8)
    word = awq_layout.pack_awq(codes)
    expected = sum(awq_layout.AWQ_ORDER[i] << (4 * i) for i in range(8))
    assert word.item() == expected


def test_roundtrip():
    codes = torch.randint(0, 16, (5, 24), dtype=torch.int32)
    assert torch.equal(awq_layout.unpack_awq(awq_layout.pack_awq(codes)), codes)


def test_awq_to_gptq_is_bit_exact():
    scheme = Scheme(bits=4, group_size=32, sym=False)
    inf, outf = 64, 16
    codes = torch.randint(0, 16, (inf, outf), dtype=torch.int32)
    zeros = torch.randint(0, 16, (2, outf), dtype=torch.int32)
    scales = torch.rand(2, outf, dtype=torch.float16)
    awq = {"qweight": awq_layout.pack_awq(codes), "qzeros": awq_layout.pack_awq(zeros), "scales": scales}
    out = awq_layout.awq_to_gptq(awq, scheme, inf, outf, "l")
    got_codes, quant = gptq_layout.unpack_layer(out, scheme, inf, outf, zero_offset=0)
    assert torch.equal(got_codes.t().to(torch.int32), codes)
    assert torch.equal(quant.zero.t().to(torch.int32), zeros)
    assert out["scales"] is scales


def test_shape_error_names_layer_and_shapes():
    scheme = Scheme(bits=4, group_size=32, sym=False)
    bad = {"qweight": torch.zeros(64, 4, dtype=torch.int32), "qzeros": torch.zeros(2, 2, dtype=torch.int32)}
    bad["scales"] = torch.zeros(2, 16, dtype=torch.float16)
    with pytest.raises(CheckpointError, match=r"layer\.qweight has shape \(64, 4\).*\(64, 2\)"):
        awq_layout.awq_to_gptq(bad, scheme, 64, 16, "layer")


def test_only_4_bits():
    with pytest.raises(CheckpointError, match="4-bit"):
        awq_layout.pack_awq(torch.zeros(1, 8, dtype=torch.int32), bits=2)
