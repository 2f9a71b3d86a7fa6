"""The comparison of a fit's fixed effects with lme4/lmerTest's, shared by the reference tests.

Tolerances as pinned in tests/test_lmm.py: estimates 1e-5 relative, SE and t 2e-4 relative,
Satterthwaite df 0.05 absolute, p 2e-4 absolute, REML criterion equal or lower (1e-3).
"""

from __future__ import annotations

import pytest
from scipy import stats


def assert_fixed_match(fit, ref) -> None:
    """Formula, n, singularity, REML criterion and every fixed effect (df, p and CI unless singular)."""
    assert fit.formula.replace(" ", "") == ref["formula"].replace(" ", "")
    assert fit.nobs == ref["nobs"]
    assert fit.singular == ref["singular"]
    assert fit.reml_criterion <= ref["reml_criterion"] + 1e-3
    assert fit.reml_criterion == pytest.approx(ref["reml_criterion"], abs=1e-3)
    ours = fit.fixed.set_index("term")
    for row in ref["fixed"]:
        got = ours.loc[row["term"]]
        assert got.estimate == pytest.approx(row["estimate"], rel=1e-5), row["term"]
        assert got.se == pytest.approx(row["se"], rel=2e-4), row["term"]
        assert got.t == pytest.approx(row["t"], rel=2e-4), row["term"]
        if ref["singular"]:
            continue
        assert got.df == pytest.approx(row["df"], abs=0.05), row["term"]
        assert got.p == pytest.approx(row["p"], abs=2e-4), row["term"]
        # the CI uses the Satterthwaite df
        q = stats.t.ppf(0.975, row["df"])
        assert got.ci_low == pytest.approx(row["estimate"] - q * row["se"], rel=1e-3)
        assert got.ci_high == pytest.approx(row["estimate"] + q * row["se"], rel=1e-3)
