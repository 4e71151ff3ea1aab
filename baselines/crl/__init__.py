"""Constrained-RL pruning (Malik et al., ICPR 2022; ``../shared/specs/baselines.md`` A): ``crl-neuron`` and
``crl-layer``. The methods register in :mod:`baselines.crl.search`; see ``docs/crl.md``."""
