"""hook_name equals TransformerLens's get_act_name for every kind tl_geom uses (TL 4).

Kept by hand rather than calling get_act_name: it lives in ``transformer_lens.utils``
in 3.x and ``transformer_lens.utilities.components_utils`` in 4.x, and importing either
would import TransformerLens with tl_geom (tl_geom imports it only to load a model).
The same check runs on TL 3.9 in ``tests/test_capture_tl3.py`` (make test-tl3).
"""

import pytest

from tl_geom.lens.hooks import ATTN_KINDS, BLOCK_KINDS, MLP_KINDS, hook_name


def test_hook_names_equal_get_act_name() -> None:
    components = pytest.importorskip("transformer_lens.utilities.components_utils")
    for kind in (*ATTN_KINDS, *BLOCK_KINDS, *MLP_KINDS):
        for layer in (0, 7):
            assert hook_name(layer, kind) == components.get_act_name(kind, layer), kind
