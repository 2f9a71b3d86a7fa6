"""Agreement between raters on one matrix of ratings: intraclass correlations and
Krippendorff's alpha.

Rows are the rated targets, columns the raters. For continuous traces (analysis.traces) the
targets are the points of a clip's time grid and the raters the participants, as CARMA does
(Girard 2014; its "Analyze Ratings" window reports ICC(A,1), ICC(C,1), ICC(A,k) and ICC(C,k)
after McGraw & Wong 1996, on the rows every rater has).

`icc` gives the six Shrout & Fleiss (1979) forms with the same names, F tests and confidence
bounds as R's psych::ICC (psych 2.2.9, `lmer = FALSE`: the two-way ANOVA mean squares; its
default `lmer = TRUE` gives the same numbers on complete data whenever no variance component
is estimated at zero). McGraw & Wong's names: ICC2 = ICC(A,1), ICC3 = ICC(C,1),
ICC2k = ICC(A,k), ICC3k = ICC(C,k). Pinned to psych in tests/test_traces.py with the values
in tests/reference/traces/.

A caveat for traces: neighbouring time points are not independent (a trace is smooth), so
the F tests and the intervals, which assume independent targets, are too narrow; the point
estimates do not depend on that. The report says so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from study.errors import Problem, UserError

__all__ = ["ICC_TYPES", "CARMA_TYPES", "icc", "krippendorff_alpha"]

ICC_TYPES = ("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k")
# The four CARMA reports, by their Shrout-Fleiss names, with McGraw & Wong's beside them.
CARMA_TYPES = {"ICC2": "ICC(A,1)", "ICC3": "ICC(C,1)", "ICC2k": "ICC(A,k)", "ICC3k": "ICC(C,k)"}
ICC_COLUMNS = ["type", "icc", "F", "df1", "df2", "p", "lower", "upper"]


def _matrix(x, what: str) -> np.ndarray:
    m = np.asarray(x.to_numpy() if isinstance(x, pd.DataFrame) else x, dtype=float)
    if m.ndim != 2:
        raise UserError(f"{what} needs a table of targets (rows) by raters (columns); got {m.ndim} dimension(s)")
    return m


def icc(x, alpha: float = 0.05) -> pd.DataFrame:
    """The six Shrout-Fleiss ICCs of a targets x raters matrix, as psych::ICC(x, lmer = FALSE).

    Rows with a missing value are dropped first (psych refuses them with lmer = FALSE; CARMA
    drops them). Returns one row per type (ICC_TYPES) with icc, F, df1, df2, p and the
    (1 - alpha) confidence bounds `lower`, `upper`.
    """
    m = _matrix(x, "an ICC")
    if not 0 < alpha < 1:
        raise UserError(f"alpha must lie between 0 and 1; got {alpha!r}")
    m = m[np.all(np.isfinite(m), axis=1)]
    n, k = m.shape
    if n < 2 or k < 2:
        raise UserError("an ICC needs at least 2 targets rated by at least 2 raters, with no value missing",
                        [Problem("ratings", f"{n} complete target(s) x {k} rater(s)")])
    grand = m.mean()
    ss_rows = k * ((m.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((m.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((m - grand) ** 2).sum() - ss_rows - ss_cols
    msb = ss_rows / (n - 1)
    msj = ss_cols / (k - 1)
    mse = ss_err / ((n - 1) * (k - 1))
    msw = (ss_cols + ss_err) / (n * (k - 1))
    if msb == 0 or mse == 0:
        raise UserError("an ICC is not defined here: every target got the same mean, or the raters agree exactly "
                        "(no residual variance)", [Problem("ratings", f"{n} targets x {k} raters")])

    icc1 = (msb - msw) / (msb + (k - 1) * msw)
    icc2 = (msb - mse) / (msb + (k - 1) * mse + k * (msj - mse) / n)
    icc3 = (msb - mse) / (msb + (k - 1) * mse)
    icc1k = (msb - msw) / msb
    icc2k = (msb - mse) / (msb + (msj - mse) / n)
    icc3k = (msb - mse) / msb

    f1, df1n, df1d = msb / msw, n - 1, n * (k - 1)
    f3, df3n, df3d = msb / mse, n - 1, (n - 1) * (k - 1)
    p1 = float(stats.f.sf(f1, df1n, df1d))
    p3 = float(stats.f.sf(f3, df3n, df3d))
    q = 1 - alpha / 2
    f1l, f1u = f1 / stats.f.ppf(q, df1n, df1d), f1 * stats.f.ppf(q, df1d, df1n)
    f3l, f3u = f3 / stats.f.ppf(q, df3n, df3d), f3 * stats.f.ppf(q, df3d, df3n)
    # ICC(2,1): Satterthwaite's df for the random-raters interval (Shrout & Fleiss 1979, eq. 10;
    # McGraw & Wong 1996), written as psych writes it.
    fj = msj / mse
    vn = (k - 1) * (n - 1) * (k * icc2 * fj + n * (1 + (k - 1) * icc2) - k * icc2) ** 2
    vd = (n - 1) * k**2 * icc2**2 * fj**2 + (n * (1 + (k - 1) * icc2) - k * icc2) ** 2
    v = vn / vd
    fu2, fl2 = stats.f.ppf(q, n - 1, v), stats.f.ppf(q, v, n - 1)
    denom = k * msj + (k * n - k - n) * mse
    l2 = n * (msb - fu2 * mse) / (fu2 * denom + n * msb)
    u2 = n * (fl2 * msb - mse) / (denom + n * fl2 * msb)
    rows = [
        ("ICC1", icc1, f1, df1n, df1d, p1, (f1l - 1) / (f1l + k - 1), (f1u - 1) / (f1u + k - 1)),
        ("ICC2", icc2, f3, df3n, df3d, p3, l2, u2),
        ("ICC3", icc3, f3, df3n, df3d, p3, (f3l - 1) / (f3l + k - 1), (f3u - 1) / (f3u + k - 1)),
        ("ICC1k", icc1k, f1, df1n, df1d, p1, 1 - 1 / f1l, 1 - 1 / f1u),
        ("ICC2k", icc2k, f3, df3n, df3d, p3, l2 * k / (1 + l2 * (k - 1)), u2 * k / (1 + u2 * (k - 1))),
        ("ICC3k", icc3k, f3, df3n, df3d, p3, 1 - 1 / f3l, 1 - 1 / f3u),
    ]
    out = pd.DataFrame(rows, columns=ICC_COLUMNS)
    out[["df1", "df2"]] = out[["df1", "df2"]].astype(int)
    out.attrs.update(n_targets=n, n_raters=k)
    return out


def krippendorff_alpha(x) -> float:
    """Krippendorff's alpha for interval data of a targets x raters matrix (NaN = not rated).

    alpha = 1 - D_o / D_e with the squared difference as the metric: D_o averages the squared
    differences between the values of the same target (each target's pairs weighted by
    1 / (m_u - 1), m_u its number of values), D_e those between all pairable values
    (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"). Targets rated by fewer
    than two raters are not pairable and drop out, so missing values are allowed (unlike the
    ICCs, which need complete rows).

    For the interval metric both sums reduce to sums of squares, computed here in O(values).
    The `krippendorff` package (PyPI) is the reference in tests/test_traces.py, not the
    engine: it builds a targets x V x V coincidence array over the V distinct values, and
    continuous traces have nearly as many distinct values as ratings (600 grid points x 30
    raters would need terabytes).
    """
    m = _matrix(x, "Krippendorff's alpha")
    ok = np.isfinite(m)
    m_u = ok.sum(axis=1)
    pairable = m_u >= 2
    if m.shape[1] < 2 or not pairable.any():
        raise UserError("Krippendorff's alpha needs at least one target rated by two raters or more",
                        [Problem("ratings", f"{m.shape[0]} target(s) x {m.shape[1]} rater(s)")])
    v = np.where(ok, m, 0.0)[pairable]
    mu = m_u[pairable].astype(float)
    s1 = v.sum(axis=1)
    s2 = (v**2).sum(axis=1)
    # sum over ordered pairs i != j within a target of (v_i - v_j)^2 = 2 (m s2 - s1^2)
    within = 2 * (mu * s2 - s1**2)
    n = mu.sum()
    d_o = (within / (mu - 1)).sum() / n
    total1, total2 = s1.sum(), s2.sum()
    d_e = 2 * (n * total2 - total1**2) / (n * (n - 1))
    if d_e <= 0:
        raise UserError("Krippendorff's alpha is not defined when every rating is the same value: there is no "
                        "variation to agree about")
    return float(1 - d_o / d_e)
