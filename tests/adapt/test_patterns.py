"""Pattern pruning: kernel patterns, unit removal, and exported models that every runtime runs alike."""

from __future__ import annotations

import numpy as np
import pytest

from edged.adapt.calibration import Calibration
from edged.adapt.patterns import CENTRE, PatternCompressor, kernel_patterns, remove_channels
from edged.data import default_model_path, digits_for, load_digits_test
from edged.model.tflite import read_tflite, write_tflite
from edged.runtime.litert import LiteRTEngine
from edged.runtime.native import NativeEngine


def _data(graph):
    images, labels = load_digits_test()
    x = digits_for(graph, images)
    return x, labels


def test_kernel_patterns_keep_four_taps_with_the_centre():
    w = np.random.default_rng(0).normal(size=(16, 3, 3, 8))
    keep, library = kernel_patterns(w, library_size=6)
    per_kernel = keep.transpose(0, 3, 1, 2).reshape(-1, 9)
    assert (per_kernel.sum(axis=1) == 4).all() and per_kernel[:, CENTRE].all()
    assert len(library) <= 6 and all(CENTRE in p for p in library)
    with pytest.raises(ValueError, match=r"\[out, 3, 3, in\]"):
        kernel_patterns(np.zeros((4, 5, 5, 1)))


def test_unit_removal_shrinks_the_model_and_runs_alike_everywhere():
    graph = read_tflite(default_model_path("digits_mlp"))
    x, _ = _data(graph)
    keep = np.ones(1024, bool)
    keep[::2] = False
    small = remove_channels(graph, 0, keep)
    assert small.tensors[small.operators[0].inputs[1]].shape == (512, 64)
    assert small.tensors[small.operators[1].inputs[1]].shape == (1024, 512)
    expected = LiteRTEngine(write_tflite(small)).infer([x])[0]
    assert np.array_equal(NativeEngine(small).infer([x])[0], expected)
    with pytest.raises(ValueError, match=r"op #3 \(SOFTMAX\) reads the channels"):
        remove_channels(graph, 2, np.ones(10, bool))  # the classifier's units are the classes


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_pattern_search_respects_the_budget_and_exports_bit_exactly(name):
    graph = read_tflite(default_model_path(name))
    x, labels = _data(graph)
    comp = PatternCompressor(graph, Calibration(x[:120], labels[:120]))
    result = comp.search(kl_budget=0.05, steps=6)
    assert result.kl <= 0.05 and result.sparsity > 0
    content = write_tflite(result.graph)
    assert np.array_equal(NativeEngine(result.graph).infer([x])[0], LiteRTEngine(content).infer([x])[0])


def test_learned_policy_stays_in_budget_is_seeded_and_keeps_its_best_when_cut_short():
    from edged.adapt.policy import adjacency, measured_latency, train_policy

    graph = read_tflite(default_model_path("digits_mlp"))
    x, labels = _data(graph)
    comp = PatternCompressor(graph, Calibration(x[:120], labels[:120]))
    assert adjacency(comp).tolist() == [[True, True, False], [True, True, True], [False, True, True]]
    curves, latency = comp.sensitivity(), measured_latency(comp, runs=50)
    runs = [train_policy(comp, 0.05, time_budget_s=60, curves=curves, latency=latency, seed=3,
                         max_episodes=32) for _ in range(2)]
    a, b = runs
    assert a.levels == b.levels and a.history == b.history and a.episodes == 32  # seeded
    assert a.kl <= 0.05 and a.candidates >= 1
    greedy = comp.search(kl_budget=0.05, steps=6)
    assert a.sparsity >= greedy.sparsity - 0.3  # a sensible allocation from 32 episodes
    cut = train_policy(comp, 0.05, time_budget_s=0.0, curves=curves, latency=latency)
    assert cut.kl <= 0.05  # interrupted at once: still a valid (possibly empty) allocation
    with pytest.raises(ValueError, match="positive"):
        train_policy(comp, 0.0, curves=curves, latency=latency)


def test_gatv2_and_policy_gradients_match_finite_differences():
    from edged.adapt.policy import _Policy

    rng = np.random.default_rng(0)
    n, features = 4, 5
    x = rng.normal(size=(n, features))
    adj = np.eye(n, dtype=bool) | (rng.random((n, n)) < 0.5)
    phi = [rng.normal(size=(k, 6)) for k in (3, 5, 2, 4)]
    choice = (1, 4, 0, 2)
    policy = _Policy.init(features, 6, rng, dim=7)
    policy.u = rng.normal(0, 0.3, policy.u.shape)

    def objective() -> float:
        probs, _, _ = policy.probs(x, adj, phi)
        return float(sum(np.log(p[c]) for p, c in zip(probs, choice, strict=True)))

    probs, h, cache = policy.probs(x, adj, phi)
    g_enc, g_u = policy.grad_log_prob(choice, probs, h, cache, phi)
    for param, grad in ((policy.enc.w_l, g_enc.w_l), (policy.enc.w_r, g_enc.w_r), (policy.enc.a, g_enc.a),
                        (policy.u, g_u)):
        for idx in [tuple(rng.integers(0, d) for d in param.shape) for _ in range(6)]:
            old = param[idx]
            param[idx] = old + 1e-6
            up = objective()
            param[idx] = old - 1e-6
            down = objective()
            param[idx] = old
            assert abs((up - down) / 2e-6 - grad[idx]) < 1e-5 * max(1.0, abs(grad[idx]))


def test_a_budget_no_layer_can_meet_is_a_clear_error():
    graph = read_tflite(default_model_path("digits_cnn"))
    x, labels = _data(graph)
    comp = PatternCompressor(graph, Calibration(x[:60], labels[:60]))
    with pytest.raises(ValueError, match=r"no layer can be compressed within the KL budget 1e-09: .*op #\d"):
        comp.search(kl_budget=1e-9, steps=4)
