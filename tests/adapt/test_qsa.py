"""The QSA retrainer on windows with known structure."""

from __future__ import annotations

import numpy as np
import pytest

from edged.adapt.qsa import QsaConfig, fake_quantize, train_qsa


def structured_window(seed=0, n=600):
    """8 informative features driven by 3 latent factors, 4 faint noise features and 4 constants."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    informative = latent @ rng.normal(size=(3, 8)) * 20
    noise = rng.normal(0, 0.5, (n, 4))
    constant = np.full((n, 4), 7.0)
    return np.clip(np.round(np.hstack([informative, noise, constant])), -128, 127).astype(np.int8)


def test_fake_quantize_is_int8_per_column():
    w = np.array([[0.5, -2.0], [0.25, 1.0]])
    q = fake_quantize(w)
    assert np.allclose(q[:, 0] / (0.5 / 127), np.round(q[:, 0] / (0.5 / 127)))
    assert np.abs(q - w).max() <= (2.0 / 127) / 2 + 1e-12


def test_importance_separates_structure_from_noise_and_constants():
    result = train_qsa(structured_window(), QsaConfig(code_size=16, epochs=40, seed=1))
    imp = result.importance
    assert np.all(imp[12:] == 0)  # constants: nothing to learn
    assert imp[:8].mean() > 1.5 * imp[8:12].mean()
    assert result.reconstruction_mse < 0.5 and len(result.history) == result.epochs


def test_lambda_steers_code_sparsity_toward_the_target():
    window = structured_window(seed=2)
    loose = train_qsa(window, QsaConfig(code_size=32, target_code_sparsity=0.3, epochs=40, seed=3))
    tight = train_qsa(window, QsaConfig(code_size=32, target_code_sparsity=0.9, epochs=40, seed=3))
    assert tight.code_sparsity > loose.code_sparsity
    assert tight.lam > loose.lam


def test_deterministic_with_a_seed_and_bounded_in_time():
    window = structured_window(seed=4)
    a = train_qsa(window, QsaConfig(epochs=5, seed=7))
    b = train_qsa(window, QsaConfig(epochs=5, seed=7))
    assert np.array_equal(a.importance, b.importance)
    quick = train_qsa(window, QsaConfig(epochs=10_000, time_budget_s=0.2))
    assert quick.seconds < 2.0 and quick.epochs < 10_000


def test_bad_windows():
    with pytest.raises(ValueError, match="at least 2 samples"):
        train_qsa(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="NaN"):
        train_qsa(np.array([[0.0, np.nan], [1.0, 2.0]]))
    flat = train_qsa(np.full((10, 3), 5, np.int8))
    assert np.all(flat.importance == 0)


def test_training_stops_at_a_plateau_of_the_reconstruction_error():
    result = train_qsa(structured_window(seed=5), QsaConfig(code_size=16, epochs=2000, time_budget_s=600.0,
                                                            patience=8, seed=2))
    curve = [mse for mse, _, _ in result.history]
    assert result.converged and result.epochs < 2000
    assert curve[-1] < curve[0] / 3
    assert min(curve[:-8]) <= min(curve[-8:]) / (1 - QsaConfig.min_improvement)  # no real progress at the end


class RandomScores:
    """Scores drawn at random: what pruning with QSA must beat."""

    name = "random"

    def scores(self, weights, stats):
        return np.random.default_rng(stats.op_index).random(weights.shape)


def test_qsa_scores_prune_far_better_than_random_scores():
    from edged.adapt.calibration import Calibration
    from edged.adapt.compress import STRATEGIES, Compressor, QsaStrategy
    from edged.data import default_model_path, digits_for, load_digits_test
    from edged.model.tflite import read_tflite
    from edged.sparse.block_csr import BlockShape

    images, labels = load_digits_test()
    graph = read_tflite(default_model_path("digits_mlp"))
    x = digits_for(graph, images)
    calib, held = Calibration(x[:120]), Calibration(x[120:], labels[120:])
    judge = Compressor(graph, held, STRATEGIES["magnitude"]())

    def pruned_accuracy(strategy) -> float:
        comp = Compressor(graph, calib, strategy, BlockShape(1, 1), reconstruct=False)
        return judge.accuracy(comp.search(sparsity=0.8, steps=4).graph)

    # An epoch count, not a time budget, ends training: the same result on a busy machine.
    qsa = pruned_accuracy(QsaStrategy(QsaConfig(epochs=15, time_budget_s=600.0, seed=0)))
    chance = pruned_accuracy(RandomScores())
    assert qsa >= chance + 0.3 and qsa >= 0.8, (qsa, chance)
