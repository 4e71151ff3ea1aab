"""Tests of the shared PPO learner (harness/search/ppo.py): GAE, learning on a toy graph bandit, schedule, resume."""

from __future__ import annotations

import copy

import pytest
import torch
from torch_geometric.data import Data

from harness.search.ppo import PPO, PPOConfig, RolloutBuffer, compute_gae
from method.policy import GraphPolicy, PolicyConfig
from tiny_graphs import random_graph as shared_random_graph

F_NODE, D_EDGE = 5, 3
SMALL = dict(layers=2, heads=2, head_dim=8)


def random_graph(g: torch.Generator, groups: tuple[int, ...]) -> Data:
    return shared_random_graph(groups, g, F_NODE, D_EDGE)


def bandit_graph(g: torch.Generator) -> Data:
    groups = tuple(torch.randint(2, 6, (int(torch.randint(2, 4, (1,), generator=g)),), generator=g).tolist())
    return random_graph(g, groups)


def target(data: Data, group: int | None = None) -> torch.Tensor:
    """Hidden pattern: keep a channel iff its first feature is positive."""
    sel = data.channel_nodes if group is None else data.channel_nodes[data.channel_group == group]
    return (data.x[sel, 0] > 0).float()


def make_policy(seed: int = 0, encoder: str = "mlp") -> GraphPolicy:
    torch.manual_seed(seed)
    return GraphPolicy(F_NODE, D_EDGE, PolicyConfig(encoder=encoder, **SMALL))


def collect_one_shot(policy: GraphPolicy, buffer: RolloutBuffer, g: torch.Generator, episodes: int) -> float:
    """One-step episodes acting on every channel at once; returns the mean reward."""
    rewards = []
    policy.eval()
    for _ in range(episodes):
        data = bandit_graph(g)
        with torch.no_grad():
            out = policy(data)
            a = policy.act(out, None, generator=g)
            lp = policy.log_prob(out, a, None)
        r = (a == target(data)).float().mean().item()
        buffer.add(data, None, a, lp, out.value, r, True)
        rewards.append(r)
    return sum(rewards) / len(rewards)


def collect_sequential(policy: GraphPolicy, buffer: RolloutBuffer, g: torch.Generator, episodes: int) -> float:
    """Layer-sequential episodes (one step per group, x updated in place as the env does); terminal reward."""
    rewards = []
    policy.eval()
    for _ in range(episodes):
        data = bandit_graph(g)
        n_groups = data.group_nodes.numel()
        correct, total = 0.0, 0
        for grp in range(n_groups):
            with torch.no_grad():
                out = policy(data)
                a = policy.act(out, grp, generator=g)
                lp = policy.log_prob(out, a, grp)
            correct += (a == target(data, grp)).float().sum().item()
            total += a.numel()
            last = grp == n_groups - 1
            r = correct / total if last else 0.0
            buffer.add(data, grp, a, lp, out.value, r, last)
            data.x[data.group_nodes[grp], -1] = 1.0  # in-place "already pruned" marker, like the env
        rewards.append(correct / total)
    return sum(rewards) / len(rewards)


# ---------------------------------------------------------------------------------------------- GAE
def test_gae_terminal_reward_gamma1() -> None:
    lam = 0.95
    values = torch.tensor([0.2, 0.4, 0.6])
    rewards = torch.tensor([0.0, 0.0, 1.0])
    dones = torch.tensor([0.0, 0.0, 1.0])
    adv, ret = compute_gae(rewards, values, dones, 1.0, lam)
    d = [0 + 0.4 - 0.2, 0 + 0.6 - 0.4, 1.0 - 0.6]  # deltas; no bootstrap after the terminal step
    expect = [d[0] + lam * d[1] + lam ** 2 * d[2], d[1] + lam * d[2], d[2]]
    assert torch.allclose(adv, torch.tensor(expect), atol=1e-6)
    assert torch.allclose(ret, adv + values)


def test_gae_gamma09_two_episodes() -> None:
    gamma, lam = 0.9, 0.95
    # Episode A: 2 steps, episode B: 2 steps; nothing may leak across the boundary.
    values = torch.tensor([0.5, 0.3, 1.0, 2.0])
    rewards = torch.tensor([1.0, 2.0, 0.5, -1.0])
    dones = torch.tensor([0.0, 1.0, 0.0, 1.0])
    adv, ret = compute_gae(rewards, values, dones, gamma, lam)

    def episode(r, v):
        v_next = v[1:] + [0.0]
        delta = [r[t] + gamma * v_next[t] - v[t] for t in range(len(r))]
        out, acc = [0.0] * len(r), 0.0
        for t in reversed(range(len(r))):
            acc = delta[t] + gamma * lam * acc
            out[t] = acc
        return out

    expect = episode([1.0, 2.0], [0.5, 0.3]) + episode([0.5, -1.0], [1.0, 2.0])
    assert torch.allclose(adv, torch.tensor(expect), atol=1e-6)
    assert torch.allclose(ret, adv + values)


def test_gae_truncated_tail_bootstraps() -> None:
    adv, _ = compute_gae(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([0.0]), 0.9, 0.95, last_value=1.0)
    assert adv.item() == pytest.approx(0.9)


# ---------------------------------------------------------------------------------------------- buffer
def test_buffer_clones_x_only() -> None:
    g = torch.Generator().manual_seed(0)
    data = bandit_graph(g)
    buf = RolloutBuffer()
    buf.add(data, 0, torch.ones(3), 0.0, 0.0, 0.0, False)
    before = data.x.clone()
    data.x.add_(1.0)
    assert torch.equal(buf.steps[0].obs.x, before)
    assert buf.steps[0].obs.edge_index is data.edge_index  # structure shared, not copied
    assert len(buf) == 1 and buf.num_episodes == 0
    buf.clear()
    assert len(buf) == 0


# ---------------------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("encoder", ["mlp", "gat"])
def test_ppo_learns_one_shot_bandit(encoder: str) -> None:
    g = torch.Generator().manual_seed(1)
    policy = make_policy(0, encoder)
    ppo = PPO(policy, PPOConfig(lr=3e-3, epochs=4, minibatch_size=16, entropy_decay_updates=20, seed=0))
    buf = RolloutBuffer()
    initial = collect_one_shot(policy, RolloutBuffer(), torch.Generator().manual_seed(99), 64)
    for _ in range(25):
        buf.clear()
        collect_one_shot(policy, buf, g, 16)
        stats = ppo.update(buf)
    final = collect_one_shot(policy, RolloutBuffer(), torch.Generator().manual_seed(99), 64)
    assert 0.35 < initial < 0.65
    assert final > 0.8, (initial, final)
    assert set(stats) >= {"policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "entropy_coef"}


def test_ppo_learns_sequential_episodes() -> None:
    """Per-group steps: exercises the group_index tensor path and GAE with a terminal reward."""
    g = torch.Generator().manual_seed(2)
    policy = make_policy(0, "mlp")
    ppo = PPO(policy, PPOConfig(lr=3e-3, epochs=4, minibatch_size=32, seed=0))
    buf = RolloutBuffer()
    initial = collect_sequential(policy, RolloutBuffer(), torch.Generator().manual_seed(99), 32)
    for _ in range(25):
        buf.clear()
        collect_sequential(policy, buf, g, 12)
        ppo.update(buf)
    final = collect_sequential(policy, RolloutBuffer(), torch.Generator().manual_seed(99), 32)
    assert final > 0.8 and final > initial + 0.2, (initial, final)


# ---------------------------------------------------------------------------------------------- schedule, resume
def test_entropy_coef_linear_decay() -> None:
    cfg = PPOConfig(entropy_start=0.01, entropy_end=0.001, entropy_decay_updates=10)
    assert cfg.entropy_coef(0) == pytest.approx(0.01)
    assert cfg.entropy_coef(5) == pytest.approx(0.0055)
    assert cfg.entropy_coef(10) == pytest.approx(0.001)
    assert cfg.entropy_coef(50) == pytest.approx(0.001)
    steps = [cfg.entropy_coef(u) for u in range(11)]
    diffs = [b - a for a, b in zip(steps, steps[1:])]
    assert all(d == pytest.approx(-0.0009) for d in diffs)

    g = torch.Generator().manual_seed(0)
    ppo = PPO(make_policy(), cfg)
    buf = RolloutBuffer()
    collect_one_shot(ppo.policy, buf, g, 4)
    seen = [ppo.update(buf)["entropy_coef"] for _ in range(3)]
    assert seen == pytest.approx([0.01, 0.0091, 0.0082])


def test_defaults_match_spec() -> None:
    c = PPOConfig()
    assert (c.clip, c.lr, c.gamma, c.gae_lambda, c.entropy_start, c.entropy_end, c.value_coef,
            c.max_grad_norm, c.normalize_advantages) == (0.2, 3e-4, 1.0, 0.95, 0.01, 0.001, 0.5, 0.5, True)
    assert 4 <= c.epochs <= 10


def test_state_dict_round_trip_reproduces_next_update() -> None:
    g = torch.Generator().manual_seed(3)
    cfg = PPOConfig(lr=1e-3, minibatch_size=8, seed=5, clip_value=0.2)
    ppo = PPO(make_policy(0), cfg)
    buf = RolloutBuffer()
    collect_one_shot(ppo.policy, buf, g, 16)
    ppo.update(buf)  # optimizer has moments, update count 1, RNG advanced
    state = copy.deepcopy(ppo.state_dict())

    buf2 = RolloutBuffer()
    collect_one_shot(ppo.policy, buf2, g, 16)
    stats_a = ppo.update(buf2)
    params_a = [p.detach().clone() for p in ppo.policy.parameters()]

    resumed = PPO(make_policy(123), cfg)  # different init: everything must come from the state dict
    resumed.load_state_dict(state)
    assert resumed.updates == 1
    stats_b = resumed.update(buf2)
    assert stats_a == stats_b
    for pa, pb in zip(params_a, resumed.policy.parameters()):
        assert torch.equal(pa, pb)


def test_lagrangian_penalty_pushes_away_from_cost() -> None:
    """With reward 0 and cost = number of kept channels, a positive multiplier teaches pruning."""
    g = torch.Generator().manual_seed(4)
    policy = make_policy(0)
    ppo = PPO(policy, PPOConfig(lr=3e-3, minibatch_size=16, seed=0))
    buf = RolloutBuffer()

    def keep_rate() -> float:
        policy.eval()
        with torch.no_grad():
            tot = [torch.sigmoid(policy(bandit_graph(torch.Generator().manual_seed(s))).channel_logits).mean()
                   for s in range(16)]
        return float(torch.stack(tot).mean())

    before = keep_rate()
    for _ in range(15):
        buf.clear()
        policy.eval()
        for _ in range(16):
            data = bandit_graph(g)
            with torch.no_grad():
                out = policy(data)
                a = policy.act(out, None, generator=g)
                lp = policy.log_prob(out, a, None)
            buf.add(data, None, a, lp, out.value, 0.0, True, cost=a.mean().item())
        ppo.update(buf, penalty=1.0)
    assert keep_rate() < before - 0.2


def test_mixed_group_index_rejected() -> None:
    g = torch.Generator().manual_seed(0)
    policy = make_policy()
    buf = RolloutBuffer()
    data = bandit_graph(g)
    with torch.no_grad():
        out = policy(data)
    a_all, a_0 = policy.act(out, None), policy.act(out, 0)
    buf.add(data, None, a_all, policy.log_prob(out, a_all), out.value, 1.0, True)
    buf.add(data, 0, a_0, policy.log_prob(out, a_0, 0), out.value, 1.0, True)
    with pytest.raises(ValueError, match="mixes"):
        PPO(policy, PPOConfig(minibatch_size=2)).update(buf)


@pytest.mark.parametrize("penalty", [0.0, 0.7])
def test_chunked_update_equals_one_pass(penalty: float) -> None:
    """Gradient accumulation over chunks of a minibatch (``forward_chunk``) gives the one-pass update."""
    g = torch.Generator().manual_seed(11)
    buf = RolloutBuffer()
    collect_sequential(make_policy(0, "gat"), buf, g, 6)
    for i, step in enumerate(buf.steps):
        step.cost = float(i % 3)
    results = {}
    for chunk in (1, 3, 64):
        ppo = PPO(make_policy(0, "gat"), PPOConfig(lr=1e-3, epochs=2, minibatch_size=8, seed=2, clip_value=0.2,
                                                   forward_chunk=chunk))
        stats = ppo.update(buf, penalty=penalty)
        results[chunk] = (stats, [p.detach().clone() for p in ppo.policy.parameters()])
    ref_stats, ref_params = results[64]
    assert ref_stats["minibatches"] == 2 * -(-len(buf) // 8)
    for chunk in (1, 3):
        stats, params = results[chunk]
        for key in ("policy_loss", "value_loss", "entropy", "approx_kl"):
            assert stats[key] == pytest.approx(ref_stats[key], rel=1e-4, abs=1e-6), (chunk, key)
        for p, q in zip(params, ref_params):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    # and the update did move the parameters (so equality above is not vacuous)
    fresh = make_policy(0, "gat")
    assert any(not torch.allclose(p, q) for p, q in zip(fresh.parameters(), ref_params))


def test_forward_chunk_must_be_non_negative() -> None:
    with pytest.raises(ValueError, match="forward_chunk"):
        PPOConfig(forward_chunk=-1)


# ---------------------------------------------------------------------------------------------- large groups
def _large_group_run(ratio: str, updates: int = 24, lr: float = 1e-2) -> tuple[float, float]:
    """One-shot episodes on one group of 512 channels; reward = fraction of channels matching the pattern."""
    def graph(g: torch.Generator) -> Data:
        return random_graph(g, (512,))

    def collect(policy: GraphPolicy, buffer: RolloutBuffer, g: torch.Generator, episodes: int) -> float:
        rewards = []
        policy.eval()
        for _ in range(episodes):
            data = graph(g)
            with torch.no_grad():
                out = policy(data)
                a = policy.act(out, None, generator=g)
                lp_el, _ = policy.element_log_prob(out, a, None)
            r = (a == target(data)).float().mean().item()
            buffer.add(data, None, a, lp_el.sum(), out.value, r, True, element_log_prob=lp_el)
            rewards.append(r)
        return sum(rewards) / len(rewards)

    policy = make_policy(0, "mlp")
    ppo = PPO(policy, PPOConfig(lr=lr, epochs=4, minibatch_size=8, seed=0, ratio=ratio))
    g = torch.Generator().manual_seed(5)
    initial = collect(policy, RolloutBuffer(), torch.Generator().manual_seed(99), 8)
    clip = []
    for _ in range(updates):
        buf = RolloutBuffer()
        collect(policy, buf, g, 8)
        clip.append(ppo.update(buf)["clip_fraction"])
    final = collect(policy, RolloutBuffer(), torch.Generator().manual_seed(99), 8)
    return final - initial, sum(clip) / len(clip)


def test_per_element_ratio_learns_a_512_channel_group_and_the_joint_ratio_does_not() -> None:
    """The joint ratio of 512 Bernoulli decisions leaves the clip range after a tiny per-channel change, so
    almost every sample is clipped and the policy barely moves; the per-element ratio learns the pattern."""
    gain_el, clip_el = _large_group_run("per-element")
    gain_joint, clip_joint = _large_group_run("joint")
    # measured: per-element +0.36 with 3 % of its ratios clipped; joint +0.15 with 56 % clipped
    assert gain_el > 0.25, gain_el
    assert gain_joint < 0.6 * gain_el, (gain_joint, gain_el)
    assert clip_joint > 0.3 > clip_el, (clip_joint, clip_el)


def test_per_element_ratio_needs_element_log_probs() -> None:
    g = torch.Generator().manual_seed(0)
    policy = make_policy(0, "mlp")
    data = random_graph(g, (4,))
    with torch.no_grad():
        out = policy(data)
        a = policy.act(out, None, generator=g)
    buf = RolloutBuffer()
    buf.add(data, None, a, policy.log_prob(out, a, None), out.value, 1.0, True)
    with pytest.raises(ValueError, match="element_log_prob"):
        PPO(policy, PPOConfig(ratio="per-element")).update(buf)
    with pytest.raises(ValueError, match="ratio"):
        PPOConfig(ratio="per-channel")
