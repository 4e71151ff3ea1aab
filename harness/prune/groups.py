"""Pruning units: Torch-Pruning dependency groups, named by their root module.

One group = a set of channels that must be removed together (a conv's filters, its BN, the next layers'
input kernels, and everything tied to them through residual adds, concatenations and depthwise convs).
Groups are found once on the unpruned model with Torch-Pruning's ``DependencyGraph`` and identified by the
name of their root (the first module, in execution order, whose output channels are all in the group), so a
plan written as JSON can be re-applied to a freshly built model.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning import ops
from torch_pruning.pruner import function as tpf

from harness.errors import UserError
from harness.prune.group import Group  # noqa: F401  (re-exported: the light module has no Torch-Pruning)

SCOPES = ("all", "internal")
ROOT_TYPES = (ops.TORCH_CONV, ops.TORCH_LINEAR)
# handlers that prune a conv/linear's *output* channels: the layers whose filters a group owns
_OUT_FILTER_FNS = (tpf.prune_conv_out_channels, tpf.prune_linear_out_channels, tpf.prune_depthwise_conv_out_channels)


def build_graph(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model``.

    The trace follows autograd, so frozen parameters are unfrozen for it; each module's train flag and each
    parameter's ``requires_grad`` are restored afterwards.
    """
    flags = [(m, m.training) for m in model.modules()]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(True)
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_input, verbose=False)
    finally:
        for p in frozen:
            p.requires_grad_(False)
        for m, flag in flags:
            m.training = flag


def hooked_forward(model: nn.Module, example_input: torch.Tensor, handles: list) -> None:
    """One eval-mode, no-grad forward pass for hooks to observe; removes the hooks, restores train flags."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags:
            m.training = flag


def execution_order(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """Module name -> position of its first call in a forward pass ("model order"); unused modules last."""
    order: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}

    def hook(m: nn.Module, args: tuple) -> None:
        name = names.get(m)
        if name is not None and name not in order:
            order[name] = len(order)

    hooked_forward(model, example_input, [m.register_forward_pre_hook(hook) for m in model.modules()])
    for name in names.values():
        order.setdefault(name, len(order))
    return order


def default_classifier(model: nn.Module) -> nn.Module | None:
    """The last ``nn.Linear`` of the model: its output (the class scores) is never pruned."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last


def _resolve(model: nn.Module, layers: Iterable[nn.Module | str]) -> list[nn.Module]:
    out = []
    for layer in layers:
        if isinstance(layer, str):
            try:
                layer = model.get_submodule(layer)
            except AttributeError as exc:
                raise UserError(f"ignored layer {layer!r} is not a module of the model") from exc
        out.append(layer)
    return out


def _is_residual_node(node) -> bool:
    if node.type == ops.OPTYPE.CONCAT:
        return True
    if node.type == ops.OPTYPE.ELEMENTWISE and len(set(node.inputs)) >= 2:
        op = str(getattr(node.module, "_grad_fn", "")).lower()
        return "add" in op or "sub" in op
    return False


def _out_filter_modules(tp_group) -> list[tuple[nn.Module, int]]:
    """(module, number of its output channels in the group) for each conv/linear whose filters the group prunes."""
    return [(dep.target.module, len(idxs)) for dep, idxs in tp_group
            if dep.handler in _OUT_FILTER_FNS and isinstance(dep.target.module, nn.Module)]


def tp_group(graph: tp.DependencyGraph, group: Group | str, idxs: Sequence[int] | None = None):
    """Torch-Pruning's group object for a Group (or its id), rooted at its root module's output channels.

    With ``idxs=None`` it holds every channel (for importance); otherwise the root channels ``idxs`` (to prune).
    """
    gid = group.id if isinstance(group, Group) else group
    try:
        module = graph.model.get_submodule(gid)
    except AttributeError as exc:
        raise UserError(f"group {gid!r} is not a module of the model") from exc
    pruner = graph.get_pruner_of_module(module)
    if pruner is None or not isinstance(module, ROOT_TYPES):
        raise UserError(f"group {gid!r} is not a conv/linear layer")
    if idxs is None:
        idxs = list(range(pruner.get_out_channels(module)))
    return graph.get_pruning_group(module, pruner.prune_out_channels, [int(i) for i in idxs])


def find_groups(model: nn.Module, example_input: torch.Tensor, *, scope: str = "all",
                ignored_layers: Iterable[nn.Module | str] | None = None,
                graph: tp.DependencyGraph | None = None) -> list[Group]:
    """Every prunable channel group of ``model``, in model order.

    Torch-Pruning's ``get_all_groups`` with Conv and Linear roots; the last ``nn.Linear`` (classifier) and
    ``ignored_layers`` are never pruned on their output side. ``scope="internal"`` keeps only groups that pass
    through no add/concat (Li et al.'s block-internal channels); ``"all"`` adds the residual streams (DepGraph).
    """
    if scope not in SCOPES:
        raise UserError(f"group scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    graph = graph or build_graph(model, example_input)
    order = execution_order(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    ignored = _resolve(model, ignored_layers or [])
    head = default_classifier(model)
    if head is not None and head not in ignored:
        ignored.append(head)

    groups: list[Group] = []
    for g in graph.get_all_groups(ignored_layers=ignored, root_module_types=ROOT_TYPES):
        # a root must have all its output channels in the group (so its full channel range is the group)
        candidates = []
        for module, n in _out_filter_modules(g):
            pruner = graph.get_pruner_of_module(module)
            if module in names and isinstance(module, ROOT_TYPES) and pruner.get_out_channels(module) == n:
                candidates.append(names[module])
        if not candidates:
            continue
        root = min(candidates, key=lambda n: (order.get(n, len(order)), n))
        root_module = model.get_submodule(root)
        size = graph.get_pruner_of_module(root_module).get_out_channels(root_module)
        if size is None or size < 2:
            continue  # a single channel cannot be pruned (at least one is always kept)
        members = sorted({names[dep.target.module] for dep, _ in g if dep.target.module in names},
                         key=lambda n: (order.get(n, len(order)), n))
        residual = any(_is_residual_node(dep.target) for dep, _ in g)
        groups.append(Group(id=root, size=int(size), members=tuple(members), residual=residual))

    groups.sort(key=lambda grp: (order.get(grp.id, len(order)), grp.id))
    if scope == "internal":
        groups = [grp for grp in groups if not grp.residual]
    return groups


@torch.no_grad()
def channel_l1(model: nn.Module, example_input: torch.Tensor, groups: Sequence[Group], *,
               graph: tp.DependencyGraph | None = None) -> dict[str, torch.Tensor]:
    """Li et al.'s filter L1 norm per channel, summed over every conv/linear of the group that owns the filter.

    For channel j of a group: sum over the group's output-side conv/linear members (depthwise convs included)
    of ``|W[j]|.sum()``. This equals Torch-Pruning's ``GroupMagnitudeImportance(p=1, group_reduction="sum",
    normalizer=None)`` restricted to output channels, except that Torch-Pruning skips depthwise filters;
    input-side kernels and BN are not counted (Li et al. rank filters). Returns float32 CPU tensors of length
    ``group.size``, in the root's channel order.
    """
    graph = graph or build_graph(model, example_input)
    out: dict[str, torch.Tensor] = {}
    for group in groups:
        g = tp_group(graph, group)
        score = torch.zeros(group.size, dtype=torch.float64)
        for item in g:
            dep, idxs = item.dep, item.idxs
            if dep.handler not in _OUT_FILTER_FNS or not isinstance(dep.target.module, nn.Module):
                continue
            root_idxs = item.root_idxs
            if any(r is None for r in root_idxs):
                continue
            w = dep.target.module.weight.detach()
            if getattr(dep.target.module, "transposed", False):
                w = w.transpose(0, 1)
            local = w[list(idxs)].flatten(1).abs().sum(1).to("cpu", torch.float64)
            score.scatter_add_(0, torch.tensor(root_idxs, dtype=torch.long), local)
        out[group.id] = score.float()
    return out


_IN_FILTER_FNS = (tpf.prune_conv_in_channels, tpf.prune_linear_in_channels)


def _is_plain(m: nn.Module) -> bool:
    """A conv or linear layer that reads every input channel (not depthwise/grouped, not transposed)."""
    return isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1 and not m.transposed)


def consumer_items(graph: tp.DependencyGraph, group: Group, names: dict[nn.Module, str]) -> list:
    """The group's dependency items that prune a plain conv/linear's *input* channels (its consumers)."""
    return [item for item in tp_group(graph, group)
            if item.dep.handler in _IN_FILTER_FNS and isinstance(item.dep.target.module, nn.Module)
            and item.dep.target.module in names and _is_plain(item.dep.target.module)]


@torch.no_grad()
def consumer_l1(model: nn.Module, example_input: torch.Tensor, groups: Sequence[Group], *,
                graph: tp.DependencyGraph | None = None) -> dict[str, torch.Tensor]:
    """Per channel, the L1 of the input-channel weights of every plain conv/linear that reads it (AMC's ranking).

    The input-side counterpart of :func:`channel_l1`: what the *consumers* do with a channel rather than how
    large its filter is (He et al. 2018 rank layer t's input channels by ``|W|.sum((0, 2, 3))``). A linear
    consumer after a flatten reads several features per channel; they are summed into the channel. A group
    with no plain consumer (only depthwise readers) falls back to its filter L1. Float64 CPU tensors of
    length ``group.size`` in the root's channel order.
    """
    graph = graph or build_graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    out: dict[str, torch.Tensor] = {}
    fallback = [g for g in groups if not consumer_items(graph, g, names)]
    producer = channel_l1(model, example_input, fallback, graph=graph) if fallback else {}
    for g in groups:
        if g.id in producer:
            out[g.id] = producer[g.id].double()
            continue
        score = torch.zeros(g.size, dtype=torch.float64)
        for item in consumer_items(graph, g, names):
            roots = item.root_idxs
            if roots is None or any(r is None for r in roots):
                continue
            w = item.dep.target.module.weight.detach().to("cpu", torch.float64)
            cols = w[:, list(item.idxs)]
            local = cols.abs().sum(dim=tuple(d for d in range(cols.dim()) if d != 1))
            score.scatter_add_(0, torch.as_tensor(list(roots), dtype=torch.long), local)
        out[g.id] = score
    return out
