"""method.graph: the network -> graph observation of the graph-RL pruner (spec graph-rl.md, decisions 1-2).

Built on harness.models' CIFAR resnet56 (residual streams) and mobilenetv2 (depthwise convs), random init.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch_geometric.data import Batch

from harness.errors import UserError
from harness.models import build_model
from harness.prune import CostModel, build_graph, find_groups
from method.graph import (COL_CURRENT, COL_IS_CHANNEL, COL_IS_GROUP, COL_KEPT, COL_PRUNED, COL_REM_BUDGET,
                          COL_REM_MACS, COL_TARGET, COL_UNDECIDED, CONTEXT_COLS, EDGE_COL_REVERSE,
                          EDGE_COL_WEIGHT, EDGE_DATAFLOW, EDGE_FEATURES, EDGE_MEMBERSHIP, EDGE_RESIDUAL,
                          EDGE_TOPK, MASK_COLS, NODE_FEATURES, PruningGraph, build_graph_observation)

INFO = SimpleNamespace(num_classes=10, in_channels=3)
K = 8


def _build(arch: str, topk: int = K) -> tuple[nn.Module, list, PruningGraph]:
    torch.manual_seed(0)
    model = build_model(arch, INFO).eval()
    x = torch.randn(1, 3, 32, 32)
    graph = build_graph(model, x)
    groups = find_groups(model, x, graph=graph)
    cost = CostModel(model, x, groups, graph=graph)
    pg = build_graph_observation(model, x, groups, cost, topk_channel_edges=topk, budget_target=0.5,
                                 metric="macs", graph=graph)
    return model, groups, pg


@pytest.fixture(scope="module")
def resnet56():
    return _build("resnet56")


@pytest.fixture(scope="module")
def mobilenetv2():
    return _build("mobilenetv2")


def _edges(pg: PruningGraph, etype: int, forward_only: bool = True) -> torch.Tensor:
    attr = pg.data.edge_attr
    sel = attr[:, etype] == 1
    if forward_only:
        sel &= attr[:, EDGE_COL_REVERSE] == 0
    return pg.data.edge_index[:, sel]


def _group_pairs(pg: PruningGraph, etype: int) -> set[tuple[str, str]]:
    node_to_group = {int(n): g.id for n, g in zip(pg.data.group_nodes, pg.groups)}
    return {(node_to_group[int(a)], node_to_group[int(b)]) for a, b in _edges(pg, etype).t()}


# ------------------------------------------------------------------------------------------------ resnet56
def test_resnet56_residual_stages_are_single_groups(resnet56):
    _, groups, _ = resnet56
    residual = [g for g in groups if g.residual]
    assert [g.size for g in residual] == [16, 32, 64]
    assert len(groups) == 3 + 27  # 3 streams + one internal group per basic block
    # every conv writing a stage's stream (stem / downsample / each block's conv2) is in that stage's group
    for stage, g in zip((1, 2, 3), residual):
        writers = [f"layer{stage}.{b}.conv2" for b in range(9)]
        assert set(writers) <= set(g.members), g.id


def test_resnet56_node_and_membership_counts(resnet56):
    _, groups, pg = resnet56
    d = pg.data
    C, G = sum(g.size for g in groups), len(groups)
    assert d.num_nodes == d.x.shape[0] == C + G
    assert d.x.shape[1] == NODE_FEATURES and d.edge_attr.shape[1] == EDGE_FEATURES
    assert d.channel_nodes.tolist() == list(range(C)) and d.group_nodes.numel() == G
    assert d.channel_group.tolist() == [gi for gi, g in enumerate(groups) for _ in range(g.size)]
    assert d.x[d.channel_nodes, COL_IS_CHANNEL].eq(1).all() and d.x[d.group_nodes, COL_IS_GROUP].eq(1).all()
    member = _edges(pg, EDGE_MEMBERSHIP, forward_only=False)
    assert member.shape[1] == 2 * C
    fwd = _edges(pg, EDGE_MEMBERSHIP)
    assert torch.equal(fwd[1], d.group_nodes[d.channel_group[fwd[0]]])
    assert torch.isfinite(d.x).all() and torch.isfinite(d.edge_attr).all()
    assert d.validate()


def test_resnet56_dataflow_connects_consecutive_groups(resnet56):
    _, groups, pg = resnet56
    flow = _group_pairs(pg, EDGE_DATAFLOW)
    stems = ["conv1", "layer2.0.downsample.0", "layer3.0.downsample.0"]
    assert [g.id for g in groups if g.residual] == stems
    for stage, stream in zip((1, 2, 3), stems):
        for b in range(9):
            block = f"layer{stage}.{b}.conv1"
            if block == "layer2.0.conv1" or block == "layer3.0.conv1":
                prev = stems[stage - 2]
                assert (prev, block) in flow  # the first block of a stage reads the previous stream
            else:
                assert (stream, block) in flow  # the stream feeds each block ...
            assert (block, stream) in flow      # ... and each block writes back into it
    assert ("conv1", "layer2.0.downsample.0") in flow and ("layer2.0.downsample.0", "layer3.0.downsample.0") in flow
    # consecutive groups in model order are at most two data-flow hops apart (block -> stream -> next block)
    adj = {g.id: set() for g in groups}
    for a, b in flow:
        adj[a].add(b)
    for a, b in zip(groups, groups[1:]):
        two_hops = adj[a.id] | {c for n in adj[a.id] for c in adj[n]}
        assert b.id in two_hops or a.id in adj[b.id], (a.id, b.id)
    # the writes into the adds are residual edges; reads of the stream are plain data flow
    res = _group_pairs(pg, EDGE_RESIDUAL)
    assert ("layer1.0.conv1", "conv1") in res and ("conv1", "layer1.0.conv1") not in res
    assert res <= flow


def test_topk_edges_k_per_channel_positive_weights(resnet56):
    _, groups, pg = resnet56
    d = pg.data
    topk = _edges(pg, EDGE_TOPK)
    sel = (d.edge_attr[:, EDGE_TOPK] == 1)
    w = d.edge_attr[sel, EDGE_COL_WEIGHT]
    assert (w > 0).all() and (w <= 1).all()
    counts = torch.bincount(topk[0], minlength=d.num_nodes)
    # every group of resnet56 has >= K consumer channels (the last stream feeds later blocks of its stage)
    for gi, g in enumerate(groups):
        assert counts[pg.channel_slice(gi)].eq(K).all(), g.id
    assert counts[d.group_nodes].eq(0).all()
    # the consumer is a channel node of another group and the edge is stored in both directions
    assert (topk[1] < d.channel_nodes.numel()).all()
    assert (d.channel_group[topk[0]] != d.channel_group[topk[1]]).all()
    assert int(sel.sum()) == 2 * topk.shape[1]


def test_no_topk_edges_by_default():
    _, _, pg = _build("resnet20", topk=0)
    assert _edges(pg, EDGE_TOPK, forward_only=False).shape[1] == 0
    assert pg.data.validate()


def test_masks_update_in_place(resnet56):
    _, groups, pg = resnet56
    d = pg.data
    x = d.x
    before = x.clone()
    gi = 5
    keep = torch.zeros(groups[gi].size, dtype=torch.bool)
    keep[::2] = True
    pg.set_group_mask(gi, keep)
    pg.set_current(gi + 1)
    assert d.x is x
    changed = (x != before).any(0).nonzero().flatten().tolist()
    assert set(changed) <= {COL_KEPT, COL_PRUNED, COL_UNDECIDED, COL_CURRENT}
    rows = pg.channel_slice(gi)
    assert torch.equal(x[rows, COL_KEPT].bool(), keep) and torch.equal(x[rows, COL_PRUNED].bool(), ~keep)
    assert x[rows, COL_UNDECIDED].eq(0).all()
    assert x[d.group_nodes[gi], COL_KEPT].item() == pytest.approx(0.5)
    other = d.channel_group != gi
    assert x[d.channel_nodes[other], COL_UNDECIDED].eq(1).all()
    cur = x[:, COL_CURRENT].nonzero().flatten()
    nxt = pg.channel_slice(gi + 1)
    assert set(cur.tolist()) == set(range(nxt.start, nxt.stop)) | {int(d.group_nodes[gi + 1])}
    pg.set_current(gi + 2)
    assert x[pg.channel_slice(gi + 1), COL_CURRENT].eq(0).all() and x[pg.channel_slice(gi + 2), COL_CURRENT].eq(1).all()
    pg.set_context(0.8, 0.9, 0.5, 0.3)
    assert d.x is x
    assert x[:, CONTEXT_COLS].eq(torch.tensor([0.8, 0.9, 0.5, 0.3])).all()
    pg.set_undecided()
    assert d.x is x
    assert torch.equal(x[:, MASK_COLS], before[:, MASK_COLS]) and x[:, COL_CURRENT].eq(0).all()
    pg.set_context(1.0, 1.0, 0.5, 0.5)
    assert torch.equal(x, before)
    assert before[0, COL_REM_MACS] == 1 and before[0, COL_TARGET] == 0.5 and before[0, COL_REM_BUDGET] == 0.5


def test_batching_shifts_index_maps(resnet56):
    _, groups, pg = resnet56
    b = Batch.from_data_list([pg.data, pg.data])
    n, c, g = pg.data.num_nodes, pg.num_channels, len(groups)
    assert torch.equal(b.channel_nodes[c:], pg.data.channel_nodes + n)
    assert torch.equal(b.group_nodes[g:], pg.data.group_nodes + n)
    assert torch.equal(b.channel_group[c:], pg.data.channel_group + g)


# --------------------------------------------------------------------------------------------- mobilenetv2
def test_mobilenetv2_depthwise_tied_to_producer(mobilenetv2):
    model, groups, pg = mobilenetv2
    names = dict(model.named_modules())
    dws = [n for n, m in names.items() if isinstance(m, nn.Conv2d) and m.groups > 1
           and m.groups == m.in_channels == m.out_channels]
    assert len(dws) == 17
    ids = {g.id for g in groups}
    for dw in dws:
        assert dw not in ids  # no group of its own
        block = dw.rsplit(".", 1)[0]
        producer = f"{block}.expand" if f"{block}.expand" in names else "conv1"
        owners = [g for g in groups if dw in g.members]
        assert [g.id for g in owners] == [producer], dw
        assert owners[0].size == names[dw].out_channels
    d = pg.data
    assert d.num_nodes == sum(g.size for g in groups) + len(groups)
    assert d.validate()
    # no self loops between group nodes; a depthwise conv adds no data-flow edge
    flow = _edges(pg, EDGE_DATAFLOW, forward_only=False)
    assert (flow[0] != flow[1]).all()
    flow_pairs = _group_pairs(pg, EDGE_DATAFLOW)
    assert ("conv1", "blocks.0.project") in flow_pairs and ("blocks.1.expand", "blocks.1.project") in flow_pairs


def test_rejects_bad_metric(resnet56):
    model, groups, _ = resnet56
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(UserError):
        build_graph_observation(model, x, groups, CostModel(model, x, groups), budget_target=0.5, metric="flops")
