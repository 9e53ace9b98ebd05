"""Next step: a Markov model of the next step given the last `order` steps, the order chosen by
held-out log-likelihood.

Smoothing is Witten-Bell interpolation, recursively down to add-one unigrams:

    P_0(w)   = (c(w) + 1) / (N + V + 1)                       (V distinct steps, +1 for unseen)
    P_j(w|h) = (c(h, w) + T(h) * P_{j-1}(w|h')) / (c(h) + T(h))  (h' = h without its oldest step)

where c(h) counts h as a context, c(h, w) h followed by w, and T(h) the distinct steps seen after
h. A context seen rarely, or followed by many different steps, leans on the shorter one; an unseen
context is its shorter one. Every probability is positive, so held-out log-likelihood is finite
for any order, and a higher order wins only when the data carry that much memory. Journeys are
padded with start markers so the first steps have contexts too.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

START = "\x00start"
Context = tuple[str, ...]


@dataclass(frozen=True)
class NextStepModel:
    """Counts of every context up to `max_order` steps, and the order in use."""

    max_order: int
    order: int
    following: dict[Context, Counter[str]] = field(repr=False)
    totals: dict[Context, int] = field(repr=False)
    vocabulary: int

    def probability(self, history: Sequence[str], step: str, order: int | None = None) -> float:
        order = self.order if order is None else order
        unigrams = self.following[()]
        p = (unigrams.get(step, 0) + 1) / (self.totals[()] + self.vocabulary + 1)
        context = _context(history, order)
        for j in range(1, order + 1):
            h = context[-j:]
            seen = self.totals.get(h)
            if not seen:
                break
            after = self.following[h]
            distinct = len(after)
            p = (after.get(step, 0) + distinct * p) / (seen + distinct)
        return p

    def predict(self, history: Sequence[str], k: int = 3) -> list[tuple[str, float]]:
        """The `k` likeliest next steps with their probabilities."""
        context = _context(history, self.order)
        candidates = {s for s, _ in self.following[()].most_common(k)}
        for j in range(1, self.order + 1):
            candidates.update(self.following.get(context[-j:], ()))
        scored = sorted(((s, self.probability(history, s)) for s in candidates), key=lambda x: (-x[1], x[0]))
        return scored[:k]

    def log_likelihood(self, journeys: Sequence[Sequence[str]], order: int) -> float:
        """Mean natural-log probability per step of `journeys` under the model of `order`."""
        total, steps = 0.0, 0
        for journey in journeys:
            padded = [START] * self.max_order + list(journey)
            for i in range(self.max_order, len(padded)):
                total += math.log(self.probability(padded[:i], padded[i], order))
                steps += 1
        return total / max(1, steps)


def _context(history: Sequence[str], order: int) -> Context:
    padded = [START] * order + list(history)
    return tuple(padded[len(padded) - order :]) if order else ()


def count(journeys: Sequence[Sequence[str]], max_order: int) -> NextStepModel:
    following: dict[Context, Counter[str]] = defaultdict(Counter)
    for journey in journeys:
        padded = [START] * max_order + list(journey)
        for i in range(max_order, len(padded)):
            step = padded[i]
            for j in range(max_order + 1):
                following[tuple(padded[i - j : i])][step] += 1
    following.setdefault((), Counter())
    totals = {h: sum(c.values()) for h, c in following.items()}
    return NextStepModel(max_order, max_order, dict(following), totals, len(following[()]))


@dataclass(frozen=True)
class Fitted:
    model: NextStepModel
    held_out_log_likelihood: dict[int, float]  # per order, on the validation journeys


def fit(journeys: Sequence[Sequence[str]], max_order: int = 3, validation: float = 0.2) -> Fitted:
    """Counts on the first `1 - validation` of `journeys`, the order with the best mean held-out
    log-likelihood on the rest (callers shuffle first if the order of journeys means something)."""
    cut = int(len(journeys) * (1 - validation))
    model = count(journeys[:cut], max_order)
    scores = {k: model.log_likelihood(journeys[cut:], k) for k in range(max_order + 1)}
    best = max(scores, key=lambda k: (scores[k], -k))
    chosen = NextStepModel(max_order, best, model.following, model.totals, model.vocabulary)
    return Fitted(chosen, scores)


@dataclass(frozen=True)
class Accuracy:
    model: float
    baseline: float
    predictions: int


def top_k_accuracy(model: NextStepModel, journeys: Sequence[Sequence[str]], k: int = 3) -> Accuracy:
    """How often the next step is among the model's `k` predictions given the steps before it, and
    among the `k` most frequent steps (the baseline), over every step after a journey's first."""
    baseline = {s for s, _ in model.following[()].most_common(k)}
    cache: dict[Context, set[str]] = {}
    hits = base_hits = total = 0
    for journey in journeys:
        for i in range(1, len(journey)):
            context = _context(journey[:i], model.order)
            predicted = cache.get(context)
            if predicted is None:
                predicted = cache[context] = {s for s, _ in model.predict(journey[:i], k)}
            hits += journey[i] in predicted
            base_hits += journey[i] in baseline
            total += 1
    return Accuracy(hits / max(1, total), base_hits / max(1, total), total)
