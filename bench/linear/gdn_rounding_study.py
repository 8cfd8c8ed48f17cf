#!/usr/bin/env python3
"""Where the GDN chunked forward loses accuracy: a numpy emulation of the sm80 chunk-parallel kernels
(src/kernels/linear/sm80/linear_gdn_chunked_sm80_kernel.cuh) that rounds to bf16 at the same points,
against a float64 recurrence, with each rounding point switched to fp32 or tf32 in turn.

Rounding points (all bf16 in the kernels of 8b6ed0a; u, S and every accumulation are fp32; since then the
kernels carry T_beta, v_new and P as a bf16 pair hi + lo and multiply the exact k by the decayed v_new in
the state update, the variant "shipped" below):
  T_beta   (I + A)^-1 diag(beta), operand of w and u           (prep)
  k_gamma  k exp(G), operand of w                              (prep)
  w        -T_beta (k Gamma), stored                           (prep -> state)
  k_decay  k exp(G_last - G), stored                           (prep -> state)
  S        the state's copy for w S and q S, stored per chunk  (state -> output)
  v_new    u - w S, stored                                     (state -> output)
  P        masked decayed scale Q K^T                          (output)
  q_gamma  scale q exp(G)                                      (output)
The output itself is rounded to bf16 in every variant (that alone is rms ~1.7e-3).

Inputs as tests/cpp/linear_check.cpp draws them: q ~ N(0, 1), k ~ N(0, 1) L2-normalised, v ~ N(0, 1),
h0 ~ N(0, 1), beta ~ U(0.05, 1); the fused softplus gate with A_log = log(strength * U(0.2, 1)),
dt_bias ~ N(0, 0.5), or the plain log decay U(-strength, -0.02 strength). The first case mirrors
`random_22` of the GPU conformance sweep (device: out rms 5.48e-3 against the 0.005 bound).

  python3 bench/linear/gdn_rounding_study.py      (numpy only, ~1 minute on one core)
"""
import numpy as np

POINTS = ["T_beta", "k_gamma", "w", "k_decay", "S", "v_new", "P", "q_gamma"]


def round_bits(x, drop):
    """Round-to-nearest-even of fp32 values to a mantissa `drop` bits shorter (16: bf16, 13: tf32)."""
    u = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + (1 << (drop - 1)) - 1 + ((u >> drop) & 1)) & (0xFFFFFFFF ^ ((1 << drop) - 1))
    return u.astype(np.uint32).view(np.float32)


def bf16(x):
    return round_bits(x, 16)


def tf32(x):
    return round_bits(x, 13)


def hilo(x):
    """The pair hi + lo of bf16 values (hi = bf16(x), lo = bf16(x - hi)) that the kernels multiply as two MMAs."""
    x = np.asarray(x, dtype=np.float32)
    hi = bf16(x)
    return (hi + bf16(x - hi)).astype(np.float32)


def make_inputs(T, K, V, strength, seed, fused):
    r = np.random.default_rng(seed)
    q = bf16(r.standard_normal((T, K)))
    k = r.standard_normal((T, K))
    k = bf16(k / np.linalg.norm(k, axis=1, keepdims=True))
    v = bf16(r.standard_normal((T, V)))
    if fused:
        a_log = np.log(strength * r.uniform(0.2, 1.0))
        g = -np.exp(a_log) * np.log1p(np.exp(r.standard_normal(T) + 0.5 * r.standard_normal()))
    else:
        g = r.uniform(-strength, -0.02 * strength, T)
    beta = r.uniform(0.05, 1.0, T)
    return q, k, v, g.astype(np.float32), beta.astype(np.float32), r.standard_normal((K, V))


def reference(q, k, v, g, beta, S0, scale):
    S = S0.copy()
    out = np.zeros((len(g), v.shape[1]))
    for t in range(len(g)):
        kt = k[t].astype(np.float64)
        S *= np.exp(float(g[t]))
        S += beta[t] * np.outer(kt, v[t] - kt @ S)
        out[t] = scale * (q[t].astype(np.float64) @ S)
    return out, S


def chunked(q, k, v, g, beta, S0, scale, rounding):
    """rounding: point -> bf16 / tf32 / None (fp32)."""
    def rd(point, x):
        f = rounding.get(point)
        return f(x) if f else np.asarray(x, np.float32)

    T, C = len(g), 64
    S = S0.astype(np.float32)
    out = np.zeros((T, v.shape[1]), np.float32)
    for c0 in range(0, T, C):
        sl = slice(c0, min(T, c0 + C))
        kc, qc, vc, bc = k[sl], q[sl], v[sl], beta[sl]
        G = np.cumsum(g[sl]).astype(np.float32)
        D = np.exp(G[:, None] - G[None, :]).astype(np.float32)
        A = np.tril(bc[:, None] * D * (kc @ kc.T), -1).astype(np.float32)
        Tb = rd("T_beta", np.linalg.inv(np.eye(len(bc), dtype=np.float32) + A) * bc[None, :])
        w = rd("w", Tb @ rd("k_gamma", kc * np.exp(G)[:, None]))
        kd = rd("k_decay", kc * np.exp(G[-1] - G)[:, None])
        u = (Tb @ vc).astype(np.float32)
        Sb = rd("S", S)
        vn = rd("v_new", u - w @ Sb)
        P = rd("P", np.tril(scale * D * (qc @ kc.T)))
        out[sl] = rd("q_gamma", scale * qc * np.exp(G)[:, None]) @ Sb + P @ vn
        S = (np.exp(G[-1]) * S + kd.T @ vn).astype(np.float32)
    return bf16(out), S


def rms_ratio(a, ref):
    return float(np.sqrt(np.mean((a - ref) ** 2) / np.mean(ref ** 2)))


def variants():
    all_bf16 = {p: bf16 for p in POINTS}
    out = {"all bf16 (8b6ed0a)": all_bf16, "no rounding": {}}
    for p in POINTS:
        out[f"{p} fp32"] = {**all_bf16, p: None}
    out["T_beta, v_new, P tf32"] = {**all_bf16, "T_beta": tf32, "v_new": tf32, "P": tf32}
    out["T_beta, v_new, P, k_decay tf32"] = {**all_bf16, "T_beta": tf32, "v_new": tf32, "P": tf32, "k_decay": tf32}
    out["all tf32"] = {p: tf32 for p in POINTS}
    out["shipped: T_beta, v_new, P hi+lo, k_decay exact"] = {**all_bf16, "T_beta": hilo, "v_new": hilo, "P": hilo,
                                                             "k_decay": None}
    return out


def main():
    cases = [("K=16 V=128 T=1000 softplus x0.01 (random_22-like)", 1000, 16, 128, 0.01, True),
             ("K=32 V=64 T=800 softplus x0.1", 800, 32, 64, 0.1, True),
             ("K=128 V=128 T=1000 log decay x1", 1000, 128, 128, 1.0, False)]
    for name, T, K, V, strength, fused in cases:
        results = {label: [] for label in variants()}
        for seed in range(3):
            q, k, v, g, beta, S0 = make_inputs(T, K, V, strength, seed, fused)
            ref_out, ref_state = reference(q, k, v, g, beta, S0, K ** -0.5)
            for label, rounding in variants().items():
                o, S = chunked(q, k, v, g, beta, S0, K ** -0.5, rounding)
                results[label].append((rms_ratio(o, ref_out), rms_ratio(S, ref_state)))
        print(f"{name} (mean of 3 seeds; bound 5e-3)")
        for label, rows in results.items():
            print(f"  {label:48s} out {np.mean([r[0] for r in rows]):.2e}  state {np.mean([r[1] for r in rows]):.2e}")


if __name__ == "__main__":
    main()
