"""Tests of the graph-RL policy network (method/policy.py) on random graphs that meet the builder contract."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch_geometric.data import Batch, Data

from method.policy import ACTIONS, ENCODERS, OBSERVATIONS, GraphPolicy, PolicyConfig
from tiny_graphs import random_graph as shared_random_graph

F_NODE, D_EDGE = 7, 4
SMALL = dict(layers=2, heads=2, head_dim=8)


def random_graph(groups: tuple[int, ...] = (3, 5, 2), seed: int = 0, extra_edges: int = 10) -> Data:
    return shared_random_graph(groups, torch.Generator().manual_seed(seed), F_NODE, D_EDGE,
                               extra_edges=extra_edges, random_weights=True)


def make(seed: int = 0, **kw) -> GraphPolicy:
    torch.manual_seed(seed)
    return GraphPolicy(F_NODE, D_EDGE, PolicyConfig(**{**SMALL, **kw})).eval()


def scramble_logits(model: GraphPolicy) -> None:
    """Undo the small init of the last policy layer so outputs vary visibly between inputs."""
    with torch.no_grad():
        model.policy_head[-1].weight.normal_()
        model.policy_head[-1].bias.normal_()


def primary(out) -> torch.Tensor:
    return out.channel_logits if out.channel_logits is not None else torch.stack([out.ratio_alpha, out.ratio_beta])


@pytest.mark.parametrize("encoder,action,observation", list(itertools.product(ENCODERS, ACTIONS, OBSERVATIONS)))
def test_output_shapes(encoder: str, action: str, observation: str) -> None:
    data = random_graph((3, 5, 2))
    model = make(encoder=encoder, action=action, observation=observation)
    out = model(data)
    assert out.value.shape == (1,)
    if action == "binary":
        assert out.channel_logits.shape == (10,) and out.ratio_alpha is None
        assert model.distribution(out).batch_shape == (10,)
        assert model.distribution(out, 1).batch_shape == (5,)
        a = model.act(out, 1)
        assert a.shape == (5,) and set(a.unique().tolist()) <= {0.0, 1.0}
    else:
        assert out.channel_logits is None
        assert out.ratio_alpha.shape == (3,) and out.ratio_beta.shape == (3,)
        assert (out.ratio_alpha >= 1).all() and (out.ratio_beta >= 1).all()
        assert model.distribution(out).batch_shape == (3,)
        m = model.mode(out, 2)
        assert m.shape == (1,) and 0 < m.item() < 1
    assert model.log_prob(out, model.act(out, 0), 0).shape == (1,)
    assert model.entropy(out).shape == (1,)
    if observation == "layer-vector" and action == "binary":
        # broadcast: all channels of one group share the group's logit
        for grp in range(3):
            vals = out.channel_logits[data.channel_group == grp]
            assert torch.allclose(vals, vals[0].expand_as(vals))


def test_default_config_is_the_spec() -> None:
    cfg = PolicyConfig()
    assert (cfg.encoder, cfg.layers, cfg.heads, cfg.head_dim, cfg.action, cfg.observation, cfg.dropout) == \
        ("gat", 3, 4, 64, "binary", "graph", 0.0)
    model = GraphPolicy(F_NODE, D_EDGE)
    convs = model.encoder.convs
    assert len(convs) == 3 and all(type(c).__name__ == "GATv2Conv" for c in convs)
    assert all(c.heads == 4 and c.out_channels == 64 and c.concat and c.edge_dim == D_EDGE for c in convs)
    out = model(random_graph())
    assert out.channel_logits.shape == (10,)
    with pytest.raises(ValueError):
        PolicyConfig(encoder="transformer")


@pytest.mark.parametrize("action", ACTIONS)
def test_gradients_reach_every_parameter_gat(action: str) -> None:
    model = make(encoder="gat", action=action).train()
    scramble_logits(model)
    data = random_graph()
    out = model(data)
    loss = -model.log_prob(out, model.act(out)).sum() - 0.01 * model.entropy(out).sum() + out.value.pow(2).sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_determinism_with_fixed_seed() -> None:
    data = random_graph()
    a, b = make(seed=3), make(seed=3)
    oa, ob = a(data), b(data)
    assert torch.equal(oa.channel_logits, ob.channel_logits) and torch.equal(oa.value, ob.value)
    assert not torch.equal(oa.channel_logits, make(seed=4)(data).channel_logits)
    sa = a.act(oa, generator=torch.Generator().manual_seed(0))
    sb = b.act(ob, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sa, sb)


@pytest.mark.parametrize("encoder,action,observation", list(itertools.product(ENCODERS, ACTIONS, OBSERVATIONS)))
def test_batch_equals_singles(encoder: str, action: str, observation: str) -> None:
    graphs = [random_graph((3, 5, 2), seed=0), random_graph((4, 1), seed=1), random_graph((2, 2, 6, 3), seed=2)]
    model = make(encoder=encoder, action=action, observation=observation)
    scramble_logits(model)
    batch = Batch.from_data_list(graphs)
    ob = model(batch)
    singles = [model(g) for g in graphs]
    assert ob.num_graphs == 3
    torch.testing.assert_close(ob.value, torch.cat([s.value for s in singles]))
    torch.testing.assert_close(primary(ob), torch.cat([primary(s) for s in singles], dim=-1))
    # per-observation log-prob / entropy with one acting group per graph (PPO minibatch)
    gi = torch.tensor([1, 0, 2])
    act = model.mode(ob, gi)
    acts_single = [model.mode(s, int(i)) for s, i in zip(singles, gi)]
    torch.testing.assert_close(act, torch.cat(acts_single))
    lp = model.log_prob(ob, act, gi)
    lp_single = torch.cat([model.log_prob(s, a, int(i)) for s, a, i in zip(singles, acts_single, gi)])
    torch.testing.assert_close(lp, lp_single)
    torch.testing.assert_close(model.entropy(ob, gi),
                               torch.cat([model.entropy(s, int(i)) for s, i in zip(singles, gi)]))


@pytest.mark.parametrize("encoder,uses_edges", [("gat", True), ("gcn", True), ("mlp", False)])
def test_encoder_uses_edges(encoder: str, uses_edges: bool) -> None:
    data = random_graph(extra_edges=10)
    model = make(encoder=encoder)
    scramble_logits(model)
    rewired = data.clone()
    perm = torch.randperm(data.edge_index.size(1), generator=torch.Generator().manual_seed(1))
    rewired.edge_index = torch.stack([data.edge_index[0], data.edge_index[1][perm]])
    base, other = model(data), model(rewired)
    changed = not torch.allclose(base.channel_logits, other.channel_logits, atol=1e-6)
    assert changed == uses_edges
    if not uses_edges:
        assert torch.allclose(base.value, other.value)


def test_layer_vector_ignores_edges_and_channel_features() -> None:
    data = random_graph()
    model = make(observation="layer-vector")
    scramble_logits(model)
    other = data.clone()
    other.edge_index = other.edge_index.flip(0)[:, :5]
    other.edge_attr = other.edge_attr[:5]
    other.x = other.x.clone()
    other.x[data.channel_nodes] = torch.randn(len(data.channel_nodes), F_NODE)
    torch.testing.assert_close(model(data).channel_logits, model(other).channel_logits)


def test_log_prob_matches_bernoulli_by_hand() -> None:
    data = random_graph()
    model = make()
    scramble_logits(model)
    out = model(data)
    for group_index in (None, 1):
        action = model.act(out, group_index, generator=torch.Generator().manual_seed(5))
        logits = out.channel_logits if group_index is None else out.channel_logits[data.channel_group == group_index]
        p = torch.sigmoid(logits)
        by_hand = (action * torch.log(p) + (1 - action) * torch.log(1 - p)).sum()
        torch.testing.assert_close(model.log_prob(out, action, group_index), by_hand.view(1))
        ent = -(p * torch.log(p) + (1 - p) * torch.log(1 - p)).sum()
        torch.testing.assert_close(model.entropy(out, group_index), ent.view(1))
    assert torch.equal(model.mode(out), (out.channel_logits > 0).float())


def test_ratio_log_prob_is_beta_and_mode_is_mean() -> None:
    model = make(action="ratio")
    scramble_logits(model)
    out = model(random_graph())
    a, b = out.ratio_alpha[2], out.ratio_beta[2]
    x = torch.tensor([0.3])
    by_hand = torch.distributions.Beta(a, b).log_prob(x)
    torch.testing.assert_close(model.log_prob(out, x, 2), by_hand.view(1))
    torch.testing.assert_close(model.mode(out, 2), (a / (a + b)).view(1))
    assert torch.isfinite(model.log_prob(out, torch.tensor([1.0]), 2)).all()


def test_group_index_selecting_nothing_raises() -> None:
    model = make()
    out = model(random_graph((3, 5, 2)))
    with pytest.raises(ValueError):
        model.distribution(out, 7)


class IncrementingData(Data):
    """A builder may shift node indices on collation itself; the policy must not shift them twice."""

    def __inc__(self, key, value, *args, **kwargs):  # type: ignore[override]
        if key in ("channel_nodes", "group_nodes"):
            return self.num_nodes
        if key == "channel_group":
            return int(self.group_nodes.numel())
        return super().__inc__(key, value, *args, **kwargs)


@pytest.mark.parametrize("action", ACTIONS)
def test_batch_of_self_incrementing_data(action: str) -> None:
    graphs = [random_graph((3, 5, 2), seed=0), random_graph((4, 1), seed=1)]
    inc_graphs = [IncrementingData(**dict(g)) for g in graphs]
    model = make(action=action)
    scramble_logits(model)
    plain, shifted = model(Batch.from_data_list(graphs)), model(Batch.from_data_list(inc_graphs))
    assert Batch.from_data_list(inc_graphs).channel_nodes.max() > Batch.from_data_list(graphs).channel_nodes.max()
    torch.testing.assert_close(primary(plain), primary(shifted))
    torch.testing.assert_close(plain.channel_group, shifted.channel_group)
    torch.testing.assert_close(plain.channel_group_local, shifted.channel_group_local)


@pytest.mark.parametrize("action,observation,skip", [("binary", "graph", False), ("binary", "graph", True),
                                                      ("ratio", "graph", False), ("binary", "layer-vector", False)])
def test_head_restricted_to_the_acting_group_is_the_same(action: str, observation: str, skip: bool) -> None:
    """forward(data, group_index) computes the head for that group only: the same log-probs, entropy, value and
    gradients as the full pass masked afterwards, on one graph (int) and on a batch (one group per graph)."""
    model = make(action=action, observation=observation, feature_skip=skip, feature_skip_gain=3.0)
    scramble_logits(model)
    if model.feature_skip is not None:
        with torch.no_grad():
            model.feature_skip.weight.normal_()
    graphs = [random_graph((3, 5, 2), seed=s) for s in range(3)]
    batch = Batch.from_data_list(graphs)
    for data, gi in ((graphs[0], 1), (batch, torch.tensor([2, 0, 1]))):
        full, part = model(data), model(data, gi)
        assert part.selected is gi
        action_ = model.act(full, gi, generator=torch.Generator().manual_seed(3))
        for fn in (lambda o: model.log_prob(o, action_, gi), lambda o: model.entropy(o, gi),
                   lambda o: model.mode(o, gi), lambda o: o.value):
            torch.testing.assert_close(fn(part), fn(full), atol=1e-6, rtol=1e-6)
        grads = []
        for out in (full, part):
            model.zero_grad()
            (model.log_prob(out, action_, gi).sum() + out.value.sum()).backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="computed for group_index 1 only"):
        model.log_prob(model(graphs[0], 1), torch.ones(2), 2)
