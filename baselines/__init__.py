"""Baseline pruning methods (l1-uniform, l1-global, random; AMC and constrained-RL later).

Each module registers its methods with :func:`harness.registry.register_method` on import;
:func:`harness.registry.load_plugins` imports them all. Nothing is imported here, so loading stays explicit.
"""
