"""Everything that touches TransformerLens or transformers, and nothing else does.

``hooks`` (hook names, model shapes, the streaming layer collector), ``models``
(loading), ``data`` (corpora and token windows), ``capture`` (``capture_attention``),
``sdpa`` (the fused-attention backend), ``interventions`` (edits that move the sink,
head ablation), ``tiny_lm`` (a tiny decoder with hook points, for the HeadNorm study).
"""
