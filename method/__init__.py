"""The graph-RL pruner of the paper (``graph-rl``), built on the harness and registered through
:mod:`harness.registry`. Its modules (graph, policy, environment, reward, search) land with issue 3;
until then this package registers no method.
"""
