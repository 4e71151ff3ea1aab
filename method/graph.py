"""Network -> graph observation of the graph-RL pruner (spec ``graph-rl.md``, design decisions 1-2).

The paper (Balemans et al. 2025) only says the observation is "a graph of the target network that captures
the topology between layers and channels"; the layout below is **ours** (see the spec). It is hierarchical so
that it scales to ImageNet ResNet-50 (~26k channels):

* channel nodes, one per channel of every prunable Torch-Pruning group (``harness.prune.find_groups``), so
  channels tied by residual adds, BN, depthwise convs and concatenations are one node, never several;
* group nodes, one per group, linked along the data flow (group A -> B when a conv/linear reads channels of
  A and writes channels of B), with an extra *residual* edge when that layer's output meets an add/concat;
* membership edges channel <-> its group node;
* optional top-k edges channel -> its strongest consumer channels (weight = L1 of the consumer kernel slice).

Every edge is stored in both directions. ``edge_attr`` = edge-type one-hot, weight, reverse flag.
Node features have one fixed width (:data:`NODE_FEATURES`); the episode updates the mask state, the
current-step flag and the global context in place (:class:`PruningGraph` setters), never rebuilding the graph.

Node order: all channel nodes first (group by group in model order, channels in index order), then the G
group nodes. ``data.channel_nodes``, ``data.channel_group`` and ``data.group_nodes`` are the policy's index maps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch_geometric.data import Data
from torch_pruning import ops
from torch_pruning.pruner import function as tpf

from harness.errors import UserError
from harness.prune.budget import METRICS  # a latency budget uses the MACs and params features too
from harness.prune.cost import CostModel
from harness.prune.groups import Group, _is_residual_node, build_graph, execution_order, tp_group
from harness.search.writers import out_width

# ------------------------------------------------------------------------------------- node feature columns
COL_IS_CHANNEL = 0
COL_IS_GROUP = 1
COL_L1_GROUP = 2        # channel: L1 / max L1 within its group
COL_L1_GLOBAL = 3       # channel: L1 / max L1 over all channels
COL_L2_GROUP = 4
COL_L2_GLOBAL = 5
COL_BN_GAMMA = 6        # channel: |gamma| of the group's first BN (0 if none)
COL_BN_BETA = 7
COL_DEPTH = 8           # group order / number of groups (both node types)
COL_KERNEL = 9          # root conv kernel size / max over groups
COL_STRIDE = 10         # root conv stride / max over groups
COL_MACS_SHARE = 11     # (base MACs - MACs with the group cut to 1 channel) / base MACs
COL_PARAMS_SHARE = 12
COL_IN_CH = 13          # group node: root's input channels / max over groups
COL_OUT_CH = 14         # group node: group size / max over groups
COL_KEPT = 15           # mask one-hot on channel nodes; fractions of the group on group nodes
COL_PRUNED = 16
COL_UNDECIDED = 17
COL_CURRENT = 18        # channels and group node of the group decided at this step
COL_REM_MACS = 19       # global context, the same on every node
COL_REM_PARAMS = 20
COL_TARGET = 21
COL_REM_BUDGET = 22
NODE_FEATURES = 23
MASK_COLS = slice(COL_KEPT, COL_UNDECIDED + 1)
CONTEXT_COLS = slice(COL_REM_MACS, COL_REM_BUDGET + 1)

# ------------------------------------------------------------------------------------- edge feature columns
EDGE_TYPES = ("dataflow", "residual", "membership", "topk")
EDGE_DATAFLOW, EDGE_RESIDUAL, EDGE_MEMBERSHIP, EDGE_TOPK = range(4)
EDGE_COL_WEIGHT = len(EDGE_TYPES)       # 1 except for top-k edges (kernel-slice L1, normalised by the max)
EDGE_COL_REVERSE = EDGE_COL_WEIGHT + 1  # 1 on the reversed copy of a directed edge (dst -> src)
EDGE_FEATURES = EDGE_COL_REVERSE + 1


_OUT_FNS = (tpf.prune_conv_out_channels, tpf.prune_linear_out_channels)
_DW_FNS = (tpf.prune_depthwise_conv_out_channels, tpf.prune_depthwise_conv_in_channels)
_IN_FNS = (tpf.prune_conv_in_channels, tpf.prune_linear_in_channels)
_BN_FNS = (tpf.prune_batchnorm_out_channels,)


class PruningData(Data):
    """``Data`` whose index maps shift correctly when observations are batched (``Batch.from_data_list``)."""

    def __inc__(self, key: str, value, *args, **kwargs):
        if key in ("channel_nodes", "group_nodes"):
            return self.num_nodes
        if key == "channel_group":
            return int(self.group_nodes.numel())
        return super().__inc__(key, value, *args, **kwargs)


@dataclass
class PruningGraph:
    """The observation graph plus its index maps; setters write into ``data.x`` in place.

    ``channel_offset[g]`` is the position of group ``g``'s first channel within ``data.channel_nodes``.
    """

    data: PruningData
    groups: list[Group]
    group_index: dict[str, int]
    channel_offset: list[int]
    metric: str
    _current: int | None = field(default=None, repr=False)

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    @property
    def num_channels(self) -> int:
        return int(self.data.channel_nodes.numel())

    def channel_slice(self, group_index: int) -> slice:
        """Rows of ``data.x`` holding group ``group_index``'s channel nodes (channel nodes are contiguous)."""
        start = self.channel_offset[group_index]
        return slice(start, start + self.groups[group_index].size)

    def set_undecided(self) -> None:
        """Start of an episode: every channel undecided, no current group."""
        x = self.data.x
        x[:, MASK_COLS] = 0.0
        x[:, COL_UNDECIDED] = 1.0
        x[:, COL_CURRENT] = 0.0
        self._current = None

    def set_group_mask(self, group_index: int, keep: torch.Tensor) -> None:
        """Record the decision for one group: channel nodes get kept/pruned, the group node the fractions."""
        size = self.groups[group_index].size
        keep = torch.as_tensor(keep, dtype=torch.bool).reshape(-1)
        if keep.numel() != size:
            raise UserError(f"mask for group {self.groups[group_index].id} has {keep.numel()} entries, "
                            f"the group has {size} channels")
        x, rows = self.data.x, self.channel_slice(group_index)
        k = keep.to(x.device, x.dtype)
        x[rows, COL_KEPT] = k
        x[rows, COL_PRUNED] = 1.0 - k
        x[rows, COL_UNDECIDED] = 0.0
        g = int(self.data.group_nodes[group_index])
        frac = float(k.mean())
        x[g, COL_KEPT], x[g, COL_PRUNED], x[g, COL_UNDECIDED] = frac, 1.0 - frac, 0.0

    def set_current(self, group_index: int | None) -> None:
        """Move the is-current-step flag to ``group_index`` (its channels and group node); None clears it."""
        x = self.data.x
        if self._current is not None:
            x[self.channel_slice(self._current), COL_CURRENT] = 0.0
            x[int(self.data.group_nodes[self._current]), COL_CURRENT] = 0.0
        else:
            x[:, COL_CURRENT] = 0.0
        self._current = group_index
        if group_index is not None:
            x[self.channel_slice(group_index), COL_CURRENT] = 1.0
            x[int(self.data.group_nodes[group_index]), COL_CURRENT] = 1.0

    def set_context(self, remaining_macs: float, remaining_params: float, target: float,
                    remaining_budget: float) -> None:
        """Global context on every node: remaining MACs/params ratios, target, reduction still to find."""
        self.data.x[:, CONTEXT_COLS] = torch.tensor(
            [remaining_macs, remaining_params, target, remaining_budget], dtype=self.data.x.dtype,
            device=self.data.x.device)


# ------------------------------------------------------------------------------------------------ building
@dataclass
class _GroupInfo:
    """What one group's Torch-Pruning dependencies say: per-channel norms, BN, who writes/reads it."""

    l1: torch.Tensor
    l2: torch.Tensor
    gamma: torch.Tensor
    beta: torch.Tensor
    writers: dict[nn.Module, torch.Tensor]   # conv/linear -> group channel index of each of its output channels
    readers: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]  # conv/linear -> (local in idxs, group idxs)


def _scan_group(graph: tp.DependencyGraph, group: Group, order: dict[str, int],
                names: dict[nn.Module, str]) -> _GroupInfo:
    n = group.size
    l1 = torch.zeros(n, dtype=torch.float64)
    l2 = torch.zeros(n, dtype=torch.float64)
    gamma = torch.zeros(n)
    beta = torch.zeros(n)
    writers: dict[nn.Module, torch.Tensor] = {}
    readers: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
    first_bn: tuple[int, nn.Module, list, list] | None = None
    for item in tp_group(graph, group):
        dep, idxs, root = item.dep, list(item.idxs), item.root_idxs
        mod = dep.target.module
        if not isinstance(mod, nn.Module) or any(r is None for r in root):
            continue
        root_t = torch.as_tensor(root, dtype=torch.long)
        if dep.handler in _OUT_FNS or dep.handler is tpf.prune_depthwise_conv_out_channels:
            w = mod.weight.detach()
            if getattr(mod, "transposed", False):
                w = w.transpose(0, 1)
            w = w[idxs].flatten(1).to("cpu", torch.float64)
            l1.scatter_add_(0, root_t, w.abs().sum(1))
            l2.scatter_add_(0, root_t, w.norm(dim=1))
            if dep.handler in _OUT_FNS:  # a depthwise conv reads and writes the same group: no cross edge
                local_to_root = writers.setdefault(mod, torch.full((out_width(mod),), -1, dtype=torch.long))
                local_to_root[torch.as_tensor(idxs, dtype=torch.long)] = root_t
        elif dep.handler in _IN_FNS:
            prev = readers.get(mod)
            loc = torch.as_tensor(idxs, dtype=torch.long)
            readers[mod] = (loc, root_t) if prev is None else (torch.cat([prev[0], loc]), torch.cat([prev[1], root_t]))
        elif dep.handler in _BN_FNS and getattr(mod, "weight", None) is not None:
            pos = order.get(names.get(mod, ""), len(order))
            if first_bn is None or pos < first_bn[0]:
                first_bn = (pos, mod, idxs, root)
    if first_bn is not None:
        _, bn, idxs, root = first_bn
        root_t = torch.as_tensor(root, dtype=torch.long)
        gamma[root_t] = bn.weight.detach()[idxs].abs().float().cpu()
        beta[root_t] = bn.bias.detach()[idxs].float().cpu() if bn.bias is not None else 0.0
    return _GroupInfo(l1.float(), l2.float(), gamma, beta, writers, readers)


def _feeds_merge(graph: tp.DependencyGraph, module: nn.Module) -> bool:
    """True when ``module``'s output reaches an add/concat before the next conv/linear (a residual write)."""
    node = graph.module2node.get(module)
    if node is None:
        return False
    stack, seen = list(node.outputs), set()
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if _is_residual_node(n):
            return True
        if isinstance(n.module, (ops.TORCH_CONV, ops.TORCH_LINEAR)):
            continue
        stack.extend(n.outputs)
    return False


def _kernel_stride(m: nn.Module) -> tuple[int, int, int]:
    """(kernel size, stride, input channels) of a root layer; a linear layer counts as a 1x1 conv."""
    if isinstance(m, ops.TORCH_CONV):
        return int(m.kernel_size[0]), int(m.stride[0]), int(m.in_channels)
    return 1, 1, int(m.in_features)


def _safe_max(t: torch.Tensor) -> torch.Tensor:
    return t.max().clamp_min(1e-12) if t.numel() else torch.tensor(1.0)


@torch.no_grad()
def build_graph_observation(model: nn.Module, example_input: torch.Tensor, groups: Sequence[Group],
                            cost: CostModel, *, topk_channel_edges: int = 0, budget_target: float,
                            metric: str, graph: tp.DependencyGraph | None = None) -> PruningGraph:
    """The observation graph of ``model`` for the pruning units ``groups`` (from ``find_groups``).

    ``graph`` (optional) reuses an already built Torch-Pruning ``DependencyGraph``; ``cost`` gives each group's
    MACs/params share. The returned graph starts with every channel undecided, no current group and context
    (1, 1, target, target).
    """
    if metric not in METRICS:
        raise UserError(f"budget metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if topk_channel_edges < 0:
        raise UserError(f"topk_channel_edges must be >= 0, got {topk_channel_edges}")
    groups = list(groups)
    if not groups:
        raise UserError("the model has no prunable channel group")
    cost_ids = [g.id for g in cost.groups]
    if cost_ids != [g.id for g in groups]:
        raise UserError("the cost model was built for other groups than the ones given")
    graph = graph or build_graph(model, example_input)
    order = execution_order(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    G = len(groups)
    sizes = torch.tensor([g.size for g in groups], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), sizes.cumsum(0)[:-1]])
    C = int(sizes.sum())
    N = C + G
    infos = [_scan_group(graph, g, order, names) for g in groups]

    # --- node features
    x = torch.zeros(N, NODE_FEATURES)
    ch = torch.arange(C)
    chan_group = torch.repeat_interleave(torch.arange(G), sizes)
    group_nodes = torch.arange(C, C + G)
    x[:C, COL_IS_CHANNEL] = 1.0
    x[C:, COL_IS_GROUP] = 1.0
    l1 = torch.cat([i.l1 for i in infos])
    l2 = torch.cat([i.l2 for i in infos])
    x[:C, COL_L1_GROUP] = torch.cat([i.l1 / _safe_max(i.l1) for i in infos])
    x[:C, COL_L2_GROUP] = torch.cat([i.l2 / _safe_max(i.l2) for i in infos])
    x[:C, COL_L1_GLOBAL] = l1 / _safe_max(l1)
    x[:C, COL_L2_GLOBAL] = l2 / _safe_max(l2)
    x[:C, COL_BN_GAMMA] = torch.cat([i.gamma for i in infos])
    x[:C, COL_BN_BETA] = torch.cat([i.beta for i in infos])

    roots = [model.get_submodule(g.id) for g in groups]
    ks = torch.tensor([_kernel_stride(m) for m in roots], dtype=torch.float32)  # [G, 3]
    base = cost.base
    full = cost.keep_vector({})
    shares = torch.zeros(G, 2)
    for gi in range(G):
        keep = full.copy()
        keep[gi] = 1
        c = cost.cost_array(keep)
        shares[gi, 0] = (base.macs - c.macs) / max(base.macs, 1)
        shares[gi, 1] = (base.params - c.params) / max(base.params, 1)
    per_group = torch.zeros(G, NODE_FEATURES)
    per_group[:, COL_DEPTH] = torch.arange(G, dtype=torch.float32) / G
    per_group[:, COL_KERNEL] = ks[:, 0] / _safe_max(ks[:, 0])
    per_group[:, COL_STRIDE] = ks[:, 1] / _safe_max(ks[:, 1])
    per_group[:, COL_MACS_SHARE] = shares[:, 0]
    per_group[:, COL_PARAMS_SHARE] = shares[:, 1]
    shared_cols = [COL_DEPTH, COL_KERNEL, COL_STRIDE, COL_MACS_SHARE, COL_PARAMS_SHARE]
    x[:C, shared_cols] = per_group[chan_group][:, shared_cols]
    x[C:, shared_cols] = per_group[:, shared_cols]
    x[C:, COL_IN_CH] = ks[:, 2] / _safe_max(ks[:, 2])
    x[C:, COL_OUT_CH] = sizes.float() / sizes.max().float()

    # --- group <-> group edges from the layers: a layer reading group A and writing group B links A -> B
    writes: dict[nn.Module, list[tuple[int, torch.Tensor]]] = {}
    for gi, info in enumerate(infos):
        for mod, local_to_root in info.writers.items():
            writes.setdefault(mod, []).append((gi, local_to_root))
    src: list[torch.Tensor] = []
    dst: list[torch.Tensor] = []
    etype: list[int] = []
    weight: list[torch.Tensor] = []
    flow: set[tuple[int, int, int]] = set()
    merge_cache: dict[nn.Module, bool] = {}
    for a, info in enumerate(infos):
        for mod in info.readers:
            for b, _ in writes.get(mod, []):
                if a == b:
                    continue
                flow.add((a, b, EDGE_DATAFLOW))
                if groups[b].residual:
                    if mod not in merge_cache:
                        merge_cache[mod] = _feeds_merge(graph, mod)
                    if merge_cache[mod]:
                        flow.add((a, b, EDGE_RESIDUAL))
    if flow:
        f = torch.tensor(sorted(flow), dtype=torch.long)
        src.append(group_nodes[f[:, 0]])
        dst.append(group_nodes[f[:, 1]])
        etype.extend(f[:, 2].tolist())
        weight.append(torch.ones(len(f)))
    # --- membership channel -> group node
    src.append(ch)
    dst.append(group_nodes[chan_group])
    etype.extend([EDGE_MEMBERSHIP] * C)
    weight.append(torch.ones(C))
    # --- top-k channel -> consumer channel edges
    if topk_channel_edges > 0:
        ts, td, tw = _topk_edges(infos, writes, offsets, topk_channel_edges)
        src.append(ts)
        dst.append(td)
        etype.extend([EDGE_TOPK] * int(ts.numel()))
        weight.append(tw / _safe_max(tw) if tw.numel() else tw)

    s, d = torch.cat(src), torch.cat(dst)
    e = torch.tensor(etype, dtype=torch.long)
    w = torch.cat(weight).float()
    E = int(s.numel())
    attr = torch.zeros(2 * E, EDGE_FEATURES)
    attr[torch.arange(2 * E), torch.cat([e, e])] = 1.0
    attr[:, EDGE_COL_WEIGHT] = torch.cat([w, w])
    attr[E:, EDGE_COL_REVERSE] = 1.0
    edge_index = torch.stack([torch.cat([s, d]), torch.cat([d, s])])

    data = PruningData(x=x, edge_index=edge_index, edge_attr=attr, num_nodes=N)
    data.channel_nodes = ch.clone()
    data.channel_group = chan_group
    data.group_nodes = group_nodes
    pg = PruningGraph(data=data, groups=groups, group_index={g.id: i for i, g in enumerate(groups)},
                      channel_offset=offsets.tolist(), metric=metric)
    pg.set_undecided()
    pg.set_context(1.0, 1.0, float(budget_target), float(budget_target))
    return pg


def _topk_edges(infos: list[_GroupInfo], writes: dict[nn.Module, list[tuple[int, torch.Tensor]]],
                offsets: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per channel, the ``k`` consumer channels (outputs of a layer reading it) with the largest kernel-slice L1.

    Only consumers that are channel nodes count (the classifier's outputs are not); grouped convs other than
    depthwise (which ties the channel to itself) are skipped. A channel with fewer than ``k`` consumers keeps all.
    """
    src, dst, wts = [], [], []
    for a, info in enumerate(infos):
        size = int(info.l1.numel())
        cand_w, cand_node = [], []
        for mod, (loc_in, root_in) in info.readers.items():
            if isinstance(mod, ops.TORCH_CONV) and (mod.groups != 1 or mod.transposed):
                continue
            w = mod.weight.detach()
            s = w.abs().flatten(2).sum(2) if w.dim() > 2 else w.abs()  # [out, in]
            s = s.to("cpu", torch.float32)
            for b, local_to_root in writes.get(mod, []):
                if b == a:
                    continue
                rows = (local_to_root >= 0).nonzero().flatten()
                per_out = torch.zeros(size, rows.numel())  # [channel of a, consumer channel]
                per_out.index_add_(0, root_in, s[rows][:, loc_in].t())
                cand_w.append(per_out)
                cand_node.append(offsets[b] + local_to_root[rows])
        if not cand_w:
            continue
        wmat = torch.cat(cand_w, 1)
        nodes = torch.cat(cand_node)
        kk = min(k, int(nodes.numel()))
        top_w, top_i = wmat.topk(kk, dim=1)
        src.append((offsets[a] + torch.arange(size)).repeat_interleave(kk))
        dst.append(nodes[top_i].flatten())
        wts.append(top_w.flatten())
    if not src:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, torch.zeros(0)
    return torch.cat(src), torch.cat(dst), torch.cat(wts)
