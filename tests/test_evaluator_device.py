"""SearchEvaluator's resident data and fast evaluation: device tensors equal to the loader's batches,
chunk size that does not change the score, bf16 autocast as an option, the loader fallback."""
from __future__ import annotations

import contextlib
import random
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import Dataset, Subset

from harness.data import TensorImageDataset, TensorTransform, make_loader
from harness.prune import find_groups, min_keep
from harness.search import SearchEvaluator
from tiny_models import CifarResNet, randomize_bn

MEAN, STD = (0.45, 0.5, 0.55), (0.25, 0.25, 0.25)


@pytest.fixture(autouse=True)
def one_thread():
    """Small kernels: one thread is faster, and immune to a busy machine's oversubscription."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _setup(seed: int = 0):
    """A random ResNet and CIFAR-like uint8 splits (eval transform) labelled by the model itself."""
    torch.manual_seed(seed)
    model = randomize_bn(CifarResNet(blocks=(1, 1, 1), widths=(8, 16, 16)), seed).eval()
    g = torch.Generator().manual_seed(seed + 1)
    images = torch.randint(0, 256, (300, 3, 16, 16), dtype=torch.uint8, generator=g)
    tf = TensorTransform(MEAN, STD)
    with torch.no_grad():
        labels = model(tf(images)).argmax(1)
    full = TensorImageDataset(images, labels, tf)
    splits = SimpleNamespace(search=Subset(full, list(range(0, 300, 3))),
                             train_plain=Subset(full, [i for i in range(300) if i % 3]), test=None)
    return model, splits, torch.zeros(1, 3, 16, 16)


def _keep(groups, seed: int = 0):
    rng = random.Random(seed)
    return {g.id: sorted(rng.sample(range(g.size), rng.randint(min_keep(g, 0.1), g.size))) for g in groups}


def test_search_and_bn_batches_are_resident_and_equal_the_loaders():
    model, splits, example = _setup()
    ev = SearchEvaluator(model, splits, "cpu", bn_batches=3, batch_size=32, example_input=example)
    ref_search = list(make_loader(splits.search, 32, shuffle=False, seed=0))
    ref_bn = list(make_loader(splits.train_plain, 32, shuffle=True, seed=0))[:3]
    assert len(ev.search_batches) == len(ref_search) == 4 and len(ev.bn_data) == 3
    for (x, y), (rx, ry) in zip(ev.search_batches + ev.bn_data, ref_search + ref_bn):
        assert x.device == ev.device and y.device == ev.device
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_chunk_size_does_not_change_the_score_and_matches_the_loader_fallback():
    model, splits, example = _setup()
    groups = find_groups(model, example)
    keep = _keep(groups)
    scores = {}
    for chunk in (None, 7, 1000):
        ev = SearchEvaluator(model, splits, "cpu", bn_batches=2, batch_size=32, example_input=example,
                             groups=groups, eval_batch_size=chunk)
        assert [len(y) for _, y in ev.search_batches][0] == min(chunk or 32, 100)
        scores[chunk] = (ev.evaluate({}), ev.evaluate(keep))
    assert scores[None][1] != scores[None][0]  # the pruned candidate scores differently
    assert scores[None] == scores[7] == scores[1000], scores

    class Items(Dataset):  # same samples, but not a tensor dataset: the DataLoader path preloads them
        def __init__(self, ds):
            self.ds = ds

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            return self.ds[i]

    lazy = SimpleNamespace(search=Items(splits.search), train_plain=Items(splits.train_plain), test=None)
    ev = SearchEvaluator(model, lazy, "cpu", bn_batches=2, batch_size=32, example_input=example, groups=groups)
    assert (ev.evaluate({}), ev.evaluate(keep)) == scores[None]


@pytest.mark.parametrize("mode", ["masked", "pruned"])
def test_bf16_autocast_is_an_option_off_on_cpu_by_default(mode: str):
    """The CUDA path (bf16 autocast for BN passes and scoring) run on the CPU, for both candidate modes."""
    model, splits, example = _setup()
    groups = find_groups(model, example)
    keep = _keep(groups, seed=1)
    kw = dict(bn_batches=2, batch_size=32, example_input=example, groups=groups, mode=mode)
    fp32 = SearchEvaluator(model, splits, "cpu", **kw)
    bf16 = SearchEvaluator(model, splits, "cpu", amp=True, **kw)
    assert not fp32.amp and bf16.amp
    dtypes = []
    real_applied = SearchEvaluator.applied

    @contextlib.contextmanager
    def watched(self, keep):  # the stem conv of whichever network scores (working copy or pruned copy)
        with real_applied(self, keep) as net:
            hook = net.conv1.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
            yield net
            hook.remove()

    import harness.search.evaluator as evaluator

    real_recal, bn_autocast = evaluator.recalibrate_bn, []

    def recal(*args, **kwargs):  # the BN passes run under the same autocast
        bn_autocast.append(torch.is_autocast_enabled("cpu"))
        return real_recal(*args, **kwargs)

    SearchEvaluator.applied, evaluator.recalibrate_bn = watched, recal
    try:
        acc = bf16.evaluate(keep)
    finally:
        SearchEvaluator.applied, evaluator.recalibrate_bn = real_applied, real_recal
    assert set(dtypes) == {torch.bfloat16} and len(dtypes) == 4 and bn_autocast == [True]  # BN passes, 4 chunks
    assert abs(acc - fp32.evaluate(keep)) <= 10.0  # bf16 logits flip a few near-ties, not the ranking
    assert abs(bf16.evaluate({}) - fp32.evaluate({})) <= 10.0
    # the working copy's BN state is full precision and unchanged after an autocast evaluation
    before = {k: v.clone() for k, v in bf16.net.state_dict().items()}
    bf16.evaluate(keep)
    assert all(torch.equal(v, before[k]) and v.dtype == before[k].dtype for k, v in bf16.net.state_dict().items())


@pytest.mark.parametrize("mode", ["masked", "pruned"])
def test_no_host_sync_while_a_candidate_is_scored(mode: str):
    """On a GPU every ``.item()``/``int()`` of a device tensor stalls the stream: between the candidate being
    ready (BN re-estimated) and the final count, the scoring loop reads nothing back (aten's
    ``_local_scalar_dense`` is what every such read dispatches to; counted here on the CPU)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class CountReads(TorchDispatchMode):
        reads = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                CountReads.reads += 1
            return func(*args, **(kwargs or {}))

    model, splits, example = _setup()
    groups = find_groups(model, example)
    ev = SearchEvaluator(model, splits, "cpu", bn_batches=2, batch_size=32, example_input=example, groups=groups,
                         eval_batch_size=16, mode=mode)
    real_applied = SearchEvaluator.applied

    @contextlib.contextmanager
    def counted(self, keep):
        with real_applied(self, keep) as net, CountReads():
            yield net

    SearchEvaluator.applied = counted
    try:
        acc = ev.evaluate(_keep(groups, seed=2))
    finally:
        SearchEvaluator.applied = real_applied
    assert CountReads.reads == 0 and 0.0 <= acc <= 100.0  # 7 chunks scored, nothing read back until the end
    CountReads.reads = 0
    with CountReads():
        ev.evaluate(_keep(groups, seed=2))
    assert CountReads.reads >= 1  # the final count is read (the one sync): the counter sees reads


@pytest.mark.parametrize("bad", [{"eval_batch_size": 0}, {"batch_size": 0}, {"bn_batches": -1}])
def test_bad_sizes_are_rejected(bad):
    model, splits, example = _setup()
    with pytest.raises(ValueError):
        SearchEvaluator(model, splits, "cpu", example_input=example, **bad)
