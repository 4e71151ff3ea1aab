"""The graph-RL pruner of the paper (method ``graph-rl``), built on the harness and registered through
:mod:`harness.registry` by :mod:`method.search`.

graph.py   the network as a graph of layers and channels (torch_geometric Data, mask state updated in place)
policy.py  GATv2 encoder (or GCN / MLP ablations), per-channel Bernoulli logits or per-group ratios, value head
env.py     the constrained MDP as a gymnasium Env: layer-sequential or one-shot, action wall, final projection
reward.py  the self-competition reward (and the ranked / accuracy variants)
search.py  PPO (harness.search.ppo) over episodes; checkpoints, search log, best feasible plan
"""
