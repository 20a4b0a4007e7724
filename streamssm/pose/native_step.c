/* One step of PoseSSM (streamssm/pose/model.py) for a batch of streams, fused, in plain C.
 *
 * The CPU twin of PoseSSM.step: the same features (_prepare), network (_network: embedding, SSM blocks with
 * the cross-joint mixer, head) and output rule (_run), one stream at a time so a stream's whole working set
 * stays in the L1/L2 cache. The Python side (streamssm/pose/native.py) compiles this file once per network
 * size (the sizes below are -D macros, so every loop has a constant trip count), packs the weights, splits
 * the streams over threads and checks it against PoseSSM.step (tests/pose/test_native.py).
 *
 * The network runs on LANES = 8 keypoints at once, one keypoint per SIMD lane: every inner loop is a
 * constant-length loop over lanes, which the compiler turns into plain vector arithmetic (no horizontal sums,
 * no shuffles). The SSM state is kept lane-major for that: per layer (B, G, NH * HP, NS, LANES), G = ceil(K / 8)
 * (NativePoseStep holds it so); pose_step(..., model_layout=1) instead takes PoseSSM's (B, K, NH, HP, NS) and
 * transposes each stream's state into a lane buffer and back.
 *
 * Weights (one float array, in this order; matrices transposed, (in, out) row-major: W_t[i][o] = W[o][i]):
 *   embed W_t (NF x D), b (D)
 *   per layer: norm w (D), in_proj W_t (D x 2 DI), b (2 DI), x_proj W_t (DI x (NH + 2 NS)), dt_bias (NH),
 *              A = -exp(A_log) (NH), D skip (DI), out_proj W_t (DI x D), b (D), mixer W_t (D x D), b (D)
 *   norm w (D), head W_t (D x 3), b (3)
 * Fixed state (as PoseSSM.step's, float32, contiguous): prev_x (B,K,3), has_prev (B,K), scale (B), last_out (B,K,3),
 *   has_out (B), read and written in place; the SSM states too, unless pose_step is given ssm_out.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef D_MODEL
#error "compile with -DD_MODEL=... -DD_INNER=... -DN_HEADS=... -DHEADDIM=... -DD_STATE=... -DN_LAYERS=..."
#endif
#define NF 12
#define NXP (N_HEADS + 2 * D_STATE)
#define SSM_FLOATS (N_HEADS * HEADDIM * D_STATE)
#define EPS 1e-5f
#define LANES 8
/* Vectorise a loop over lanes as a loop (with libmvec's vector log1p where there is one) rather than
 * unrolling it first; needs -fopenmp-simd (no OpenMP runtime). */
#define SIMD _Pragma("omp simd")

typedef struct {
    const float *w_in, *b_in, *w_x, *dt_bias, *a, *d_skip, *w_out, *b_out, *w_mix, *b_mix, *norm;
} Layer;

#define INLINE static inline __attribute__((always_inline))

/* Finite test on the bits: built with -ffast-math (vectorised exp, reassociated sums), where isfinite() may be
 * folded to 1. Only the inputs are tested; everything computed from finite inputs stays finite. */
INLINE int finite_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x7f800000u) != 0x7f800000u;
}

INLINE float clampf(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }

/* 8 lanes as one value (GCC/Clang vector extension): plain vector arithmetic, kept in registers. v8u is the
 * unaligned, aliasing view used to load and store it from float arrays. */
typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));

typedef int i8 __attribute__((vector_size(32)));

INLINE v8 load8(const float *p) { return *(const v8u *)p; }
INLINE void store8(float *p, v8 v) { *(v8u *)p = v; }

/* e^x on 8 lanes, inline (a libm/libmvec call per vector cost more than the rest of the block): x = n ln2 + r with
 * n = floor(x log2(e) + 1/2), |r| <= ln2 / 2, e^r by its Taylor series to r^6 (relative error ~1e-7, a few ulp),
 * times 2^n built in the exponent bits. x is clamped to [-87, 88], where e^x is a normal float. */
INLINE v8 exp8(v8 x) {
    const v8 lo = (v8){0} - 87.0f, hi = (v8){0} + 88.0f;
    x = (v8)(((i8)x & (i8)(x >= lo)) | ((i8)lo & (i8)(x < lo)));
    x = (v8)(((i8)x & (i8)(x <= hi)) | ((i8)hi & (i8)(x > hi)));
    const v8 y = x * 1.44269504088896341f + 0.5f;
    i8 n = __builtin_convertvector(y, i8);           /* truncates toward zero */
    n += (i8)(__builtin_convertvector(n, v8) > y);    /* -1 where that rounded up: floor */
    const v8 nf = __builtin_convertvector(n, v8);
    const v8 r = (x - nf * 0.693359375f) + nf * 2.12194440e-4f; /* ln2 split in two for an exact product */
    v8 p = 1.0f / 720.0f + r * (1.0f / 5040.0f);
    p = 1.0f / 120.0f + r * p;
    p = 1.0f / 24.0f + r * p;
    p = 1.0f / 6.0f + r * p;
    p = 0.5f + r * p;
    p = 1.0f + r * p;
    p = 1.0f + r * p;
    return p * (v8)((n + 127) << 23);
}

/* y[o][:] = b[o] + sum_i W[o][i] x[i][:] for 8 lanes; wt = W transposed, (n_in, n_out) row-major; b may be NULL.
 * Eight outputs at a time: eight independent accumulator chains in registers (one output at a time is bound by
 * the FMA latency), their weights contiguous. */
INLINE void matvec_lanes(const float *restrict wt, const float *restrict b, const float (*restrict x)[LANES],
                         float (*restrict y)[LANES], int n_in, int n_out) {
    int o0 = 0;
    for (; o0 + 8 <= n_out; o0 += 8) {
#define INIT(r) (v8){0} + (b ? b[o0 + r] : 0.0f)
        v8 a0 = INIT(0), a1 = INIT(1), a2 = INIT(2), a3 = INIT(3), a4 = INIT(4), a5 = INIT(5), a6 = INIT(6), a7 = INIT(7);
#undef INIT
        for (int i = 0; i < n_in; i++) {
            const v8 xi = load8(x[i]);
            const float *wi = wt + i * n_out + o0;
            a0 += wi[0] * xi;
            a1 += wi[1] * xi;
            a2 += wi[2] * xi;
            a3 += wi[3] * xi;
            a4 += wi[4] * xi;
            a5 += wi[5] * xi;
            a6 += wi[6] * xi;
            a7 += wi[7] * xi;
        }
        store8(y[o0], a0);
        store8(y[o0 + 1], a1);
        store8(y[o0 + 2], a2);
        store8(y[o0 + 3], a3);
        store8(y[o0 + 4], a4);
        store8(y[o0 + 5], a5);
        store8(y[o0 + 6], a6);
        store8(y[o0 + 7], a7);
    }
    for (; o0 < n_out; o0++) {
        v8 a0 = (v8){0} + (b ? b[o0] : 0.0f);
        for (int i = 0; i < n_in; i++) a0 += wt[i * n_out + o0] * load8(x[i]);
        store8(y[o0], a0);
    }
}

/* RMSNorm of 8 keypoints at once: x[D][LANES] -> y[D][LANES]. */
INLINE void rms_norm_lanes(const float (*restrict x)[LANES], const float *restrict w, float (*restrict y)[LANES]) {
    v8 ss = {0};
    for (int i = 0; i < D_MODEL; i++) ss += load8(x[i]) * load8(x[i]);
    float r[LANES];
    store8(r, ss);
    SIMD
    for (int j = 0; j < LANES; j++) r[j] = 1.0f / sqrtf(r[j] / D_MODEL + EPS);
    const v8 rv = load8(r);
    for (int i = 0; i < D_MODEL; i++) store8(y[i], load8(x[i]) * rv * w[i]);
}

/* One SSMBlock step (SSMBlock._mix + SelectiveSSM.step + ssm_step) for 8 keypoints: h[D][LANES] in place,
 * st[CH][NS][LANES] this group's state, in place. */
INLINE void block(float (*restrict h)[LANES], float *restrict st, const Layer *L) {
    float hn[D_MODEL][LANES], uz[2 * D_INNER][LANES], dbc[NXP][LANES], y[D_INNER][LANES], o[D_MODEL][LANES];
    float dt[N_HEADS][LANES], da[N_HEADS][LANES], gate[D_INNER][LANES];
    rms_norm_lanes((const float (*)[LANES])h, L->norm, hn);
    matvec_lanes(L->w_in, L->b_in, (const float (*)[LANES])hn, uz, D_MODEL, 2 * D_INNER);
    matvec_lanes(L->w_x, NULL, (const float (*)[LANES])uz, dbc, D_INNER, NXP);
    for (int hh = 0; hh < N_HEADS; hh++) {
        /* softplus without a branch: log(1 + e^x) = max(x, 0) + log1p(e^-|x|) (torch's threshold-20 shortcut
         * differs by < 2e-9) */
        const v8 x = load8(dbc[hh]) + L->dt_bias[hh];
        const v8 ax = (v8)((i8)x & 0x7fffffff), pos = (v8)((i8)x & (i8)(x > 0.0f));
        float e[LANES];
        store8(e, exp8(-ax));
        SIMD
        for (int j = 0; j < LANES; j++) e[j] = log1pf(e[j]);
        const v8 d = pos + load8(e);
        store8(dt[hh], d);
        store8(da[hh], exp8(d * L->a[hh]));
    }
    for (int ch = 0; ch < D_INNER; ch++) {
        const v8 z = load8(uz[D_INNER + ch]);
        store8(gate[ch], z / (1.0f + exp8(-z))); /* silu */
    }
    for (int ch = 0; ch < D_INNER; ch++) {
        const int hh = ch / HEADDIM;
        const v8 dav = load8(da[hh]), u = load8(uz[ch]), xu = load8(dt[hh]) * u;
        float *s = st + (size_t)ch * D_STATE * LANES;
        v8 acc0 = {0}, acc1 = {0};
        int n = 0;
        for (; n + 2 <= D_STATE; n += 2) {
            const v8 s0 = load8(s + n * LANES) * dav + xu * load8(dbc[N_HEADS + n]);
            const v8 s1 = load8(s + (n + 1) * LANES) * dav + xu * load8(dbc[N_HEADS + n + 1]);
            store8(s + n * LANES, s0);
            store8(s + (n + 1) * LANES, s1);
            acc0 += s0 * load8(dbc[N_HEADS + D_STATE + n]);
            acc1 += s1 * load8(dbc[N_HEADS + D_STATE + n + 1]);
        }
        for (; n < D_STATE; n++) {
            const v8 s0 = load8(s + n * LANES) * dav + xu * load8(dbc[N_HEADS + n]);
            store8(s + n * LANES, s0);
            acc0 += s0 * load8(dbc[N_HEADS + D_STATE + n]);
        }
        store8(y[ch], (acc0 + acc1 + u * L->d_skip[ch]) * load8(gate[ch]));
    }
    matvec_lanes(L->w_out, L->b_out, (const float (*)[LANES])y, o, D_INNER, D_MODEL);
    for (int i = 0; i < D_MODEL; i++) store8(h[i], load8(h[i]) + load8(o[i]));
}

/* One stream: K keypoints, dim 2 or 3. ssm[l] points at this stream's state of layer l, (G, NH * HP, NS, LANES)
 * with G = ceil(K / LANES) groups of LANES keypoints (the lanes past K are padding).
 * work: K * 7 + ceil(K / LANES) * LANES * (NF + D) floats. */
static void stream_step(int k_n, int dim, const float *pts, const float *conf, float fps, float strength,
                        float *prev_x, float *has_prev, float *scale, float *last_out, float *has_out,
                        float **ssm, const float *embed_w, const float *embed_b, const Layer *layers,
                        const float *norm_w, const float *head_w, const float *head_b, float *out, float *work) {
    const int n_groups = (k_n + LANES - 1) / LANES;
    /* features and hidden state, lane-major: feats[G][NF][LANES], h[G][D][LANES] (padding lanes zero) */
    float *feats = work, *h = feats + (size_t)n_groups * NF * LANES, *xf = h + (size_t)n_groups * LANES * D_MODEL;
#define FEAT(k, i) feats[((size_t)((k) / LANES) * NF + (i)) * LANES + (k) % LANES]
    memset(feats, 0, sizeof(float) * (size_t)n_groups * NF * LANES);
    float *corr = xf + (size_t)k_n * 3, *valid = corr + (size_t)k_n * 3;
    /* ---- features (PoseSSM._prepare, one frame) */
    int nv = 0;
    float cen[3] = {0, 0, 0};
    for (int k = 0; k < k_n; k++) {
        float x[3] = {0, 0, 0};
        int fin = 1;
        for (int c = 0; c < dim; c++) {
            x[c] = pts[(size_t)k * dim + c];
            fin &= finite_bits(x[c]);
        }
        float cf = conf ? conf[k] : 1.0f;
        if (!finite_bits(cf)) cf = 0.0f; /* nan_to_num(nan=0, posinf=0, neginf=0) */
        cf = clampf(cf, 0.0f, 1.0f);
        const int v = fin && cf > 0.0f;
        valid[k] = (float)v;
        FEAT(k, 4) = v ? cf : 0.0f;
        for (int c = 0; c < 3; c++) xf[(size_t)k * 3 + c] = v ? x[c] : 0.0f;
        if (v) {
            nv++;
            for (int c = 0; c < 3; c++) cen[c] += xf[(size_t)k * 3 + c];
        }
    }
    const float nvf = (float)(nv > 1 ? nv : 1);
    for (int c = 0; c < 3; c++) cen[c] /= nvf;
    float var = 0.0f;
    for (int k = 0; k < k_n; k++) {
        if (valid[k] == 0.0f) continue;
        float s = 0.0f;
        for (int c = 0; c < 3; c++) {
            const float d = xf[(size_t)k * 3 + c] - cen[c];
            s += d * d;
        }
        var += s;
    }
    const float s_frame = sqrtf(var / nvf);
    const float sc = (nv >= 2 && s_frame > 0.0f) ? s_frame : (*scale > 0.0f ? *scale : 0.0f);
    const int known = sc > 0.0f;
    const float si = known ? sc : 1.0f;
    const float lfps = logf(fps / 30.0f);
    float gmot = 0.0f;
    for (int k = 0; k < k_n; k++) {
        float *x = xf + (size_t)k * 3, *px = prev_x + (size_t)k * 3;
        const int hp = has_prev[k] > 0.0f, ever = valid[k] > 0.0f || hp;
        float vn[3], sp = 0.0f;
        for (int c = 0; c < 3; c++) {
            if (valid[k] == 0.0f) x[c] = hp ? px[c] : 0.0f; /* hold the last valid sample */
            const float v = hp ? x[c] - px[c] : 0.0f;  /* both ends seen */
            vn[c] = known ? v / si : 0.0f;
            sp += vn[c] * vn[c];
        }
        sp = sqrtf(sp);
        if (valid[k] > 0.0f) gmot += sp;
        for (int c = 0; c < 3; c++) {
            FEAT(k, c) = clampf(10.0f * vn[c], -10.0f, 10.0f);
            FEAT(k, 6 + c) = clampf((ever && known) ? (x[c] - cen[c]) / si : 0.0f, -10.0f, 10.0f);
        }
        FEAT(k, 3) = clampf(10.0f * sp, 0.0f, 10.0f);
        FEAT(k, 5) = ever ? 1.0f : 0.0f;
        FEAT(k, 9) = dim == 3 ? 1.0f : 0.0f;
        FEAT(k, 10) = lfps;
    }
    gmot = clampf(10.0f * (gmot / nvf), 0.0f, 10.0f);
    for (int k = 0; k < k_n; k++) FEAT(k, 11) = gmot;
#undef FEAT

    /* ---- network (PoseSSM._network, stepping), 8 keypoints per SIMD lane group */
    typedef float (*lanes_t)[LANES];
    for (int g = 0; g < n_groups; g++)
        matvec_lanes(embed_w, embed_b, (const float (*)[LANES])(feats + (size_t)g * NF * LANES),
                     (lanes_t)(h + (size_t)g * D_MODEL * LANES), NF, D_MODEL);
    for (int l = 0; l < N_LAYERS; l++) {
        const Layer *L = layers + l;
        float mix_in[D_MODEL] = {0};
        for (int g = 0; g < n_groups; g++) {
            float *hg = h + (size_t)g * D_MODEL * LANES;
            block((lanes_t)hg, ssm[l] + (size_t)g * SSM_FLOATS * LANES, L);
            const int n_real = k_n - g * LANES < LANES ? k_n - g * LANES : LANES;
            for (int i = 0; i < D_MODEL; i++)
                for (int j = 0; j < n_real; j++) mix_in[i] += hg[i * LANES + j];
        }
        float m[D_MODEL], mo[D_MODEL];
        for (int i = 0; i < D_MODEL; i++) m[i] = mix_in[i] / (float)k_n;
        for (int o = 0; o < D_MODEL; o++) {
            float acc = L->b_mix[o];
            for (int i = 0; i < D_MODEL; i++) acc += L->w_mix[i * D_MODEL + o] * m[i];
            mo[o] = acc;
        }
        for (int g = 0; g < n_groups; g++)
            for (int i = 0; i < D_MODEL; i++) {
                float *hi = h + ((size_t)g * D_MODEL + i) * LANES;
                store8(hi, load8(hi) + mo[i]);
            }
    }
    for (int g = 0; g < n_groups; g++) {
        float hn[D_MODEL][LANES], c3[3][LANES];
        rms_norm_lanes((const float (*)[LANES])(h + (size_t)g * D_MODEL * LANES), norm_w, hn);
        matvec_lanes(head_w, head_b, (const float (*)[LANES])hn, c3, D_MODEL, 3);
        for (int j = 0; j < LANES && g * LANES + j < k_n; j++)
            for (int o = 0; o < 3; o++) corr[(size_t)(g * LANES + j) * 3 + o] = c3[o][j];
    }

    /* ---- output (PoseSSM._run) and the fixed state */
    const int frame_ok = nv > 0, had_out = *has_out > 0.0f;
    const uint32_t nan_bits = 0x7fc00000u;
    float nan_f;
    memcpy(&nan_f, &nan_bits, sizeof nan_f);
    for (int k = 0; k < k_n; k++) {
        const int ever = valid[k] > 0.0f || has_prev[k] > 0.0f;
        float *x = xf + (size_t)k * 3, *lo = last_out + (size_t)k * 3;
        float y[3];
        for (int c = 0; c < 3; c++) {
            y[c] = x[c] - strength * sc * corr[(size_t)k * 3 + c];
            if (!frame_ok) y[c] = had_out ? lo[c] : 0.0f; /* a frame with no valid joint holds the last output */
            if (!ever) y[c] = 0.0f;
        }
        for (int c = 0; c < dim; c++) out[(size_t)k * dim + c] = ever ? y[c] : nan_f;
        for (int c = 0; c < 3; c++) {
            lo[c] = y[c];
            prev_x[(size_t)k * 3 + c] = x[c];
        }
        has_prev[k] = ever ? 1.0f : 0.0f;
    }
    *scale = sc;
    *has_out = (frame_ok || had_out) ? 1.0f : 0.0f;
}

/* Streams [b0, b1) of a batch. points (B,K,dim); confidence (B,K) or NULL; fps (B); out (B,K,dim).
 * model_layout = 0: ssm_states[l] is lane-major, (B, G, NH * HP, NS, LANES). model_layout = 1: it is PoseSSM's
 * (B, K, NH, HP, NS), copied into a lane-major buffer and back around each stream's step (what an explicit-state
 * caller holding PoseSSM's state needs; a transpose of the state, cheap next to the step for one stream), back into
 * ssm_out[l] when ssm_out is not NULL (the input state is then only read), else in place. */
int pose_step(int b0, int b1, int k_n, int dim, const float *points, const float *confidence, const float *fps,
              float strength, float *prev_x, float *has_prev, float *scale, float *last_out, float *has_out,
              float **ssm_states, const float *weights, float *out, int model_layout, float **ssm_out) {
    if (dim != 2 && dim != 3) return 1;
    const float *w = weights;
    const float *embed_w = w; w += NF * D_MODEL;
    const float *embed_b = w; w += D_MODEL;
    Layer layers[N_LAYERS];
    for (int l = 0; l < N_LAYERS; l++) {
        Layer *L = layers + l;
        L->norm = w; w += D_MODEL;
        L->w_in = w; w += D_MODEL * 2 * D_INNER;
        L->b_in = w; w += 2 * D_INNER;
        L->w_x = w; w += D_INNER * NXP;
        L->dt_bias = w; w += N_HEADS;
        L->a = w; w += N_HEADS;
        L->d_skip = w; w += D_INNER;
        L->w_out = w; w += D_INNER * D_MODEL;
        L->b_out = w; w += D_MODEL;
        L->w_mix = w; w += D_MODEL * D_MODEL;
        L->b_mix = w; w += D_MODEL;
    }
    const float *norm_w = w; w += D_MODEL;
    const float *head_w = w; w += D_MODEL * 3;
    const float *head_b = w;
    const int n_groups = (k_n + LANES - 1) / LANES;
    float *work = (float *)malloc(sizeof(float) * ((size_t)k_n * 7 + (size_t)n_groups * LANES * (NF + D_MODEL)));
    const size_t lane_floats = (size_t)n_groups * SSM_FLOATS * LANES; /* one stream, one layer */
    float *lanes = model_layout ? (float *)calloc(lane_floats * N_LAYERS, sizeof(float)) : NULL;
    if (!work || (model_layout && !lanes)) {
        free(work);
        free(lanes);
        return 2;
    }
    float *ssm[N_LAYERS];
    for (int b = b0; b < b1; b++) {
        for (int l = 0; l < N_LAYERS; l++) {
            if (!model_layout) {
                ssm[l] = ssm_states[l] + (size_t)b * lane_floats;
                continue;
            }
            ssm[l] = lanes + (size_t)l * lane_floats;
            const float *src = ssm_states[l] + (size_t)b * k_n * SSM_FLOATS; /* (K, CH * NS) */
            for (int k = 0; k < k_n; k++)
                for (int e = 0; e < SSM_FLOATS; e++)
                    ssm[l][((size_t)(k / LANES) * SSM_FLOATS + e) * LANES + k % LANES] = src[(size_t)k * SSM_FLOATS + e];
        }
        stream_step(k_n, dim, points + (size_t)b * k_n * dim, confidence ? confidence + (size_t)b * k_n : NULL, fps[b],
                    strength, prev_x + (size_t)b * k_n * 3, has_prev + (size_t)b * k_n, scale + b,
                    last_out + (size_t)b * k_n * 3, has_out + b, ssm, embed_w, embed_b, layers, norm_w, head_w, head_b,
                    out + (size_t)b * k_n * dim, work);
        if (model_layout)
            for (int l = 0; l < N_LAYERS; l++) {
                float *dst = (ssm_out ? ssm_out[l] : ssm_states[l]) + (size_t)b * k_n * SSM_FLOATS;
                for (int k = 0; k < k_n; k++)
                    for (int e = 0; e < SSM_FLOATS; e++)
                        dst[(size_t)k * SSM_FLOATS + e] = ssm[l][((size_t)(k / LANES) * SSM_FLOATS + e) * LANES + k % LANES];
            }
    }
    free(work);
    free(lanes);
    return 0;
}

/* Number of floats pose_step expects in `weights` (the Python packer checks it). */
int pose_weight_count(void) {
    return NF * D_MODEL + D_MODEL +
           N_LAYERS * (D_MODEL + D_MODEL * 2 * D_INNER + 2 * D_INNER + D_INNER * NXP + 2 * N_HEADS + D_INNER +
                       D_INNER * D_MODEL + D_MODEL + D_MODEL * D_MODEL + D_MODEL) +
           D_MODEL + D_MODEL * 3 + 3;
}
