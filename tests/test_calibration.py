"""Temperature calibration oracles: a known temperature is recovered; the fit never hurts; CE matches torch."""
import math

import pytest
import torch
import torch.nn.functional as F

from lmcdash.calibration import accuracy, cross_entropy_at, fit_beta, mixture_cross_entropy


pytestmark = pytest.mark.usefixtures("one_thread")  # shared fixture in conftest.py


def _planted(beta_true: float, n: int = 20000, c: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g) * 2.0
    y = torch.multinomial(torch.softmax(beta_true * z, 1), 1, generator=g).squeeze(1)
    return z, y


@pytest.mark.parametrize("beta_true", [0.3, 1.0, 4.0])
def test_fit_recovers_planted_temperature(beta_true):
    z, y = _planted(beta_true)
    assert fit_beta(z, y) == pytest.approx(beta_true, rel=0.05)


def test_fit_never_raises_loss_above_beta_one():
    g = torch.Generator().manual_seed(1)
    for trial in range(20):
        z = torch.randn(500, 5, generator=g) * float(torch.rand(1, generator=g) * 10)
        y = torch.randint(0, 5, (500,), generator=g) if trial % 2 else z.argmax(1)  # noise, or separable
        beta = fit_beta(z, y)
        assert 1e-2 <= beta <= 1e2
        assert cross_entropy_at(z, y, beta) <= cross_entropy_at(z, y, 1.0) + 1e-12


def test_fit_is_at_the_minimum():
    z, y = _planted(2.0, n=5000, seed=3)
    beta = fit_beta(z, y)
    best = cross_entropy_at(z, y, beta)
    assert best <= cross_entropy_at(z, y, beta * 1.01) and best <= cross_entropy_at(z, y, beta / 1.01)


def test_cross_entropy_and_accuracy_match_torch():
    z, y = _planted(1.0, n=1000)
    assert cross_entropy_at(z, y, 0.7) == pytest.approx(float(F.cross_entropy(0.7 * z, y)), abs=1e-6)
    assert accuracy(z, y) == pytest.approx(float((z.argmax(1) == y).float().mean()))
    assert accuracy(3 * z, y) == accuracy(z, y)  # calibration never changes accuracy


def test_probability_mixture():
    za, y = _planted(1.0, n=300, seed=4)
    zb, _ = _planted(1.0, n=300, seed=5)
    assert mixture_cross_entropy(za, zb, y, 1.0)[1] == pytest.approx(cross_entropy_at(za, y), abs=1e-9)
    assert mixture_cross_entropy(za, zb, y, 0.0)[1] == pytest.approx(cross_entropy_at(zb, y), abs=1e-9)
    p = 0.3 * torch.softmax(za.double(), 1) + 0.7 * torch.softmax(zb.double(), 1)
    acc, loss = mixture_cross_entropy(za, zb, y, 0.3)
    assert loss == pytest.approx(float(-p.gather(1, y[:, None]).log().mean()), abs=1e-9)
    assert acc == pytest.approx(float((p.argmax(1) == y).double().mean()))


def test_bad_bounds_raise():
    z, y = _planted(1.0, n=10)
    with pytest.raises(ValueError, match="lo"):
        fit_beta(z, y, lo=2.0, hi=1.0)
    assert math.isfinite(fit_beta(torch.zeros(10, 3), torch.zeros(10, dtype=torch.long)))
