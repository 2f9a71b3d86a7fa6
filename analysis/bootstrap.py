"""Parametric bootstrap of a statistic of a fitted mixed model, with the fast engine.

Each bootstrap sample is an outcome vector drawn from the fitted model itself (fixed
effects as estimated, random effects and residuals from the estimated variance
components: lmm.Refitter.simulate) on the same rows, and refitted with the same model
(the model the singular-fit rule chose, as lme4's bootMer refits the model it is given).
The statistic is recomputed from each refit's fixed effects and variance components, so
its spread includes the uncertainty of the variance components. The interval is the
percentile interval of the bootstrap values.

Refits reuse the fit's cross-products and clip-block structure (lmm.Refitter): each costs
one optimisation, without the Satterthwaite and convergence computations.
Seeded: the same fit, statistic, seed and number of samples give the same values.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.lmm import LmmFit, Refitter
from study.errors import UserError

__all__ = ["BootstrapResult", "parametric_bootstrap"]


@dataclass
class BootstrapResult:
    estimate: float  # the statistic of the original fit
    ci_low: float
    ci_high: float
    values: np.ndarray  # one per successful refit, in the order drawn
    n_boot: int  # samples drawn
    n_failed: int  # refits that could not be fitted (left out of the interval)
    confidence: float


def parametric_bootstrap(fit: LmmFit, statistic: Callable[[pd.Series, pd.DataFrame], float], n_boot: int,
                         *, seed=1, confidence: float = 0.95,
                         progress: Callable[[int, int], None] | None = None) -> BootstrapResult:
    """Percentile interval of statistic(fixed, random) over n_boot parametric bootstrap refits.

    statistic receives the fixed-effect estimates (a Series indexed by term) and the
    variance-component table (LmmFit.random's columns) of one fit. seed: anything
    numpy.random.default_rng accepts (e.g. [study seed, outcome number]).
    progress(done, total) is called after each sample.
    """
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 2:
        raise UserError(f"the number of bootstrap samples must be a whole number of at least 2; got {n_boot!r}")
    if not 0 < confidence < 1:
        raise UserError(f"confidence must lie between 0 and 1; got {confidence!r}")
    n_boot = int(n_boot)
    terms = list(fit.fixed["term"])
    estimate = float(statistic(fit.fixed.set_index("term")["estimate"], fit.random))
    refit = Refitter(fit)
    rng = np.random.default_rng(seed)
    values, failed = [], 0
    for b in range(n_boot):
        y = refit.simulate(rng)
        try:
            beta, theta, sigma = refit.estimates(y)
            v = float(statistic(pd.Series(beta, index=terms), refit.random_table(theta, sigma)))
        except (np.linalg.LinAlgError, FloatingPointError, ValueError):
            v = float("nan")
        if np.isfinite(v):
            values.append(v)
        else:
            failed += 1
        if progress is not None:
            progress(b + 1, n_boot)
    values = np.array(values)
    if len(values) < 2:
        lo = hi = float("nan")
    else:
        a = (1 - confidence) / 2
        lo, hi = (float(q) for q in np.quantile(values, [a, 1 - a]))
    return BootstrapResult(estimate, lo, hi, values, n_boot, failed, confidence)
