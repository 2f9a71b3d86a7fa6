"""Logistic mixed models with crossed random intercepts, by Laplace approximation as lme4's glmer.

Model: logit P(y = 1) = X beta + sum_k b_k[level], b_k ~ N(0, theta_k^2), one random intercept
per grouping factor (participants and clips, crossed). As in Bates, Maechler, Bolker and Walker
(2015), J. Stat. Softw. 67(1), and lme4's glmer (1.1-31):

* b = Lambda(theta) u with spherical u; for given parameters the conditional mode of u is found
  by penalised iteratively reweighted least squares (PIRLS): Newton steps on
  sum_i log p(y_i | eta_i) - |u|^2 / 2 with step halving, each solving
  M u_step = Lambda' Z' (y - mu) - u, M = Lambda' Z' W Z Lambda + I, W = mu (1 - mu);
* the Laplace deviance is sum of the deviance residuals + |u|^2 + log det M, at the mode;
* nAGQ = 0: beta is updated inside PIRLS together with u and only theta is optimised;
  nAGQ = 1 (glmer's default, the Laplace approximation): that fit is the start, then theta and
  beta are optimised together on the Laplace deviance, PIRLS finding u for each (theta, beta);
* standard errors: nAGQ = 1 as lme4 1.1-31's vcov.merMod, twice the beta block of the inverse
  of the Hessian of the deviance over (theta, beta) (central differences with Richardson
  extrapolation here, lme4 uses plain central differences); nAGQ = 0 from the PIRLS system
  (lme4's RX), as glmer does when it has no Hessian in beta. Wald z and p, 95% Wald CIs.

M is factored by eliminating the largest factor first: its block of M is diagonal (one random
intercept per level), so only the Schur complement of the other factors (clips) is factored,
densely; a fit costs O(rows + clips^2 x participants-per-clip) per PIRLS step, never the rows x
levels Z.

Before fitting, what the data cannot estimate is refused with a plain message (UserError):
the checks of analysis.lmm (fixed effects not estimable, too few levels, group means fitted
exactly by the fixed effects), and the logistic ones: an outcome that is not 0/1 or does not
vary, and complete separation by a two-valued predictor (every row at one of its values has
the same outcome, so the maximum-likelihood estimate is infinite). Pinned to R's lme4 in
tests/test_glmm.py (tests/reference/glmer_cases/).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import linalg, optimize, sparse, stats
from scipy.special import expit

from analysis import lmm
from analysis.lmm import INTERCEPT, RandomTerm, clip_counts, source_code
from analysis.tables import require_columns
from study.errors import Problem, UserError

__all__ = ["GlmmFit", "fit_glmer", "fit_crossed_logistic"]

SINGULAR_TOL = lmm.SINGULAR_TOL  # lme4's isSingular()
GRAD_TOL = lmm.GRAD_TOL  # lme4's check.conv.grad
PIRLS_TOL = 1e-10  # relative change of the penalised deviance at which PIRLS stops
PIRLS_MAXIT = 60


@dataclass
class GlmmFit:
    """fixed: term, estimate, se, z, p, ci_low, ci_high (log odds); random: group, variance, sd;
    deviance: the Laplace deviance (-2 log-likelihood; for 0/1 outcomes lme4's
    -2 logLik(fit)); converged and messages as analysis.lmm.LmmFit."""

    fixed: pd.DataFrame
    random: pd.DataFrame
    deviance: float
    loglik: float
    singular: bool
    nobs: int
    ngroups: dict
    converged: bool
    messages: list[str]
    formula: str
    nAGQ: int = 1
    max_grad: float = float("nan")
    evaluations: int = 0
    theta: np.ndarray = field(default=None, repr=False)
    vcov: np.ndarray = field(default=None, repr=False)

    def odds_ratio(self, term: str) -> dict:
        """exp(estimate) of one fixed term with its 95% Wald CI."""
        r = self.fixed.set_index("term").loc[term]
        return {"term": term, "odds_ratio": float(np.exp(r["estimate"])),
                "ci_low": float(np.exp(r["ci_low"])), "ci_high": float(np.exp(r["ci_high"])),
                "z": float(r["z"]), "p": float(r["p"])}


def _dev_resid(y, mu):
    """Bernoulli deviance residuals summed: -2 sum log p(y | mu)."""
    mu = np.clip(mu, 1e-300, 1 - 1e-16)
    return -2.0 * float(np.sum(np.where(y > 0.5, np.log(mu), np.log1p(-mu))))


class _Model:
    """The design: y, X, Z (sparse, columns of the largest factor first) and the per-level
    structure used to factor M."""

    def __init__(self, y, X, codes: list[np.ndarray], nlevs: list[int]):
        self.y, self.X = y, X
        self.n, self.p = X.shape
        order = sorted(range(len(codes)), key=lambda k: -nlevs[k])
        self.order = order  # term k of the model is stacked at position order.index(k)
        cols, offs = [], [0]
        for k in order:
            cols.append(codes[k] + offs[-1])
            offs.append(offs[-1] + nlevs[k])
        self.offs = offs
        self.q = offs[-1]
        self.q1 = nlevs[order[0]]
        rows = np.repeat(np.arange(self.n), len(codes))
        colv = np.column_stack(cols).ravel()
        self.Z = sparse.csr_matrix((np.ones(len(colv)), (rows, colv)), shape=(self.n, self.q))
        self.Zt = self.Z.T.tocsr()
        self.evaluations = 0

    def lam(self, theta):
        """Lambda's diagonal: theta of each term repeated over its levels (model order in)."""
        out = np.empty(self.q)
        for pos, k in enumerate(self.order):
            out[self.offs[pos]:self.offs[pos + 1]] = theta[k]
        return out

    def factor(self, w, lam):
        """Factor M = Lambda Z' W Z Lambda + I: (diagonal of the first block, the rest's
        Cholesky factor, the coupling block); log det M."""
        ZWZ = (self.Zt @ sparse.diags(w) @ self.Z).tocsr()
        q1 = self.q1
        d1 = np.asarray(ZWZ.diagonal()[:q1]) * lam[:q1] ** 2 + 1.0
        logdet = float(np.sum(np.log(d1)))
        if self.q == q1:
            return (d1, None, None), logdet
        l1, l2 = lam[:q1], lam[q1:]
        C = (ZWZ[q1:, :q1].toarray() * l2[:, None]) * l1[None, :]  # M21
        M22 = ZWZ[q1:, q1:].toarray() * l2[:, None] * l2[None, :]
        M22[np.diag_indices_from(M22)] += 1.0
        S = M22 - (C / d1[None, :]) @ C.T
        L = linalg.cholesky(S, lower=True, check_finite=False)
        logdet += 2.0 * float(np.sum(np.log(np.diag(L))))
        return (d1, L, C), logdet

    def solve(self, fac, r):
        """M^-1 r (r: (q,) or (q, m))."""
        d1, L, C = fac
        q1 = self.q1
        r = np.asarray(r, float)
        one = r.ndim == 1
        r = r.reshape(self.q, -1)
        if L is None:
            out = r / d1[:, None]
        else:
            r1, r2 = r[:q1], r[q1:]
            t1 = r1 / d1[:, None]
            x2 = linalg.cho_solve((L, True), r2 - C @ t1, check_finite=False)
            x1 = t1 - (C.T @ x2) / d1[:, None]
            out = np.vstack([x1, x2])
        return out.ravel() if one else out

    # ----------------------------------------------------------------------------- PIRLS

    def pirls(self, theta, beta, u0, update_beta: bool):
        """Conditional modes (and with update_beta, beta too) for theta: returns
        (laplace deviance, beta, u, factor, eta)."""
        self.evaluations += 1
        lam = self.lam(theta)
        X, y = self.X, self.y
        u = u0.copy()
        beta = beta.copy()

        def pdev(b, uu):
            eta = X @ b + self.Z @ (lam * uu)
            return _dev_resid(y, expit(eta)) + float(uu @ uu), eta

        old, eta = pdev(beta, u)
        for _ in range(PIRLS_MAXIT):
            mu = expit(eta)
            w = mu * (1 - mu)
            fac, _ = self.factor(w, lam)
            gu = lam * (self.Zt @ (y - mu)) - u
            if update_beta:
                # Newton step in (u, beta): block elimination through M
                ZWX = lam[:, None] * (self.Zt @ (w[:, None] * X))
                MiZWX = self.solve(fac, ZWX)
                gb = X.T @ (y - mu)
                Mi_gu = self.solve(fac, gu)
                S = X.T @ (w[:, None] * X) - ZWX.T @ MiZWX
                db = linalg.solve(S, gb - ZWX.T @ Mi_gu, assume_a="pos")
                du = Mi_gu - MiZWX @ db
            else:
                du, db = self.solve(fac, gu), np.zeros_like(beta)
            step = 1.0
            for _half in range(30):
                new, eta_new = pdev(beta + step * db, u + step * du)
                if new <= old + 1e-10 * abs(old):
                    break
                step /= 2
            beta, u, eta = beta + step * db, u + step * du, eta_new
            done = abs(old - new) < PIRLS_TOL * (abs(new) + 0.1)
            old = new
            if done:
                break
        mu = expit(eta)
        fac, logdet = self.factor(mu * (1 - mu), lam)
        return old + logdet, beta, u, fac, eta

    def rx_vcov(self, theta, fac, eta):
        """(X' W X - X' W Z Lambda M^-1 Lambda Z' W X)^-1: lme4's unsc() (sigma = 1)."""
        lam = self.lam(theta)
        mu = expit(eta)
        w = mu * (1 - mu)
        ZWX = lam[:, None] * (self.Zt @ (w[:, None] * self.X))
        S = self.X.T @ (w[:, None] * self.X) - ZWX.T @ self.solve(fac, ZWX)
        return np.linalg.inv(S)


def _check_binary(y: np.ndarray, dv: str):
    bad = ~np.isin(y, (0.0, 1.0))
    if bad.any():
        raise UserError(f"{dv} must be 0 or 1 in every row for a logistic model",
                        [Problem(f"column {dv}", f"values seen: {sorted(set(np.unique(y[bad]).tolist()))[:5]}")])
    if y.min() == y.max():
        raise UserError(f"{dv} is {int(y[0])} in every one of the {len(y)} rows, so there is nothing for a "
                        "logistic model to explain (the log odds would be infinite)")


def _check_separation(y, X, fixed):
    for i, name in enumerate(fixed, start=1):
        vals = np.unique(X[:, i])
        if len(vals) != 2:
            continue
        for v in vals:
            sel = X[:, i] == v
            if np.ptp(y[sel]) == 0:
                raise UserError(
                    f"complete separation: every row with {name} = {v:g} has the outcome "
                    f"{int(y[sel][0])} ({int(sel.sum())} rows), so its log odds ratio is infinite and "
                    "cannot be estimated by this model",
                    [Problem(f"fixed effect {name}", f"{name} = {v:g}: outcome always {int(y[sel][0])}")])


def fit_glmer(data: pd.DataFrame, dv: str, fixed: list[str], groups: list[str], nAGQ: int = 1) -> GlmmFit:
    """Fit dv ~ 1 + fixed + (1 | g) for each g in groups, binomial with logit link, as
    glmer(..., family = binomial, nAGQ = nAGQ). dv must be 0/1; rows missing any value are
    dropped. Raises UserError for designs the data cannot estimate (see the module text)."""
    if not isinstance(data, pd.DataFrame):
        raise UserError("the data for a mixed model must be a table (pandas DataFrame)")
    if nAGQ not in (0, 1):
        raise UserError(f"nAGQ must be 0 or 1 (Laplace) for crossed random effects; got {nAGQ!r}")
    fixed, groups = list(fixed), list(groups)
    if not groups:
        raise UserError("a mixed model needs at least one random-effects term")
    if len(set(groups)) != len(groups):
        raise UserError("each grouping factor may appear once", [Problem("groups", f"given: {groups}")])
    require_columns(data, [dv, *fixed, *groups], "columns missing from the data")
    problems: list[Problem] = []
    num = {c: lmm._numeric(data, c, problems, "outcome" if c == dv else "predictor")
           for c in dict.fromkeys([dv, *fixed])}
    if problems:
        raise UserError("the model needs numeric columns", problems)
    frame = pd.DataFrame(num, index=data.index)
    for g in groups:
        frame["__g_" + g] = data[g]
    frame = frame.dropna()
    frame = frame[np.isfinite(frame[list(num)]).all(axis=1)]
    n = len(frame)
    messages: list[str] = []
    if n < len(data):
        messages.append(f"{len(data) - n} of {len(data)} rows dropped for missing values")
    X = np.column_stack([np.ones(n)] + [frame[c].to_numpy(float) for c in fixed])
    if n <= X.shape[1]:
        raise UserError(f"too few complete rows ({n}) for {X.shape[1]} fixed effects")
    y = frame[dv].to_numpy(float)
    _check_binary(y, dv)
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise UserError("the fixed effects are not estimable: a predictor is constant or "
                        "a combination of the others", [Problem("fixed", f"terms {fixed}")])
    codes, nlevs, terms, ngroups = [], [], [], {}
    for g in groups:
        c, levels = pd.factorize(frame["__g_" + g], sort=True)
        if len(levels) < 2:
            raise UserError(f"grouping factor {g} needs at least 2 levels; it has {len(levels)}")
        if len(levels) >= n:
            raise UserError(f"too many random effects for {g}: {len(levels)} levels is not fewer than the "
                            f"{n} observations")
        codes.append(c.astype(np.int64))
        nlevs.append(len(levels))
        ngroups[g] = len(levels)
        terms.append(lmm._Term(RandomTerm(g), c.astype(np.int64), len(levels), np.ones((n, 1)), [INTERCEPT]))
    lmm._check_identifiable(X, fixed, terms, frame)
    _check_separation(y, X, fixed)
    formula = f"{dv} ~ " + " + ".join([*(fixed or ["1"]), *(f"(1 | {g})" for g in groups)])
    try:
        with lmm._single_blas():
            return _fit(_Model(y, X, codes, nlevs), fixed, groups, ngroups, formula, nAGQ, messages)
    except (np.linalg.LinAlgError, linalg.LinAlgError) as exc:
        raise UserError(f"the model {formula} could not be fitted to these data ({exc})") from exc


def _fit(m: _Model, fixed, groups, ngroups, formula, nAGQ, messages) -> GlmmFit:
    k, p = len(groups), m.p
    # start: the GLM without random effects, as glmer
    beta0 = np.zeros(p)
    u0 = np.zeros(m.q)
    state = {"u": u0, "beta": beta0}

    def dev0(theta):
        d, b, u, _, _ = m.pirls(theta, state["beta"], state["u"], update_beta=True)
        if np.isfinite(d):
            state["u"], state["beta"] = u, b
        return d

    theta0 = np.ones(k)
    res0 = optimize.minimize(dev0, theta0, method="L-BFGS-B", bounds=[(0, None)] * k,
                             jac=lambda th: lmm._central_grad(dev0, th, None, h=1e-6),
                             options={"ftol": 1e-14, "gtol": 1e-7, "maxiter": 500})
    theta = np.maximum(res0.x, 0.0)
    dev, beta, u, fac, eta = m.pirls(theta, state["beta"], state["u"], update_beta=True)
    ok = res0.status != 1
    if nAGQ == 1:
        u_state = {"u": u}

        def dev1(par):
            d, _, uu, _, _ = m.pirls(par[:k], par[k:], u_state["u"], update_beta=False)
            u_state["u"] = uu
            return d

        bounds = [(0, None)] * k + [(None, None)] * p
        x0 = np.concatenate([theta, beta])
        res1 = optimize.minimize(dev1, x0, method="L-BFGS-B", bounds=bounds,
                                 jac=lambda x: lmm._central_grad(dev1, x, None, h=1e-6),
                                 options={"ftol": 1e-15, "gtol": 1e-7, "maxiter": 1000})
        at_bound = res1.x[:k] < 1e-3
        if at_bound.any():  # restart off the boundary, as lmm does; the lower deviance wins
            x1 = res1.x.copy()
            x1[:k][at_bound] = 0.1
            res2 = optimize.minimize(dev1, x1, method="L-BFGS-B", bounds=bounds,
                                     jac=lambda x: lmm._central_grad(dev1, x, None, h=1e-6),
                                     options={"ftol": 1e-15, "gtol": 1e-7, "maxiter": 1000})
            if res2.fun < res1.fun - 1e-10:
                res1 = res2
        ok = res1.status != 1
        par = res1.x.copy()
        par[:k] = np.maximum(par[:k], 0.0)
        theta, beta = par[:k], par[k:]
        dev, _, u, fac, eta = m.pirls(theta, beta, u_state["u"], update_beta=False)

        def fun(x):
            return dev1(x), np.zeros(1)

        steps = 0.1 * np.abs(par) + 1e-3 * (np.abs(par) < 1e-2)
        H, _, _ = lmm._richardson(fun, par.copy(), steps, r=4)
        grad = lmm._central_grad(dev1, par, None, h=1e-6)
        try:
            Hinv = np.linalg.inv(H)
            vcov = 2.0 * Hinv[k:, k:]
            vcov = (vcov + vcov.T) / 2
            if np.linalg.eigvalsh(vcov).min() <= 0:
                raise np.linalg.LinAlgError("not positive definite")
        except np.linalg.LinAlgError:
            messages.append("the Hessian of the deviance is not positive definite; standard errors "
                            "from the PIRLS system instead (lme4 falls back the same way)")
            vcov = m.rx_vcov(theta, fac, eta)
        free = np.concatenate([theta > SINGULAR_TOL, np.ones(p, bool)])
        g = grad[free]
        try:
            R = np.linalg.cholesky(H[np.ix_(free, free)])
            scaled = np.abs(linalg.solve_triangular(R, g, lower=True))
        except np.linalg.LinAlgError:
            scaled = np.abs(g)
        max_grad = float(np.max(np.minimum(scaled, np.abs(g))))
    else:
        vcov = m.rx_vcov(theta, fac, eta)
        grad = lmm._central_grad(dev0, theta, None, h=1e-6)
        free = theta > SINGULAR_TOL
        max_grad = float(np.max(np.abs(grad[free]))) if free.any() else 0.0
    if not ok:
        messages.append("the optimiser ran out of iterations; the fit may not have converged")
    if max_grad > GRAD_TOL:
        messages.append(f"the fit may not have converged: max|grad| = {max_grad:.3g} (lme4's tolerance {GRAD_TOL})")
        ok = False
    singular_parts = [g for g, t in zip(groups, theta) if t < SINGULAR_TOL]
    if singular_parts:
        messages.append("singular fit (a variance is estimated as zero): " + ", ".join(singular_parts))
    names = [INTERCEPT, *fixed]
    se = np.sqrt(np.diag(vcov))
    z = beta / se
    q = stats.norm.ppf(0.975)
    fixed_df = pd.DataFrame({"term": names, "estimate": beta, "se": se, "z": z,
                             "p": 2 * stats.norm.sf(np.abs(z)), "ci_low": beta - q * se, "ci_high": beta + q * se})
    if np.any(np.abs(beta[1:]) > 10):
        messages.append("a log odds ratio above 10 in size: the data are close to separation, the "
                        "estimate and its SE are not trustworthy")
    random = pd.DataFrame({"group": groups, "variance": theta**2, "sd": theta.copy()})
    return GlmmFit(fixed=fixed_df, random=random, deviance=float(dev), loglik=-0.5 * float(dev),
                   singular=bool(singular_parts), nobs=m.n, ngroups=ngroups, converged=bool(ok),
                   messages=messages, formula=formula, nAGQ=nAGQ, max_grad=max_grad,
                   evaluations=m.evaluations, theta=theta.copy(), vcov=vcov)


def fit_crossed_logistic(data: pd.DataFrame, dv: str, participant: str = "participant_id",
                         stimulus: str = "stimulus_id", source: str = "source", nAGQ: int = 1) -> GlmmFit:
    """dv ~ x + (1 | participant) + (1 | stimulus), x = +0.5 human, -0.5 AI (analysis.lmm's
    coding: the coefficient is the human-minus-AI log odds ratio). Each source needs at least
    two clips (else the source effect cannot be told apart from the clip effect)."""
    if not isinstance(data, pd.DataFrame):
        raise UserError("the data for a mixed model must be a table (pandas DataFrame)")
    require_columns(data, (dv, participant, stimulus, source), "columns missing from the data")
    d = data.loc[data[source].notna(), [dv, participant, stimulus]].copy()
    d["x"] = source_code(data.loc[data[source].notna(), source])
    rated = d.dropna()
    if rated["x"].nunique() < 2:
        raise UserError(f"the {dv} data hold clips of only one source; the test compares human-made "
                        "with AI-generated clips")
    counts = clip_counts(rated.assign(_src=np.where(rated["x"] > 0, "human", "ai")), stimulus, "_src")
    if min(counts["human"], counts["ai"]) < 2:
        raise UserError(
            f"the source comparison of {dv} needs at least two clips of each source; these data have "
            f"{counts['human']} human-made and {counts['ai']} AI-generated clip(s). With one clip, the "
            "difference between the sources cannot be told apart from the difference between clips")
    return fit_glmer(d, dv, ["x"], [participant, stimulus], nAGQ=nAGQ)
