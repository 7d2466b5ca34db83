"""Samplers against a denoiser known in closed form: Gaussian data x_0 ~ N(μ, s²), for which
E[x_0 | x_t] is linear and the probability-flow ODE maps x_T to μ + s · (standardised x_T)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stem_st.diffusion import GaussianDiffusion
from stem_st.diffusion.gaussian import parse_sampler
from stem_st.diffusion.schedules import make_schedule, respace
from stem_st.errors import StemError

MU, S = 1.5, 0.3


def _exact_model(diff: GaussianDiffusion):
    abar = torch.tensor(diff.chain.abar)

    def fn(x, t):
        a = abar[t].view(-1, 1).float()
        x0 = MU + a.sqrt() * S**2 / (a * S**2 + 1 - a) * (x - a.sqrt() * MU)
        return ((x - a.sqrt() * x0) / (1 - a).sqrt() if diff.objective == "eps" else x0), None

    return fn


def _ode_error(diff: GaussianDiffusion, sampler: str) -> float:
    x_T = torch.randn(512, 3, generator=torch.Generator().manual_seed(0))
    a_T = float(diff.chain.abar[-1])
    exact = MU + S * (x_T - a_T**0.5 * MU) / (a_T * S**2 + 1 - a_T) ** 0.5
    return float((diff.sample(_exact_model(diff), x_T.shape, sampler, x_T=x_T.clone()) - exact).abs().max())


@pytest.mark.parametrize("objective", ["eps", "x0"])
def test_dpm_solver_follows_the_ode_with_few_calls(objective):
    diff = GaussianDiffusion(1000, "linear", objective)
    # second order in log-SNR: 10 calls land where DDIM needs far more
    assert _ode_error(diff, "dpm++:10") < 0.02
    assert _ode_error(diff, "dpm++:10") < _ode_error(diff, "ddim:100") / 5
    assert _ode_error(diff, "ddim:10") > 0.3
    # and it converges as steps grow
    assert _ode_error(diff, "dpm++:50") < 0.01


def test_logsnr_respacing_keeps_the_ends_and_the_marginals():
    sched = make_schedule("linear", 1000)
    short = respace(sched, 10, "logsnr")
    assert short.timesteps[0] == 0 and short.timesteps[-1] == 999 and short.num_steps == 10
    np.testing.assert_allclose(short.alphas_cumprod, sched.alphas_cumprod[short.timesteps], rtol=1e-10)
    abar = short.alphas_cumprod
    lam = 0.5 * np.log(abar / (1 - abar))
    gaps = -np.diff(lam)
    assert gaps.max() < 1.5 * gaps.min()  # evenly spaced in log-SNR (to integer timesteps)


def test_sampler_strings():
    assert parse_sampler("dpm++:10", 1000) == ("dpm++", 10, 0.0)
    for bad in ("dpm++:10:0.5", "dpm:10", "dpm++:0", "dpm++:x"):
        with pytest.raises(StemError, match="bad sampler"):
            parse_sampler(bad, 1000)


def test_the_default_sampler_is_a_valid_spec_for_every_schedule_length():
    from stem_st.defaults import DEFAULT_SAMPLER

    kind, steps, _ = parse_sampler(DEFAULT_SAMPLER, 1000)
    assert kind == "dpm++" and steps <= 50  # the cheap default that the spread is calibrated with
    parse_sampler(DEFAULT_SAMPLER, steps)
