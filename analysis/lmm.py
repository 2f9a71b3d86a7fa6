"""Crossed linear mixed models: REML by penalised least squares, Satterthwaite df.

The estimation follows Bates, Maechler, Bolker and Walker (2015), "Fitting linear
mixed-effects models using lme4", J. Stat. Softw. 67(1): the random effects are
b = Lambda(theta) u with spherical u, and for each theta the penalised least-squares
problem is solved through a Cholesky factor L of Lambda' Z' Z Lambda + I; the REML
criterion is then profiled over the fixed effects and the residual variance and
minimised over theta under bounds (diagonal elements of each relative covariance
factor >= 0). Denominator degrees of freedom follow lmerTest 3.1 (Kuznetsova,
Brockhoff and Christensen 2017): the variance parameters are (theta, sigma), their
covariance is twice the inverse Hessian of the REML deviance, and the df of a contrast
L beta is 2 (L V L')^2 / (g' A g), with g the gradient of L V(theta, sigma) L'.

Why not statsmodels: its MixedLM handles crossed factors only as variance components of
one all-rows group, builds dense n x q design blocks (15-23 GB for one gradient call on
2,000 participants x 60 clips), cannot combine a correlated slope with a crossed clip
effect and has no Satterthwaite df. Why not the PyPI package `mixedlm`: young, and
slower than this (6.8 s against about 1 s of CPU for the large design).

Speed comes from never forming Z: the grouping factor with the most random-effect columns
(participants) gives a block-diagonal part of L with one small block per level; every
other term (clips, pairs) goes into one clip block, reached through a Schur complement.
All cross-products are accumulated once from the rows, so each evaluation of the
criterion costs O(levels), not O(rows). The clip block is formed from each participant's
few clips and factored densely or, when it is large and mostly empty, sparsely with a
fill-reducing ordering, or, when clips come in lists (the design falls into connected
components), block by block (analysis/lmm_sparse.py), so many clips cost what their
sparsity allows.

Identifiability is checked before fitting (_check_identifiable, and fit_crossed's clip
counts): what the data cannot estimate is refused with a plain message instead of a
number. After fitting, lme4's convergence checks (gradient, Hessian) are run and reported
(_diagnostics).
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import linalg, optimize, sparse, stats
from scipy.linalg.lapack import dpotrf as _dpotrf
from scipy.linalg.lapack import dtrtrs as _dtrtrs

from analysis.lmm_sparse import BlockLambda, ClipBlock
from analysis.tables import require_columns
from study.errors import Problem, UserError

try:  # optional: keeps BLAS single-threaded during a fit
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - fits still work, only slower under CPU contention
    threadpool_limits = None

__all__ = ["RandomTerm", "LmmFit", "Refitter", "fit_lmm", "fit_crossed", "source_code", "clip_counts"]

# lme4's isSingular() default: a diagonal element of a relative covariance factor below
# this is taken as zero (a variance of zero, or a correlation of +-1).
SINGULAR_TOL = 1e-4
# lmerTest treats Hessian eigenvalues below this as zero (Moore-Penrose inverse).
HESSIAN_TOL = 1e-8
# lme4's convergence checks (lmerControl: check.conv.grad, check.conv.hess).
GRAD_TOL = 2e-3
HESS_TOL = 1e-6
INTERCEPT = "(Intercept)"


def source_code(series) -> np.ndarray:
    """+0.5 for 'human', -0.5 for 'ai' (case and surrounding spaces ignored).

    With this coding the coefficient is the human-minus-AI difference and the intercept
    is the mean of the two sources.
    """
    s = pd.Series(series)
    norm = s.astype("string").str.strip().str.lower()
    bad = s[~norm.isin(["human", "ai"]) | norm.isna()]
    if len(bad):
        shown = sorted({repr(v) for v in bad.tolist()})[:5]
        raise UserError(
            "source must be 'human' or 'ai' in every row",
            [Problem(f"row {idx}", f"source is {v!r}") for idx, v in list(bad.items())[:10]]
            + ([Problem("source", f"values seen: {', '.join(shown)}")] if len(bad) > 10 else []),
        )
    return np.where(norm.to_numpy() == "human", 0.5, -0.5).astype(float)


@dataclass(frozen=True)
class RandomTerm:
    """One random-effects term: an intercept per level of `group`, plus optional slopes.

    correlated=True is lme4's (1 + x | g); correlated=False is (1 + x || g).
    """

    group: str
    slopes: tuple[str, ...] = ()
    correlated: bool = True

    def formula(self) -> str:
        bar = "|" if self.correlated or not self.slopes else "||"
        return f"({' + '.join(['1', *self.slopes])} {bar} {self.group})"


@dataclass
class LmmFit:
    """A fitted model. Tables have fixed column names; see fit_lmm for their meaning."""

    fixed: pd.DataFrame
    random: pd.DataFrame
    reml_criterion: float
    singular: bool
    nobs: int
    ngroups: dict
    converged: bool
    messages: list[str]
    formula: str
    model_used: str | None = None
    solver: str = "dense"
    # fit_crossed: clips per source, counting a clip under each source it was shown as
    clip_counts: dict | None = None
    theta: np.ndarray = field(default=None, repr=False)
    sigma: float = float("nan")
    vcov: np.ndarray = field(default=None, repr=False)
    # Satterthwaite ingredients: d vcov / d varpar (one matrix per parameter) and the
    # asymptotic covariance of the variance parameters (theta..., sigma).
    # Convergence diagnostics (see _diagnostics): lme4's max|grad|, and the smallest
    # eigenvalue and condition number of the Hessian of the profiled criterion.
    max_grad: float = float("nan")
    hessian_min_eigenvalue: float = float("nan")
    hessian_condition: float = float("nan")
    _jac: np.ndarray = field(default=None, repr=False)
    _vcov_varpar: np.ndarray = field(default=None, repr=False)
    # what Refitter needs to fit the same rows and terms to another outcome vector
    _design: tuple = field(default=None, repr=False)

    def contrast(self, L, name: str = "contrast") -> dict:
        """Estimate, SE, Satterthwaite df, t, p and 95% CI of L' beta (one row of weights)."""
        terms = list(self.fixed["term"])
        L = np.asarray(L, dtype=float).ravel()
        if L.shape != (len(terms),):
            raise UserError(
                f"contrast {name!r} needs one weight per fixed term",
                [Problem(f"contrast {name}", f"got {L.size} weights for terms {terms}")],
            )
        if not np.all(np.isfinite(L)) or not np.any(L):
            raise UserError(f"contrast {name!r} must have finite weights, not all zero")
        beta = self.fixed["estimate"].to_numpy()
        return {"term": name, **_satterthwaite(L, beta, self.vcov, self._jac, self._vcov_varpar)}


def _satterthwaite(L, beta, vcov, jac, vcov_varpar) -> dict:
    est = float(L @ beta)
    var = float(L @ vcov @ L)
    se = np.sqrt(var)
    grad = np.einsum("i,kij,j->k", L, jac, L)
    denom = float(grad @ vcov_varpar @ grad)
    df = 2.0 * var**2 / denom if denom > 0 else np.inf
    t = est / se
    p = float(2.0 * stats.t.sf(abs(t), df))
    q = stats.t.ppf(0.975, df)
    return {"estimate": est, "se": float(se), "df": float(df), "t": float(t), "p": p,
            "ci_low": float(est - q * se), "ci_high": float(est + q * se)}


# --------------------------------------------------------------------------------------
# model structure


@dataclass
class _Term:
    spec: RandomTerm
    codes: np.ndarray  # (n,) level index per row
    nlev: int
    W: np.ndarray  # (n, p) columns: intercept then slopes
    coefs: list[str]
    theta_slice: slice = field(default_factory=lambda: slice(0, 0))

    @property
    def p(self) -> int:
        return self.W.shape[1]

    @property
    def q(self) -> int:
        return self.nlev * self.p

    def n_theta(self) -> int:
        return self.p * (self.p + 1) // 2 if self.spec.correlated else self.p

    def tri(self):
        """Positions of theta in the factor T: lower triangle column by column, as lme4."""
        p = self.p
        if self.spec.correlated:
            return [(i, j) for j in range(p) for i in range(j, p)]
        return [(i, i) for i in range(p)]

    def factor(self, theta: np.ndarray) -> np.ndarray:
        idx = self.__dict__.get("_tri_idx")
        if idx is None:  # computed once: factor() runs at every evaluation of the criterion
            idx = self.__dict__["_tri_idx"] = tuple(np.array(v, dtype=np.intp) for v in zip(*self.tri()))
        T = np.zeros((self.p, self.p))
        T[idx] = theta[self.theta_slice]
        return T


def _other_columns(t: _Term, start: int, collapse: bool = True):
    """The clip-block columns of term t from column `start`: (layout, rows, cols, values) of
    its nonzeros in Z2.

    A level whose rows all have the same W row w (a clip shown under one source only, when
    the term has a source slope) contributes w'b_l to each of its rows, with
    w'b_l ~ N(0, sigma^2 |T'w|^2): one column of ones scaled by |T'w| gives the same
    marginal covariance Z Lambda Lambda' Z', hence the same criterion, as its p columns,
    and makes the clip block smaller (3,000 raters x 1,100 clips, 435 shown under both
    sources: 1,534 columns instead of 2,198). Levels where W varies keep their p columns
    (level-major, coefficient-minor) first; the collapsed ones follow, one column each.
    collapse=False keeps p columns for every level (for tests).
    """
    p = t.p
    same = np.full(t.nlev, collapse or p == 1)
    for a in range(1, p):
        same &= _constant_per_level(t.codes, t.nlev, t.W[:, a])
    full = np.flatnonzero(~same)
    coll = np.flatnonzero(same)
    rank = np.empty(t.nlev, dtype=np.int64)
    rank[full] = np.arange(len(full))
    rank[coll] = np.arange(len(coll))
    cstart = start + len(full) * p
    is_full = ~same[t.codes]
    rows, cols, vals = [], [], []
    fr = np.flatnonzero(is_full)
    for a in range(p):
        rows.append(fr)
        cols.append(start + rank[t.codes[fr]] * p + a)
        vals.append(t.W[fr, a])
    cr = np.flatnonzero(~is_full)
    rows.append(cr)
    cols.append(cstart + rank[t.codes[cr]])
    vals.append(np.ones(len(cr)))
    w = np.empty((len(coll), p))
    w[rank[t.codes[cr]]] = t.W[cr]
    layout = {"start": start, "nfull": len(full), "cstart": cstart, "stop": cstart + len(coll),
              "w": w}
    return layout, np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


class _Crossprod:
    """Everything the criterion needs, accumulated once from the rows.

    Term `big` is block diagonal (one p1 x p1 block per level); all other terms are stacked
    into a dense part of q2 columns.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, terms: list[_Term], solver: str = "auto",
                 collapse: bool = True):
        self.n, self.p = X.shape
        self.terms = terms
        self.big = max(range(len(terms)), key=lambda k: terms[k].q)
        b = terms[self.big]
        self.others = [t for k, t in enumerate(terms) if k != self.big]
        n1, p1 = self.n1, self.p1 = b.nlev, b.p
        XY = np.column_stack([X, y])
        self.XYtXY = XY.T @ XY
        g1, W1 = b.codes, b.W
        # Z1'Z1 per level, flattened row-major as (n1, p1*p1), and Z1'[X y] per level
        S11 = np.empty((n1, p1, p1))
        for a in range(p1):
            for c in range(a, p1):
                S11[:, a, c] = S11[:, c, a] = np.bincount(g1, W1[:, a] * W1[:, c], n1)
        self.S11 = S11.reshape(n1, p1 * p1)
        self.Z1XY = np.empty((n1, p1, self.p + 1))
        for a in range(p1):
            for c in range(self.p + 1):
                self.Z1XY[:, a, c] = np.bincount(g1, W1[:, a] * XY[:, c], n1)
        # The other terms' columns (see _other_columns): Z2 as a sparse n x q2 matrix
        self.layout, zr, zc, zv, q2 = [], [], [], [], 0
        for t in self.others:
            lay, rows, cols, vals = _other_columns(t, q2, collapse)
            self.layout.append(lay)
            zr.append(rows), zc.append(cols), zv.append(vals)
            q2 = lay["stop"]
        self.q2 = q2
        self.scaled_ranges = [(lay["cstart"], lay["stop"]) for lay in self.layout]
        self.Z2 = None
        if q2:
            zr, zc, zv = np.concatenate(zr), np.concatenate(zc), np.concatenate(zv)
            self.Z2 = sparse.csc_matrix((zv, (zr, zc)), shape=(self.n, q2))
            self.Z2XY = np.asarray(self.Z2.T @ XY)
            S22 = (self.Z2.T @ self.Z2).tocsr()
            # Z2'Z1 with one structure for all participant coefficients: one key per
            # (clip-block column, participant)
            keys = zc.astype(np.int64) * n1 + g1[zr]
            allvals = zv[:, None] * W1[zr]
        else:
            self.Z2XY = np.zeros((0, self.p + 1))
        self.block = None
        if self.q2:
            ukeys, inverse = np.unique(keys, return_inverse=True)
            data = np.stack([np.bincount(inverse.ravel(), allvals[:, c], len(ukeys))
                             for c in range(p1)])
            # B_j (see _blocks) depends on level j only through Z_j'Z_j, which is the same
            # for every participant who rated the same number of clips of each source; the
            # block may precompute the Schur complement per pattern.
            _, first, inv = np.unique(self.S11, axis=0, return_index=True, return_inverse=True)
            self.block = ClipBlock(self.q2, n1, ukeys // n1, ukeys % n1, data, S22,
                                   (first, inv.ravel()), solver)
        self.S21 = self.block.S21 if self.block else []
        self.S21_all = None
        if self.q2 * n1 * p1 <= 250_000:
            # small: dense products cost less than scipy.sparse's per-call overhead
            self.S21 = [m.toarray() for m in self.S21]
        elif self.q2:
            # all coefficients in one matrix, column j * p1 + c, so that sum_c S21_c BZ_c is
            # one product with BZ as it lies in memory
            C = [m.tocoo() for m in self.S21]
            self.S21_all = sparse.csr_matrix(
                (np.concatenate([m.data for m in C]),
                 (np.concatenate([m.row for m in C]),
                  np.concatenate([m.col.astype(np.int64) * p1 + c for c, m in enumerate(C)]))),
                shape=(self.q2, n1 * p1))
        self.diag_lambda = all(lay["nfull"] == 0 for lay in self.layout)
        self.X = X
        self._part_cache = None  # see _participant_part

    def with_y(self, y: np.ndarray) -> _Crossprod:
        """The same rows and terms with another outcome vector: only the products with y are
        recomputed; the clip block (its structure, patterns and ordering) is shared."""
        new = copy.copy(self)
        new._part_cache = None  # it holds products with the old y
        p, b = self.p, self.terms[self.big]
        new.XYtXY = self.XYtXY.copy()
        new.XYtXY[:p, p] = new.XYtXY[p, :p] = self.X.T @ y
        new.XYtXY[p, p] = y @ y
        new.Z1XY = self.Z1XY.copy()
        for a in range(self.p1):
            new.Z1XY[:, a, p] = np.bincount(b.codes, b.W[:, a] * y, self.n1)
        new.Z2XY = self.Z2XY.copy()
        if self.q2:
            new.Z2XY[:, p] = self.Z2.T @ y
        return new

    def lambda2(self, theta: np.ndarray):
        """Lambda2: a vector when it is diagonal (every column a scaled single column),
        else a BlockLambda (p x p blocks of the levels kept whole, a scale for the rest)."""
        scales, blocks = [], []
        for t, lay in zip(self.others, self.layout):
            T = t.factor(theta)
            if lay["nfull"]:
                blocks.append((lay["start"], lay["nfull"], T))
            # a collapsed level's column carries w'b, b ~ N(0, sigma^2 T T'): scale |T'w|
            scales.append(np.sqrt(np.sum((lay["w"] @ T) ** 2, axis=1)))
        s = np.concatenate(scales) if scales else np.zeros(0)
        if self.diag_lambda:
            return s
        return BlockLambda(self.q2, blocks, self.scaled_ranges, s)

    def _blocks(self, T1: np.ndarray):
        """Per level j: log det(A_j) and B_j = T1 A_j^-1 T1', with A_j = T1' Z_j'Z_j T1 + I.

        B_j = Lambda1 (L11 L11')^-1 Lambda1' restricted to level j, which is all the
        block-diagonal part contributes to the Schur complement and the right-hand sides.
        """
        n1, p1 = self.n1, self.p1
        # kron(T, T): vec(T' S T) = vec(S) @ kron(T, T), row-major vec (np.kron's own
        # overhead was a tenth of an evaluation on small designs)
        K = (T1[:, None, :, None] * T1[None, :, None, :]).reshape(p1 * p1, p1 * p1)
        A = self.S11 @ K
        if p1 == 1:
            a = A[:, 0] + 1.0
            return np.log(a).sum(), (K[0, 0] / a).reshape(n1, 1, 1)
        if p1 == 2:
            a, b, c, d = A[:, 0] + 1.0, A[:, 1], A[:, 2], A[:, 3] + 1.0
            det = a * d - b * c
            Ainv = np.empty((n1, 4))
            Ainv[:, 0], Ainv[:, 1], Ainv[:, 2], Ainv[:, 3] = d, -b, -c, a
            Ainv /= det[:, None]
            logdet = np.log(det).sum()
        else:
            A3 = A.reshape(n1, p1, p1) + np.eye(p1)
            logdet = np.linalg.slogdet(A3)[1].sum()
            Ainv = np.linalg.inv(A3).reshape(n1, p1 * p1)
        return logdet, (Ainv @ K.T).reshape(n1, p1, p1)

    def _participant_part(self, T1: np.ndarray):
        """What depends on theta only through the participant factor T1: log det of the
        participant blocks, B, their part of R'R, the clip block's right-hand sides and, for
        the "blocks" solver (which does not overwrite it), the Schur complement. The last
        T1's are kept: the Satterthwaite Hessian (and the optimiser's coordinate steps) vary
        one parameter at a time, and a step in a clip parameter leaves all this unchanged."""
        key = T1.tobytes()
        cached = self._part_cache  # read once: another thread may replace it meanwhile
        if cached is not None and cached[0] == key:
            return cached[1]
        p, p1, q2 = self.p, self.p1, self.q2
        ld, B = self._blocks(T1)
        # B Z1'[X y], level by level
        BZ = np.matmul(B, self.Z1XY)  # (n1, p1, p1) @ (n1, p1, p + 1), level by level
        RtR = self.Z1XY.reshape(-1, p + 1).T @ BZ.reshape(-1, p + 1)
        rhs = A = None
        if q2:
            if self.S21_all is not None:
                SBZ = self.S21_all @ BZ.reshape(-1, p + 1)
            else:
                SBZ = np.zeros((q2, p + 1))
                for c in range(p1):
                    SBZ += self.S21[c] @ BZ[:, c, :]
            rhs = self.Z2XY - SBZ
            if self.block.solver == "blocks":
                A = self.block.schur(B)
        out = (ld, B, RtR, rhs, A)
        self._part_cache = (key, out)
        return out

    def solve(self, theta: np.ndarray):
        """Cholesky pieces for one theta: (log|L|^2, log|RX|^2, r^2, beta, unscaled vcov)."""
        p, q2 = self.p, self.q2
        ld, B, RtR, rhs, A = self._participant_part(self.terms[self.big].factor(theta))
        if q2:
            # the Schur complement of the block-diagonal part, formed and factored by the
            # clip block (dense, sparse or block by block)
            ld22, RR = self.block.factor_solve(self.block.schur(B) if A is None else A,
                                               self.lambda2(theta), rhs)
            ld = ld + ld22
            RtR = RtR + RR
        C, info = _dpotrf(self.XYtXY - RtR, lower=1, clean=1, overwrite_a=1)
        if info:
            raise np.linalg.LinAlgError(f"the fixed-effects system is not positive definite (dpotrf {info})")
        RXt = C[:p, :p]
        ldx = 2.0 * np.log(np.diag(RXt)).sum()
        r2 = C[p, p] ** 2
        RXinv, info = _dtrtrs(RXt, np.eye(p), lower=1)
        if info:
            raise np.linalg.LinAlgError("the fixed-effects factor is singular")
        beta = RXinv.T @ C[p, :p]
        unsc = RXinv.T @ RXinv  # (X' V^-1 X)^-1 / sigma^2
        return ld, ldx, r2, beta, unsc


def _profiled(cp: _Crossprod, theta: np.ndarray, reml: bool) -> float:
    try:
        ld, ldx, r2, _, _ = cp.solve(theta)
    except np.linalg.LinAlgError:
        return np.inf
    if reml:
        nu = cp.n - cp.p
        return ld + ldx + nu * (1.0 + np.log(2.0 * np.pi * r2 / nu))
    return ld + cp.n * (1.0 + np.log(2.0 * np.pi * r2 / cp.n))


# --------------------------------------------------------------------------------------
# optimisation


def _central_grad(f, x, lower, h=1e-5):
    g = np.empty_like(x)
    for i in range(len(x)):
        hi = h * max(1.0, abs(x[i]))
        xp, xm = x.copy(), x.copy()
        xp[i] += hi
        xm[i] -= hi
        # The criterion is defined on both sides of the bound (only Lambda Lambda' matters),
        # so a central difference across it is still accurate.
        g[i] = (f(xp) - f(xm)) / (2 * hi)
    return g


def _optimise(cp: _Crossprod, start, lower, reml: bool, forward: bool = False,
              final_radius: float = 1e-7):
    """forward: L-BFGS-B with forward- instead of central-difference gradients (Refitter:
    about half the evaluations; the criterion at the optimum agreed within 1e-7 relative).
    final_radius: COBYQA's last trust-region radius (a start for another fit needs less)."""
    f = lambda th: _profiled(cp, th, reml)  # noqa: E731
    bounds = [(lo, None) for lo in lower]
    # Two bounded optimisers, chosen by the cost of one evaluation (deterministically, by
    # problem size). COBYQA (Powell's quadratic-model method, successor of the BOBYQA that
    # lme4 uses) needs ~100 evaluations but has ~8 ms of overhead per step; L-BFGS-B with
    # central-difference gradients needs 3-6x more evaluations at almost no overhead.
    # Both reach the same optimum (criterion within 1e-7 on the reference data).
    big = cp.n1 * cp.p1 * (cp.q2 + 1) > 50_000

    def run(x0):
        if big:
            # The first trust region as minqa's bobyqa (R) sets rhobeg: 0.2 max|theta|,
            # at most 0.95. scipy's default of 1 spends most of the evaluations getting
            # back from the first steps (3,000 raters x 1,100 clips with by-clip slopes:
            # 266 evaluations with 1, 150 with 0.2, the same optimum within 1e-8).
            radius = min(0.95, 0.2 * max(1e-3, float(np.max(np.abs(x0)))))
            res = optimize.minimize(f, x0, method="COBYQA", bounds=bounds,
                                    options={"final_tr_radius": final_radius, "maxfev": 5000,
                                             "initial_tr_radius": radius})
            return res, bool(res.success)
        # gtol near the noise floor of the central-difference gradient: tighter settings
        # only make the line search fail repeatedly, at many evaluations each time.
        res = optimize.minimize(
            f, x0, jac=None if forward else (lambda th: _central_grad(f, th, lower)), method="L-BFGS-B",
            bounds=bounds, options={"ftol": 1e-13, "gtol": 1e-5, "maxiter": 1000},
        )
        # "abnormal termination in line search" happens once a criterion this flat can no
        # longer be improved; only running out of iterations counts as a failure, and the
        # gradient is checked by the caller as lme4 does.
        return res, res.status != 1

    best, ok = run(start)
    # A fit that ends on the boundary is restarted from a point pushed off it, as lme4
    # advises for boundary fits; the lower criterion wins.
    at_bound = (lower == 0) & (best.x < 1e-3)
    if at_bound.any():
        bumped = best.x.copy()
        bumped[at_bound] = 0.1
        res, ok2 = run(bumped)
        if res.fun < best.fun - 1e-10:
            best, ok = res, ok2
    x = best.x.copy()
    x[(lower == 0) & (x < 0)] = 0.0
    return x, f(x), ok, best


# --------------------------------------------------------------------------------------
# finite differences for the Satterthwaite ingredients


def _richardson(fun, x, steps, r=4, workers: int = 1):
    """Central-difference gradient and Hessian of a scalar fun with Richardson extrapolation
    (4 halvings, like numDeriv's defaults used by lmerTest), plus the derivative of a
    vector side-output. fun returns (scalar, vector); returns (Hessian, d vector, gradient).

    The mixed second derivatives use numDeriv's genD stencil: at each step, f at
    x + h_i e_i + h_j e_j and at x - h_i e_i - h_j e_j, less the diagonal terms at the same
    step, so each pair costs two evaluations per step instead of the four of the
    four-corner stencil (each pair of points is even in h, so the extrapolation is the
    same). Every point is known in advance, so with workers > 1 they are evaluated by that
    many threads (fun must be safe to call concurrently; numpy and LAPACK release the GIL).
    """
    k = len(x)
    hs = np.array([[steps[i] / 2**s for s in range(r)] for i in range(k)])
    points = [x.copy()]
    for i in range(k):
        for s in range(r):
            for sign in (1, -1):
                xx = x.copy()
                xx[i] += sign * hs[i, s]
                points.append(xx)
    for i in range(k):
        for j in range(i + 1, k):
            for s in range(r):
                for sign in (1, -1):
                    xx = x.copy()
                    xx[i] += sign * hs[i, s]
                    xx[j] += sign * hs[j, s]
                    points.append(xx)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            values = list(pool.map(fun, points))
    else:
        values = [fun(pt) for pt in points]
    f0 = values[0][0]
    it = iter(values[1:])

    def extrap(vals):
        vals = list(vals)
        for m in range(1, len(vals)):
            vals = [(vals[i + 1] * 4**m - vals[i]) / (4**m - 1) for i in range(len(vals) - 1)]
        return vals[0]

    H = np.empty((k, k))
    dvec = [None] * k
    grad = np.empty(k)
    # f(x + h e_i) + f(x - h e_i) - 2 f(x) at each step
    second = np.empty((k, r))
    for i in range(k):
        d1, dv = [], []
        for s in range(r):
            (fp, vp), (fm, vm) = next(it), next(it)
            h = hs[i, s]
            second[i, s] = fp + fm - 2 * f0
            d1.append((fp - fm) / (2 * h))
            dv.append((vp - vm) / (2 * h))
        H[i, i] = extrap(second[i] / hs[i] ** 2)
        grad[i] = extrap(d1)
        dvec[i] = extrap(dv)
    for i in range(k):
        for j in range(i + 1, k):
            dij = []
            for s in range(r):
                both = next(it)[0] + next(it)[0] - 2 * f0
                dij.append((both - second[i, s] - second[j, s]) / (2 * hs[i, s] * hs[j, s]))
            H[i, j] = H[j, i] = extrap(dij)
    return H, np.array(dvec), grad


def _varpar_pieces(cp: _Crossprod, theta: np.ndarray, sigma: float, reml: bool, richardson: int = 4):
    """Hessian of the (theta, sigma) deviance, d vcov(beta) / d(theta, sigma), and the
    gradient over theta of the profiled criterion (at sigma = sigma hat, the deviance's
    theta-gradient at fixed sigma is the profiled criterion's: sigma hat minimises it)."""
    p, n = cp.p, cp.n
    nu = n - p if reml else n
    s2 = sigma**2

    def fun(th):
        ld, ldx, r2, _, unsc = cp.solve(th)
        a = ld + (ldx if reml else 0.0)
        # deviance at fixed sigma, up to a theta-free constant; side output: r2 and vcov
        return a + r2 / s2, np.concatenate([[r2], s2 * unsc.ravel()])

    _, _, r2, _, unsc = cp.solve(theta)
    steps = 0.1 * np.abs(theta) + 1e-4 * (np.abs(theta) < 1e-4)
    Hth, D, grad = _richardson(fun, theta.copy(), steps, r=richardson, workers=_threads(cp))
    k = len(theta)
    H = np.empty((k + 1, k + 1))
    H[:k, :k] = Hth
    # sigma enters the deviance in closed form: d/dsigma of r2/s2 + nu log(2 pi s2)
    H[:k, k] = H[k, :k] = -2.0 * D[:, 0] / sigma**3
    H[k, k] = 6.0 * r2 / sigma**4 - 2.0 * nu / s2
    jac = np.empty((k + 1, p, p))
    jac[:k] = D[:, 1:].reshape(k, p, p)
    jac[k] = 2.0 * sigma * unsc
    return H, jac, grad


def _large(cp: _Crossprod) -> bool:
    """An evaluation factors a clip block of 1,000 columns or more densely or sparsely (tens
    of ms each)."""
    return cp.block is not None and cp.block.solver in ("dense", "sparse") and cp.q2 >= 1000


def _threads(cp: _Crossprod) -> int:
    """Threads for a fit whose evaluations factor a clip block of 1,000 columns or more
    densely or sparsely (tens of ms each): one per core, at most 4; else 1 (threads cost
    more than they save on small blocks). The Satterthwaite Hessian's points are evaluated
    that many at a time (3,000 raters x 1,100 clips with by-clip slopes: 170 evaluations),
    and during the optimisation, which evaluates one point at a time, a dense clip block's
    Cholesky may use that many BLAS threads. The Hessian's points and arithmetic do not
    depend on the number; a multithreaded Cholesky may round differently in the last bits.
    KULESHOV_FIT_THREADS (study/config.py) sets the number; 1 is one thread throughout."""
    from study.config import setting

    chosen = int(setting("KULESHOV_FIT_THREADS"))
    if chosen >= 1:
        return chosen
    if not _large(cp):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def _pinv_cov(H: np.ndarray):
    vals, vecs = np.linalg.eigh(H)
    pos = vals > HESSIAN_TOL
    inv = (vecs[:, pos] / vals[pos]) @ vecs[:, pos].T
    return 2.0 * inv, int((vals < -HESSIAN_TOL).sum()), int((np.abs(vals) <= HESSIAN_TOL).sum())


# --------------------------------------------------------------------------------------
# the same model on many outcome vectors (parametric bootstrap, power simulation)


class Refitter:
    """The rows, fixed effects and random terms of a fitted model, fitted again to other
    outcome vectors on the same rows.

    The cross-products that do not involve the outcome, the clip block's structure and its
    fill-reducing ordering are built once (the fit's); each refit recomputes only the
    products with y (O(rows)) and runs the optimiser, started from the original estimates.
    `estimates` skips the Satterthwaite and convergence computations (for a bootstrap, which
    needs only the estimates); `fit` returns a full LmmFit like fit_lmm's on these rows with
    this outcome. Both optimise with forward-difference gradients (about half the
    evaluations of fit_lmm's central ones; set .forward = False for fit_lmm's optimiser):
    the optimum agrees with fit_lmm's to the optimiser's tolerance (tests/test_power.py and
    tests/test_stats.py compare them).
    """

    def __init__(self, fit: LmmFit):
        if fit._design is None:
            raise ValueError("this fit does not carry its design (fitted by an older version?)")
        self.X, self.terms, self.fixed, self.formula, self.reml, self.ngroups, self.cp = fit._design
        self.n = self.X.shape[0]
        self.beta = fit.fixed["estimate"].to_numpy(float)
        self.theta = np.asarray(fit.theta, float)
        self.sigma = float(fit.sigma)
        self.lower, _ = _bounds_and_start(self.terms)
        # forward-difference gradients in the optimiser (see _optimise); False: exactly fit_lmm's
        self.forward = True

    def simulate(self, rng: np.random.Generator, beta=None, theta=None, sigma=None) -> np.ndarray:
        """One outcome vector drawn from the model (by default the fitted one): X beta plus,
        for every term, each level's coefficients b ~ N(0, sigma^2 T T') (b = sigma T u, u
        standard normal), plus N(0, sigma^2) residuals. Rows in the fit's order."""
        beta = self.beta if beta is None else np.asarray(beta, float)
        theta = self.theta if theta is None else np.asarray(theta, float)
        sigma = self.sigma if sigma is None else float(sigma)
        y = self.X @ beta + sigma * rng.standard_normal(self.n)
        for t in self.terms:
            b = sigma * rng.standard_normal((t.nlev, t.p)) @ t.factor(theta).T
            y += np.einsum("ij,ij->i", t.W, b[t.codes])
        return y

    def estimates(self, y: np.ndarray, start=None):
        """(beta, theta, sigma) of the model fitted to y; LinAlgError if it cannot be."""
        cp = self.cp.with_y(np.asarray(y, float))
        start = self.theta if start is None else start
        # scipy's forward differences subtract an infinite criterion (a step where the system
        # is not positive definite) from itself: a nan it handles, but numpy would warn
        with _single_blas(), np.errstate(invalid="ignore"):
            theta, crit, _, _ = _optimise(cp, np.array(start, float), self.lower, self.reml, forward=True)
            if not np.isfinite(crit):
                raise np.linalg.LinAlgError("the criterion is not finite at the optimum")
            _, _, r2, beta, _ = cp.solve(theta)
        nu = self.n - self.X.shape[1] if self.reml else self.n
        return beta, theta, float(np.sqrt(r2 / nu))

    def random_table(self, theta, sigma) -> pd.DataFrame:
        """The variance components for (theta, sigma), as LmmFit.random."""
        return _random_table(self.terms, np.asarray(theta, float), float(sigma))

    def fit(self, y: np.ndarray, start=None, simplify_if_singular: bool = False,
            richardson: int = 4) -> LmmFit | None:
        """The full fit (tables, Satterthwaite df, diagnostics) of the model to y.

        simplify_if_singular: return None, before the Satterthwaite and convergence
        computations, when the fit is singular (a caller applying the singular-fit rule
        would drop this model anyway). richardson: extrapolation steps of the Hessian
        behind the Satterthwaite df (4 as fit_lmm; 2 halves its cost and moved df by about
        1e-5 relative in the power tests)."""
        y = np.asarray(y, float)
        cp = self.cp.with_y(y)
        start = self.theta if start is None else np.array(start, float)
        with _single_blas():
            with np.errstate(invalid="ignore"):  # see estimates
                theta, crit, success, _ = _optimise(cp, start, self.lower, self.reml, forward=self.forward)
            if simplify_if_singular and _singular_parts(self.terms, theta):
                return None
            return _fit(self.X, y, self.terms, self.fixed, self.formula, self.reml, self.ngroups, [],
                        "auto", cp=cp, optimum=(theta, crit, success), richardson=richardson)


def _blas_threads(n: int):
    """BLAS held to n threads for the duration (nothing when n is 1: the caller holds it at 1)."""
    if n <= 1 or threadpool_limits is None:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def _single_blas():
    """Single-threaded BLAS for the duration (see fit_lmm), or nothing without threadpoolctl."""
    if threadpool_limits is None:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


# --------------------------------------------------------------------------------------
# data checks and the public entry points


def _numeric(data: pd.DataFrame, col: str, problems: list[Problem], role: str):
    s = data[col]
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
        conv = pd.to_numeric(s, errors="coerce")
        bad = s.notna() & conv.isna()
        if bad.any():
            first = s[bad].index[0]
            problems.append(Problem(f"column {col} ({role})",
                                    f"must be numeric; row {first} has {s[first]!r}"))
        return conv.astype(float)
    return s.astype(float)


def fit_lmm(data: pd.DataFrame, dv: str, fixed: list[str], random: list[RandomTerm],
            reml: bool = True, solver: str = "auto", stop_if_singular: bool = False) -> LmmFit:
    """Fit dv ~ 1 + fixed + random terms by REML (or ML), with Satterthwaite df.

    fixed: numeric columns (an intercept is added). solver: how the clip block is factored,
    "dense", "sparse" or "auto" (by size and sparsity; see analysis/lmm_sparse.py); the
    numbers do not depend on it beyond rounding. Rows missing the outcome, a predictor,
    a slope or a grouping value are dropped. Returns an LmmFit whose `fixed` table has
    term, estimate, se, df, t, p, ci_low, ci_high (95% CI on Satterthwaite df) and whose
    `random` table has group, var1, var2, variance_or_cov, sd_or_cor as lme4's
    as.data.frame(VarCorr()) (uncorrelated slopes appear as group "g.1", "g.2", ...).
    stop_if_singular: a singular fit is returned as soon as it is known, without the
    Satterthwaite df (NaN), p-values and convergence checks, for a caller that will simplify
    the model anyway (fit_crossed's singular-fit rule): on large designs those take as many
    evaluations of the criterion as the fit itself.
    """
    if not isinstance(data, pd.DataFrame):
        raise UserError("the data for a mixed model must be a table (pandas DataFrame)")
    fixed = list(fixed)
    random = list(random)
    if not random:
        raise UserError("a mixed model needs at least one random-effects term")
    groups = [t.group for t in random]
    if len(set(groups)) != len(groups):
        raise UserError("each grouping factor may appear in one random term only; "
                        "use correlated=False for (1 + x || g)",
                        [Problem("random", f"groups given: {groups}")])
    slope_cols = [s for t in random for s in t.slopes]
    require_columns(data, [dv, *fixed, *slope_cols, *groups], "columns missing from the data")
    problems: list[Problem] = []
    num = {}
    for c in dict.fromkeys([dv, *fixed, *slope_cols]):
        role = "outcome" if c == dv else "predictor"
        num[c] = _numeric(data, c, problems, role)
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
    y = frame[dv].to_numpy(float)
    X = np.column_stack([np.ones(n)] + [frame[c].to_numpy(float) for c in fixed])
    if n <= X.shape[1]:
        raise UserError(f"too few complete rows ({n}) for {X.shape[1]} fixed effects")
    if np.ptp(y) == 0:
        raise UserError(f"{dv} has no variation: every one of the {n} values is {y[0]:g}, "
                        "so there is nothing for a mixed model to explain")
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise UserError("the fixed effects are not estimable: a predictor is constant or "
                        "a combination of the others", [Problem("fixed", f"terms {fixed}")])

    terms: list[_Term] = []
    pos = 0
    ngroups = {}
    for spec in random:
        codes, levels = pd.factorize(frame["__g_" + spec.group], sort=True)
        nlev = len(levels)
        W = np.column_stack([np.ones(n)] + [frame[s].to_numpy(float) for s in spec.slopes])
        if nlev < 2:
            raise UserError(f"grouping factor {spec.group} needs at least 2 levels; it has {nlev}")
        if nlev * W.shape[1] >= n:
            raise UserError(
                f"too many random effects for {spec.group}: {nlev} levels x {W.shape[1]} "
                f"coefficients is not fewer than the {n} observations")
        t = _Term(spec, codes.astype(np.int64), nlev, W, [INTERCEPT, *spec.slopes])
        t.theta_slice = slice(pos, pos + t.n_theta())
        pos += t.n_theta()
        terms.append(t)
        ngroups[spec.group] = nlev

    formula = f"{dv} ~ " + " + ".join([*(fixed or ["1"]), *(t.formula() for t in random)])
    _check_identifiable(X, fixed, terms, frame)
    try:
        if threadpool_limits is None:
            return _fit(X, y, terms, fixed, formula, reml, ngroups, messages, solver,
                        stop_if_singular=stop_if_singular)
        # The matrices here are small (tens to a few thousand columns); OpenBLAS threads cost
        # far more in start-up and contention than they save, most of all on a shared 2-core
        # machine, where they made each evaluation 5x slower.
        with threadpool_limits(limits=1, user_api="blas"):
            return _fit(X, y, terms, fixed, formula, reml, ngroups, messages, solver,
                        stop_if_singular=stop_if_singular)
    except np.linalg.LinAlgError as exc:  # degenerate data the checks above did not foresee
        raise UserError(f"the model {formula} could not be fitted to these data ({exc})") from exc


def _constant_per_level(codes: np.ndarray, nlev: int, v: np.ndarray) -> np.ndarray:
    """For each level, whether v takes one value within it."""
    lo = np.full(nlev, np.inf)
    hi = np.full(nlev, -np.inf)
    np.minimum.at(lo, codes, v)
    np.maximum.at(hi, codes, v)
    return hi - lo <= 1e-12 * max(1.0, float(np.max(np.abs(v))))


def _within_level_constant(codes: np.ndarray, nlev: int, v: np.ndarray) -> bool:
    """True when v takes one value within every level."""
    return bool(np.all(_constant_per_level(codes, nlev, v)))


def _check_identifiable(X, fixed, terms, frame) -> None:
    """Refuse, before fitting, random terms the data cannot estimate.

    * A random slope whose variable never varies within a level of its group: its
      by-level deviations are multiples of the random intercept's (x is a between-level
      variable there), so the slope variance has no information.
    * A random intercept whose group means are fitted exactly by the fixed effects: every
      fixed predictor is constant within the levels and there are no more levels than
      fixed-effect columns (e.g. a clip column that holds the source: two levels, intercept
      plus source effect), so the group's variance has zero degrees of freedom.
    """
    for t in terms:
        for s in t.spec.slopes:
            if _within_level_constant(t.codes, t.nlev, frame[s].to_numpy(float)):
                raise UserError(
                    f"the random slope of {s} by {t.spec.group} cannot be estimated: {s} "
                    f"never varies within a level of {t.spec.group} (each level has one "
                    f"value), so use a random intercept only, (1 | {t.spec.group})",
                    [Problem(t.spec.formula(), f"{s} is constant within every "
                             f"{t.spec.group}")])
        if t.nlev <= X.shape[1] and all(
                _within_level_constant(t.codes, t.nlev, X[:, i]) for i in range(1, X.shape[1])):
            raise UserError(
                f"the variance of {t.spec.group} cannot be estimated: it has only {t.nlev} "
                f"levels and the fixed effects ({', '.join(fixed) or 'intercept'}) take one "
                f"value per level, so the fixed effects fit the level means exactly",
                [Problem(t.spec.formula(), f"{t.nlev} levels, {X.shape[1]} fixed-effect "
                         "columns constant within them")])


def _bounds_and_start(terms):
    lower = np.concatenate([[0.0 if i == j else -np.inf for i, j in t.tri()] for t in terms])
    start = np.concatenate([[1.0 if i == j else 0.0 for i, j in t.tri()] for t in terms])
    return lower, start


def _singular_parts(terms, theta) -> list[str]:
    """The random-effect coefficients whose factor diagonal is zero (lme4's isSingular)."""
    out = []
    for t in terms:
        T = t.factor(theta)
        out.extend(f"{t.spec.group} {t.coefs[i]}" for i in range(t.p) if T[i, i] < SINGULAR_TOL)
    return out


def _fit(X, y, terms, fixed, formula, reml, ngroups, messages, solver, cp=None, start=None,
         optimum=None, richardson: int | None = None, stop_if_singular: bool = False) -> LmmFit:
    """optimum: (theta, criterion, success) of an optimisation already run on cp (Refitter).
    richardson: extrapolation steps of the numerical Hessian; by default 4 (numDeriv's
    default, as lmerTest) and 2 when each evaluation factors a large clip block (_large):
    on the 24 fixed effects of the lme4 reference cases the df then differ from lmerTest's
    by at most 1.30e-4 relative, against 1.29e-4 with 4 steps, at half the evaluations."""
    n = len(y)
    cp = _Crossprod(X, y, terms, solver) if cp is None else cp
    lower, default_start = _bounds_and_start(terms)
    if optimum is None:
        # one evaluation at a time: a large dense clip block's Cholesky may use the cores
        blas = _threads(cp) if cp.block is not None and cp.block.solver == "dense" else 1
        with _blas_threads(blas):
            if start is None and _large(cp) and any(t.p > 1 for t in terms):
                start = _intercepts_start(X, y, terms, reml, solver, default_start)
            start = default_start if start is None else start
            theta, crit, success = _optimise(cp, start, lower, reml)[:3]
    else:
        theta, crit, success = optimum
    ld, ldx, r2, beta, unsc = cp.solve(theta)
    nu = n - X.shape[1] if reml else n
    sigma = float(np.sqrt(r2 / nu))

    singular_parts = _singular_parts(terms, theta)
    singular = bool(singular_parts)
    if singular:
        messages.append("singular fit (a variance is estimated as zero or a correlation as "
                        "+-1): " + ", ".join(singular_parts))
    if singular and stop_if_singular:
        vcov = sigma**2 * unsc
        se = np.sqrt(np.diag(vcov))
        nan = np.full(len(beta), np.nan)
        fixed_df = pd.DataFrame({"term": [INTERCEPT, *fixed], "estimate": beta, "se": se,
                                 "df": nan, "t": beta / se, "p": nan, "ci_low": nan,
                                 "ci_high": nan})
        return LmmFit(
            fixed=fixed_df, random=_random_table(terms, theta, sigma),
            reml_criterion=float(crit) if reml else float("nan"), singular=True, nobs=n,
            ngroups=ngroups, converged=bool(success), messages=messages, formula=formula,
            solver=cp.block.solver if cp.block else "dense", theta=theta, sigma=sigma,
            vcov=vcov)

    if richardson is None:
        richardson = 2 if _large(cp) else 4
    H, jac, grad = _varpar_pieces(cp, theta, sigma, reml, richardson)
    vcov_varpar, nneg, nzero = _pinv_cov(H)
    diag = _diagnostics(H, grad, theta, lower, singular)
    if not success:
        messages.append("the optimiser ran out of iterations; the fit may not have converged")
    messages.extend(diag.pop("messages"))
    if diag.pop("failed"):
        success = False

    vcov = sigma**2 * unsc
    names = [INTERCEPT, *fixed]
    rows = []
    for i, name in enumerate(names):
        Lv = np.zeros(len(names))
        Lv[i] = 1.0
        rows.append({"term": name, **_satterthwaite(Lv, beta, vcov, jac, vcov_varpar)})
    fixed_df = pd.DataFrame(rows, columns=["term", "estimate", "se", "df", "t", "p",
                                           "ci_low", "ci_high"])

    return LmmFit(
        fixed=fixed_df, random=_random_table(terms, theta, sigma),
        reml_criterion=float(crit) if reml else float("nan"), singular=singular,
        nobs=n, ngroups=ngroups, converged=bool(success), messages=messages,
        formula=formula, solver=cp.block.solver if cp.block else "dense", **diag,
        theta=theta, sigma=sigma, vcov=vcov, _jac=jac,
        _vcov_varpar=vcov_varpar, _design=(X, terms, fixed, formula, reml, dict(ngroups), cp),
    )


def _intercepts_start(X, y, terms, reml, solver, default_start) -> np.ndarray:
    """A start for a model with random slopes whose evaluations are costly (_large): the
    same model with intercepts only is fitted first (a diagonal, smaller clip block: about
    a quarter of the cost per evaluation); its intercept factors replace the default 1's
    and the slopes' diagonal factors start at 0.2. On 3,000 raters x 1,100 clips with
    by-clip slopes: 157 evaluations from the default start, 136 with only the intercepts
    moved, 51 cheap ones plus 96 from this one, the same optimum within 1e-7."""
    simple = []
    for k, t in enumerate(terms):
        u = _Term(RandomTerm(t.spec.group), t.codes, t.nlev, t.W[:, :1], [INTERCEPT])
        u.theta_slice = slice(k, k + 1)
        simple.append(u)
    cp0 = _Crossprod(X, y, simple, solver)
    lower0, start0 = _bounds_and_start(simple)
    theta0, crit0, _ = _optimise(cp0, start0, lower0, reml, final_radius=1e-3)[:3]
    start = default_start.copy()
    if np.isfinite(crit0):
        for k, t in enumerate(terms):
            for pos, (i, j) in zip(range(t.theta_slice.start, t.theta_slice.stop), t.tri()):
                if i == j:
                    start[pos] = max(float(theta0[k]), 0.05) if i == 0 else 0.2
    return start


def _diagnostics(H, grad, theta, lower, singular) -> dict:
    """Convergence checks after lme4 1.1-31's checkConv/checkHess, on the Hessian of the
    profiled REML criterion over theta (H over (theta, sigma) with sigma profiled out: the
    Schur complement) and its central-difference gradient.

    Gradient: max over the free parameters of min(|scaled gradient|, |gradient|), the
    scaled one through the Cholesky factor of the Hessian; above 0.002 the fit has not
    converged. Hessian (skipped for a singular fit, as in lme4, whose Hessian at the
    boundary means nothing): an eigenvalue below -1e-6 means not at a minimum, one within
    1e-6 of zero (or no Cholesky factor) means the parameters are not determined (both are
    failures); a largest eigenvalue over 1e6 or a ratio of smallest to largest under 1e-6
    is lme4's "nearly unidentifiable" warning.
    """
    k = len(theta)
    Hp = H[:k, :k] - np.outer(H[:k, k], H[k, :k]) / H[k, k]
    free = ~((lower == 0) & (theta <= SINGULAR_TOL))
    out = {"max_grad": 0.0, "hessian_min_eigenvalue": float("nan"),
           "hessian_condition": float("nan"), "messages": [], "failed": False}
    if free.any():
        g = grad[free]
        try:
            R = np.linalg.cholesky(Hp[np.ix_(free, free)])
            scaled = np.abs(linalg.solve_triangular(R, g, lower=True))
        except np.linalg.LinAlgError:
            scaled = np.abs(g)
        out["max_grad"] = float(np.max(np.minimum(scaled, np.abs(g))))
        if out["max_grad"] > GRAD_TOL:
            out["messages"].append(
                f"the fit may not have converged: max|grad| = {out['max_grad']:.3g} "
                f"(lme4's tolerance {GRAD_TOL})")
            out["failed"] = True
    ev = np.linalg.eigvalsh(Hp) if np.all(np.isfinite(Hp)) else np.array([np.nan])
    out["hessian_min_eigenvalue"] = float(ev.min())
    if singular:
        return out
    if not np.all(np.isfinite(ev)):
        out["messages"].append("the Hessian of the criterion could not be evaluated (infinite "
                               "or missing values): the fit may not have converged")
        out["failed"] = True
        return out
    negative = int((ev < -HESS_TOL).sum())
    if negative:
        out["messages"].append(
            f"the fit did not converge: degenerate Hessian with {negative} negative "
            f"eigenvalue{'s' if negative > 1 else ''} (smallest {ev.min():.3g}); the "
            "estimates are not at a minimum of the criterion")
        out["failed"] = True
        return out
    if (np.abs(ev) < HESS_TOL).any():
        out["messages"].append(
            "the Hessian of the criterion is numerically singular (smallest eigenvalue "
            f"{ev.min():.3g}): the variance parameters are not uniquely determined")
        out["failed"] = True
        return out
    out["hessian_condition"] = float(ev.max() / ev.min())
    if ev.max() * HESS_TOL > 1:
        out["messages"].append("the model is nearly unidentifiable: very large Hessian "
                               f"eigenvalue ({ev.max():.3g}); rescale variables?")
    if ev.min() / ev.max() < HESS_TOL:
        out["messages"].append("the model is nearly unidentifiable: large Hessian eigenvalue "
                               f"ratio ({out['hessian_condition']:.3g}); rescale variables?")
    return out


def _random_table(terms: list[_Term], theta, sigma) -> pd.DataFrame:
    rows = []
    for t in terms:
        T = t.factor(theta)
        cov = sigma**2 * T @ T.T
        sd = np.sqrt(np.diag(cov))
        if t.spec.correlated:
            for i in range(t.p):
                rows.append((t.spec.group, t.coefs[i], None, cov[i, i], sd[i]))
            for j in range(t.p):
                for i in range(j + 1, t.p):
                    cor = cov[i, j] / (sd[i] * sd[j]) if sd[i] * sd[j] > 0 else np.nan
                    rows.append((t.spec.group, t.coefs[j], t.coefs[i], cov[i, j], cor))
        else:
            for i in range(t.p):
                g = t.spec.group if i == 0 else f"{t.spec.group}.{i}"
                rows.append((g, t.coefs[i], None, cov[i, i], sd[i]))
    rows.append(("Residual", None, None, sigma**2, sigma))
    return pd.DataFrame(rows, columns=["group", "var1", "var2", "variance_or_cov", "sd_or_cor"])


MODELS = ("correlated_slope", "uncorrelated_slope", "intercepts")


def clip_counts(data: pd.DataFrame, stimulus: str = "stimulus_id",
                source: str = "source") -> dict:
    """How many clips each source has, counting a clip under every source it was shown
    as: {'clips', 'human', 'ai', 'both'}; 'both' is the number of clips shown under both
    sources (to different raters, or the same), so human + ai = clips + both."""
    d = data[[stimulus, source]].dropna()
    x = source_code(d[source])
    per = pd.DataFrame({"clip": d[stimulus].to_numpy(), "human": x > 0}).groupby("clip")["human"]
    has_h, has_a = per.any(), ~per.all()
    return {"clips": int(len(has_h)), "human": int(has_h.sum()), "ai": int(has_a.sum()),
            "both": int((has_h & has_a).sum())}


# How fit_crossed's messages say why the model used is not the planned one (the report's
# methods read them): the design has no within-participant source contrast, or a fit of the
# singular-fit rule was singular or did not converge.
NO_PARTICIPANT_SLOPE = "no participant rated both sources"
SIMPLIFIED = "; simplified"


def _crossed_specs(participant, stimulus, slope_by_participant: bool, slope_by_clip: bool):
    """The three models of the singular-fit rule. A by-clip source slope (when source
    varies within clips) is simplified together with the by-participant one."""
    def term(group, with_slope, correlated):
        return RandomTerm(group, ("x",), correlated) if with_slope else RandomTerm(group)
    specs = {}
    for name, slopes, corr in (("correlated_slope", True, True),
                               ("uncorrelated_slope", True, False),
                               ("intercepts", False, True)):
        if slopes and not (slope_by_participant or slope_by_clip):
            continue
        specs[name] = [term(participant, slopes and slope_by_participant, corr),
                       term(stimulus, slopes and slope_by_clip, corr)]
    return specs


def fit_crossed(data: pd.DataFrame, dv: str, participant: str = "participant_id",
                stimulus: str = "stimulus_id", source: str = "source",
                solver: str = "auto") -> LmmFit:
    """The primary model: dv ~ x + (1 + x | participant) + (1 | stimulus), x = source_code.

    Before fitting (each a plain UserError, no numbers): every source needs at least two
    clips (with one, the source difference cannot be told apart from the difference
    between two clips; the case where the clip column holds the source itself is named
    as such).

    Adapted to the design, with a note in .messages:
    * no participant rated both sources (source is between participants): the source
      slope by participant cannot be estimated, so the model is (1 | participant) from
      the start, as lme4 users would simplify;
    * source varies within clips (a clip shown as human-made to some raters and as
      AI-generated to others): a by-clip source slope is added, (1 + x | stimulus), the
      model lme4 users fit for items crossed with a condition. .clip_counts says how
      many clips each source has and how many were shown under both.

    Singular-fit rule (documented in the report's methods): start with the correlated
    slope(s); if that fit is singular or does not converge, drop the correlation
    (1 + x || participant); if that is still singular or does not converge, drop the slope
    (1 | participant). The intercepts model is kept even if it is singular too. The result
    says which model was used (.model_used) and why (.messages).
    """
    if not isinstance(data, pd.DataFrame):
        raise UserError("the data for a mixed model must be a table (pandas DataFrame)")
    require_columns(data, (dv, participant, stimulus, source), "columns missing from the data")
    d = data[[dv, participant, stimulus]].copy()
    keep = data[source].notna()
    d = d[keep]
    d["x"] = source_code(data.loc[keep, source])
    if d["x"].nunique() < 2:
        raise UserError("the data hold clips of only one source; the primary test compares "
                        "human-made with AI-generated clips")
    rated = d.dropna(subset=[dv, participant, stimulus])
    counts = clip_counts(rated.assign(_src=np.where(rated["x"] > 0, "human", "ai")),
                         stimulus, "_src")
    if min(counts["human"], counts["ai"]) < 2:
        by_source = rated.groupby("x")[stimulus].unique()
        if counts["clips"] == 2 and counts["both"] == 0:
            h, a = by_source[0.5][0], by_source[-0.5][0]
            holds = ("holds the source itself" if {str(h).strip().lower(), str(a).strip().lower()}
                     == {"human", "ai"} else "has one clip per source")
            raise UserError(
                f"the clip column ({stimulus}) {holds}: all human-made ratings are of "
                f"{stimulus} {h!r} and all AI-generated ones of {a!r}, so the difference "
                "between clips cannot be told apart from the source difference; the "
                "comparison needs at least two clips of each source, each with its own "
                "identifier")
        raise UserError(
            f"the source comparison needs at least two clips of each source; these data have "
            f"{counts['human']} human-made and {counts['ai']} AI-generated clip(s). With one "
            "clip, the difference between the sources cannot be told apart from the "
            "difference between clips",
            [Problem(f"source {'human' if v > 0 else 'ai'}", f"clips: {', '.join(map(str, c[:5]))}")
             for v, c in by_source.items() if len(c) < 2])
    notes = []
    if not keep.all():
        notes.append(f"{int((~keep).sum())} rows without a source dropped")
    within_participant = bool((rated.groupby(participant)["x"].nunique() > 1).any())
    if not within_participant:
        notes.append(f"{NO_PARTICIPANT_SLOPE}, so a source slope by participant "
                     f"cannot be estimated; fitted (1 | {participant})")
    if counts["both"]:
        notes.append(f"source varies within clips: {counts['both']} of {counts['clips']} clips "
                     f"were shown under both sources ({counts['human']} clips shown as "
                     f"human-made, {counts['ai']} as AI-generated); a by-clip source slope "
                     f"(1 + x | {stimulus}) is fitted")
    specs = _crossed_specs(participant, stimulus, within_participant, counts["both"] > 0)
    for name, terms in specs.items():
        last = name == "intercepts"
        fit = fit_lmm(d, dv, ["x"], terms, solver=solver, stop_if_singular=not last)
        if last or (fit.converged and not fit.singular):
            break
        why = "singular" if fit.singular else "did not converge"
        detail = [m for m in fit.messages if m.startswith("singular")]
        notes.append(f"model {name} ({fit.formula}) {why}"
                     + (f": {detail[0].split(': ', 1)[1]}" if detail else "")
                     + SIMPLIFIED)
    fit.model_used = name
    fit.clip_counts = counts
    fit.messages = notes + [f"model used: {name} ({fit.formula})"] + fit.messages
    return fit
