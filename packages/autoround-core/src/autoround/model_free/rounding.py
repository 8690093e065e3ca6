"""Round-to-nearest of a weight in blocks of whole rows, for model-free RTN.

:func:`row_blocks` cuts a weight into blocks of about :data:`CHUNK_ELEMENTS` elements, whose
rounding temporaries stay near the CPU caches; :func:`quantize_rows` gives a block's packed
``auto_round`` tensors; :func:`row_workers` rounds blocks side by side on Python threads with
torch on one thread per op. docs/model_free.md says why each, with the measurements.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

from autoround.dtypes import DTYPES, from_groups, to_groups
from autoround.formats.gptq_layout import layer_tensors
from autoround.layer_quant import LayerQuant
from autoround.packing import pack_int32
from autoround.schemes import PER_TENSOR, Scheme

#: Elements of a weight quantized at once (whole rows): the rounding and packing temporaries
#: (about 10 bytes per element) stay near the CPU caches (5 MB; a Llama-3-8B MLP weight whole
#: needs 1.3 GB and runs 3x slower here).
CHUNK_ELEMENTS = 2**19
#: Rows of a chunk are a multiple of this (zero points are packed along the output dimension).
ROW_MULTIPLE = 32
_WORD_BITS = 32


@contextmanager
def row_workers() -> Iterator[ThreadPoolExecutor | None]:
    """Threads that round row blocks side by side, each op on one thread, as many as torch had
    (none for one); torch's thread count is restored on leaving.

    Row blocks are small (:data:`CHUNK_ELEMENTS`) so that they stay in the CPU caches; split over
    torch's intra-op threads, every op of a block waits for both threads, and on a CPU shared
    with other processes those waits cost more than the work (measured on the 2-core machine
    with other jobs running: 4.1 s for a 14336x4096 weight on 2 threads against 0.5 s on one).
    """
    threads = torch.get_num_threads()
    if threads <= 1:
        yield None
        return
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="model-free-rtn") as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def quantize_rows(rows: torch.Tensor, scheme: Scheme, zero_offset: int) -> dict[str, torch.Tensor]:
    """``qweight``, ``qzeros`` and ``scales`` of a block of whole rows of a weight, on the CPU.

    The model-based path quantizes with :func:`~autoround.layer_quant.quantize_weight` (the data
    type's ``qparams``, ``quantize``, then ``dequantize``) and its writer turns the dequantized
    weight back into integer codes (:func:`~autoround.layer_quant.codes_of`, exact) to pack
    them (:func:`~autoround.formats.gptq_layout.pack_layer`). Here the codes are the data type's
    ``quantize`` result itself, the same integers without the round trip, and 2-, 4- and 8-bit
    codes are packed by :func:`pack_along_inputs` (the words ``pack_int32`` makes, byte by
    byte); the tests compare every tensor with the model-based checkpoint.
    """
    dtype, bits = DTYPES[scheme.data_type], scheme.bits
    grouped, layout = to_groups(rows, scheme.group_size)
    qparams = dtype.qparams(grouped, bits, scheme.sym)
    codes = from_groups(dtype.quantize(grouped, qparams, bits), layout).to(torch.uint8).cpu()
    quant = LayerQuant.from_grouped(scheme, qparams, rows.shape[0]).cpu()
    return layer_tensors(pack_along_inputs(codes, bits), quant, zero_offset)


def row_blocks(weight: torch.Tensor, scheme: Scheme) -> list[torch.Tensor]:
    """The (out, in) weight as views of about :data:`CHUNK_ELEMENTS` elements, whole rows each
    (a multiple of 32 rows, so the zero points pack into whole words). Round-to-nearest is per
    group, and groups never cross rows, so quantizing and packing row blocks and joining them
    along the output dimension gives the same tensors as the whole weight, with temporaries a
    fraction of its size. A per-tensor scheme is quantized whole."""
    out_features, in_features = weight.shape
    rows = max(ROW_MULTIPLE, CHUNK_ELEMENTS // max(in_features, 1) // ROW_MULTIPLE * ROW_MULTIPLE)
    if scheme.group_size == PER_TENSOR or out_features <= rows:
        return [weight]
    return list(weight.split(rows, dim=0))


def pack_along_inputs(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """``pack_int32(codes.t().contiguous(), bits, dim=0)`` of (out, in) uint8 codes (``qweight``,
    (in * bits / 32, out)), for 2, 4 and 8 bits without leaving bytes: the ``8 / bits`` codes of
    each byte shifted into it, and every 4 bytes read as one little-endian int32, whose field
    ``k`` is then code ``k`` at bit ``bits * k``, the word ``pack_int32`` makes (0.02 s for a
    14336x4096 weight's codes against 0.15 s). 3 bits (fields cross bytes and words), widths the
    packing refuses and big-endian machines go through ``pack_int32``."""
    rows, cols = codes.shape
    if sys.byteorder != "little" or _WORD_BITS % bits or cols % (_WORD_BITS // bits):
        return pack_int32(codes.t().contiguous(), bits, dim=0)
    per_byte = 8 // bits
    fields = codes.reshape(rows, cols // per_byte, per_byte)
    packed = fields[..., 0].clone()
    for k in range(1, per_byte):
        packed |= fields[..., k] << (bits * k)
    return packed.view(torch.int32).t().contiguous()
