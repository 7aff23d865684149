"""Explicit 64-byte vectors for numba kernels: accumulators that stay in registers.

numba's loops vectorize only where LLVM's auto-vectorizer chooses to, and in a direct
convolution it chose the wrong loop (the channel reduction, with gathers) and 256-bit
vectors. These intrinsics emit the vector code directly in LLVM IR: one *vector* is 64
bytes of lanes (``VL`` = 16 float32 or 8 float64; one AVX-512 register), and a kernel
keeps ``n`` of them in a stack block (``acc_alloc``) that it only ever touches at
constant indices, so LLVM's scalar replacement turns the block into ``n`` registers.
``n`` and every block index are compile-time literals for that reason.

- ``acc_alloc(32, like)``: room for 32 vectors of ``like``'s dtype (the pointer
  must not be stored or passed on).
- ``acc_zero(acc, n, like)``: acc[r] = 0, r < n.
- ``acc_bias(acc, FR, PV, b, off)``: acc[p*FR + k] = b[off + k] in every lane.
- ``acc_fill(acc, n, src, off)``: acc[r] = src[off : +VL], r < n.
- ``acc_outer(acc, FR, PV, w, woff, x, xoff)``: acc[p*FR + k] += w[woff + k] * x[xoff + p*VL : +VL]
  for k < FR, p < PV: an outer product of FR scalars (each broadcast; one
  ``vfmadd231ps`` with an embedded broadcast) and PV vectors.
- ``acc_outer_masked(acc, FR, PV, w, woff, x, xoff, m, moff, mstride)``: as ``acc_outer``, with
  vector p loaded under the lane mask m[moff + p*mstride] (bit l: lane l; the lanes off read
  as 0 and are not accessed, so they may lie outside ``x``): zero padding without a copy.
- ``acc_outer_rows(acc, NR, FR, w, woff, wstride, x, xoff)``: acc[r*FR + k] += w[woff + r*wstride + k]
  * x[xoff : +VL] for r < NR, k < FR: NR runs of FR broadcast scalars (each one FMA with an
  embedded broadcast) times one vector.
- ``acc_put(acc, FR, PV, dst, off, stride)``: dst[off + k*stride + p*VL : +VL] = acc[p*FR + k].
- ``acc_dot(acc, RF, NT, TV, g, goff, gstride, x, xoff)``: acc[a*NT + j] += g[goff + a*gstride : +VL]
  * x[xoff + j*s : +VL] for a < RF, j < NT, s = 1 (TV = 0) or VL (TV = 1): RF + NT vector
  loads feed RF*NT FMAs.
- ``acc_dot_masked(acc, RF, NT, g, goff, gstride, x, xoff, m, moff)``: as ``acc_dot`` with s = 1,
  x's vector j loaded under the lane mask m[moff + j] (lanes off read as 0, not accessed).
- ``acc_dot_masked_at(acc, RF, NT, g, goff, gstride, x, xoff, offs, ooff, m, moff)``: as
  ``acc_dot_masked`` with x's vector j at xoff + offs[ooff + j] (taps anywhere, not one entry apart).
- ``deinterleave(x, xo0, xo1, even, eo, odd, oo)``: of the 2*VL entries x[xo0 : +VL], x[xo1 : +VL]
  (in that order), the even-indexed ones to even[eo : +VL] and the odd-indexed ones to odd[oo : +VL].
- ``interleave(a, ao, b, bo, dst, do0, do1)``: its inverse: a[ao], b[ao], a[ao + 1], b[ao + 1], ...
  (2*VL entries), the first VL to dst[do0 : +VL], the last VL to dst[do1 : +VL].
- ``max_pool_2x2(x, o0, o1, n, y, yo, arg, ao)``: n <= VL windows of 2x2 max pooling, stride 2:
  window l takes x[o0 + 2l], x[o0 + 2l + 1], x[o1 + 2l], x[o1 + 2l + 1] (taps 0-3; strictly
  greater replaces, a NaN always does), its maximum to y[yo + l] and its tap to the byte
  arg[ao + l], with bit 7 set when the maximum is neither > 0 nor NaN
  (``pool.max_pool2d_forward_2x2``'s rule). Loads and stores are masked to the 2n and n
  entries, so nothing outside them is touched.
- ``max_unpool_2x2(g, go, n, arg, ao, keep, dst, d0, d1)``: the backward of n <= VL such windows:
  with k = arg[ao + l] & keep, dst[d0 + 2l], dst[d0 + 2l + 1], dst[d1 + 2l], dst[d1 + 2l + 1]
  = g[go + l] at tap k (0-3) and 0 at the other three (all four 0 when k > 3).
- ``transpose(src, so, sstride, m_in, dst, do, dstride, m_out, n_out)``: the VL x VL block whose row i is
  src[so + i*sstride : +VL] (lanes m_in.. read as 0, not accessed), transposed: its row j (source
  column j) to dst[do + j*dstride : +VL], for j < n_out, lanes below m_out only (log2(VL) rounds of
  lane zips).
- ``acc_get(acc, n, dst, off)``: dst[off + r*VL : +VL] = acc[r], r < n.
- ``acc_hsum(acc, RF, NT, dst, off, stride)``: dst[off + a*stride + j] += the sum of
  acc[a*NT + j]'s lanes (a tree of shuffles and adds, in a fixed order).

Arrays must be C-contiguous; offsets are flat element offsets and are not bounds
checked (the kernels compute them from the shapes they allocate). Numerics: each lane
is an ordinary multiply-add chain, contracted to FMA; no reassociation across lanes.
"""

from __future__ import annotations

from . import AVAILABLE

__all__ = ["acc_alloc", "acc_zero", "acc_fill", "acc_bias", "acc_outer", "acc_outer_masked", "acc_outer_rows", "acc_put", "acc_dot", "acc_dot_masked",
           "acc_dot_masked_at", "transpose", "deinterleave", "interleave", "max_pool_2x2", "max_unpool_2x2", "acc_get", "acc_hsum", "lanes"]


def lanes(dtype) -> int:
    """VL: lanes of one 64-byte vector of ``dtype``."""
    return 64 // dtype.itemsize


if AVAILABLE:
    import llvmlite.ir as ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    _I64 = ir.IntType(64)

    def _vector(context, dtype):
        return ir.VectorType(context.get_value_type(dtype), 64 // (dtype.bitwidth // 8))

    def _at(context, builder, aryty, ary, off):
        """Pointer to element ``off`` of a C-contiguous array."""
        return builder.gep(context.make_array(aryty)(context, builder, ary).data, [off])

    def _load(builder, ptr, vt):
        return builder.load(builder.bitcast(ptr, vt.as_pointer()), align=4)

    def _store(builder, value, ptr, vt):
        builder.store(value, builder.bitcast(ptr, vt.as_pointer()), align=4)

    def _slot(builder, acc, vt, k):
        return builder.gep(builder.bitcast(acc, vt.as_pointer()), [ir.Constant(_I64, k)])

    def _splat(builder, scalar, vt):
        undef = ir.Constant(vt, ir.Undefined)
        first = builder.insert_element(undef, scalar, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(first, undef, ir.Constant(ir.VectorType(ir.IntType(32), vt.count), [0] * vt.count))

    def _fma(builder, vt):
        bits = vt.element.intrinsic_name  # "f32" / "f64"
        return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vt, [vt, vt, vt]),
                                              f"llvm.fma.v{vt.count}{bits}")

    def _literals(*values):
        return all(isinstance(v, types.IntegerLiteral) for v in values)

    def _arrays(*arrays):
        return all(isinstance(a, types.Array) and a.layout == "C" for a in arrays)

    @intrinsic
    def acc_alloc(typingctx, n, like):
        if not _literals(n) or not _arrays(like):
            return None
        dtype = like.dtype

        def codegen(context, builder, sig, args):
            vt = _vector(context, dtype)
            block = cgutils.alloca_once(builder, ir.ArrayType(vt, n.literal_value))
            return builder.bitcast(block, context.get_value_type(dtype).as_pointer())

        return types.CPointer(dtype)(n, like), codegen

    @intrinsic
    def acc_zero(typingctx, acc, n, like):
        if not _literals(n) or not _arrays(like):
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, like.dtype)
            for r in range(n.literal_value):
                builder.store(ir.Constant(vt, None), _slot(builder, args[0], vt, r))
            return context.get_dummy_value()

        return types.void(acc, n, like), codegen

    @intrinsic
    def acc_bias(typingctx, acc, FR, PV, b, off):
        if not _literals(FR, PV) or not _arrays(b):
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, b.dtype)
            base = _at(context, builder, b, args[3], args[4])
            for k in range(FR.literal_value):
                value = _splat(builder, builder.load(builder.gep(base, [ir.Constant(_I64, k)])), vt)
                for p in range(PV.literal_value):
                    builder.store(value, _slot(builder, args[0], vt, p * FR.literal_value + k))
            return context.get_dummy_value()

        return types.void(acc, FR, PV, b, off), codegen

    @intrinsic
    def acc_outer(typingctx, acc, FR, PV, w, woff, x, xoff):
        if not _literals(FR, PV) or not _arrays(w, x) or w.dtype != x.dtype:
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, x.dtype)
            fma = _fma(builder, vt)
            wbase = _at(context, builder, w, args[3], args[4])
            xbase = _at(context, builder, x, args[5], args[6])
            nf, npv = FR.literal_value, PV.literal_value
            xs = [_load(builder, builder.gep(xbase, [ir.Constant(_I64, p * vt.count)]), vt) for p in range(npv)]
            for k in range(nf):
                wk = _splat(builder, builder.load(builder.gep(wbase, [ir.Constant(_I64, k)])), vt)
                for p in range(npv):
                    slot = _slot(builder, args[0], vt, p * nf + k)
                    builder.store(builder.call(fma, [wk, xs[p], builder.load(slot)]), slot)
            return context.get_dummy_value()

        return types.void(acc, FR, PV, w, woff, x, xoff), codegen

    @intrinsic
    def acc_fill(typingctx, acc, n, src, off):
        if not _literals(n) or not _arrays(src):
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, src.dtype)
            value = _load(builder, _at(context, builder, src, args[2], args[3]), vt)
            for r in range(n.literal_value):
                builder.store(value, _slot(builder, args[0], vt, r))
            return context.get_dummy_value()

        return types.void(acc, n, src, off), codegen

    @intrinsic
    def acc_outer_rows(typingctx, acc, NR, FR, w, woff, wstride, x, xoff):
        if not _literals(NR, FR) or not _arrays(w, x) or w.dtype != x.dtype:
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, x.dtype)
            fma = _fma(builder, vt)
            wbase = _at(context, builder, w, args[3], args[4])
            xv = _load(builder, _at(context, builder, x, args[6], args[7]), vt)
            nr, nf = NR.literal_value, FR.literal_value
            for r in range(nr):
                row = builder.gep(wbase, [builder.mul(args[5], ir.Constant(_I64, r))])
                for k in range(nf):
                    wk = _splat(builder, builder.load(builder.gep(row, [ir.Constant(_I64, k)])), vt)
                    slot = _slot(builder, args[0], vt, r * nf + k)
                    builder.store(builder.call(fma, [wk, xv, builder.load(slot)]), slot)
            return context.get_dummy_value()

        return types.void(acc, NR, FR, w, woff, wstride, x, xoff), codegen

    def _lanes_name(vt):
        """LLVM's name of a vector type in intrinsic names: v16f32, v8f64, v16i8."""
        element = vt.element
        return f"v{vt.count}" + (f"i{element.width}" if isinstance(element, ir.IntType) else element.intrinsic_name)

    def _masked_load_lanes(builder, ptr, vt, mask, passthru=None):
        """A vector load (``ptr`` any pointer) of the lanes set in ``mask`` (a vector of i1); the
        others are 0, or those of ``passthru`` (a vector of type ``vt``)."""
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vt, [vt.as_pointer(), ir.IntType(32), mask.type, vt]),
            f"llvm.masked.load.{_lanes_name(vt)}.p0")
        return builder.call(fn, [builder.bitcast(ptr, vt.as_pointer()), ir.Constant(ir.IntType(32), 1), mask,
                                 ir.Constant(vt, None) if passthru is None else passthru])

    def _masked_store_lanes(builder, value, ptr, mask):
        """Store the lanes of ``value`` set in ``mask`` (a vector of i1) at ``ptr`` (any pointer); nothing else."""
        vt = value.type
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [vt, vt.as_pointer(), ir.IntType(32), mask.type]),
            f"llvm.masked.store.{_lanes_name(vt)}.p0")
        builder.call(fn, [value, builder.bitcast(ptr, vt.as_pointer()), ir.Constant(ir.IntType(32), 1), mask])

    def _masked_load(builder, ptr, vt, bits):
        """A vector load of the lanes whose bit is set in ``bits`` (an integer); the others are 0."""
        mask = builder.bitcast(builder.trunc(bits, ir.IntType(vt.count)), ir.VectorType(ir.IntType(1), vt.count))
        return _masked_load_lanes(builder, ptr, vt, mask)

    def _masked_vectors(builder, vt, xbase, xstep, mbase, mstride, count):
        """``count`` vectors loaded under lane masks: vector i from xbase + i*xstep (elements),
        its mask m[i*mstride] (``mstride`` an IR integer)."""
        xs = []
        for i in range(count):
            bits = builder.load(builder.gep(mbase, [builder.mul(mstride, ir.Constant(_I64, i))]))
            ptr = builder.bitcast(builder.gep(xbase, [ir.Constant(_I64, i * xstep)]), vt.as_pointer())
            xs.append(_masked_load(builder, ptr, vt, bits))
        return xs

    @intrinsic
    def acc_outer_masked(typingctx, acc, FR, PV, w, woff, x, xoff, m, moff, mstride):
        if not _literals(FR, PV) or not _arrays(w, x, m) or w.dtype != x.dtype or not isinstance(m.dtype, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, x.dtype)
            fma = _fma(builder, vt)
            wbase = _at(context, builder, w, args[3], args[4])
            xbase = _at(context, builder, x, args[5], args[6])
            mbase = _at(context, builder, m, args[7], args[8])
            nf, npv = FR.literal_value, PV.literal_value
            xs = _masked_vectors(builder, vt, xbase, vt.count, mbase, args[9], npv)
            for k in range(nf):
                wk = _splat(builder, builder.load(builder.gep(wbase, [ir.Constant(_I64, k)])), vt)
                for p in range(npv):
                    slot = _slot(builder, args[0], vt, p * nf + k)
                    builder.store(builder.call(fma, [wk, xs[p], builder.load(slot)]), slot)
            return context.get_dummy_value()

        return types.void(acc, FR, PV, w, woff, x, xoff, m, moff, mstride), codegen

    @intrinsic
    def acc_put(typingctx, acc, FR, PV, dst, off, stride):
        if not _literals(FR, PV) or not _arrays(dst):
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, dst.dtype)
            base = _at(context, builder, dst, args[3], args[4])
            nf = FR.literal_value
            for k in range(nf):
                row = builder.gep(base, [builder.mul(args[5], ir.Constant(_I64, k))])
                for p in range(PV.literal_value):
                    value = builder.load(_slot(builder, args[0], vt, p * nf + k))
                    _store(builder, value, builder.gep(row, [ir.Constant(_I64, p * vt.count)]), vt)
            return context.get_dummy_value()

        return types.void(acc, FR, PV, dst, off, stride), codegen

    @intrinsic
    def acc_dot(typingctx, acc, RF, NT, TV, g, goff, gstride, x, xoff):
        if not _literals(RF, NT, TV) or not _arrays(g, x) or g.dtype != x.dtype:
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, x.dtype)
            fma = _fma(builder, vt)
            gbase = _at(context, builder, g, args[4], args[5])
            xbase = _at(context, builder, x, args[7], args[8])
            nt, step = NT.literal_value, vt.count if TV.literal_value else 1
            xs = [_load(builder, builder.gep(xbase, [ir.Constant(_I64, j * step)]), vt) for j in range(nt)]
            for a in range(RF.literal_value):
                ga = _load(builder, builder.gep(gbase, [builder.mul(args[6], ir.Constant(_I64, a))]), vt)
                for j in range(nt):
                    slot = _slot(builder, args[0], vt, a * nt + j)
                    builder.store(builder.call(fma, [ga, xs[j], builder.load(slot)]), slot)
            return context.get_dummy_value()

        return types.void(acc, RF, NT, TV, g, goff, gstride, x, xoff), codegen

    @intrinsic
    def acc_dot_masked(typingctx, acc, RF, NT, g, goff, gstride, x, xoff, m, moff):
        if not _literals(RF, NT) or not _arrays(g, x, m) or g.dtype != x.dtype or not isinstance(m.dtype, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, x.dtype)
            fma = _fma(builder, vt)
            gbase = _at(context, builder, g, args[3], args[4])
            xbase = _at(context, builder, x, args[6], args[7])
            mbase = _at(context, builder, m, args[8], args[9])
            nt = NT.literal_value
            xs = _masked_vectors(builder, vt, xbase, 1, mbase, ir.Constant(_I64, 1), nt)
            for a in range(RF.literal_value):
                ga = _load(builder, builder.gep(gbase, [builder.mul(args[5], ir.Constant(_I64, a))]), vt)
                for j in range(nt):
                    slot = _slot(builder, args[0], vt, a * nt + j)
                    builder.store(builder.call(fma, [ga, xs[j], builder.load(slot)]), slot)
            return context.get_dummy_value()

        return types.void(acc, RF, NT, g, goff, gstride, x, xoff, m, moff), codegen

    @intrinsic
    def acc_dot_masked_at(typingctx, acc, RF, NT, g, goff, gstride, x, xoff, offs, ooff, m, moff):
        if (not _literals(RF, NT) or not _arrays(g, x, offs, m) or g.dtype != x.dtype
                or not isinstance(m.dtype, types.Integer) or not isinstance(offs.dtype, types.Integer)):
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, x.dtype)
            fma = _fma(builder, vt)
            gbase = _at(context, builder, g, args[3], args[4])
            xbase = _at(context, builder, x, args[6], args[7])
            obase = _at(context, builder, offs, args[8], args[9])
            mbase = _at(context, builder, m, args[10], args[11])
            nt = NT.literal_value
            xs = []
            for j in range(nt):
                off = builder.load(builder.gep(obase, [ir.Constant(_I64, j)]))
                if off.type.width < 64:
                    off = builder.sext(off, _I64)
                bits = builder.load(builder.gep(mbase, [ir.Constant(_I64, j)]))
                ptr = builder.bitcast(builder.gep(xbase, [off]), vt.as_pointer())
                xs.append(_masked_load(builder, ptr, vt, bits))
            for a in range(RF.literal_value):
                ga = _load(builder, builder.gep(gbase, [builder.mul(args[5], ir.Constant(_I64, a))]), vt)
                for j in range(nt):
                    slot = _slot(builder, args[0], vt, a * nt + j)
                    builder.store(builder.call(fma, [ga, xs[j], builder.load(slot)]), slot)
            return context.get_dummy_value()

        return types.void(acc, RF, NT, g, goff, gstride, x, xoff, offs, ooff, m, moff), codegen

    def _lane_order(n, order):
        return ir.Constant(ir.VectorType(ir.IntType(32), n), order)

    def _max_and_tap(builder, taps, vt):
        """The maxima of a 2x2 window's four tap vectors ``taps`` (float ``vt``) and each lane's tap
        byte: the first tap that is larger or NaN wins (PyTorch's order), NOT_POSITIVE (0x80) set
        where the maximum is neither > 0 nor NaN. Shared by the pooling intrinsics."""
        nl = vt.count
        bvt = ir.VectorType(ir.IntType(8), nl)
        m, tap = taps[0], ir.Constant(bvt, [0] * nl)
        for k in (1, 2, 3):
            v = taps[k]
            take = builder.or_(builder.fcmp_ordered(">", v, m), builder.fcmp_unordered("uno", v, v))
            m = builder.select(take, v, m)
            tap = builder.select(take, ir.Constant(bvt, [k] * nl), tap)
        positive = builder.or_(builder.fcmp_ordered(">", m, ir.Constant(vt, [0.0] * nl)),
                               builder.fcmp_unordered("uno", m, m))
        return m, builder.select(positive, tap, builder.or_(tap, ir.Constant(bvt, [0x80] * nl)))

    def _gradient_per_tap(context, builder, g, ga, go, arg, aa, ao, keep, vt, mask):
        """The four vectors of a 2x2 window's gradients by tap: lane q of vector k is gradient q
        (read from g at go) where its tap byte (read from arg at ao, ANDed with ``keep``) is k,
        else 0; the lanes set in ``mask`` are read. Shared by the unpooling intrinsics."""
        nl = vt.count
        bvt = ir.VectorType(ir.IntType(8), nl)
        gv = _masked_load_lanes(builder, _at(context, builder, g, ga, go), vt, mask)
        tap = builder.and_(_masked_load_lanes(builder, _at(context, builder, arg, aa, ao), bvt, mask),
                           _splat(builder, keep, bvt))
        zero = ir.Constant(vt, None)
        return [builder.select(builder.icmp_unsigned("==", tap, ir.Constant(bvt, [k] * nl)), gv, zero)
                for k in range(4)]

    def _split_even_odd(builder, v0, v1):
        """(even, odd): the even- and odd-indexed entries of v0 followed by v1 (2n entries, n each)."""
        n = v0.type.count
        return (builder.shuffle_vector(v0, v1, _lane_order(n, [2 * i for i in range(n)])),
                builder.shuffle_vector(v0, v1, _lane_order(n, [2 * i + 1 for i in range(n)])))

    def _zip_lanes(builder, a, b):
        """(lo, hi): a0 b0 a1 b1 ... (2n entries), the first n and the last n; ``_split_even_odd``'s inverse."""
        n = a.type.count
        both = [v for i in range(n) for v in (i, n + i)]
        return (builder.shuffle_vector(a, b, _lane_order(n, both[:n])),
                builder.shuffle_vector(a, b, _lane_order(n, both[n:])))

    def _lanes_below(builder, n, count):
        """The lane mask (a vector of i1) of lanes 0 .. count - 1 (``count`` an IR integer) of n lanes."""
        ivt = ir.VectorType(ir.IntType(32), n)
        return builder.icmp_signed("<", ir.Constant(ivt, list(range(n))), _splat(builder, builder.trunc(count, ir.IntType(32)), ivt))

    def _window_masks(builder, n, count):
        """(one, lo, hi) lane masks of ``count`` 2x2 windows (an IR integer, at most n lanes): ``one``
        the count lanes of one entry a window, lo and hi the 2*count entries of a row pair's row
        (lanes 0..n-1 and n..2n-1)."""
        twice = builder.add(count, count)
        return (_lanes_below(builder, n, count), _lanes_below(builder, n, twice),
                _lanes_below(builder, n, builder.sub(twice, ir.Constant(count.type, n))))

    def _pool_types(values, out, taps):
        """The 2x2 pooling intrinsics' arrays: ``values`` and ``out`` of one dtype, ``taps`` of bytes."""
        return (_arrays(values, out, taps) and values.dtype == out.dtype and isinstance(taps.dtype, types.Integer)
                and taps.dtype.bitwidth == 8)

    @intrinsic
    def deinterleave(typingctx, x, xo0, xo1, even, eo, odd, oo):
        if not _arrays(x, even, odd) or not (x.dtype == even.dtype == odd.dtype):
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, x.dtype)
            v0 = _load(builder, _at(context, builder, x, args[0], args[1]), vt)
            v1 = _load(builder, _at(context, builder, x, args[0], args[2]), vt)
            ev, od = _split_even_odd(builder, v0, v1)
            _store(builder, ev, _at(context, builder, even, args[3], args[4]), vt)
            _store(builder, od, _at(context, builder, odd, args[5], args[6]), vt)
            return context.get_dummy_value()

        return types.void(x, xo0, xo1, even, eo, odd, oo), codegen

    @intrinsic
    def interleave(typingctx, a, ao, b, bo, dst, do0, do1):
        if not _arrays(a, b, dst) or not (a.dtype == b.dtype == dst.dtype):
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, dst.dtype)
            va = _load(builder, _at(context, builder, a, args[0], args[1]), vt)
            vb = _load(builder, _at(context, builder, b, args[2], args[3]), vt)
            lo, hi = _zip_lanes(builder, va, vb)
            _store(builder, lo, _at(context, builder, dst, args[4], args[5]), vt)
            _store(builder, hi, _at(context, builder, dst, args[4], args[6]), vt)
            return context.get_dummy_value()

        return types.void(a, ao, b, bo, dst, do0, do1), codegen

    @intrinsic
    def max_pool_2x2(typingctx, x, o0, o1, n, y, yo, arg, ao):
        if not _pool_types(x, y, arg):
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, x.dtype)
            nl = vt.count
            out_mask, lo_mask, hi_mask = _window_masks(builder, nl, args[3])
            taps = []
            for off in (args[1], args[2]):
                v0 = _masked_load_lanes(builder, _at(context, builder, x, args[0], off), vt, lo_mask)
                v1 = _masked_load_lanes(builder, _at(context, builder, x, args[0], builder.add(off, ir.Constant(_I64, nl))),
                                        vt, hi_mask)
                taps += _split_even_odd(builder, v0, v1)
            m, tap = _max_and_tap(builder, taps, vt)
            _masked_store_lanes(builder, m, _at(context, builder, y, args[4], args[5]), out_mask)
            _masked_store_lanes(builder, tap, _at(context, builder, arg, args[6], args[7]), out_mask)
            return context.get_dummy_value()

        return types.void(x, o0, o1, n, y, yo, arg, ao), codegen

    @intrinsic
    def max_unpool_2x2(typingctx, g, go, n, arg, ao, keep, dst, d0, d1):
        if not _pool_types(g, dst, arg):
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, g.dtype)
            nl = vt.count
            in_mask, lo_mask, hi_mask = _window_masks(builder, nl, args[2])

            def store(value, off, mask):
                _masked_store_lanes(builder, value, _at(context, builder, dst, args[6], off), mask)

            parts = _gradient_per_tap(context, builder, g, args[0], args[1], arg, args[3], args[4], args[5], vt,
                                      in_mask)
            for row, (even, odd) in zip((args[7], args[8]), (parts[:2], parts[2:])):
                lo, hi = _zip_lanes(builder, even, odd)
                store(lo, row, lo_mask)
                store(hi, builder.add(row, ir.Constant(_I64, nl)), hi_mask)
            return context.get_dummy_value()

        return types.void(g, go, n, arg, ao, keep, dst, d0, d1), codegen

    @intrinsic
    def transpose(typingctx, src, so, sstride, m_in, dst, do, dstride, m_out, n_out):
        if not _arrays(src, dst) or src.dtype != dst.dtype:
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, src.dtype)
            n = vt.count
            sbase = _at(context, builder, src, args[0], args[1])
            dbase = _at(context, builder, dst, args[4], args[5])
            load_mask, store_mask = _lanes_below(builder, n, args[3]), _lanes_below(builder, n, args[7])
            rows = [_masked_load_lanes(builder, builder.gep(sbase, [builder.mul(args[2], ir.Constant(_I64, i))]), vt,
                                       load_mask) for i in range(n)]
            for _ in range(n.bit_length() - 1):          # log2(n) rounds of zips: the rows become the columns
                zipped = [_zip_lanes(builder, rows[i], rows[i + n // 2]) for i in range(n // 2)]
                rows = [v for pair in zipped for v in pair]
            for j in range(n):
                with builder.if_then(builder.icmp_signed("<", ir.Constant(_I64, j), args[8])):
                    _masked_store_lanes(builder, rows[j], builder.gep(dbase, [builder.mul(args[6], ir.Constant(_I64, j))]),
                                        store_mask)
            return context.get_dummy_value()

        return types.void(src, so, sstride, m_in, dst, do, dstride, m_out, n_out), codegen

    @intrinsic
    def acc_get(typingctx, acc, n, dst, off):
        if not _literals(n) or not _arrays(dst):
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, dst.dtype)
            base = _at(context, builder, dst, args[2], args[3])
            for r in range(n.literal_value):
                value = builder.load(_slot(builder, args[0], vt, r))
                _store(builder, value, builder.gep(base, [ir.Constant(_I64, r * vt.count)]), vt)
            return context.get_dummy_value()

        return types.void(acc, n, dst, off), codegen

    @intrinsic
    def acc_hsum(typingctx, acc, RF, NT, dst, off, stride):
        if not _literals(RF, NT) or not _arrays(dst):
            return None

        def codegen(context, builder, sig, args):
            vt = _vector(context, dst.dtype)
            et = vt.element
            reduce = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(et, [et, vt]), f"llvm.vector.reduce.fadd.v{vt.count}{et.intrinsic_name}")
            base = _at(context, builder, dst, args[3], args[4])
            nt = NT.literal_value
            for a in range(RF.literal_value):
                row = builder.gep(base, [builder.mul(args[5], ir.Constant(_I64, a))])
                for j in range(nt):
                    lanes_sum = builder.call(reduce, [ir.Constant(et, 0.0), builder.load(_slot(builder, args[0], vt, a * nt + j))],
                                             fastmath=("reassoc",))
                    ptr = builder.gep(row, [ir.Constant(_I64, j)])
                    builder.store(builder.fadd(builder.load(ptr), lanes_sum), ptr)
            return context.get_dummy_value()

        return types.void(acc, RF, NT, dst, off, stride), codegen

else:  # pragma: no cover - numba is a dependency; without it dispatch never picks conv_blocked

    def _needs_numba(*args, **kwargs):
        raise RuntimeError("cnnkit.backend.kernels.simd: the vector intrinsics need numba, which is not installed")

    acc_alloc = acc_zero = acc_fill = acc_bias = acc_outer = acc_outer_masked = acc_outer_rows = acc_put = acc_dot = acc_dot_masked = _needs_numba
    acc_dot_masked_at = transpose = deinterleave = interleave = max_pool_2x2 = max_unpool_2x2 = acc_get = acc_hsum = _needs_numba
