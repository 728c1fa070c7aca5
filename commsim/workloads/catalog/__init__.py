"""The model catalog shipped with commsim (data only; read by :func:`commsim.workloads.models.load_model`).

One YAML file per model: a :class:`~commsim.workloads.models.TransformerSpec`
with its shapes, published parameter count and source.
"""
