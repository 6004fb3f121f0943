"""`l3m` (§10): relaxed log barrier, implied multipliers, μ schedule, EMA, hooks, and both behaviour tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.objectives.barrier import barrier, barrier_grad

from .bandit import make_objective


def clip_(grad: torch.Tensor, max_norm: float = 1.0) -> torch.Tensor:
    norm = float(grad.norm())
    return grad * (max_norm / (norm + 1e-6)) if norm > max_norm else grad


def test_barrier_values_and_derivative() -> None:
    z = torch.tensor([-0.5, 0.2, -0.01], dtype=torch.float64, requires_grad=True)
    values = barrier(z, 0.1)
    torch.testing.assert_close(values.detach(), torch.tensor([0.0693147, 2.5605170, 0.4605170], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(barrier_grad(z.detach()[:2], 0.1), torch.tensor([0.2, 10.0], dtype=torch.float64))
    (grad,) = torch.autograd.grad(values.sum(), z)
    torch.testing.assert_close(grad, barrier_grad(z.detach(), 0.1))  # continuous at z = −s, derivative μ/max(−z, s)


def test_implied_multipliers_and_ema() -> None:
    obj = make_objective("l3m", {"a": {"threshold": 0.0}, "b": {"threshold": 0.0}}, mu_start=0.1, total_steps=10)
    lam = obj.observe(torch.tensor([[0.5, -0.2]]))  # C̄ = b − r̄ = (−0.5, 0.2), μ = 0.1, k = 2
    torch.testing.assert_close(lam, torch.tensor([0.1, 5.0]))
    ema = make_objective("l3m", {"a": {"threshold": 0.3}}, total_steps=10)
    ema.observe(torch.tensor([[0.8]]))  # first batch sets C̄ = 0.3 − 0.8 = −0.5
    ema.observe(torch.tensor([[0.1]]))  # Ĉ = 0.2
    assert float(ema.constraint_estimate()[0]) == pytest.approx(-0.43, abs=1e-6)
    assert ema.metrics()["constraint/a"] == pytest.approx(-0.43, abs=1e-6)


def test_mu_schedule() -> None:
    obj = make_objective("l3m", {"a": {"threshold": 0.1}}, total_steps=5000)
    assert obj.decay == pytest.approx(0.99724071, abs=1e-8)
    for _ in range(2500):
        obj.next_step_kind()
    assert obj.mu == pytest.approx(1e-3, rel=1e-9)
    for _ in range(3000):
        obj.next_step_kind()
    assert obj.mu == pytest.approx(1e-6, rel=1e-9)  # stays at μ_T after T steps


def test_coin_is_fair_seeded_and_round_trips() -> None:
    obj = make_objective("l3m", {"a": {"threshold": 0.1}}, total_steps=100)
    kinds = [obj.next_step_kind() for _ in range(400)]
    assert 150 < kinds.count("task") < 250
    clone = make_objective("l3m", {"a": {"threshold": 0.1}}, seed=5)
    obj.observe(torch.tensor([[0.3]]))
    clone.load_state_dict(obj.state_dict())
    assert [clone.next_step_kind() for _ in range(50)] == [obj.next_step_kind() for _ in range(50)]
    assert clone.mu == obj.mu and torch.equal(clone.multipliers(), obj.multipliers())


def test_losses() -> None:
    obj = make_objective("l3m", {"a": {"threshold": 0.5}, "b": {"threshold": 0.2, "direction": "le"}}, mu_start=0.1, total_steps=10)
    logprobs = torch.tensor([[-1.0, -3.0, -7.0], [-2.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert float(obj.task_loss(logprobs, mask)) == pytest.approx((2.0 + 2.0) / 2)
    seq = torch.tensor([-1.0, -2.0], requires_grad=True)
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = obj.constraint_loss(seq, scores)
    costs = torch.tensor([[0.5 - 1.0, 0.0 - 0.2], [0.5 - 0.0, 1.0 - 0.2]])  # ge: b − r, le: r − b
    lam = obj.multipliers()  # C̄ = (0, 0.3): both at/above −s → λ̂ = μ/(k μ²) = 5
    torch.testing.assert_close(lam, torch.tensor([5.0, 5.0]))
    (grad,) = torch.autograd.grad(loss, seq)
    torch.testing.assert_close(grad, (costs * lam).sum(dim=1) / 2)
    assert obj.metrics()["multiplier/a"] == 5.0 and obj.metrics()["mu"] == 0.1


def test_config_errors_and_not_ppo() -> None:
    with pytest.raises(ValueError, match="'a'.*eq"):
        make_objective("l3m", {"a": {"threshold": 0.1, "direction": "eq"}})
    obj = make_objective("l3m", {"a": {"threshold": 0.1}})
    assert obj.update_kind == "l3m"
    with pytest.raises(ValueError, match="total_steps"):
        obj.next_step_kind()
    obj.set_total_steps(10)
    assert obj.next_step_kind() in ("task", "constraint")
    with pytest.raises(NotImplementedError, match="not PPO"):
        obj.mix_advantages(torch.zeros(1, 1))


def test_deterministic_toy_settles_on_the_constraint_boundary() -> None:
    """L = 0.25(θ − 2)², C = θ − 1 ≤ 0 (reward r = 1 − θ ≥ 0), SGD lr 0.01, 20,000 steps."""
    obj = make_objective("l3m", {"r": {"threshold": 0.0}}, total_steps=20000)
    theta = torch.zeros(1, requires_grad=True)
    one = torch.ones(1, 1)
    for _ in range(20000):
        if obj.next_step_kind() == "task":
            loss = obj.task_loss((-0.25 * (theta - 2) ** 2).view(1, 1), one)  # NLL ≡ L
        else:
            lam = obj.observe((1 - theta.detach()).view(1, 1))
            loss = (lam * (theta - 1)).sum()  # λ̂·C: gradient (1/k)·B'(C̄)·∇C
        (grad,) = torch.autograd.grad(loss, theta)
        with torch.no_grad():
            theta -= 0.01 * clip_(grad)  # |∇L| ≤ 1 near the boundary, so clipping only bites the barrier
    assert float(theta.detach()) == pytest.approx(1.0, abs=0.05)


def test_bandit_sft_toward_a_keeps_p_b_at_the_floor() -> None:
    """SFT data always arm A; constraint E[1{B}] ≥ 0.3; lr 0.05, batch 64, 20,000 steps."""
    obj = make_objective("l3m", {"b": {"threshold": 0.3}}, total_steps=20000)
    gen = torch.Generator().manual_seed(0)
    logits = torch.zeros(2, requires_grad=True)
    arm_a = torch.zeros(64, dtype=torch.long)
    one = torch.ones(64, 1)
    p_b = np.empty(20000)
    for step in range(20000):
        logp = torch.log_softmax(logits, 0)
        if obj.next_step_kind() == "task":
            loss = obj.task_loss(logp[arm_a].view(64, 1), one)
        else:
            arms = torch.multinomial(logp.detach().exp(), 64, replacement=True, generator=gen)
            loss = obj.constraint_loss(logp[arms], arms.float().view(64, 1))
        (grad,) = torch.autograd.grad(loss, logits)
        with torch.no_grad():
            logits -= 0.05 * clip_(grad)
            p_b[step] = float(torch.sigmoid(logits[1] - logits[0]))
    assert 0.30 <= p_b[-2000:].mean() <= 0.31


def test_the_mu_schedule_spans_exactly_the_steps_the_run_takes():
    # μ must reach μ_T at the last step, not halfway: a rollout holds batch_size × samples_per_prompt samples.
    from services.config.overrides import build_config
    from services.ppo.l3m import steps_per_iteration

    config = build_config(["objective=l3m"])  # default preset: 4 prompts × 4 completions, minibatches of 8
    samples = config.rollout.batch_size * config.rollout.samples_per_prompt
    per_iteration = steps_per_iteration(samples, config.trainer.minibatch_size, config.trainer.epochs)
    assert config.objective.total_steps == config.trainer.iterations * per_iteration == config.trainer.iterations * 4
