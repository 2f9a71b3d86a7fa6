"""The clip block of the REML system in analysis/lmm.py, assembled and factored at the
cost the design's sparsity allows.

After the participant blocks of L are eliminated, the random effects of every other
term (clips, pairs: q2 columns) are left with the Schur complement

    M22 = Lambda2' (Z2'Z2 - sum_j Z2_j' Z1_j B_j Z1_j' Z2_j) Lambda2 + I,

one term per participant j, where B_j is that participant's p1 x p1 block (see
lmm._Crossprod._blocks). Participant j touches only the m_j clips they rated, so their
term is an m_j x m_j block scattered into M22. Three ways to form the sum, chosen by
cost at set-up (all give the same matrix up to rounding):

* "patterns": participants with the same Z1_j'Z1_j share B_j, so with few distinct
  patterns the sum is a weighted sum of q2 x q2 products computed once (balanced designs);
* "products": dense q2 x n1 products, cheapest when q2 is small;
* "cliques": one entry per participant and pair of their clips, holding the products of
  their Z2'Z1 values, sorted by position in M22 once; each evaluation multiplies by B_j
  and sums into consecutive positions, so the cost is sum_j m_j^2, not q2^2 n1 (many
  clips, each participant seeing few).

When the clip graph splits into connected components (clips assigned in lists), M22 is
block diagonal after a permutation: "blocks" forms each component's part as a dense product
of its participants' Z2'Z1 columns and factors the blocks one by one (batched, padded to a
few sizes), which costs what the components cost, not what the whole block costs.

Otherwise M22 is factored densely (LAPACK Cholesky) or, when it is large and its factor stays
mostly zero (SPARSE_MAX_FILL), sparsely (SuperLU with a fill-reducing minimum-degree
ordering on M + M', no pivoting:
for a symmetric positive definite matrix this is an LDL' factorisation, so log det M22 is
the sum of the logs of U's diagonal). scikit-sparse (CHOLMOD) has no wheels for this
platform, so scipy's SuperLU is used. Both give log det M22 and r' M22^-1 r exactly as the
dense Cholesky does, so the criterion, its derivatives and the Satterthwaite df do not
depend on the path.
"""

from __future__ import annotations

import ctypes

import numpy as np
from scipy import sparse
from scipy.linalg.lapack import dpotrf, dtrtrs
from scipy.sparse import csgraph
from scipy.sparse import linalg as splinalg

# Largest number of doubles (32 MB) kept for precomputed products or dense copies of Z2'Z1.
PATTERN_BUDGET = 4_000_000
# Above this many clip-block columns a mostly-empty M22 is factored sparsely...
SPARSE_MIN_Q2 = 1500
# ... when at most this share of its entries can be nonzero.
SPARSE_MAX_DENSITY = 0.10
# ... and its factor is sure to fill at most this share of the lower triangle. Few
# nonzeros are not enough: with clips assigned at random (each participant's few clips
# drawn from all of them) the clip graph is an expander and a Cholesky factor fills in
# almost completely, in any ordering; then LAPACK on the dense matrix is faster than
# SuperLU (measured: 5,000 random clips, 12 per participant, about 6 s per evaluation with
# SuperLU). The bound is the envelope after a reverse Cuthill-McKee ordering, which
# contains the factor's fill in that ordering (SuperLU's minimum degree usually does better).
SPARSE_MAX_FILL = 0.25
# While the entries are built, participants are grouped by the number of clip-block rows
# they touch, rounded up to a geometric grid (ratio 1.15), so the groups are few.
GRID_RATIO = 1.15
# A clip block that splits into connected components (clips assigned in lists: each list's
# participants see only that list's clips) is block diagonal after a permutation; then each
# component's part of the Schur complement is one small dense product (BLAS) and each block
# is factored on its own (batched LAPACK Cholesky), in place of the gathered cliques and one
# sparse factorisation of the whole (6,000 x 5,000 clips in 200 lists of 25, about 12 clips
# per participant: 20 ms -> 3.5 ms per evaluation; 4,000 x 2,000 in lists of 25, 4 clips
# each: 4.6 -> 1.1 ms). Chosen when there are several components, the largest has at most
# BLOCKS_MAX columns, and the padded dense products and factors cost at most
# BLOCKS_FLOP_RATIO multiply-adds per clique entry (sum of m_j^2 p1 (p1 + 1) / 2; the second
# design above has a ratio of 53): past that, few large components that each participant
# sees little of (two lists of 1,000 clips, 10 per participant: ~12,000) are left to the
# cliques and the sparse or dense factor.
BLOCKS_MAX = 1000
BLOCKS_FLOP_RATIO = 200.0
# Components are grouped by their (padded) numbers of clip-block columns and participants.
PARTICIPANT_GRID_RATIO = 1.4
SOLVERS = ("auto", "dense", "sparse", "blocks")


class BlockLambda:
    """Lambda2 when some levels keep p > 1 columns: a p x p block T per such level (the
    columns of each term's whole levels are contiguous, level-major), a scale per other
    column (collapsed levels and intercept-only terms, contiguous per term).

    blocks: [(first column, number of levels, T)]; scaled: [(first, stop)] column ranges;
    s: their scales, concatenated in that order.
    """

    def __init__(self, q2: int, blocks, scaled, s: np.ndarray):
        self.q2, self.blocks, self.s = q2, blocks, s
        self.ranges = []
        k = 0
        for a, b in scaled:
            self.ranges.append((slice(a, b), s[k:k + b - a]))
            k += b - a

    def tosparse(self) -> sparse.csr_matrix:
        r, c, v = [], [], []
        for start, nf, T in self.blocks:
            p = T.shape[0]
            i, j = np.nonzero(np.ones((p, p)))
            base = start + np.arange(nf)[:, None] * p
            r.append((base + i).ravel())
            c.append((base + j).ravel())
            v.append(np.tile(T[i, j], nf))
        for sl, sc in self.ranges:
            idx = np.arange(sl.start, sl.stop)
            r.append(idx), c.append(idx), v.append(sc)
        return sparse.csr_matrix((np.concatenate(v), (np.concatenate(r), np.concatenate(c))),
                                 shape=(self.q2, self.q2))

    def rt(self, R: np.ndarray) -> np.ndarray:
        """Lambda2' R."""
        out = np.empty_like(R)
        for start, nf, T in self.blocks:
            p = T.shape[0]
            seg = slice(start, start + nf * p)
            out[seg] = np.matmul(T.T, R[seg].reshape(nf, p, -1)).reshape(nf * p, -1)
        for sl, sc in self.ranges:
            out[sl] = sc[:, None] * R[sl]
        return out

    def congruence(self, A: np.ndarray) -> None:
        """A <- Lambda2' A Lambda2 in place (each T lower triangular, as _Term.factor makes
        it), right on the lower triangle when A's lower triangle is (the upper triangle is
        not read, except within each level's p x p block, which is made symmetric first)."""
        for start, nf, T in self.blocks:
            p = T.shape[0]
            i, j = np.triu_indices(p, 1)
            base = start + np.arange(nf)[:, None] * p
            A[base + i, base + j] = A[base + j, base + i]
        for start, nf, T in self.blocks:
            # T is lower triangular, so column c of A T is sum over a >= c of column a times
            # T[a, c]: taking c in ascending order reads only columns not yet overwritten
            # (strided views of each coefficient's columns, no copies); rows likewise.
            p = T.shape[0]
            stop = start + nf * p
            for c in range(p):
                col = A[:, start + c:stop:p]
                col *= T[c, c]
                for a in range(c + 1, p):
                    if T[a, c] != 0.0:
                        col += T[a, c] * A[:, start + a:stop:p]
            for c in range(p):
                row = A[start + c:stop:p]
                row *= T[c, c]
                for a in range(c + 1, p):
                    if T[a, c] != 0.0:
                        row += T[a, c] * A[start + a:stop:p]
        for sl, sc in self.ranges:
            A[:, sl] *= sc
            A[sl] *= sc[:, None]


def _lapack_dpotrf():
    """scipy's LAPACK dpotrf called through ctypes, which releases the GIL during the call
    (scipy.linalg.lapack's wrapper holds it, so threads evaluating the criterion would wait
    for each other's Cholesky); None when the function cannot be found (then the wrapper)."""
    try:
        from scipy.linalg import cython_lapack

        api = ctypes.pythonapi
        api.PyCapsule_GetName.restype = ctypes.c_char_p
        api.PyCapsule_GetName.argtypes = [ctypes.py_object]
        api.PyCapsule_GetPointer.restype = ctypes.c_void_p
        api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        capsule = cython_lapack.__pyx_capi__["dpotrf"]
        address = api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))
        ip = ctypes.POINTER(ctypes.c_int)
        return ctypes.CFUNCTYPE(None, ctypes.c_char_p, ip, ctypes.c_void_p, ip, ip)(address)
    except (ImportError, AttributeError, KeyError, TypeError, ValueError):
        return None


_DPOTRF = _lapack_dpotrf()


def cholesky_upper(M: np.ndarray) -> tuple[np.ndarray, int]:
    """Cholesky factor, in place, of the C-ordered square M whose lower triangle is right:
    (U, info) with U = M' (Fortran-ordered, the same memory) holding the upper factor in its
    upper triangle (its lower triangle is left as it was), as LAPACK's dpotrf."""
    if _DPOTRF is None or not M.flags.c_contiguous or M.dtype != np.float64:
        U, info = dpotrf(M.T, lower=0, clean=0, overwrite_a=1)
        return U, int(info)
    n, info = ctypes.c_int(M.shape[0]), ctypes.c_int(0)
    _DPOTRF(b"U", ctypes.byref(n), M.ctypes.data, ctypes.byref(n), ctypes.byref(info))
    return M.T, info.value


def _rcm_envelope(q2: int, pattern: np.ndarray) -> int:
    """Entries of the lower triangle's envelope after reverse Cuthill-McKee ordering of the
    symmetric pattern (positions col * q2 + row): an upper bound on the Cholesky fill."""
    rows, cols = pattern % q2, pattern // q2
    graph = sparse.csr_matrix((np.ones(len(pattern)), (rows, cols)), shape=(q2, q2))
    perm = csgraph.reverse_cuthill_mckee(graph, symmetric_mode=True)
    inv = np.empty(q2, dtype=np.int64)
    inv[perm] = np.arange(q2)
    r, c = inv[rows], inv[cols]
    first = np.arange(q2)
    np.minimum.at(first, r, c)
    return int(np.sum(np.arange(q2) - first) + q2)


class ClipBlock:
    """Z2'Z1 (one sparse q2 x n1 matrix per participant coefficient), Z2'Z2, and the
    chosen ways to form and factor M22.

    rows, cols: the structural nonzeros of Z2'Z1 (clip-block row, participant);
    data: (p1, nnz) their values, one row per participant coefficient.
    """

    def __init__(self, q2: int, n1: int, rows, cols, data, S22: sparse.spmatrix,
                 S11_patterns=None, solver: str = "auto"):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}; got {solver!r}")
        self.q2, self.n1 = q2, n1
        self.p1 = p1 = data.shape[0]
        self.S21 = [sparse.csr_matrix((data[c], (rows, cols)), shape=(q2, n1)) for c in range(p1)]
        m = np.bincount(cols, minlength=n1)
        clique_cost = float(np.sum(m.astype(float) ** 2))
        self.groups = []
        self.density = float("nan")
        self.envelope = None
        self.P = None
        if solver in ("auto", "blocks") and self._blocks_setup(rows, cols, data, S22, m, solver):
            return
        if solver == "blocks":
            solver = "auto"  # one component: the usual choice
        # Which entries of M22 can be nonzero: Z2'Z2's, the diagonal, and each participant's
        # m_j x m_j block.
        S22 = sparse.coo_matrix(S22)
        # patterns (first level of each pattern, inverse index), when they fit the budget
        self.mode = "cliques"
        # Above SPARSE_MIN_Q2 columns the cliques are kept, so that the sparse solver stays
        # possible (there the budget allows at most one pattern anyway).
        small = solver == "dense" or (solver == "auto" and q2 < SPARSE_MIN_Q2)
        if S11_patterns is not None and small:
            first, inverse = S11_patterns
            u = len(first)
            if u * p1 * p1 * q2 * q2 <= PATTERN_BUDGET:
                P = np.empty((u, p1, p1, q2, q2))
                for g in range(u):
                    J = np.flatnonzero(inverse == g)
                    cols_g = [s[:, J] for s in self.S21]
                    for a in range(p1):
                        for c in range(p1):
                            P[g, a, c] = (cols_g[a] @ cols_g[c].T).toarray()
                self.P = (first, P.reshape(u * p1 * p1, q2 * q2))
                self.mode = "patterns"
        if self.mode == "cliques" and small and q2 * n1 * p1 <= PATTERN_BUDGET:
            # dense GEMMs (2 p1 q2^2 n1 flops at ~1e10/s) against one bincount per entry of
            # the participant blocks (~5 ns each)
            if 2 * p1 * q2 * q2 * n1 / 1e10 < 5e-9 * clique_cost:
                self.mode = "products"
                self.S21d = [s.toarray() for s in self.S21]

        if self.mode != "cliques":
            self.solver = "dense"
            self.S22d = S22.toarray()
            return
        # the structure of M22
        order = np.lexsort((rows, cols))  # by participant, then row
        r_sorted, c_sorted = rows[order], cols[order]
        d_sorted = data[:, order]
        start = np.concatenate([[0], np.cumsum(m)])
        pos_in = np.arange(len(order)) - start[c_sorted]
        diag = np.arange(q2)
        grid = [1]
        while grid[-1] < max(int(m.max()), 1):
            grid.append(max(grid[-1] + 1, int(np.ceil(grid[-1] * GRID_RATIO))))
        grid = np.array(grid)
        sizes = grid[np.searchsorted(grid, m)]
        for s in np.unique(sizes[m > 0]):
            J = np.flatnonzero((sizes == s) & (m > 0))
            slot = np.full(n1, -1)
            slot[J] = np.arange(len(J))
            sel = slot[c_sorted] >= 0
            G = np.zeros((len(J), s, p1))
            R = np.zeros((len(J), s), dtype=np.int64)
            R[slot[c_sorted[sel]], pos_in[sel]] = r_sorted[sel]
            for c in range(p1):
                G[slot[c_sorted[sel]], pos_in[sel], c] = d_sorted[c, sel]
            self.groups.append((J, G, None, R))
        if solver == "auto" and q2 < SPARSE_MIN_Q2:
            solver = "dense"  # small enough for LAPACK whatever the sparsity
        if solver != "dense":
            # the structure of Z2'Z2 + I + P P', P the (clip-block row, participant)
            # incidence: scipy's sparse product finds it (each participant's rows pairwise)
            inc = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(q2, n1))
            struct = (inc @ inc.T + abs(S22) + sparse.identity(q2)).tocsc()
            struct.sort_indices()
            colidx = np.repeat(np.arange(q2, dtype=np.int64), np.diff(struct.indptr))
            pattern = colidx * q2 + struct.indices  # column-major order: CSC
            self.density = len(pattern) / float(q2 * q2)
        if solver == "auto":
            solver = "dense"
            if self.density <= SPARSE_MAX_DENSITY:
                self.envelope = _rcm_envelope(q2, pattern)
                if self.envelope <= SPARSE_MAX_FILL * q2 * (q2 + 1) / 2:
                    solver = "sparse"
        self.solver = solver
        # One entry per (participant, pair of their rows): its position in M22, the
        # participant, and the products of their Z2'Z1 values, so that the participant's
        # block at that position is sum over a <= c of V_ac * B_j[a, c] (B_j symmetric).
        # Dense: only the lower triangle (LAPACK's Cholesky reads no more; each
        # participant's rows ascend, so the lower triangle of their block lands in M22's),
        # row-major positions. Sparse: all pairs, positions in the CSC pattern.
        if solver == "dense":
            self.S22d = S22.toarray()
            self.size = q2 * q2
        else:
            self.prow = (pattern % q2).astype(np.int64)
            self.pcol = (pattern // q2).astype(np.int64)
            self.indptr = np.concatenate([[0], np.cumsum(np.bincount(self.pcol, minlength=q2))])
            self.diagpos = np.searchsorted(pattern, diag * q2 + diag)
            s22_keys = S22.col.astype(np.int64) * q2 + S22.row
            self.S22v = np.bincount(np.searchsorted(pattern, s22_keys), S22.data, len(pattern))
            self.size = len(pattern)
        self.pairs = [(a, c) for a in range(p1) for c in range(a, p1)]
        pos, who, V = [], [], []
        for J, G, _, R in self.groups:
            s = R.shape[1]
            ti, tj = np.tril_indices(s) if solver == "dense" else np.indices((s, s)).reshape(2, -1)
            mJ = m[J][:, None]
            valid = (ti[None, :] < mJ) & (tj[None, :] < mJ)
            if solver == "dense":
                pos.append((R[:, ti] * q2 + R[:, tj])[valid])
            else:
                pos.append(np.searchsorted(pattern, R[:, tj] * q2 + R[:, ti])[valid])
            who.append(np.broadcast_to(J[:, None], valid.shape)[valid])
            V.append(np.stack([(G[:, ti, a] * G[:, tj, c]
                                + (G[:, ti, c] * G[:, tj, a] if a != c else 0.0))[valid]
                               for a, c in self.pairs]))
        self.groups = None  # only needed to build the entries
        if pos:
            pos, who, V = np.concatenate(pos), np.concatenate(who), np.concatenate(V, axis=1)
        else:
            pos, who = np.zeros(0, np.int64), np.zeros(0, np.int64)
            V = np.zeros((len(self.pairs), 0))
        # sorted by position, so that each evaluation sums into consecutive slots and writes
        # each position of M22 once, instead of scattering at random
        order = np.argsort(pos, kind="stable")
        pos = pos[order]
        self.who = who[order].astype(np.intp)
        self.V = np.take(V, order, axis=1)  # (5x faster than V[:, order] here)
        # pos is sorted: its distinct values and each entry's index among them in one pass
        new = np.concatenate([[True], pos[1:] != pos[:-1]]) if len(pos) else np.zeros(0, bool)
        self.upos = pos[new]
        self.slot = np.cumsum(new) - 1

    # ----------------------------------------------------------------------------------
    # "blocks": one dense block per connected component of the clip graph

    def _blocks_setup(self, rows, cols, data, S22, m, solver) -> bool:
        """Lay the clip block out as dense blocks, one per connected component, padded to a
        few sizes; False (nothing set) when solver is "auto" and blocks do not pay."""
        q2, n1, p1 = self.q2, self.n1, self.p1
        S22 = sparse.coo_matrix(S22)
        # nodes: clip-block rows 0..q2-1, then participants; edges: Z2'Z1 and Z2'Z2 entries
        gi = np.concatenate([rows, S22.row]).astype(np.int64)
        gj = np.concatenate([q2 + cols, S22.col]).astype(np.int64)
        graph = sparse.csr_matrix((np.ones(len(gi)), (gi, gj)), shape=(q2 + n1, q2 + n1))
        _, lab = csgraph.connected_components(graph, directed=False)
        comps, crow = np.unique(lab[:q2], return_inverse=True)
        crow = crow.ravel()
        k = len(comps)
        csize = np.bincount(crow, minlength=k)
        if solver == "auto" and (k < 2 or csize.max() > BLOCKS_MAX):
            return False
        index = np.full(lab.max() + 1, -1)
        index[comps] = np.arange(k)
        pcomp = index[lab[q2:]]  # -1: a participant without clip-block entries
        psize = np.bincount(pcomp[pcomp >= 0], minlength=k)
        grid = [1]
        while grid[-1] < max(int(csize.max()), int(psize.max()), 1):
            grid.append(max(grid[-1] + 1, int(np.ceil(grid[-1] * GRID_RATIO))))
        grid = np.array(grid)
        cs = grid[np.searchsorted(grid, csize)]
        pgrid = [1]
        while pgrid[-1] < max(int(psize.max()), 1):
            pgrid.append(max(pgrid[-1] + 1, int(np.ceil(pgrid[-1] * PARTICIPANT_GRID_RATIO))))
        pgrid = np.array(pgrid)
        ps = pgrid[np.searchsorted(pgrid, np.maximum(psize, 1))]
        keys, gid = np.unique(np.stack([cs, ps]), axis=1, return_inverse=True)
        gid = gid.ravel()
        ng = keys.shape[1]
        nb = np.bincount(gid, minlength=ng)
        s_g, sp_g = keys[0].astype(np.int64), keys[1].astype(np.int64)
        flops = float(np.sum(nb * s_g * s_g * (sp_g * p1 + s_g / 3.0)))
        a_size = nb * s_g * s_g
        g_size = nb * s_g * sp_g * p1
        if solver == "auto" and (
                flops > BLOCKS_FLOP_RATIO * p1 * (p1 + 1) / 2 * float(np.sum(m.astype(float) ** 2))
                or a_size.sum() + g_size.sum() > 4 * PATTERN_BUDGET):
            return False
        # each component's slot within its group, each row's and participant's place in it
        bslot = np.empty(k, dtype=np.int64)
        for g in range(ng):
            bslot[gid == g] = np.arange(nb[g])

        def local(comp):
            order = np.argsort(comp, kind="stable")  # ascending index within a component
            start = np.concatenate([[0], np.cumsum(np.bincount(comp, minlength=k))])
            out = np.empty(len(comp), dtype=np.int64)
            out[order] = np.arange(len(comp)) - start[comp[order]]
            return out

        rloc = local(crow)
        ploc = np.zeros(n1, dtype=np.int64)
        has = pcomp >= 0
        ploc[has] = local(pcomp[has])
        a_off = np.concatenate([[0], np.cumsum(a_size)])
        g_off = np.concatenate([[0], np.cumsum(g_size)])
        rg = gid[crow]
        rs = s_g[rg]
        # flat position of M22[i, j] (i, j in one component) is rbase[i] + rloc[j]
        self._rbase = a_off[rg] + (bslot[crow] * rs + rloc) * rs
        self._rloc = rloc
        self._a_total = int(a_off[-1])
        # Z2'Z1 entry (row i, participant j, coefficient a) at gbase + a in the G layout
        # (block, clip row, participant, coefficient)
        ci = crow[rows]
        gg = gid[ci]
        gbase = g_off[gg] + ((bslot[ci] * s_g[gg] + rloc[rows]) * sp_g[gg] + ploc[cols]) * p1
        order = np.argsort(gbase)  # so that each evaluation writes G2 in sequence
        self._gbase = gbase[order]
        self._g_total = int(g_off[-1])
        self._ecols = np.asarray(cols, dtype=np.intp)[order]
        self._edata = np.ascontiguousarray(data[:, order])
        G1 = np.zeros(self._g_total)
        for a in range(p1):
            G1[self._gbase + a] = self._edata[a]
        A0 = np.bincount(self._rbase[S22.row] + rloc[S22.col], S22.data, self._a_total)
        # per group: (slice of the A layout, of the G layout, its shape), the rows of each
        # block slot (q2 = padding), S22 and G1' as dense blocks
        self._groups = []
        for g in range(ng):
            shape = (int(nb[g]), int(s_g[g]), int(s_g[g]))
            rows_g = np.full(shape[0] * shape[1], q2, dtype=np.int64)
            in_g = np.flatnonzero(rg == g)
            rows_g[bslot[crow[in_g]] * shape[1] + rloc[in_g]] = in_g
            G1g = G1[g_off[g]:g_off[g + 1]].reshape(shape[0], shape[1], -1)
            self._groups.append({
                "a": slice(int(a_off[g]), int(a_off[g + 1])), "shape": shape,
                "g": slice(int(g_off[g]), int(g_off[g + 1])), "rows": rows_g,
                "S22": A0[a_off[g]:a_off[g + 1]].reshape(shape),
                "G1t": np.ascontiguousarray(G1g.transpose(0, 2, 1)),
            })
        # The factorisation does not depend on the participants, so groups with the same
        # number of columns (adjacent in the layout: the groups are sorted by it) are
        # factored together.
        self._fgroups = []
        for size in np.unique(s_g):
            members = [grp for grp in self._groups if grp["shape"][1] == size]
            self._fgroups.append({
                "a": slice(members[0]["a"].start, members[-1]["a"].stop),
                "shape": (sum(grp["shape"][0] for grp in members), int(size), int(size)),
                "rows": np.concatenate([grp["rows"] for grp in members]),
            })
        self.mode = self.solver = "blocks"
        self.components = k
        self.largest_component = int(csize.max())
        self.size = self._a_total
        return True

    def _schur_blocks(self, B: np.ndarray) -> np.ndarray:
        """S22 - G2 G1' on the dense blocks (flat, in the layout of the groups), with G1 the
        Z2'Z1 columns of each component's participants and G2 = G1 B (participant by
        participant)."""
        p1 = self.p1
        G2 = np.zeros(self._g_total)  # its padding stays zero; one per call (threads)
        for c in range(p1):
            v = None
            for a in range(p1):
                term = self._edata[a] * np.take(np.ascontiguousarray(B[:, a, c]), self._ecols)
                v = term if v is None else np.add(v, term, out=v)
            G2[self._gbase + c] = v
        out = np.empty(self._a_total)
        for grp in self._groups:
            nb, s, _ = grp["shape"]
            G2g = G2[grp["g"]].reshape(nb, s, -1)
            A = out[grp["a"]].reshape(grp["shape"])
            np.matmul(G2g, grp["G1t"], out=A)
            np.subtract(grp["S22"], A, out=A)
        return out

    def _factor_solve_blocks(self, A_flat: np.ndarray, lam, r: np.ndarray):
        """log det M22 and r' M22^-1 r (r = Lambda2' rhs), block by block."""
        diag_lam = isinstance(lam, np.ndarray)
        if diag_lam:
            lam_ext = np.append(lam, 0.0)
        else:
            L = sparse.coo_matrix(lam)
            Lflat = np.bincount(self._rbase[L.row] + self._rloc[L.col], L.data, self._a_total)
        nc = r.shape[1]
        r_ext = np.vstack([r, np.zeros((1, nc))])
        ld, RR = 0.0, np.zeros((nc, nc))
        for grp in self._fgroups:
            nb, s, _ = grp["shape"]
            A = A_flat[grp["a"]].reshape(grp["shape"])
            # Each block is factored with its right-hand sides appended as rows,
            # [[M, .], [r', D]] = [[C, 0], [z', E]] E', so that z = C^-1 r comes out of the
            # same LAPACK call (one forward substitution) and r' M^-1 r = sum z'z. D only has
            # to keep the whole positive definite: D = r'r + I does, as M >= I.
            K = np.empty((nb, s + nc, s + nc))
            M = K[:, :s, :s]
            if diag_lam:
                lb = lam_ext[grp["rows"]].reshape(nb, s)
                np.multiply(A, lb[:, :, None], out=M)
                M *= lb[:, None, :]
            else:
                Lb = Lflat[grp["a"]].reshape(nb, s, s)
                np.matmul(Lb.transpose(0, 2, 1), np.matmul(A, Lb), out=M)
            di = np.arange(s)
            M[:, di, di] += 1.0  # padding rows and columns are zero: their block of M is I
            rb = r_ext[grp["rows"]].reshape(nb, s, nc)
            K[:, s:, :s] = rb.transpose(0, 2, 1)
            K[:, :s, s:] = 0.0  # not read (the factorisation reads the lower triangle)
            K[:, s:, s:] = np.matmul(rb.transpose(0, 2, 1), rb) + np.eye(nc)
            try:
                C = np.linalg.cholesky(K)
            except np.linalg.LinAlgError as exc:
                raise np.linalg.LinAlgError("the clip block is not positive definite") from exc
            ld += 2.0 * np.log(C[:, di, di]).sum()
            z = C[:, s:, :s]
            RR += np.matmul(z, z.transpose(0, 2, 1)).sum(axis=0)
        return ld, RR

    def _cliques(self, B: np.ndarray) -> np.ndarray:
        """sum_j of participant j's block at the positions self.upos."""
        if not len(self.who):
            return np.zeros(0)
        w = None
        for k, (a, c) in enumerate(self.pairs):
            term = self.V[k] * np.take(np.ascontiguousarray(B[:, a, c]), self.who)
            w = term if w is None else np.add(w, term, out=w)
        # the entries are sorted by position, so this bincount writes sequentially
        return np.bincount(self.slot, w, len(self.upos))

    def schur(self, B: np.ndarray) -> np.ndarray:
        """Z2'Z2 - sum_j Z2_j'Z1_j B_j Z1_j'Z2_j: dense q2 x q2 (only its lower triangle is
        sure to be right) or its values on the sparse pattern."""
        q2, p1 = self.q2, self.p1
        if self.mode == "blocks":
            return self._schur_blocks(B)
        if self.mode == "patterns":
            first, P = self.P
            return self.S22d - (B[first].reshape(-1) @ P).reshape(q2, q2)
        if self.mode == "products":
            SBS = np.zeros((q2, q2))
            for c in range(p1):
                GB = sum(self.S21d[a] * B[:, a, c] for a in range(p1))
                SBS += GB @ self.S21d[c].T
            return self.S22d - SBS
        sums = self._cliques(B)
        if self.solver == "dense":
            A = self.S22d.copy()
            A.reshape(-1)[self.upos] -= sums
            return A
        A = self.S22v.copy()
        A[self.upos] -= sums
        return A

    def factor_solve(self, A, lam, rhs: np.ndarray):
        """log det M22 and r' M22^-1 r for r = Lambda2' rhs, M22 = Lambda2' A Lambda2 + I.

        lam is a vector (Lambda2 diagonal) or a BlockLambda. A may be overwritten. Raises
        LinAlgError when M22 is not positive definite.
        """
        diag_lam = isinstance(lam, np.ndarray)
        r = lam[:, None] * rhs if diag_lam else lam.rt(rhs)
        if self.solver == "blocks":
            return self._factor_solve_blocks(A, lam if diag_lam else lam.tosparse(), r)
        if self.solver == "dense":
            M = A
            if diag_lam:
                M *= lam[:, None]
                M *= lam[None, :]
            else:
                lam.congruence(M)  # right on the lower triangle, which is what was formed
            M[np.diag_indices(self.q2)] += 1.0
            # M is C-ordered with its lower triangle right: M' is the same memory in
            # Fortran order with the upper triangle right, factored in place as U'U.
            # (LAPACK directly: scipy.linalg's wrappers cost more than the work on small blocks)
            U, info = cholesky_upper(M)
            if info:
                raise np.linalg.LinAlgError(f"the clip block is not positive definite (dpotrf {info})")
            ld = 2.0 * np.log(np.diag(U)).sum()
            R2, info = dtrtrs(U, r, lower=0, trans=1)
            return ld, R2.T @ R2
        if diag_lam:
            vals = A * lam[self.prow] * lam[self.pcol]
            vals[self.diagpos] += 1.0
            M = sparse.csc_matrix((vals, self.prow, self.indptr), shape=(self.q2, self.q2))
        else:
            Am = sparse.csc_matrix((A, self.prow, self.indptr), shape=(self.q2, self.q2))
            L = lam.tosparse()
            M = (L.T @ Am @ L + sparse.identity(self.q2)).tocsc()
        try:
            lu = splinalg.splu(M, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                               options={"SymmetricMode": True})
        except RuntimeError as exc:  # "Factor is exactly singular"
            raise np.linalg.LinAlgError(str(exc)) from exc
        du = lu.U.diagonal()
        if not np.all(du > 0):
            raise np.linalg.LinAlgError("the clip block is not positive definite")
        return np.log(du).sum(), r.T @ lu.solve(r)
