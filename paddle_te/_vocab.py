"""The vocabularies of paddle_te's Python side, one table each (issue 10, part 7).

Every other module takes these names from here (layouts, mask types) or from the C API itself
(backends: ``_ops_lib.CORE_BACKENDS`` asks ``pte_backend_name``). The tuples are in the order of
the C API's enums (``csrc/include/paddle_te/attention.h``), so the enum value of a name is its
index; tests/test_capability.py holds them to the header.
"""

#: Layouts of q, k, v (``pte_qkv_format_t``): bshd ``[b, s, h, d]``, sbhd ``[s, b, h, d]``,
#: thd ``[t, h, d]``.
QKV_FORMATS = ("bshd", "sbhd", "thd")

#: Every attention mask type, in the order of SPEC §2 (``pte_mask_type_t`` plus ``arbitrary``,
#: which is no core concept: the layers run it through the unfused path).
MASK_TYPES = (
    "no_mask",
    "padding",
    "causal",
    "padding_causal",
    "causal_bottom_right",
    "padding_causal_bottom_right",
    "arbitrary",
)

#: The mask types of the C core (``pte_mask_type_t``, enum order).
CORE_MASK_TYPES = MASK_TYPES[:-1]

#: The backends that are paths of the Python layers, not of the core: matmul + masked softmax.
PYTHON_BACKENDS = ("unfused",)
