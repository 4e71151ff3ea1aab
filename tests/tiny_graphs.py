"""Random graphs in method/graph.py's Data contract (x, edge_index, edge_attr, channel_nodes, channel_group,
group_nodes), for policy and PPO tests that should not depend on the graph builder."""
from __future__ import annotations

import torch
from torch_geometric.data import Data


def random_graph(groups: tuple[int, ...], g: torch.Generator, node_features: int, edge_features: int, *,
                 extra_edges: int = 0, random_weights: bool = False) -> Data:
    """Group nodes first, then channel nodes group by group; data-flow edges between consecutive groups,
    membership edges both ways, ``extra_edges`` random channel-channel edges (type 2)."""
    n_groups, n_channels = len(groups), sum(groups)
    n = n_groups + n_channels
    channel_nodes = torch.arange(n_groups, n)
    channel_group = torch.repeat_interleave(torch.arange(n_groups), torch.tensor(groups))
    src, dst, etype = [], [], []
    for i in range(n_groups - 1):
        src += [i, i + 1]
        dst += [i + 1, i]
        etype += [0, 0]
    for c, grp in zip(channel_nodes.tolist(), channel_group.tolist()):
        src += [c, grp]
        dst += [grp, c]
        etype += [1, 1]
    for _ in range(extra_edges):
        a, b = torch.randint(n_groups, n, (2,), generator=g).tolist()
        if a != b:
            src.append(a)
            dst.append(b)
            etype.append(2)
    edge_index = torch.tensor([src, dst], dtype=torch.long)
    edge_attr = torch.zeros(len(src), edge_features)
    edge_attr[torch.arange(len(src)), torch.tensor(etype)] = 1.0
    if random_weights:
        edge_attr[:, -1] = torch.rand(len(src), generator=g)
    return Data(x=torch.randn(n, node_features, generator=g), edge_index=edge_index, edge_attr=edge_attr,
                channel_nodes=channel_nodes, channel_group=channel_group, group_nodes=torch.arange(n_groups))
