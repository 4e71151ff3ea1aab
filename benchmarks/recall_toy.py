"""How fast can graph-RL's policy + PPO learn which channels are useful, when the reward says so exactly?

A diagnostic with no network evaluation: the observation is a planted model's graph (from a finished
planted run), one step decides every channel (one-shot), the executed mask is the sampled one repaired to a
fixed channel count by keep-logit rank (as the wall and fill do), and the reward is the fraction of useful
channels it keeps (the ground truth). So every difference between the variants below is the learner's:
the mask PPO learns from (``sampled`` / ``executed``) and the feature skip's gain (0 = off).

    python benchmarks/recall_toy.py --base results/planted/base/fashionmnist/planted-resnet20/seed0

Prints the mean reward (recall, percent) of each batch of 8 episodes, 6 PPO updates per variant.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(base: Path, action: str, gain: float, *, updates: int = 6, episodes: int = 8, lr: float = 3e-3,
        seed: int = 0) -> list[float]:
    import torch

    from harness.models.cifar_resnet import CifarResNet
    from harness.models.planted import read_ground_truth
    from harness.prune import CostModel, find_groups
    from harness.search.ppo import PPO, PPOConfig, RolloutBuffer
    from method.graph import EDGE_FEATURES, NODE_FEATURES, build_graph_observation
    from method.policy import GraphPolicy, PolicyConfig

    torch.set_num_threads(1)
    state = torch.load(base / "model.pt", map_location="cpu", weights_only=True)
    truth = read_ground_truth(base / "ground_truth.json")
    sd = state["state_dict"]
    widths = (sd["conv1.weight"].shape[0], sd["layer2.0.conv1.weight"].shape[0], sd["layer3.0.conv1.weight"].shape[0])
    depth = 6 * len({k.split(".")[1] for k in sd if k.startswith("layer1.")}) + 2
    model = CifarResNet(depth, sd["fc.weight"].shape[0], sd["conv1.weight"].shape[1], widths=widths)
    model.load_state_dict(sd)
    model.eval()
    x = torch.zeros(1, sd["conv1.weight"].shape[1], 28, 28)
    groups = find_groups(model, x)
    data = build_graph_observation(model, x, groups, CostModel(model, x, groups), budget_target=0.6,
                                   metric="macs").data
    useful = torch.cat([torch.tensor([float(i in set(truth[g.id])) for i in range(g.size)]) for g in groups])
    keep_count = int(0.63 * useful.numel())
    torch.manual_seed(seed)
    policy = GraphPolicy(NODE_FEATURES, EDGE_FEATURES, PolicyConfig(layers=2, heads=2, head_dim=32,
                                                                    feature_skip=gain > 0,
                                                                    feature_skip_gain=gain or 1.0))
    policy.set_initial_keep(0.63)
    ppo = PPO(policy, PPOConfig(lr=lr, epochs=4, minibatch_size=episodes, ratio="per-element", seed=seed,
                                gae_lambda=1.0))
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(updates):
        buffer, rewards = RolloutBuffer(), []
        for _ in range(episodes):
            with torch.no_grad():
                out = policy(data)
                sampled = policy.act(out, None, generator=gen)
                logits = out.channel_logits
            executed = torch.zeros_like(sampled)  # sampled channels first, then by logit: a fixed count
            executed[torch.argsort(-(logits + 100.0 * sampled))[:keep_count]] = 1.0
            reward = float((executed * useful).sum() / useful.sum())
            taken = sampled if action == "sampled" else executed
            lp, _ = policy.element_log_prob(out, taken, None)
            buffer.add(data, None, taken, lp.sum(), out.value, reward, True, element_log_prob=lp)
            rewards.append(reward)
        history.append(100.0 * sum(rewards) / len(rewards))
        ppo.update(buffer)
    return history


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", type=Path, default=Path("results/planted/base/fashionmnist/planted-resnet20/seed0"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    for action, gain in (("sampled", 30.0), ("executed", 30.0), ("sampled", 0.0), ("executed", 0.0)):
        hist = run(args.base, action, gain, seed=args.seed)
        print(f"{action:9s} feature_skip_gain {gain:4g}: recall per update "
              + " ".join(f"{h:5.1f}" for h in hist), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
