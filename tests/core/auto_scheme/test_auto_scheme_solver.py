"""The solver keeps within the budget and finds the exact optimum (here: the best of every
combination of small random problems); on a coarse grid, at least the optimum of a budget one
grid step per unit smaller."""

from __future__ import annotations

import itertools
import random

import pytest

from autoround.auto_scheme import solver
from autoround.auto_scheme.solver import solve


def brute_force(costs, losses, budget):
    best = None
    for combo in itertools.product(*(range(len(c)) for c in costs)):
        if sum(c[i] for c, i in zip(costs, combo, strict=True)) <= budget:
            loss = sum(loss[i] for loss, i in zip(losses, combo, strict=True))
            best = loss if best is None else min(best, loss)
    return best


def random_problem(rng: random.Random, units: int):
    costs, losses = [], []
    for _ in range(units):
        size = rng.choice([1, 2, 3, 4])
        bits = sorted(rng.sample([2, 3, 4, 5, 6, 8], 3))
        costs.append([size * b for b in bits])
        base = rng.uniform(0.1, 10)
        losses.append([base * 4.0 ** (-b) * rng.uniform(0.5, 1.5) for b in bits])
    return costs, losses


@pytest.mark.parametrize("seed", range(40))
def test_the_solution_fits_and_is_the_optimum(seed: int) -> None:
    rng = random.Random(seed)
    costs, losses = random_problem(rng, units=rng.randint(2, 6))
    low, high = sum(min(c) for c in costs), sum(max(c) for c in costs)
    budget = rng.randint(low, high)
    choice = solve(costs, losses, budget)
    assert sum(c[i] for c, i in zip(costs, choice, strict=True)) <= budget
    found = sum(loss[i] for loss, i in zip(losses, choice, strict=True))
    assert found == pytest.approx(brute_force(costs, losses, budget), rel=1e-12)


@pytest.mark.parametrize("seed", range(20))
def test_on_a_coarse_grid_the_solution_fits_and_beats_the_optimum_one_step_per_unit_lower(
    seed: int, monkeypatch
) -> None:
    monkeypatch.setattr(solver, "MAX_STATES", 8)
    rng = random.Random(seed)
    costs, losses = random_problem(rng, units=5)
    costs = [[1000 * c + rng.randint(0, 999) for c in row] for row in costs]
    low, high = sum(min(c) for c in costs), sum(max(c) for c in costs)
    budget = rng.randint(low + (high - low) // 3, high)
    step = -(-(budget - low) // 8)
    choice = solve(costs, losses, budget)
    assert sum(c[i] for c, i in zip(costs, choice, strict=True)) <= budget
    found = sum(loss[i] for loss, i in zip(losses, choice, strict=True))
    assert found <= brute_force(costs, losses, max(low, budget - len(costs) * step)) + 1e-12


def test_an_over_small_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="the cheapest options need 6 bits, over the budget of 5"):
        solve([[2, 4], [4, 8]], [[1.0, 0.5], [1.0, 0.5]], 5)


def test_bits_go_where_they_remove_the_most_error() -> None:
    # two equal-sized units, budget for one upgrade: the one whose error drops more gets it
    choice = solve([[2, 4], [2, 4]], [[1.0, 0.9], [5.0, 1.0]], 6)
    assert choice == [0, 1]
