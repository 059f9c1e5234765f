"""The cheaper training step: skipping the background and sampling the coding passes of the rate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from inrv.codec.latent import fit as F
from inrv.codec.latent.config import LatentConfig
from inrv.codec.latent.rate import rate_bits


def _head(shape=(40, 36, 32), seed=1) -> np.ndarray:
    """An ellipsoid of noisy tissue in air at the minimum (background blocks around it), off centre
    so that the foreground's boxes differ from row to row."""
    rng = np.random.default_rng(seed)
    g = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r = (g[0] / 0.7) ** 2 + ((g[1] - 0.2) / 0.5) ** 2 + ((g[2] + 0.1) / 0.6) ** 2
    vol = np.where(r < 1.0, 100 + 50 * g[1] + rng.normal(0, 4, shape), 0.0)
    return np.clip(np.rint(vol), 0, 255).astype(np.uint8)


def _loss_and_grads(st, rows, skip):
    st.skip_background = skip
    for p in list(st.lat) + list(st.syn.parameters()):
        p.grad = None
    src, win = st.windows(rows)
    qs = [p + 0.0 for p in src]
    dist, _ = st.step_terms(qs, qs, rows, win)
    dist.backward()
    return float(dist.detach()), [p.grad.clone() for p in st.lat], [p.grad.clone() for p in st.syn.parameters()]


@pytest.mark.parametrize("slab", [None, 13])
def test_skipping_the_background_gives_the_same_distortion_and_gradients(slab):
    arr = _head()
    cfg = LatentConfig(lmbda=1e-3, steps=1, levels=4, synth_width=8, conv_channels=2, ctx_width=4)
    if slab:
        cfg = dataclasses.replace(cfg, max_voxels_per_step=slab * 36 * 32)
    st = F.prepare(arr, cfg, torch.device("cpu"))
    assert st.keep is not None and 0.1 < float(st.keep.float().mean()) < 0.8
    with torch.no_grad():                       # a trained-looking synthesis: non-zero MLP paths
        for p in st.syn.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    rows = None if slab is None else np.arange(11, 11 + slab)
    # the boxes really skip voxels: the chunks' boxes are smaller than the plane
    r0, r1 = (0, arr.shape[0]) if rows is None else (11, 11 + slab)
    boxes = [st.box(c, min(r1, c + F.FG_CHUNK)) for c in range(r0, r1, F.FG_CHUNK)]
    assert any(b is not None and (b[1] - b[0]) * (b[3] - b[2]) < 36 * 32 for b in boxes)
    d1, gl1, gs1 = _loss_and_grads(st, rows, True)
    d0, gl0, gs0 = _loss_and_grads(st, rows, False)
    assert d1 == pytest.approx(d0, rel=1e-5)
    for a, b in zip(gl1 + gs1, gl0 + gs0):
        # float32 sums in another order: equal up to rounding, relative to each gradient's scale
        assert float(b.abs().max()) > 0
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4 * float(b.abs().max()))


def test_sampled_rate_is_an_unbiased_estimate_of_the_rate():
    arr = _head()
    cfg = LatentConfig(lmbda=1e-3, steps=1, levels=3, synth_width=8, conv_channels=2, ctx_width=4, seed=3)
    st = F.prepare(arr, cfg, torch.device("cpu"))
    with torch.no_grad():
        full = float(rate_bits(st, st.lat))
        draws = [float(rate_bits(st, st.lat, passes=2)) for _ in range(200)]
    # the estimates vary (a real sample) and average to the full count
    assert np.std(draws) > 1e-3 * full
    assert np.mean(draws) == pytest.approx(full, rel=0.03)
    with torch.no_grad():
        assert float(rate_bits(st, st.lat, passes=8)) == pytest.approx(full, rel=1e-6)


def test_decoding_skips_the_background_and_renders_the_same_volume():
    from inrv.codec.latent.background import expand_blocks
    from inrv.codec.latent.synthesis import synthesise

    arr = _head()
    cfg = LatentConfig(lmbda=1e-3, steps=1, levels=4, synth_width=8, conv_channels=2, ctx_width=4)
    st = F.prepare(arr, cfg, torch.device("cpu"))
    gen = torch.Generator().manual_seed(5)
    deq = {f"syn.{k}": (v + 0.05 * torch.randn(v.shape, generator=gen)).numpy()
           for k, v in st.syn.state_dict().items()}
    ints = [np.rint(p.detach().numpy()).astype(np.int32) for p in st.lat]
    args = (deq, cfg, arr.shape)
    skipped = synthesise(ints, *args, st.bgb, cfg.bg_block, (0.0, 255.0), torch.device("cpu"))
    whole = synthesise(ints, *args, None, 0, (0.0, 255.0), torch.device("cpu"))
    bg = expand_blocks(st.bgb, cfg.bg_block, arr.shape)
    assert bg.any() and (~bg).any()
    assert np.all(skipped[bg] == 0.0)
    np.testing.assert_allclose(skipped[~bg], whole[~bg], rtol=0, atol=1e-4)
    assert np.mean(skipped[~bg] == whole[~bg]) > 0.9        # mostly bit-identical: same sums, same order


def test_thread_choice_keeps_the_faster_count_and_probes_the_other_now_and_then():
    from inrv.codec.budget import ThreadChoice

    def run(t2, t1, steps=120):
        tc = ThreadChoice(2, probe_every=10)
        picks = []
        for i in range(steps):
            n = tc.choose()
            picks.append(n)
            tc.record(100.0 if i == 0 else (t2 if n == 2 else t1))      # step 0 allocates: not measured
        return tc, picks

    # two threads a little slower (a busy machine): one thread kept, two re-tried every ~15 steps
    tc, picks = run(0.6, 0.4)
    assert picks[:5] == [2, 2, 2, 1, 1]          # measure both first
    assert tc.best() == 1 and tc.best_seconds() == pytest.approx(0.4)
    assert 4 <= picks[5:].count(2) <= 12
    # ten times slower: probed rarely (a probe costs ten steps)
    tc, picks = run(4.0, 0.4)
    assert tc.best() == 1 and picks[5:].count(2) <= 1
    # and the other way round: two threads faster, kept
    tc, picks = run(0.2, 0.35)
    assert tc.best() == 2 and picks[5:].count(2) > 0.85 * len(picks[5:])
    assert ThreadChoice(1).options == [1]


def test_budgeted_fit_restores_the_thread_count_and_reports_its_choice():
    arr = _head()
    before = torch.get_num_threads()
    cfg = LatentConfig(lmbda=1e-3, steps=12, levels=4, synth_width=8, conv_channels=2, ctx_width=4,
                       polish_steps=1, time_budget=60.0)
    from inrv.codec.budget import Budget

    enc = F.fit_once(arr, cfg, torch.device("cpu"), plan=Budget(60.0))
    assert torch.get_num_threads() == before
    if before > 1:
        assert enc.stats["threads"]["chosen"] in (1, before)
        assert set(enc.stats["threads"]["step_seconds"]) == {"1", str(before)}
