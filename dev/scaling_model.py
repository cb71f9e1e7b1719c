"""Scaling model behind docs/SCALING.md: the default U-Net's parameter
layout (same order and 16-float alignment as src/nn/unet.c), backward FLOPs
per layer, and a timeline of the bucketed ring allreduce overlapped with
backward (buckets start from the highest offsets once complete, one
reduction on the wire at a time, ideal MPI progress).
Usage: python3 dev/scaling_model.py"""

F = [32, 64, 128, 256, 320]   # features per stage (mp_unet_config_default)
P, BATCH = 64, 2               # patch and batch of the measured 6.2 s step


def pad(n):
    return (n + 15) // 16 * 16


def layers():
    """(name, params, forward FLOPs, needs dx) in forward order."""
    out, cin = [], 1
    for s, f in enumerate(F):
        vox = BATCH * (P >> s) ** 3
        for j in range(2):
            ci = cin if j == 0 else f
            out.append(("enc%d.conv%d" % (s, j), [ci * f * 27, f, f, f], 2 * vox * ci * f * 27, s + j > 0))
        cin = f
    for d in range(len(F) - 1):
        e = len(F) - 2 - d
        vox = BATCH * (P >> e) ** 3
        out.append(("dec%d.up" % d, [F[e + 1] * F[e] * 8, F[e]], 2 * vox * F[e + 1] * F[e], True))
        out.append(("dec%d.conv0" % d, [2 * F[e] * F[e] * 27, F[e], F[e], F[e]], 2 * vox * 2 * F[e] * F[e] * 27, True))
        out.append(("dec%d.conv1" % d, [F[e] * F[e] * 27, F[e], F[e], F[e]], 2 * vox * F[e] * F[e] * 27, True))
        out.append(("dec%d.seg" % d, [2 * F[e], 2], 2 * vox * F[e] * 2 if d == len(F) - 2 else 0, True))
    return out


def timeline(bucket_bytes, t_backward, bw, alpha, n_ranks):
    L = layers()
    off, spans = 0, []
    for name, ps, fl, dx in L:
        n = sum(pad(p) for p in ps)
        spans.append((off, off + n))
        off += n
    total = off * 4
    bflops = [fl * (2 if dx else 1) for _, _, fl, dx in L]
    scale = t_backward / sum(bflops)
    be = max(1, bucket_bytes // 4)
    nb = (off + be - 1) // be
    filled = [0] * nb
    blen = [min(be, off - b * be) for b in range(nb)]
    t, nxt, wire_free, launched = 0.0, nb - 1, 0.0, []

    def cost(n):
        return 2 * (n_ranks - 1) / n_ranks * n * 4 / bw + 2 * (n_ranks - 1) * alpha

    for i in reversed(range(len(L))):
        t += bflops[i] * scale
        a, b = spans[i]
        for k in range(a // be, (b - 1) // be + 1):
            filled[k] += min(b, (k + 1) * be) - max(a, k * be)
        while nxt >= 0 and filled[nxt] == blen[nxt]:
            start = max(t, wire_free)
            wire_free = start + cost(blen[nxt])
            launched.append(nxt)
            nxt -= 1
    no_overlap = sum(cost(n) for n in blen)
    return total, nb, max(0.0, wire_free - t_backward), no_overlap


if __name__ == "__main__":
    L = layers()
    n = sum(sum(pad(p) for p in ps) for _, ps, _, _ in L)
    fl = sum(f * (3 if dx else 2) for _, _, f, dx in L)
    print("parameter slab %d floats = %.2f MB; training FLOPs per %d^3 batch-%d step %.3g" % (n, n * 4 / 1e6, P, BATCH, fl))
    links = [("25 GB/s (NVLink/PCIe class, alpha 2 us)", 25e9, 2e-6), ("200 Gb/s (HDR InfiniBand, alpha 2 us)", 25e9, 2e-6),
             ("25 Gb/s Ethernet (alpha 20 us)", 3.125e9, 20e-6)]
    for t_step in (6.2, 0.4, 0.05):
        tb = t_step * 2 / 3
        print("\nstep compute %.2f s (backward %.3f s)" % (t_step, tb))
        for lname, bw, alpha in links:
            for N in (8, 64, 512):
                row = []
                for mib in (25, 4, 1):
                    total, nb, exposed, noov = timeline(mib << 20, tb, bw, alpha, N)
                    row.append("%2d MiB: %6.1f -> %6.1f ms" % (mib, noov * 1e3, exposed * 1e3))
                print("  %-40s N=%3d  %s" % (lname, N, " | ".join(row)))
