"""Next-step prediction (issue 21): probabilities sum to one, the order is the held-out best, and
held-out top-3 accuracy beats the most-frequent-step baseline on the generator's data."""

from __future__ import annotations

import pytest

from headwater.analytics.patterns.generator import GeneratorSettings, generate
from headwater.analytics.patterns.markov import count, fit, top_k_accuracy


def test_smoothed_probabilities_sum_to_one_over_seen_and_unseen_steps() -> None:
    model = count([["a", "b", "c"], ["a", "b", "b"], ["c"]], max_order=2)
    for history in ([], ["a"], ["a", "b"], ["z", "z"]):
        seen = sum(model.probability(history, s) for s in ("a", "b", "c"))
        unseen = model.probability(history, "never seen")
        assert seen + unseen == pytest.approx(1.0)
        assert unseen > 0


def test_markov_model_beats_the_most_frequent_step_baseline_held_out() -> None:
    data = generate(GeneratorSettings(sessions=20_000, seed=7))
    train, test = data.journeys[:16_000], data.journeys[16_000:]
    fitted = fit(train, max_order=3)
    scores = fitted.held_out_log_likelihood
    assert fitted.model.order == max(scores, key=lambda k: scores[k])
    assert fitted.model.order >= 1  # the background is a Markov chain: memory helps
    accuracy = top_k_accuracy(fitted.model, test, k=3)
    assert accuracy.model > accuracy.baseline + 0.1, accuracy
    assert len(fitted.model.predict(test[0][:1], 3)) == 3
