"""Policy and value network of the graph-RL pruner (design decision 3 of ``specs/graph-rl.md``).

What is the paper's: a GAT encoder over a graph of layers and channels, and one binary keep/prune decision
per channel. What is ours (each a :class:`PolicyConfig` knob): GATv2 with 3 layers x 4 heads x 64 dims,
ELU + residual + LayerNorm, the pooled-context policy head, the mean+max value head, and the ablations
``encoder = gcn | mlp``, ``action = ratio`` and ``observation = layer-vector``.

Input contract (produced by the graph builder): ``data.x`` float [N, F]; ``data.edge_index`` long [2, E];
``data.edge_attr`` float [E, D]; ``data.channel_nodes`` long [C] (ordered group by group, channels in
index order); ``data.channel_group`` long [C] (group 0..G-1 of each channel node); ``data.group_nodes``
long [G]. A ``torch_geometric.data.Batch`` of such graphs (``Batch.from_data_list``, as a PPO minibatch)
is accepted too: the per-graph indices are shifted to batch-global ones here, whether or not the
builder's ``Data`` subclass already increments them on collation.
"""

from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Bernoulli, Beta, Distribution
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GATv2Conv, GCNConv, global_max_pool, global_mean_pool
from torch_geometric.utils import scatter

__all__ = ["PolicyConfig", "PolicyOutput", "GraphPolicy", "ENCODERS", "ACTIONS", "OBSERVATIONS"]

ENCODERS = ("gat", "gcn", "mlp")
ACTIONS = ("binary", "ratio")
OBSERVATIONS = ("graph", "layer-vector")

# Clamp for Beta log-probs: an action of exactly 0 or 1 would give -inf / nan in the PPO ratio.
_RATIO_EPS = 1e-4

GroupIndex = int | Tensor | None


@dataclass(frozen=True)
class PolicyConfig:
    """Architecture knobs; defaults are the suite's choice for the paper's unpublished values."""

    encoder: Literal["gat", "gcn", "mlp"] = "gat"
    layers: int = 3
    heads: int = 4
    head_dim: int = 64
    action: Literal["binary", "ratio"] = "binary"
    observation: Literal["graph", "layer-vector"] = "graph"
    dropout: float = 0.0
    # GATv2's self-loops: off by default because the residual connection already carries each node's own
    # state, and the loops add one edge per node (a third of ResNet-50's edges, ~30 % of a forward pass).
    self_loops: bool = False
    # A linear term of the channel node's own input features added to its keep-logit (binary action, graph
    # observation): a direct path from "this channel's norm / BN / position" to its decision, next to the
    # encoder's. Zero-initialised, so the initial policy is the same; see docs/graph-rl.md for why.
    feature_skip: bool = False
    feature_skip_gain: float = 1.0

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {ACTIONS}, got {self.action!r}")
        if self.observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {OBSERVATIONS}, got {self.observation!r}")
        if self.layers < 1 or self.heads < 1 or self.head_dim < 1:
            raise ValueError("layers, heads and head_dim must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def hidden(self) -> int:
        """Width of every encoder layer (heads x head_dim, the concatenated GATv2 output)."""
        return self.heads * self.head_dim


@dataclass
class PolicyOutput:
    """What one forward pass returns; all index tensors are batch-global.

    ``channel_logits`` [C]: Bernoulli keep logit per channel node (binary action, else None).
    ``ratio_alpha`` / ``ratio_beta`` [G]: Beta concentrations of each group's keep ratio (ratio action).
    ``selected``: None, or the ``group_index`` the forward pass was restricted to; then ``channel_logits``
    (or ``ratio_alpha`` / ``ratio_beta``) hold the selected elements only and ``selected_graph`` [K] the
    graph of each, and the distribution methods accept that ``group_index`` only.
    ``value`` [B]: state value per graph. ``channel_group`` [C] / ``channel_group_local`` [C]: the group of
    each channel, batch-global / as in the graph. ``channel_graph`` [C], ``group_graph`` [G]: graph of each
    channel / group in the batch. ``group_local`` [G]: index of each group inside its own graph.
    """

    channel_logits: Tensor | None
    ratio_alpha: Tensor | None
    ratio_beta: Tensor | None
    value: Tensor
    channel_group: Tensor
    channel_group_local: Tensor
    channel_graph: Tensor
    group_graph: Tensor
    group_local: Tensor
    num_graphs: int
    selected: GroupIndex = None
    selected_graph: Tensor | None = None

    @property
    def action(self) -> str:
        return "binary" if self.channel_logits is not None else "ratio"


@dataclass
class _Index:
    channel_nodes: Tensor
    group_nodes: Tensor
    channel_group: Tensor
    channel_group_local: Tensor
    channel_graph: Tensor
    group_graph: Tensor
    group_local: Tensor
    node_graph: Tensor
    num_graphs: int


def _graph_of(slices: Tensor, num_graphs: int) -> Tensor:
    counts = slices[1:] - slices[:-1]
    return torch.repeat_interleave(torch.arange(num_graphs, device=slices.device), counts)


def _index(data: Data) -> _Index:
    """Batch-global channel/group indices; PyG does not shift ``channel_nodes`` etc. on collation."""
    x = data.x
    device = x.device
    cn, gn, cg = data.channel_nodes.long(), data.group_nodes.long(), data.channel_group.long()
    if isinstance(data, Batch) and getattr(data, "_slice_dict", None) is not None:
        b = int(data.num_graphs)
        ptr = data.ptr.to(device)
        sl, inc = data._slice_dict, data._inc_dict

        def applied(key: str) -> Tensor:
            val = inc.get(key)
            if val is None:
                return torch.zeros(b, dtype=torch.long, device=device)
            val = torch.as_tensor(val, device=device).long()
            return val.expand(b) if val.dim() == 0 else val.view(b)

        c_graph = _graph_of(sl["channel_nodes"].to(device), b)
        g_graph = _graph_of(sl["group_nodes"].to(device), b)
        g_slices = sl["group_nodes"].to(device).long()
        cn = cn - applied("channel_nodes")[c_graph] + ptr[c_graph]
        gn = gn - applied("group_nodes")[g_graph] + ptr[g_graph]
        cg_local = cg - applied("channel_group")[c_graph]
        cg = cg_local + g_slices[:-1][c_graph]
        g_local = torch.arange(gn.numel(), device=device) - g_slices[:-1][g_graph]
        node_graph = data.batch.to(device)
    else:
        b = 1
        c_graph = torch.zeros_like(cn)
        g_graph = torch.zeros_like(gn)
        cg_local = cg
        g_local = torch.arange(gn.numel(), device=device)
        node_graph = torch.zeros(x.size(0), dtype=torch.long, device=device)
    return _Index(cn, gn, cg, cg_local, c_graph, g_graph, g_local, node_graph, b)


def _select(local: Tensor, graph: Tensor, group_index: int | Tensor, num_graphs: int) -> Tensor:
    """Mask of the elements (channels or groups) of ``group_index``: an int for every graph, or one per graph."""
    if isinstance(group_index, int):
        mask = local == group_index
    else:
        gi = torch.as_tensor(group_index, device=local.device).long().view(-1)
        if gi.numel() != num_graphs:
            raise ValueError(f"group_index has {gi.numel()} entries for {num_graphs} graphs")
        mask = local == gi[graph]
    if not bool(mask.any()):
        raise ValueError(f"group_index {group_index} selects no action")
    return mask


def _same_group_index(a: GroupIndex, b: GroupIndex) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, int) or isinstance(b, int):
        return isinstance(a, int) and isinstance(b, int) and a == b
    return a is b or (a.numel() == b.numel() and bool(torch.equal(a.to(b.device).long().view(-1), b.long().view(-1))))


def _mlp(inp: int, hidden: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ELU(), nn.Dropout(dropout), nn.Linear(hidden, out))


class _Encoder(nn.Module):
    """``layers`` x (message passing or per-node Linear) -> ELU -> + residual -> LayerNorm.

    The MLP variant has the same width and depth as the GNNs so the ablation isolates message passing.
    """

    def __init__(self, kind: str, node_features: int, edge_features: int, cfg: PolicyConfig) -> None:
        super().__init__()
        self.kind = kind
        self.dropout = cfg.dropout
        h = cfg.hidden
        self.convs = nn.ModuleList()
        self.residuals = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i in range(cfg.layers):
            inp = node_features if i == 0 else h
            if kind == "gat":
                conv: nn.Module = GATv2Conv(inp, cfg.head_dim, heads=cfg.heads, concat=True,
                                            edge_dim=edge_features if edge_features > 0 else None,
                                            dropout=cfg.dropout, add_self_loops=cfg.self_loops)
            elif kind == "gcn":
                # No edge weights: edge_attr is mostly one-hot edge types, whose last column would zero
                # out every edge of the other types.
                conv = GCNConv(inp, h)
            else:
                conv = nn.Linear(inp, h)
            self.convs.append(conv)
            self.residuals.append(nn.Linear(inp, h) if inp != h else nn.Identity())
            self.norms.append(nn.LayerNorm(h))

    def forward(self, x: Tensor, edge_index: Tensor | None, edge_attr: Tensor | None) -> Tensor:
        for conv, res, norm in zip(self.convs, self.residuals, self.norms):
            if self.kind == "gat":
                y = conv(x, edge_index, edge_attr=edge_attr)
            elif self.kind == "gcn":
                y = conv(x, edge_index)
            else:
                y = conv(x)
            y = F.dropout(F.elu(y), p=self.dropout, training=self.training)
            x = norm(y + res(x))
        return x


class GraphPolicy(nn.Module):
    """Actor-critic over a network graph: encoder -> per-channel (or per-group) policy head + value head.

    ``cfg.action == "ratio"`` parametrises each group's keep ratio as a Beta(alpha, beta) with
    alpha, beta = 1 + softplus(.) (Chou et al. 2017): its support is exactly (0, 1), log-prob and entropy
    are closed-form (a tanh-squashed Gaussian needs a Jacobian correction and has no closed-form entropy,
    and its log-prob blows up near the bounds, which destabilises PPO ratios), and concentrations >= 1
    keep it unimodal so the mean is a sensible deterministic action.
    """

    def __init__(self, node_features: int, edge_features: int, cfg: PolicyConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or PolicyConfig()
        self.node_features = node_features
        self.edge_features = edge_features
        h = cfg.hidden
        # layer-vector: AMC-style baseline, group-node features only, no edges -> per-node MLP encoder.
        kind = "mlp" if cfg.observation == "layer-vector" else cfg.encoder
        self.encoder = _Encoder(kind, node_features, edge_features, cfg)
        ctx = 2 * h  # mean + max pooled graph embedding
        out = 1 if cfg.action == "binary" else 2
        self.policy_head = _mlp(h + ctx, h, out, cfg.dropout)
        self.value_head = _mlp(ctx, h, 1, cfg.dropout)
        # Small last layer: the initial policy is near p = 0.5 / Beta(~1.7, ~1.7), i.e. exploratory.
        with torch.no_grad():
            self.policy_head[-1].weight.mul_(0.01)
            self.policy_head[-1].bias.zero_()
        self.feature_skip: nn.Linear | None = None
        if cfg.feature_skip and cfg.action == "binary" and cfg.observation == "graph":
            self.feature_skip = nn.Linear(node_features, 1, bias=False)
            nn.init.zeros_(self.feature_skip.weight)

    def set_initial_keep(self, p: float) -> None:
        """Start the binary policy at keep-probability ``p`` for every channel (the last layer's bias)."""
        if self.cfg.action != "binary":
            raise ValueError("set_initial_keep applies to the binary action only")
        if not 0.0 < p < 1.0:
            raise ValueError(f"p must be in (0, 1), got {p}")
        with torch.no_grad():
            self.policy_head[-1].bias.fill_(math.log(p / (1.0 - p)))

    # ------------------------------------------------------------------ forward
    def forward(self, data: Data, group_index: GroupIndex = None) -> PolicyOutput:
        """One pass over a graph or a ``Batch`` of graphs; see :class:`PolicyOutput`.

        ``group_index`` (an int or one group per graph, as in :meth:`distribution`): compute the policy head
        for that group's channels only. A layer-sequential step acts on one group of ~30, so the per-channel
        head over every channel was a quarter of a PPO pass on ResNet-56; the selected logits are the same
        (``tests/test_method_policy.py``), the others are never computed.
        """
        idx = _index(data)
        # the action elements of the head: every channel (group), or those of group_index
        sel, sel_graph = None, None
        if group_index is not None:
            binary_graph = self.cfg.action == "binary" and self.cfg.observation == "graph"
            local = idx.channel_group_local if self.cfg.action == "binary" else idx.group_local
            graph = idx.channel_graph if self.cfg.action == "binary" else idx.group_graph
            sel = _select(local, graph, group_index, idx.num_graphs)
            sel_graph = graph[sel]
        else:
            binary_graph = False
        if self.cfg.observation == "graph":
            edge_attr = getattr(data, "edge_attr", None) if self.edge_features > 0 else None
            z = self.encoder(data.x, data.edge_index, edge_attr)
            pool_z, pool_graph = z, idx.node_graph
        else:
            z_group = self.encoder(data.x[idx.group_nodes], None, None)
            pool_z, pool_graph = z_group, idx.group_graph
        pooled = torch.cat([global_mean_pool(pool_z, pool_graph, idx.num_graphs),
                            global_max_pool(pool_z, pool_graph, idx.num_graphs)], dim=-1)
        value = self.value_head(pooled).squeeze(-1)

        logits = alpha = beta = None
        if self.cfg.observation == "graph":
            if self.cfg.action == "binary":
                nodes = idx.channel_nodes if sel is None else idx.channel_nodes[sel]
                graphs = idx.channel_graph if sel is None else sel_graph
                logits = self.policy_head(torch.cat([z[nodes], pooled[graphs]], -1)).squeeze(-1)
                if self.feature_skip is not None:
                    logits = logits + self.cfg.feature_skip_gain * self.feature_skip(data.x[nodes]).squeeze(-1)
            else:
                emb = z[idx.group_nodes]
                ab = self.policy_head(torch.cat([emb, pooled[idx.group_graph]], -1))
        else:
            ab_or_logit = self.policy_head(torch.cat([z_group, pooled[idx.group_graph]], -1))
            if self.cfg.action == "binary":
                # One logit per group broadcast to its channels: the layer-vector baseline cannot tell
                # the channels of a layer apart (that is the point of the ablation).
                logits = ab_or_logit.squeeze(-1)[idx.channel_group]
            else:
                ab = ab_or_logit
        if self.cfg.action == "ratio":
            if sel is not None:
                ab = ab[sel]
            alpha = 1.0 + F.softplus(ab[:, 0])
            beta = 1.0 + F.softplus(ab[:, 1])
        elif sel is not None and not binary_graph:  # layer-vector logits are per group, broadcast: cheap
            logits = logits[sel]
        return PolicyOutput(logits, alpha, beta, value, idx.channel_group, idx.channel_group_local,
                            idx.channel_graph, idx.group_graph, idx.group_local, idx.num_graphs,
                            selected=group_index, selected_graph=sel_graph)

    # ------------------------------------------------------------------ action distributions
    @staticmethod
    def _selection(out: PolicyOutput, group_index: GroupIndex) -> tuple[Tensor | None, Tensor]:
        """Mask of the action elements of ``group_index`` and the graph of each selected element.

        ``group_index``: None = every channel / group (one-shot episode); an int = that group in every graph
        (layer-sequential step); a long tensor [B] = one group per graph of a batch (PPO minibatch).
        """
        if out.selected is not None:  # the head ran for these elements only
            if not _same_group_index(out.selected, group_index):
                raise ValueError(f"this output was computed for group_index {out.selected} only, "
                                 f"not {group_index}: call the policy with the group_index to act on")
            return None, out.selected_graph
        if out.action == "binary":
            local, graph = out.channel_group_local, out.channel_graph
        else:
            local, graph = out.group_local, out.group_graph
        if group_index is None:
            return None, graph
        mask = _select(local, graph, group_index, out.num_graphs)
        return mask, graph[mask]

    def distribution(self, out: PolicyOutput, group_index: GroupIndex = None) -> Distribution:
        """Element-wise distribution over the selected actions (flat, batch_shape [K]).

        Binary: ``Bernoulli`` over the channels of the group(s) (1 = keep). Ratio: ``Beta`` over the keep
        ratio of the group(s). Use :meth:`log_prob` / :meth:`entropy` for per-observation sums.
        """
        mask, _ = self._selection(out, group_index)
        if out.action == "binary":
            logits = out.channel_logits if mask is None else out.channel_logits[mask]
            return Bernoulli(logits=logits)
        a = out.ratio_alpha if mask is None else out.ratio_alpha[mask]
        b = out.ratio_beta if mask is None else out.ratio_beta[mask]
        return Beta(a, b)

    def element_log_prob(self, out: PolicyOutput, action: Tensor,
                         group_index: GroupIndex = None) -> tuple[Tensor, Tensor]:
        """Log-probability of every selected element of ``action`` [K] and the graph of each element [K].

        For PPO with a per-element ratio (``PPOConfig.ratio = "per-element"``): each channel's keep/prune
        decision is clipped on its own instead of the product over a group of up to 2,048 channels.
        """
        dist = self.distribution(out, group_index)
        _, graph = self._selection(out, group_index)
        if out.action == "binary":
            lp = dist.log_prob(action.to(dist.logits.dtype))
        else:
            lp = dist.log_prob(action.clamp(_RATIO_EPS, 1.0 - _RATIO_EPS))
        return lp, graph

    def log_prob(self, out: PolicyOutput, action: Tensor, group_index: GroupIndex = None) -> Tensor:
        """Joint log-probability of ``action`` per graph, [B]: the sum over the selected elements.

        ``action`` is flat and aligned with :meth:`distribution` (channels or groups in batch order).
        """
        lp, graph = self.element_log_prob(out, action, group_index)
        return scatter(lp, graph, dim=0, dim_size=out.num_graphs, reduce="sum")

    def element_entropy(self, out: PolicyOutput, group_index: GroupIndex = None) -> tuple[Tensor, Tensor]:
        """Entropy of every selected element [K] and the graph of each element [K]."""
        dist = self.distribution(out, group_index)
        _, graph = self._selection(out, group_index)
        return dist.entropy(), graph

    def entropy(self, out: PolicyOutput, group_index: GroupIndex = None) -> Tensor:
        """Entropy per graph, [B]: the sum over the (independent) selected elements."""
        ent, graph = self.element_entropy(out, group_index)
        return scatter(ent, graph, dim=0, dim_size=out.num_graphs, reduce="sum")

    def mode(self, out: PolicyOutput, group_index: GroupIndex = None) -> Tensor:
        """Deterministic action: keep iff logit > 0 (binary, float 0/1) or the Beta mean (ratio)."""
        dist = self.distribution(out, group_index)
        if out.action == "binary":
            return (dist.logits > 0).to(dist.logits.dtype)
        return dist.mean

    def act(self, out: PolicyOutput, group_index: GroupIndex = None, *,
            deterministic: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """Sample (or take the mode of) the selected actions, flat like :meth:`distribution`."""
        if deterministic:
            return self.mode(out, group_index)
        dist = self.distribution(out, group_index)
        with torch.no_grad():
            if generator is None or out.action == "ratio":
                return dist.sample()
            return torch.bernoulli(dist.probs, generator=generator)
