"""OCP microscaling integers, registered as ``"mx_int"`` (Intel auto-round's ``data_type`` name):
MXINT2, MXINT4 and MXINT8, picked by ``bits`` as Intel does (``"mx_int" + str(bits)``).

Each block of 32 weights shares one E8M0 power-of-two scale, exactly as for MX floats; each weight
is a signed fixed-point number with ``bits - 2`` fraction bits, i.e. an element of one binade
with no exponent bits (Intel's ``MXFP_FORMAT_CACHE`` rows with ``ebits = 0``):

* MXINT8 (the OCP spec's): steps of 1/64 up to 127/64 = 1.984375;
* MXINT4: steps of 1/4 up to 7/4 = 1.75 (Intel's MXINT4 preset);
* MXINT2: the values -1, 0, 1.

The shared exponent is ``floor(log2(max|w|))`` (the element's ``emax`` is 0), and the elements
round half to even, so the type is :class:`~autoround.dtypes.mx_fp.MxFpDataType` with these
elements; bit for bit Intel 0.16.1's ``quant_mx`` for ``mx_int<bits>``
(``tests/fixtures/intel/fp_qdq.safetensors``).
"""

from __future__ import annotations

from autoround.dtypes.mx_elements import MxElement
from autoround.dtypes.mx_fp import MxFpDataType

#: Element format by ``bits``: ``bits - 2`` fraction bits, the exponent fixed at 0.
MX_INT_ELEMENTS: dict[int, MxElement] = {
    2: MxElement(mantissa_bits=0, min_exp=0, emax=0, max_normal=1.0),
    4: MxElement(mantissa_bits=2, min_exp=0, emax=0, max_normal=1.75),
    8: MxElement(mantissa_bits=6, min_exp=0, emax=0, max_normal=1.984375),
}


def mx_int_type() -> MxFpDataType:
    """The ``"mx_int"`` data type: MX blocks of integer elements, floor-rounded shared exponents."""
    return MxFpDataType(name="mx_int", elements=tuple(MX_INT_ELEMENTS.items()))
