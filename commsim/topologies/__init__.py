"""The topology files shipped with commsim (data only; read through :mod:`commsim.network.shipped`).

Each ``NAME.yaml`` is a topology; a ``NAME.calibration.yaml`` beside it holds the
NCCL parameters fitted to that cluster's measurements. In a checkout,
``topologies/`` at the repository root points here.
"""
