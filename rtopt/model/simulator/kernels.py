"""The compiled (numba) kernels of the fast simulator and their pure-Python twins.

Everything here is arithmetic on arrays laid out for the compiled loops; what the numbers mean
(the jumps, the equations, the outcomes) is stated once in :mod:`rtopt.model.simulator.reference`
and :mod:`rtopt.model.simulator.outcomes`, and the tests hold these kernels to them.  Each
``_*_py`` function is the plain-Python body of a kernel; :func:`_jit_pair` compiles it twice
(threaded and serial, under distinct names so numba's on-disk cache keeps them apart).  The
compiled code is cached per user and rtopt version (:mod:`rtopt.model.jitcache`, registered
before the first decorator runs).
"""

from __future__ import annotations

import types as pytypes
from typing import Any

import numpy as np
from llvmlite import ir
from numba import get_num_threads, njit, prange, types  # noqa: F401 (prange: serial loops)
from numba.extending import intrinsic

from rtopt.model import jitcache

jitcache.install()  # before any @njit(cache=True) below: numba picks the location at decoration

__all__ = ["SERIAL_BELOW", "LANES", "TRAJ_NAMES", "thread_parts", "row_array", "fraction_index",
           "horizon_block_parallel", "horizon_block_serial", "infusion_block_parallel",
           "infusion_block_serial", "ln_s_nodes_parallel", "ln_s_nodes_serial",
           "population_tcp_parallel", "population_tcp_serial", "population_outcomes_parallel",
           "population_outcomes_serial", "POPULATION_TCP_ABS_ERROR"]


SERIAL_BELOW = 512
"""Batches smaller than this run the compiled kernels without threads (pool start-up costs
milliseconds per call, more than the work of a few hundred schedules)."""


def thread_parts(n: int) -> int:
    """How many runs of blocks the horizon kernels split ``n`` schedules into: one per call of
    the block body, so arrays are reference-counted per run, not per 64-schedule block (two
    threads counting the same arrays cost ~10 % of the throughput); four per thread balance
    blocks with and without NK work."""
    return 1 if n < SERIAL_BELOW else 4 * get_num_threads()


def _jit_pair(fn: Any, rows: tuple[int, ...], maybe_rows: tuple[int, ...] = (),
              per_thread: int = 1, **jit: Any) -> tuple[Any, Any]:
    """Threaded and serial variants of the row-wise kernel ``fn`` (its ``prange`` loops run
    serially): the serial one compiled (``nogil``), the threaded one a Python function that
    splits the rows into :func:`thread_parts` contiguous parts and runs the serial one on each
    part in a thread (:func:`_run_parts`).

    ``rows`` are the positions of the arguments with one row per schedule (the first defines
    ``n``), ``maybe_rows`` those with one row per schedule or a single shared row;
    ``per_thread`` parts per thread (more than one lets a thread that runs ahead take the
    parts of one slowed by other work on the machine).  Numba's own
    threaded variant (``parallel=True``) compiled the kernel a second time through its
    parallel-loop passes: 16 of the 40 CPU-seconds of a first compile."""
    f = pytypes.FunctionType(fn.__code__, fn.__globals__, fn.__name__.removesuffix("_py"),
                             fn.__defaults__, fn.__closure__)
    f.__qualname__ = f.__name__
    f.__doc__ = fn.__doc__
    f.__module__ = fn.__module__
    serial = njit(nogil=True, **jit)(f)

    def threaded(*args: Any) -> None:
        n = args[rows[0]].shape[0]
        k = thread_parts(n) // 4 * per_thread
        if k <= 1 or n < SERIAL_BELOW:
            serial(*args)
            return
        cuts = [t * n // k for t in range(k + 1)]

        def part(t: int) -> None:
            a, b = cuts[t], cuts[t + 1]
            sliced = list(args)
            for r in rows:
                sliced[r] = args[r][a:b]
            for r in maybe_rows:
                if args[r].shape[0] == n:
                    sliced[r] = args[r][a:b]
            serial(*sliced)

        _run_parts(part, k)

    threaded.__doc__ = fn.__doc__
    return threaded, serial


_POOLS: dict[int, Any] = {}


def _run_parts(part: Any, k: int) -> None:
    """``part(t)`` for ``t < k`` on a pool of ``get_num_threads()`` threads (compiled kernels
    release the GIL); the first part's exception, if any, is raised."""
    from concurrent.futures import ThreadPoolExecutor

    w = max(1, get_num_threads())
    if w == 1 or k == 1:
        for t in range(k):
            part(t)
        return
    pool = _POOLS.get(w)
    if pool is None:
        pool = _POOLS[w] = ThreadPoolExecutor(max_workers=w, thread_name_prefix="rtopt-kernel")
    for f in [pool.submit(part, t) for t in range(k)]:
        f.result()


def _run_blocks(body: Any, n: int, parts: int, args: tuple) -> None:
    """``body(b0, b1, *args)`` over the ``LANES``-schedule blocks of ``n`` rows, in ``parts``
    contiguous runs of blocks (one call each, so arrays are reference-counted per run), the
    runs on threads (:func:`_run_parts`)."""
    nblocks = (n + LANES - 1) // LANES
    parts = max(1, min(nblocks, parts))
    cut = [np.int64(t * nblocks // parts) for t in range(parts + 1)]
    _run_parts(lambda t: body(cut[t], cut[t + 1], *args), parts)


def row_array(x: Any) -> np.ndarray:
    """A parameter as a float array of length 1 (shared) or N (one sample per schedule)."""
    return np.ascontiguousarray(np.atleast_1d(np.asarray(x, dtype=float)))


@njit(cache=True, inline="always")
def _at(a, i):  # pragma: no cover - compiled
    return a[i] if a.shape[0] > 1 else a[0]


@njit(cache=True, inline="always")
def _hypoxia(dw, dv, h0, g, hmx):  # pragma: no cover - compiled
    """:func:`rtopt.model.surrogate.hypoxic_fraction` on the deficits ``dw = 1 - w``, ``dv = 1 - v``."""
    r = (1.0 - dw) / (1.0 - dv)
    h = h0 * r if g == 1.0 else h0 * r ** g
    return h if h < hmx else hmx


@njit(cache=True, inline="always")
def _record(traj, i, c, s, l, E):  # pragma: no cover - compiled
    """One trajectory column (the order of :data:`TRAJ_NAMES`) from lane ``l`` of ``s``."""
    traj[i, c, 0] = s[_S_H * LANES + l]
    traj[i, c, 1] = 1.0 - s[_S_DW * LANES + l]
    traj[i, c, 2] = 1.0 - s[_S_DV * LANES + l]
    traj[i, c, 3] = s[_S_C * LANES + l]
    traj[i, c, 4] = s[_S_B * LANES + l]
    traj[i, c, 5] = s[_S_T * LANES + l]
    traj[i, c, 6] = E
    traj[i, c, 7] = s[_S_TE * LANES + l]
    traj[i, c, 8] = 1.0 - s[_S_GD * LANES + l]


# ----------------------------------------------------------------------------- block kernel
@intrinsic
def _i64_as_f64(typingctx, x):  # pragma: no cover - compiled
    """Reinterpret the bits of an int64 as a float64 (lets LLVM vectorise :func:`_expm1`)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10


@njit(cache=True, inline="always", error_model="numpy")
def _expm1(y):  # pragma: no cover - compiled
    """``exp(y) - 1`` for ``|y| < 700`` in arithmetic only, so loops over lanes vectorise
    (numba calls libm's scalar ``expm1`` otherwise).  ``y = n ln 2 + r`` with ``|r| <= ln 2 / 2``;
    ``expm1(r)`` by its Taylor series to ``r^14`` (truncation < 1e-17 relative);
    ``expm1(y) = 2^n expm1(r) + (2^n - 1)``, exact in ``2^n - 1`` and without cancellation for
    ``n = 0``.  Within 2 ulp of libm (a test holds the two together)."""
    n = np.floor(y * 1.4426950408889634 + 0.5)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 87178291200.0
    p = p * r + 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    q = (p * r) * r + r                              # expm1(r)
    s = _i64_as_f64((np.int64(n) + 1023) << 52)      # 2^n
    return s * q + (s - 1.0)


@njit(cache=True, inline="always", error_model="numpy")
def _exp(y):  # pragma: no cover - compiled
    """``exp(y)`` for ``|y| <= 708`` in arithmetic only (as :func:`_expm1`), so loops vectorise."""
    n = np.floor(y * 1.4426950408889634 + 0.5)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 87178291200.0
    p = p * r + 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    q = (p * r) * r + r                              # expm1(r)
    s = _i64_as_f64((np.int64(n) + 1023) << 52)      # 2^n
    return s * q + s


@njit(cache=True, inline="always", error_model="numpy")
def _exp_tcp(y):  # pragma: no cover - compiled
    """``exp(y)`` for ``|y| <= 708`` as :func:`_exp` with the series of ``expm1(r)`` to ``r^11``:
    truncation below ``e^{|r|} |r|^12 / 12! < 9e-15`` relative (``|r| <= ln 2 / 2``), within
    1e-14 of libm (a test holds the two together).  For the population TCP, whose bound
    (:data:`POPULATION_TCP_ABS_ERROR`) has room for it: 14 % less time there."""
    n = np.floor(y * 1.4426950408889634 + 0.5)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    p = 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    q = (p * r) * r + r                              # expm1(r)
    s = _i64_as_f64((np.int64(n) + 1023) << 52)      # 2^n
    return s * q + s


@intrinsic
def _f64_as_i64(typingctx, x):  # pragma: no cover - compiled
    """Reinterpret the bits of a float64 as an int64 (for :func:`_log`)."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


_SQRT2 = 1.4142135623730951


@njit(cache=True, inline="always", error_model="numpy")
def _log(y):  # pragma: no cover - compiled
    """``ln y`` for a positive normal double in arithmetic only, so loops vectorise (as
    :func:`_exp`).  ``y = 2^e m`` with ``m`` in ``[sqrt(1/2), sqrt(2))``;
    ``ln m = 2 atanh(s)``, ``s = (m - 1) / (m + 1)``, ``|s| <= 0.172``, by its series to
    ``s^19`` (truncation < 3e-17 relative); ``e ln 2`` in two parts.  Within 2 ulp of libm (a
    test holds the two together).  Not for 0, subnormal or infinite ``y`` (NaN gives NaN)."""
    bits = _f64_as_i64(y)
    e = (bits >> 52) - 1023
    m = _i64_as_f64((bits & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000)     # [1, 2)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    ef = np.float64(e) + (1.0 if big else 0.0)
    t = (m - 1.0) / (m + 1.0)
    z = t * t
    p = 1.0 / 19.0
    p = p * z + 1.0 / 17.0
    p = p * z + 1.0 / 15.0
    p = p * z + 1.0 / 13.0
    p = p * z + 1.0 / 11.0
    p = p * z + 1.0 / 9.0
    p = p * z + 1.0 / 7.0
    p = p * z + 1.0 / 5.0
    p = p * z + 1.0 / 3.0
    r = ef * _LN2_HI + ((2.0 * t + (2.0 * t * z) * p) + ef * _LN2_LO)
    return r if y == y else y                    # NaN stays NaN


LANES = 64
"""Schedules advanced together by :func:`horizon_block` (structure-of-arrays lanes; small
enough for the block's state and parameters to stay in L1 cache)."""

# rows of the block's state array ``s``, parameter array ``q`` and NK propagator array ``cf``
(_S_DW, _S_DV, _S_P, _S_C, _S_B, _S_T, _S_H, _S_E, _S_HS, _S_AU, _S_K, _S_GD, _S_TE, _S_EE,
 _S_AUE) = range(15)
(_Q_EW, _Q_EV, _Q_EE, _Q_EA, _Q_CPC, _Q_EEH, _Q_CPCH, _Q_SQV, _Q_K0, _Q_GAIN, _Q_C50, _Q_KCL,
 _Q_EO, _Q_HMX, _Q_G, _Q_ETA, _Q_ASC, _Q_EWH, _Q_EOH, _Q_EOHI, _Q_EWQ, _Q_EVQ, _Q_EG, _Q_EGH,
 _Q_EGHI, _Q_NE) = range(26)
_NS, _NQ = 15, 26
"""Rows of ``s`` and ``q``.  The endogenous pool (docs/model.md section 13): ``_S_GD`` the
deficit ``1 - G`` of the circulating pool, ``_S_TE`` the endogenous tumour NK, ``_S_EE`` and
``_S_AUE`` their activity and its Simpson sum; ``_Q_EG``/``_Q_EGH`` ``e^{-k_e dt}`` and
``e^{-k_e dt/2}`` (``_Q_EGHI`` the inverse of the latter), ``_Q_NE`` the endogenous level."""
_CF_EO, _CF_TB, _CF_BB, _CF_EOH, _CF_TBM, _CF_SM, _CF_S1 = range(7)


TRAJ_NAMES = ("hypoxic_fraction", "demand", "vascular", "chemokine", "nk_blood", "nk_tumour",
              "nk_activity", "nk_endogenous", "circulating_nk")


@njit(cache=True, inline="always", error_model="numpy")
def _load_lanes(q, s, i0, m, h0, e_w, e_v, e_e, e_a, c_pc, e_eh, c_pch, sq_ev, k0, gain, c50,
                kcl_dt, e_out, h_max, gamma, eta, ascale, e_wh, e_oh, e_wq,
                e_vq, e_g, e_gh, n_e, te0):  # pragma: no cover - compiled
    """Parameters of the lanes ``i0:i0 + m`` into ``q``, their baseline hypoxia and endogenous
    tumour NK into ``s``; returns the block's hypoxia-exponent mode (1, 2, 3 when every lane
    has that exponent, else 0)."""
    g1 = g2 = g3 = True
    for l in range(m):
        i = i0 + l
        q[_Q_EW * LANES + l], q[_Q_EV * LANES + l] = _at(e_w, i), _at(e_v, i)
        q[_Q_EE * LANES + l], q[_Q_EA * LANES + l] = _at(e_e, i), _at(e_a, i)
        q[_Q_CPC * LANES + l], q[_Q_EEH * LANES + l] = _at(c_pc, i), _at(e_eh, i)
        q[_Q_CPCH * LANES + l], q[_Q_SQV * LANES + l] = _at(c_pch, i), _at(sq_ev, i)
        q[_Q_K0 * LANES + l], q[_Q_GAIN * LANES + l] = _at(k0, i), _at(gain, i)
        q[_Q_C50 * LANES + l], q[_Q_KCL * LANES + l] = _at(c50, i), _at(kcl_dt, i)
        q[_Q_EO * LANES + l], q[_Q_HMX * LANES + l] = _at(e_out, i), _at(h_max, i)
        q[_Q_G * LANES + l], q[_Q_ETA * LANES + l] = _at(gamma, i), _at(eta, i)
        q[_Q_ASC * LANES + l], q[_Q_EWH * LANES + l] = _at(ascale, i), _at(e_wh, i)
        q[_Q_EOH * LANES + l] = _at(e_oh, i)
        q[_Q_EWQ * LANES + l], q[_Q_EVQ * LANES + l] = _at(e_wq, i), _at(e_vq, i)
        q[_Q_EOHI * LANES + l] = 1.0 / q[_Q_EOH * LANES + l]
        q[_Q_EG * LANES + l], q[_Q_EGH * LANES + l] = _at(e_g, i), _at(e_gh, i)
        q[_Q_EGHI * LANES + l] = 1.0 / q[_Q_EGH * LANES + l]
        q[_Q_NE * LANES + l] = _at(n_e, i)
        s[_S_TE * LANES + l] = _at(te0, i)
        g = q[_Q_G * LANES + l]
        g1 = g1 and g == 1.0
        g2 = g2 and g == 2.0
        g3 = g3 and g == 3.0
        s[_S_H * LANES + l] = _hypoxia(0.0, 0.0, h0, g, q[_Q_HMX * LANES + l])
    return 1 if g1 else 2 if g2 else 3 if g3 else 0


@njit(cache=True, inline="always", error_model="numpy")
def _hyp_ratio(r, h0, q, l, mode):  # pragma: no cover - compiled
    """:func:`_hypoxia` of lane ``l`` from ``r = w / v``, the exponent dispatched by the
    literal ``mode``."""
    if mode == 1:
        hr = r
    elif mode == 2:
        hr = r * r
    elif mode == 3:
        hr = r * r * r
    else:
        hr = r ** q[_Q_G * LANES + l]
    hn = h0 * hr
    hmx = q[_Q_HMX * LANES + l]
    return hn if hn < hmx else hmx


@njit(cache=True, inline="always", error_model="numpy")
def _start_day(s, q):  # pragma: no cover - compiled
    """The trafficking rate ``k0 v (1 + g C / (C50 + C))``
    (:func:`rtopt.model.surrogate.nk_infiltration_rate`) at the start of a day, after its fraction."""
    for l in range(LANES):
        C = s[_S_C * LANES + l]
        s[_S_K * LANES + l] = (q[_Q_K0 * LANES + l] * (1.0 - s[_S_DV * LANES + l])
                                * (1.0 + q[_Q_GAIN * LANES + l] * C
                                   / (q[_Q_C50 * LANES + l] + C)))


_NKW = _STORE = False
_MODE = 0


def _sub_steps_py(s, q, cf, dt, h0):  # pragma: no cover - compiled
    """One sub-step of every lane (see :func:`horizon_block`): the TME to the sub-step's
    midpoint and end (exact), the hypoxic fraction there, and with ``nkw`` the NK pair and the
    Simpson sums of hypoxia and activity; ``store`` writes the NK propagator of the sub-step to
    ``cf`` (for :func:`infusion_block`).  ``nkw``, ``store`` and ``mode`` (the hypoxia
    exponent: 1, 2, 3, or 0 for any) are the compile-time constants ``_NKW``, ``_STORE`` and
    ``_MODE`` of each compiled variant (:func:`_specialise`), and the lanes are a fixed count at
    fixed offsets of flat arrays, so every variant is one branch-free loop that LLVM vectorises
    without run-time alias checks.

    The NK pair ``B' = -(kcl + kin) B``, ``T' = kin B - kout T`` uses the trafficking rate at
    the start ``k0`` (carried in ``s``), midpoint ``km`` and end ``k1``: ``B`` exact but for
    ``int kin``, which is Simpson's rule over the sub-step and the quadratic through the three
    values over its first half; ``T = e^{-kout t} T0 + int e^{-kout (t - u)} kin B du`` with
    the same two rules (fourth order).  The hypoxic fraction, whose cap ``h_max`` makes it
    kinked, is also evaluated at the quarter points (composite Simpson over four panels for
    its integral); its quotients and those of the saturating chemokine term share one
    division."""
    nkw, store, mode = _NKW, _STORE, _MODE
    dt6, dt24 = dt / 6.0, dt / 24.0
    for l in range(LANES):
        dw0, dv0 = s[_S_DW * LANES + l], s[_S_DV * LANES + l]
        P0, C0 = s[_S_P * LANES + l], s[_S_C * LANES + l]
        dwm, dvm = dw0 * q[_Q_EWH * LANES + l], dv0 * q[_Q_SQV * LANES + l]
        dw1, dv1 = dw0 * q[_Q_EW * LANES + l], dv0 * q[_Q_EV * LANES + l]
        C1 = C0 * q[_Q_EE * LANES + l] + P0 * q[_Q_CPC * LANES + l]
        s[_S_DW * LANES + l], s[_S_DV * LANES + l] = dw1, dv1
        s[_S_C * LANES + l], s[_S_P * LANES + l] = C1, P0 * q[_Q_EA * LANES + l]
        dwq1, dvq1 = dw0 * q[_Q_EWQ * LANES + l], dv0 * q[_Q_EVQ * LANES + l]
        dwq3, dvq3 = dwm * q[_Q_EWQ * LANES + l], dvm * q[_Q_EVQ * LANES + l]
        vq1, vm, vq3, v1 = 1.0 - dvq1, 1.0 - dvm, 1.0 - dvq3, 1.0 - dv1
        p12, p34 = vq1 * vm, vq3 * v1
        if nkw or store:
            Cm = C0 * q[_Q_EEH * LANES + l] + P0 * q[_Q_CPCH * LANES + l]
            c50 = q[_Q_C50 * LANES + l]
            am, a1 = c50 + Cm, c50 + C1
            p56 = am * a1
            inv = 1.0 / (p12 * p34 * p56)
            x, y, z = p34 * p56 * inv, p12 * p56 * inv, p12 * p34 * inv
            iam, ia1 = a1 * z, am * z                        # 1 / (C50 + C) at midpoint, end
        else:
            inv = 1.0 / (p12 * p34)
            x, y = p34 * inv, p12 * inv
        ivq1, ivm, ivq3, iv1 = vm * x, vq1 * x, v1 * y, vq3 * y  # 1 / v at the quarter points
        hq1 = _hyp_ratio((1.0 - dwq1) * ivq1, h0, q, l, mode)
        hm = _hyp_ratio((1.0 - dwm) * ivm, h0, q, l, mode)
        hq3 = _hyp_ratio((1.0 - dwq3) * ivq3, h0, q, l, mode)
        h1 = _hyp_ratio((1.0 - dw1) * iv1, h0, q, l, mode)
        s[_S_HS * LANES + l] += s[_S_H * LANES + l] + 4.0 * (hq1 + hq3) + 2.0 * hm + h1
        s[_S_H * LANES + l] = h1
        if nkw or store:
            k0, g = q[_Q_K0 * LANES + l], q[_Q_GAIN * LANES + l]
            ks = s[_S_K * LANES + l]
            km = k0 * vm * (1.0 + g * Cm * iam)
            k1 = k0 * v1 * (1.0 + g * C1 * ia1)
            s[_S_K * LANES + l] = k1
            kcl = q[_Q_KCL * LANES + l]
            fbm = _exp(-(0.5 * kcl + dt24 * (5.0 * ks + 8.0 * km - k1)))  # B(mid) / B0
            fb1 = _exp(-(kcl + dt6 * (ks + 4.0 * km + k1)))             # B(end) / B0
            eo, eoh = q[_Q_EO * LANES + l], q[_Q_EOH * LANES + l]
            tb = dt6 * (eo * ks + 4.0 * eoh * km * fbm + k1 * fb1)       # T(end) per B0
            tbm = dt24 * (5.0 * eoh * ks + 8.0 * km * fbm
                          - q[_Q_EOHI * LANES + l] * k1 * fb1)            # T(mid) per B0
            eta = q[_Q_ETA * LANES + l]
            sm, s1 = 1.0 - eta * hm, 1.0 - eta * h1
            if nkw:
                B0, T0 = s[_S_B * LANES + l], s[_S_T * LANES + l]
                T1 = eo * T0 + tb * B0
                Tm = eoh * T0 + tbm * B0
                s[_S_B * LANES + l] = B0 * fb1
                s[_S_T * LANES + l] = T1
                E1 = T1 * s1
                s[_S_AU * LANES + l] += s[_S_E * LANES + l] + 4.0 * (Tm * sm) + E1
                s[_S_E * LANES + l] = E1
                # endogenous pool: G exact (deficit decays at k_e), Te' = kin n_e G - k_e Te
                # by the same Simpson and quadratic rules as T, with e^{-k_e t} for e^{-kout t}
                eg, egh = q[_Q_EG * LANES + l], q[_Q_EGH * LANES + l]
                gd0 = s[_S_GD * LANES + l]
                G0, Gm, G1 = 1.0 - gd0, 1.0 - gd0 * egh, 1.0 - gd0 * eg
                ne, Te0 = q[_Q_NE * LANES + l], s[_S_TE * LANES + l]
                Te1 = eg * Te0 + ne * dt6 * (eg * ks * G0 + 4.0 * egh * km * Gm + k1 * G1)
                Tem = egh * Te0 + ne * dt24 * (5.0 * egh * ks * G0 + 8.0 * km * Gm
                                               - q[_Q_EGHI * LANES + l] * k1 * G1)
                s[_S_GD * LANES + l] = gd0 * eg
                s[_S_TE * LANES + l] = Te1
                Ee1 = Te1 * s1
                s[_S_AUE * LANES + l] += s[_S_EE * LANES + l] + 4.0 * (Tem * sm) + Ee1
                s[_S_EE * LANES + l] = Ee1
            if store:
                cf[_CF_EO * LANES + l], cf[_CF_TB * LANES + l] = eo, tb
                cf[_CF_BB * LANES + l], cf[_CF_EOH * LANES + l] = fb1, eoh
                cf[_CF_TBM * LANES + l] = tbm
                cf[_CF_SM * LANES + l], cf[_CF_S1 * LANES + l] = sm, s1


_V0 = _V1 = _V2 = _V3 = None


def _sub_steps_mode_py(s, q, cf, dt, h0, mode):  # pragma: no cover - compiled
    """One sub-step of every lane by the variant of :func:`_sub_steps_py` for the block's
    hypoxia exponent ``mode`` (``_V1``, ``_V2``, ``_V3``, ``_V0``: constants of each compiled
    dispatcher, see :func:`_specialise`)."""
    if mode == 1:
        _V1(s, q, cf, dt, h0)
    elif mode == 2:
        _V2(s, q, cf, dt, h0)
    elif mode == 3:
        _V3(s, q, cf, dt, h0)
    else:
        _V0(s, q, cf, dt, h0)


def _specialise(fn: Any, suffix: str, **constants: Any) -> Any:
    """``fn`` compiled with some of its module's globals replaced by ``constants`` (numba folds
    globals into the machine code), under the name ``fn.__name__ + suffix``: one cache entry per
    variant (numba's on-disk cache is keyed by the function's name and byte code, not by its
    globals).

    The variants of :func:`_sub_steps_py` were inlined into the kernels by numba
    (``inline="always"``), eight copies per kernel, which numba typed again each time: a cold
    compile of the two kernels took ~100 s on a 2-core machine, almost all of it in numba's
    own passes, not LLVM's.  As separate functions each variant is typed once and shared by
    both kernels; LLVM still inlines and vectorises them."""
    g = dict(fn.__globals__)
    g.update(constants)
    name = fn.__name__.removesuffix("_py") + suffix
    f = pytypes.FunctionType(fn.__code__, g, name, fn.__defaults__, fn.__closure__)
    f.__qualname__ = name
    f.__doc__ = fn.__doc__
    f.__module__ = fn.__module__
    return njit(cache=True, error_model="numpy", fastmath={"contract"})(f)


def _mode_variants(nkw: bool, store: bool, tag: str) -> Any:
    """The sub-step of :func:`_sub_steps_py` for ``nkw`` and ``store``, dispatched on the mode."""
    v = {f"_V{m}": _specialise(_sub_steps_py, f"_{tag}{m}", _NKW=nkw, _STORE=store, _MODE=m)
         for m in (0, 1, 2, 3)}
    return _specialise(_sub_steps_mode_py, f"_{tag}", **v)


_steps_nk = _mode_variants(True, False, "nk")        # TME and NK cells
_steps_tme = _mode_variants(False, False, "tme")     # TME only (no NK cells yet)
_steps_store = _mode_variants(False, True, "store")  # TME, NK propagator to ``cf``


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def horizon_block_body(b0, b1, spd, dt, D, U, rowptr, jidx, jw, jv, jP, jT, jB, jG, jTe,
                        ascale, e_w, e_v, e_e,
                      e_a, c_pc, e_eh, c_pch, sq_ev, k0, gain, c50, kcl_dt, e_out, e_wh, e_oh,
                      e_wq, e_vq, e_g, e_gh, n_e, te0, h0, h_max, gamma, eta, nk, endo, traj,
                      fh_full, fa_full, fd_c, fh_c, fa_c, out):  # pragma: no cover - compiled
    """Blocks ``b0`` to ``b1 - 1`` (schedules ``b * LANES`` on) of :func:`horizon_block`."""
    n, days = D.shape
    want = traj.shape[0] > 0
    rec = fh_full.shape[0] > 0
    for b in range(b0, b1):   # one call per thread: no per-block reference counting
        i0 = b * LANES
        m = min(LANES, n - i0)
        s = np.zeros(_NS * LANES)
        q = np.ones(_NQ * LANES)
        cf = np.zeros(7 * LANES)
        hs_tot = np.zeros(LANES)
        au_tot = np.zeros(LANES)
        aue_tot = np.zeros(LANES)
        au_start = np.zeros(LANES)
        cnt = np.zeros(LANES, np.int64)
        mode = _load_lanes(q, s, i0, m, h0, e_w, e_v, e_e, e_a, c_pc, e_eh, c_pch, sq_ev, k0,
                           gain, c50, kcl_dt, e_out, h_max, gamma, eta, ascale, e_wh, e_oh,
                           e_wq, e_vq, e_g, e_gh, n_e, te0)
        nkon = endo                                 # the patient's own NK cells act from day 0
        for j in range(days):
            for l in range(m):                      # fractions (branchy; few lane-days)
                i = i0 + l
                d = D[i, j]
                if d > 0.0:
                    c = cnt[l]
                    k = jidx[rowptr[i] + c]
                    cnt[l] = c + 1
                    hi = s[_S_H * LANES + l]
                    # the activity integral over day j - 1
                    a = q[_Q_ASC * LANES + l] * (au_tot[l] - au_start[l]) if nk else 0.0
                    fd_c[i, c], fh_c[i, c], fa_c[i, c] = d, hi, a
                    if rec:
                        fh_full[i, j], fa_full[i, j] = hi, a
                    dwi = 1.0 - (1.0 - s[_S_DW * LANES + l]) * jw[k]
                    dvi = 1.0 - (1.0 - s[_S_DV * LANES + l]) * jv[k]
                    s[_S_DW * LANES + l], s[_S_DV * LANES + l] = dwi, dvi
                    s[_S_P * LANES + l] += jP[k]
                    s[_S_T * LANES + l] *= jT[k]
                    s[_S_B * LANES + l] *= jB[k]
                    s[_S_GD * LANES + l] = 1.0 - (1.0 - s[_S_GD * LANES + l]) * jG[k]
                    s[_S_TE * LANES + l] *= jTe[k]
                    s[_S_H * LANES + l] = _hypoxia(dwi, dvi, h0, q[_Q_G * LANES + l],
                                                    q[_Q_HMX * LANES + l])
            if nk:                                  # infusions (B, T >= 0)
                cells = 0.0
                for l in range(m):
                    Bi = s[_S_B * LANES + l] + U[i0 + l, j]
                    Ti = s[_S_T * LANES + l]
                    s[_S_B * LANES + l] = Bi
                    s[_S_E * LANES + l] = Ti * (1.0 - q[_Q_ETA * LANES + l]
                                                 * s[_S_H * LANES + l])
                    s[_S_EE * LANES + l] = s[_S_TE * LANES + l] * (
                        1.0 - q[_Q_ETA * LANES + l] * s[_S_H * LANES + l])
                    cells += Bi + Ti
                nkon = nkon or cells > 0.0
            for l in range(LANES):
                au_start[l] = au_tot[l]
                s[_S_HS * LANES + l] = 0.0
                s[_S_AU * LANES + l] = 0.0
                s[_S_AUE * LANES + l] = 0.0
            if nkon:
                _start_day(s, q)
            for k in range(spd):
                if want:
                    for l in range(m):
                        _record(traj, i0 + l, j * spd + k, s, l, s[_S_E * LANES + l])
                if nkon:
                    _steps_nk(s, q, cf, dt, h0, mode)
                else:
                    _steps_tme(s, q, cf, dt, h0, mode)
            for l in range(LANES):
                hs_tot[l] += dt / 12.0 * s[_S_HS * LANES + l]
                au_tot[l] += dt / 6.0 * s[_S_AU * LANES + l]
                aue_tot[l] += dt / 6.0 * s[_S_AUE * LANES + l]
        for l in range(m):
            i = i0 + l
            Ti, hi = s[_S_T * LANES + l], s[_S_H * LANES + l]
            if want:
                _record(traj, i, days * spd, s, l, Ti * (1.0 - q[_Q_ETA * LANES + l] * hi))
            for c, r in enumerate((_S_DW, _S_DV, _S_P, _S_C, _S_B, _S_T, _S_H)):
                out[i, c] = s[r * LANES + l]
            out[i, 7], out[i, 8], out[i, 9] = hs_tot[l], au_tot[l], aue_tot[l]


def horizon_block(spd, dt, D, U, rowptr, jidx, jw, jv, jP, jT, jB, jG, jTe, ascale, e_w,
                  e_v, e_e, e_a, c_pc, e_eh, c_pch, sq_ev, k0, gain, c50, kcl_dt, e_out, e_wh,
                  e_oh, e_wq, e_vq, e_g, e_gh, n_e, te0, h0, h_max, gamma, eta, nk, endo, traj,
                  fh_full, fa_full, fd_c, fh_c, fa_c, out, parts):
    """The whole horizon of every schedule in one compiled pass, ``LANES`` schedules at a time.

    Day ``j`` of row ``i``: at the start, a fraction (``D[i, j] > 0``) records the FMISO
    fraction and the activity over the previous day, then applies the jumps ``jw, jv``
    (multiplying ``w, v``), ``jP`` (added to ``P``), ``jT, jB`` (multiplying the NK cells) that
    :func:`apply_fraction` gives on unit states; the day's infusions ``U`` are added to the
    blood; then ``spd`` sub-steps (:func:`_sub_steps_py`): exact propagators for the demand and
    vascular deficits ``dw = 1 - w``, ``dv = 1 - v`` and the chemokine pair ``P, C`` to each
    sub-step's midpoint and end; ``B, T`` fourth order in the trafficking rate
    ``k0 v (1 + g C / (C50 + C))`` (:func:`rtopt.model.surrogate.nk_infiltration_rate`) at the
    sub-step's start, midpoint and end; Simpson sums of the hypoxic fraction and of
    ``T (1 - eta h)`` (the activity without its constant factor).  ``out``
    (``(N, 9)``) receives ``1 - w, 1 - v, P, C, B, T, h``, the hypoxia integral and the
    (unscaled) activity integral; ``traj`` (``(N, K, 7)`` or empty) the states on the sub-step
    grid.

    Laid out for SIMD: the sub-steps of a block of schedules run as one loop over lanes
    (structure of arrays) without calls or branches
    (:func:`_exp` instead of libm; the hypoxia exponent dispatched per block), and the NK
    equations are skipped while a block has no NK cells (before its first infusion, and always
    when ``nk`` is off: they would add exact zeros).  Fraction jumps come from a table
    (:func:`_prepare`: row ``i``'s fractions are ``rowptr[i]:rowptr[i + 1]``, in day order,
    fraction ``k``'s jumps entry ``jidx[k]`` of ``jw, jv, jP, jT, jB``); the
    dose, hypoxic fraction and previous-day activity of each fraction are written compacted to
    ``fd_c, fh_c, fa_c`` (``(N, F)``) and, when they are not empty, to ``fh_full, fa_full``
    (``(N, days)``).
    """
    _run_blocks(horizon_block_body, D.shape[0], parts,
                (spd, dt, D, U, rowptr, jidx, jw, jv, jP, jT, jB, jG, jTe, ascale,
                 e_w, e_v, e_e, e_a, c_pc, e_eh, c_pch, sq_ev, k0, gain, c50, kcl_dt,
                 e_out, e_wh, e_oh, e_wq, e_vq, e_g, e_gh, n_e, te0, h0, h_max, gamma,
                 eta, nk, endo, traj, fh_full, fa_full, fd_c, fh_c, fa_c, out))


horizon_block_parallel = horizon_block_serial = horizon_block
"""The same function (one compiled body serves both; kept for the batch API's names)."""


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def infusion_block_body(b0, b1, spd, dt, D, rowptr, jidx, jw, jv, jP, jT, jB, ascale, e_w, e_v, e_e,
                       e_a, c_pc, e_eh, c_pch, sq_ev, k0, gain, c50, kcl_dt, e_out, e_wh, e_oh,
                       e_wq, e_vq, e_g, e_gh, n_e, te0, h0, h_max, gamma, eta, cdays, auc,
                       fa):  # pragma: no cover - compiled
    """Blocks ``b0`` to ``b1 - 1`` (schedules ``b * LANES`` on) of :func:`infusion_block`."""
    n, days = D.shape
    K = cdays.shape[0]
    for b in range(b0, b1):   # one call per thread: no per-block reference counting
        i0 = b * LANES
        m = min(LANES, n - i0)
        s = np.zeros(_NS * LANES)
        q = np.ones(_NQ * LANES)
        cf = np.zeros(7 * LANES)
        Bc = np.zeros((K, LANES))
        Tc = np.zeros((K, LANES))
        Ec = np.zeros((K, LANES))
        au = np.zeros((K, LANES))
        au_tot = np.zeros((K, LANES))
        au_start = np.zeros((K, LANES))
        cnt = np.zeros(LANES, np.int64)
        mode = _load_lanes(q, s, i0, m, h0, e_w, e_v, e_e, e_a, c_pc, e_eh, c_pch, sq_ev, k0,
                           gain, c50, kcl_dt, e_out, h_max, gamma, eta, ascale, e_wh, e_oh,
                           e_wq, e_vq, e_g, e_gh, n_e, te0)
        kon = 0                                     # channels started (infused by day j)
        for j in range(days):
            while kon < K and cdays[kon] <= j:
                kon += 1
            for l in range(m):
                i = i0 + l
                d = D[i, j]
                if d > 0.0:
                    c = cnt[l]
                    k = jidx[rowptr[i] + c]
                    cnt[l] = c + 1
                    for ch in range(kon):
                        fa[i, ch, c] = q[_Q_ASC * LANES + l] * (au_tot[ch, l] - au_start[ch, l])
                        Tc[ch, l] *= jT[k]
                        Bc[ch, l] *= jB[k]
                    dwi = 1.0 - (1.0 - s[_S_DW * LANES + l]) * jw[k]
                    dvi = 1.0 - (1.0 - s[_S_DV * LANES + l]) * jv[k]
                    s[_S_DW * LANES + l], s[_S_DV * LANES + l] = dwi, dvi
                    s[_S_P * LANES + l] += jP[k]
                    s[_S_H * LANES + l] = _hypoxia(dwi, dvi, h0, q[_Q_G * LANES + l],
                                                    q[_Q_HMX * LANES + l])
            for ch in range(kon):
                if cdays[ch] == j:
                    for l in range(m):
                        Bc[ch, l] += 1.0
                for l in range(m):
                    au_start[ch, l] = au_tot[ch, l]
                    Ec[ch, l] = Tc[ch, l] * (1.0 - q[_Q_ETA * LANES + l] * s[_S_H * LANES + l])
                    au[ch, l] = 0.0
            if kon > 0:
                _start_day(s, q)
            for k in range(spd):
                if kon > 0:
                    _steps_store(s, q, cf, dt, h0, mode)
                else:
                    _steps_tme(s, q, cf, dt, h0, mode)
                for ch in range(kon):
                    for l in range(m):
                        B0, T0 = Bc[ch, l], Tc[ch, l]
                        T1 = cf[_CF_EO * LANES + l] * T0 + cf[_CF_TB * LANES + l] * B0
                        Tm = cf[_CF_EOH * LANES + l] * T0 + cf[_CF_TBM * LANES + l] * B0
                        Bc[ch, l] = B0 * cf[_CF_BB * LANES + l]
                        Tc[ch, l] = T1
                        E1 = T1 * cf[_CF_S1 * LANES + l]
                        au[ch, l] += Ec[ch, l] + 4.0 * (Tm * cf[_CF_SM * LANES + l]) + E1
                        Ec[ch, l] = E1
            for ch in range(kon):
                for l in range(m):
                    au_tot[ch, l] += dt / 6.0 * au[ch, l]
        for l in range(m):
            for ch in range(K):
                auc[i0 + l, ch] = au_tot[ch, l]


def infusion_block(spd, dt, D, rowptr, jidx, jw, jv, jP, jT, jB, ascale, e_w, e_v, e_e,
                       e_a, c_pc, e_eh, c_pch, sq_ev, k0, gain, c50, kcl_dt, e_out, e_wh, e_oh,
                       e_wq, e_vq, e_g, e_gh, n_e, te0, h0, h_max, gamma, eta, cdays, auc, fa,
                       parts):
    """Single-infusion responses for :func:`infusion_kernels`, sharing the TME between them.

    Every NK state is linear in the infusions and the TME does not depend on them, so each row
    runs the TME of :func:`horizon_block` once and carries one NK channel (``B, T``) per
    candidate infusion day ``cdays`` (ascending): the expensive part of a sub-step (trafficking
    rates, exponentials, hypoxia) is computed once (:func:`_sub_steps_py` with ``store``) and its
    linear propagator applied to every channel that has started.  ``auc`` (``(N, K)``) receives
    each channel's (unscaled) activity integral, ``fa`` (``(N, K, F)``) its scaled activity over
    the day before each fraction.
    """
    _run_blocks(infusion_block_body, D.shape[0], parts,
                (spd, dt, D, rowptr, jidx, jw, jv, jP, jT, jB, ascale, e_w, e_v, e_e, e_a,
                 c_pc, e_eh, c_pch, sq_ev, k0, gain, c50, kcl_dt, e_out, e_wh, e_oh, e_wq,
                 e_vq, e_g, e_gh, n_e, te0, h0, h_max, gamma, eta, cdays, auc, fa))


infusion_block_parallel = infusion_block_serial = infusion_block
"""The same function (one compiled body serves both; kept for the batch API's names)."""


@njit(cache=True, inline="always", error_model="numpy")
def _row_ln_s(fd, fh, fa, i, alpha, beta, smax, e50, ratio, anox, oer_i, oer, d_t, lq_l, sc, v,
              prod, neg, w):  # pragma: no cover - compiled
    """``v[q]``: ln S of row ``i``'s fractions at the node ``sc[q]`` (the body of
    :func:`_ln_s_nodes_py`, which states the method); ``prod`` (``Q``) is scratch."""
    Q = sc.shape[0]
    a0, b, sm, e5 = _at(alpha, i), _at(beta, i), _at(smax, i), _at(e50, i)
    rt, ax, oi, oa = _at(ratio, i), _at(anox, i), _at(oer_i, i), _at(oer, i)
    dti = _at(d_t, i)
    q0 = 0
    while q0 < Q and sc[q0] <= 0.0:
        q0 += 1
    g0 = sc[q0] if q0 < Q else 0.0
    step = (sc[Q - 1] - g0) / (Q - 1 - q0) if q0 < Q - 1 else 0.0
    v[:] = 0.0
    prod[:] = 1.0
    nsum = 0.0                                   # sum of n_min over the fractions
    for f in range(fd.shape[1]):
        d = fd[i, f]
        if d <= 0.0:
            continue
        act = fa[i, f]
        a = a0 * (1.0 + sm * act / (e5 + act))
        hc = rt * fh[i, f]
        hc = hc if hc < 1.0 else 1.0
        ha = hc * ax
        hi = hc - ha
        w[0], w[1], w[2] = 1.0 - (hi + ha), hi, ha
        for k in range(3):
            x = d if k == 0 else d / oi if k == 1 else d / oa
            lq = x * (a + b * x)
            if lq_l and x > dti:
                lq = dti * (a + b * dti) + (a + 2.0 * b * dti) * (x - dti)
            neg[k] = lq
        nmin = np.inf                            # least-killed populated compartment
        for k in range(3):
            if w[k] > 0.0 and neg[k] < nmin:
                nmin = neg[k]
        if nmin == np.inf:
            nmin = 0.0
        for q in range(q0):                      # nodes at alpha = 0: no kill
            s = w[0] + w[1] + w[2]
            prod[q] *= s
        e0 = w[0] * np.exp(-g0 * (neg[0] - nmin)) if w[0] > 0.0 else 0.0
        e1 = w[1] * np.exp(-g0 * (neg[1] - nmin)) if w[1] > 0.0 else 0.0
        e2 = w[2] * np.exp(-g0 * (neg[2] - nmin)) if w[2] > 0.0 else 0.0
        r0 = r1 = r2 = 1.0
        if Q - q0 > 1:                           # (unused for a single node)
            r0 = np.exp(-step * (neg[0] - nmin))
            r1 = np.exp(-step * (neg[1] - nmin))
            r2 = np.exp(-step * (neg[2] - nmin))
        nsum += nmin
        for q in range(q0, Q):
            prod[q] *= (e0 + e1) + e2
            e0 *= r0
            e1 *= r1
            e2 *= r2
        # the factors fall with the node's radiosensitivity, so the last node's product is
        # the least: rescale every node before any could underflow
        if prod[Q - 1] < 1e-250:
            for q in range(q0, Q):
                v[q] += np.log(prod[q])
                prod[q] = 1.0
    # every prod is >= ~1e-250 here (rescaled when below), so the arithmetic logarithm
    # applies; unsigned index: vectorised
    for q in range(np.uint64(Q)):
        v[q] += _log(prod[q]) - sc[q] * nsum


def _ln_s_nodes_py(fd, fh, fa, alpha, beta, smax, e50, ratio, anox, oer_i, oer, d_t, lq_l,
                   scale, out):  # pragma: no cover - compiled
    """``out[i, q]``: ln S of row ``i``'s fractions at population node ``q`` (LQ and LQ-L).

    The compiled form of :func:`fraction_log_survival` summed over fractions, for the survival
    models that are proportional to the patient's radiosensitivity ``scale[i|0, q]`` (relative
    to the nominal alpha).  Per fraction, ``ln sum_k w_k exp(-scale n_k)`` over the three
    compartments is written as ``-scale n_min + ln sum_k w_k exp(-scale (n_k - n_min))`` with
    ``n_min`` the least-killed populated compartment, so the sum lies in ``[w_min, 1]`` (no
    underflow), and the compartment factors follow the node grid, linear in ``scale`` above 0,
    as a geometric sequence: two exponentials per compartment and fraction instead of one per
    node.  The per-fraction sums are multiplied (rescaled before they could underflow) and one
    logarithm per node closes the row (:func:`_row_ln_s`).  ``fd, fh, fa`` are ``(N, F)``
    dose, FMISO fraction and previous-day activity (0-dose padding contributes nothing).
    """
    n = fd.shape[0]
    Q = scale.shape[1]
    for blk in prange((n + 63) // 64):             # rows in blocks: scratch allocated once
        prod = np.empty(Q)
        neg = np.empty(3)
        w = np.empty(3)
        for i in range(blk * 64, min(n, blk * 64 + 64)):
            sc = scale[i] if scale.shape[0] > 1 else scale[0]
            _row_ln_s(fd, fh, fa, i, alpha, beta, smax, e50, ratio, anox, oer_i, oer, d_t, lq_l,
                      sc, out[i], prod, neg, w)


ln_s_nodes_parallel, ln_s_nodes_serial = _jit_pair(_ln_s_nodes_py, rows=(0, 1, 2, 14),
                                                   maybe_rows=tuple(range(3, 12)) + (13,),
                                                   cache=True, error_model="numpy",
                                                   fastmath={"contract"})
"""Threaded and serial compiled :func:`_ln_s_nodes_py` (ln S at population nodes)."""


_X_ONE = -25.0
"""Below this ``x = ln N0 + ln S`` the per-patient TCP ``exp(-e^x)`` is taken as 1: it is
above ``1 - 1.4e-11`` there."""
_X_ZERO = 3.3
"""Above this the per-patient TCP is taken as 0: it is below ``exp(-e^3.3) = 1.7e-12`` there."""
_X_TAIL = -11.5
"""Below this the per-patient TCP ``exp(-y)``, ``y = e^x < 1.02e-5``, is taken as
``1 - y + y^2 / 2``: within ``y^3 / 6 < 1.8e-16`` of it."""
POPULATION_TCP_ABS_ERROR = 2e-11
"""Bound on the absolute difference between :func:`_population_tcp_py` (and
:func:`_population_outcomes_py`) and the plain computation over all fine points
(:func:`rtopt.model.radiobiology.population_tcp`): the two thresholds above (the weights sum
to 1; 1.4e-11 + 1.7e-12), plus the series below :data:`_X_TAIL` (< 1.8e-16),
:func:`_exp_tcp` (at most twice per evaluated point, each within 1e-14 relative: ``exp(-y)``
off by at most ``1e-14 / e`` from ``y`` and 1e-14 from itself, under 1.4e-14 in all) and
round-off."""


@njit(cache=True, inline="always", error_model="numpy")
def _row_tcp(v, c, frac, w, start, wsum, x):  # pragma: no cover - compiled
    """Population TCP of one row from its node values ``v`` (ln S) and ``c = ln N0``; ``x`` is
    scratch of the fine grid's length (the method: :func:`_population_tcp_py`)."""
    Q = v.shape[0]
    qa = Q
    qb = -1
    acc = 0.0
    for q in range(Q - 1):
        a, b = v[q] + c, v[q + 1] + c
        if a > _X_ZERO and b > _X_ZERO:
            continue
        if a < _X_ONE and b < _X_ONE:
            acc += wsum[q]
            continue
        qb = q
        qa = q if qa == Q else qa
    if qb < 0:
        return acc if acc < 1.0 else 1.0
    for q in range(qa + 1, qb):              # settled intervals inside the window: evaluated
        if v[q] + c < _X_ONE and v[q + 1] + c < _X_ONE:
            acc -= wsum[q]
    # unsigned indices: numba then omits its negative-index wrap-around, which kept LLVM
    # from vectorising these loops
    j0, j1 = np.uint64(start[qa]), np.uint64(start[qb + 1])
    for q in range(qa, qb + 1):
        a = v[q] + c
        d = (v[q + 1] + c) - a
        for j in range(np.uint64(start[q]), np.uint64(start[q + 1])):
            x[j] = a + frac[j] * d
    # the tail: from the run's first node below _X_TAIL on, when the nodes do not rise again
    # (x stays below it), exp(-y) by 1 - y + y^2 / 2 (y = e^x)
    jt = j1
    for q in range(qa, qb + 1):
        if v[q] + c < _X_TAIL:
            rises = False
            for r in range(q, qb + 1):
                rises = rises or v[r + 1] > v[r]
            jt = j1 if rises else np.uint64(start[q])
            break
    for j in range(j0, jt):                  # branch-free: vectorised
        t = x[j]
        t = -40.0 if t < -40.0 else t        # exp(-e^-40) is 1.0 in double precision
        t = 6.5 if t > 6.5 else t            # exp(-e^6.5) < 1e-288
        x[j] = _exp_tcp(-_exp_tcp(t))
    for j in range(jt, j1):
        t = x[j]
        y = _exp_tcp(-40.0 if t < -40.0 else t)
        x[j] = 1.0 - y * (1.0 - 0.5 * y)
    s0 = s1 = s2 = s3 = 0.0                  # four partial sums: independent additions
    j = j0
    four = np.uint64(4)
    while j + four <= j1:
        s0 += w[j] * x[j]
        s1 += w[j + np.uint64(1)] * x[j + np.uint64(1)]
        s2 += w[j + np.uint64(2)] * x[j + np.uint64(2)]
        s3 += w[j + np.uint64(3)] * x[j + np.uint64(3)]
        j += four
    while j < j1:
        s0 += w[j] * x[j]
        j += np.uint64(1)
    acc += (s0 + s1) + (s2 + s3)
    return acc if acc < 1.0 else 1.0         # the weights sum to 1 only to round-off


def _population_tcp_py(ln_s, log_n0, frac, w, start, wsum, out):  # pragma: no cover - compiled
    """:func:`rtopt.model.radiobiology.population_tcp` fused into one pass per row (same grid, same
    linear interpolation; a test holds the two together within
    :data:`POPULATION_TCP_ABS_ERROR`).

    The fine points between nodes ``q`` and ``q + 1`` are ``start[q]:start[q + 1]`` (weight
    ``wsum[q]`` in all).  Their ``x = ln N0 + ln S`` lies between the two nodes' values
    (linear interpolation), so an interval entirely below :data:`_X_ONE` adds its weight and
    one entirely above :data:`_X_ZERO` adds nothing.  The intervals from the first to the last
    one where the per-patient TCP falls from 1 to 0 (one run for a curve monotone in the
    radiosensitivity, about 12 of the 40 for clinical schedules) are evaluated point by point
    (:func:`_row_tcp`): ``x`` over the run, then ``exp(-e^x)`` over it in one branch-free
    loop (:func:`_exp_tcp` twice; vectorised; ``1 - y + y^2 / 2`` of ``y = e^x`` from the first
    node below :data:`_X_TAIL` on, when the nodes do not rise after it), then the weighted
    sum.  A per-patient TCP below 1e-288 (``x > 6.5``) counts as such.
    """
    n = ln_s.shape[0]
    for blk in prange((n + 63) // 64):
        x = np.empty(frac.shape[0])
        for i in range(blk * 64, min(n, blk * 64 + 64)):
            c = log_n0[i] if log_n0.shape[0] > 1 else log_n0[0]
            out[i] = _row_tcp(ln_s[i], c, frac, w, start, wsum, x)


population_tcp_parallel, population_tcp_serial = _jit_pair(_population_tcp_py, rows=(0, 6),
                                                           maybe_rows=(1,), cache=True,
                                                           error_model="numpy",
                                                           fastmath={"contract"})
"""Threaded and serial compiled :func:`_population_tcp_py` (fused population TCP)."""


def _population_outcomes_py(fd, fh, fa, alpha, beta, smax, e50, ratio, anox, oer_i, oer, d_t,
                            lq_l, scale, shift, shift0, log_n0, frac, w, start, wsum, ln_mid,
                            lc, lc0):  # pragma: no cover - compiled
    """Per row ``i``: ln S at the population nodes (:func:`_row_ln_s`, as
    :func:`_ln_s_nodes_py`), its value at the nominal node (the middle one) into ``ln_mid[i]``,
    and the population TCP (:func:`_row_tcp`, as :func:`_population_tcp_py`) of the nodes
    plus the row's shift ``shift[i|0]`` (NK kill and repopulation, ln units) into ``lc[i]``;
    with a non-empty ``shift0`` also that of the same nodes plus ``shift0[i|0]`` into
    ``lc0[i]`` (the plan without NK kill, when its ln S at the nodes is the same).  One pass
    per row in per-thread scratch: no ``(N, nodes)`` arrays.  Threaded in four parts per
    thread: on a machine shared with other jobs, two parts would wait for the slower thread."""
    n = fd.shape[0]
    Q = scale.shape[1]
    mid = Q // 2
    for blk in prange((n + 63) // 64):
        tot, prod = np.empty(Q), np.empty(Q)
        neg = np.empty(3)
        wk = np.empty(3)
        x = np.empty(frac.shape[0])
        for i in range(blk * 64, min(n, blk * 64 + 64)):
            sc = scale[i] if scale.shape[0] > 1 else scale[0]
            _row_ln_s(fd, fh, fa, i, alpha, beta, smax, e50, ratio, anox, oer_i, oer, d_t, lq_l,
                      sc, tot, prod, neg, wk)
            ln_mid[i] = tot[mid]
            c = _at(log_n0, i)
            s = _at(shift, i)
            for q in range(Q):
                prod[q] = tot[q] + s
            lc[i] = _row_tcp(prod, c, frac, w, start, wsum, x)
            if shift0.shape[0] > 0:
                s = _at(shift0, i)
                for q in range(Q):
                    prod[q] = tot[q] + s
                lc0[i] = _row_tcp(prod, c, frac, w, start, wsum, x)


population_outcomes_parallel, population_outcomes_serial = _jit_pair(
    _population_outcomes_py, rows=(0, 1, 2, 21, 22),
    maybe_rows=tuple(range(3, 12)) + (13, 14, 15, 16, 23), per_thread=4, cache=True,
    error_model="numpy", fastmath={"contract"})
"""Threaded and serial compiled :func:`_population_outcomes_py` (ln S at the nominal node and
population local control of each row in one pass)."""


def _fraction_scan_py(D, cnt, nu, span):  # pragma: no cover - compiled
    """Per row of ``D``: the number of fractions ``cnt``, of fractions whose dose differs from
    the row's previous fraction ``nu`` (the distinct doses whose jumps are computed), and the
    days from the first to the last fraction ``span`` (:func:`rtopt.model.radiobiology.overall_days`;
    a test holds the two together)."""
    n, days = D.shape
    for i in prange(n):
        c = 0
        u = 0
        first = days
        last = -1
        prev = 0.0
        for j in range(days):                   # branch-free (fractions fall on random days)
            d = D[i, j]
            f = d > 0.0
            u += f and (c == 0 or d != prev)
            c += f
            prev = d if f else prev
            first = j if f and j < first else first
            last = j if f else last
        cnt[i] = c
        nu[i] = u
        span[i] = last - first if c > 0 else 0


def _fraction_fill_py(D, rowptr, uptr, jidx, tdose, trow):  # pragma: no cover - compiled
    """The fractions of every row in day order (``rowptr`` from :func:`_fraction_scan_py`):
    ``jidx[k]`` indexes the jump table ``tdose`` (one entry per run of equal doses in a row,
    ``trow`` its row, ``uptr`` the rows' first entries)."""
    n, days = D.shape
    for i in prange(n):
        k = rowptr[i]
        u = uptr[i] - 1
        prev = 0.0
        for j in range(days):
            d = D[i, j]
            if d > 0.0:
                if k == rowptr[i] or d != prev:
                    u += 1
                    tdose[u] = d
                    trow[u] = i
                prev = d
                jidx[k] = u
                k += 1


_fraction_scan_parallel, _fraction_scan_serial = _jit_pair(_fraction_scan_py, rows=(0, 1, 2, 3),
                                                           cache=True)
# rows write entries at their global offsets (rowptr, uptr) and their global index: serial only
_fraction_fill_serial = njit(cache=True, nogil=True)(_fraction_fill_py)
_fraction_fill_parallel = _fraction_fill_serial


def fraction_index(D):
    """``rowptr, jidx, tdose, trow, span`` of :func:`_fraction_fill_py` for a float dose matrix."""
    n = D.shape[0]
    serial = n < SERIAL_BELOW
    cnt, nu, span = np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    (_fraction_scan_serial if serial else _fraction_scan_parallel)(D, cnt, nu, span)
    rowptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(cnt, out=rowptr[1:])
    uptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(nu, out=uptr[1:])
    jidx = np.empty(rowptr[-1], np.int64)
    tdose, trow = np.empty(uptr[-1]), np.empty(uptr[-1], np.int64)
    (_fraction_fill_serial if serial else _fraction_fill_parallel)(D, rowptr, uptr, jidx, tdose,
                                                                   trow)
    return rowptr, jidx, tdose, trow, span, int(cnt.max(initial=0))
