/* Grouped linear with an optional merge of the experts' weights, for float32 on the CPU.

   Rows of the input are split into G groups. Group g applies one affine map,
   the gate-weighted sum of K experts of the stacked weight [E, F, D] and bias [E, F]:

       out[row r] = scale[r] * (sum_k gate[g,k] * (W[e_gk] x_r + b[e_gk]))   (or += for rows flagged)

   MEO passes one group per sequence and its K selected experts; grouped MoE
   passes one group per expert segment, K = 1 and no gates, and reads its rows
   through an index. See meobench/layers/grouped_kernel.py for the torch op.

   Work goes by tiles of MR rows of F. For each group and tile, the merged weight
   rows sit in a buffer of MR x D floats, and the products with the group's rows
   of x read them from there, so the full merged weight is never written.
   Without gates and with K = 1 the expert's rows are used in place. While a
   tile's products run, they load the next tile's expert rows into the cache a
   few lines at a time, so that reading the experts overlaps with the arithmetic.

   Layout of the product: the weight rows are the broadcast operand. The
   group's rows of x are the vector operand, packed transposed into panels of
   2 VL, VL or VL / 2 columns, so a group of any size wastes fewer than VL / 2
   columns of work. The output tile is written transposed, one element at a time.

   Threads split the tiles of F, never the rows, so two threads never write the
   same output element: a row can then accumulate several groups (MoE's K slots
   of one token) in group order without atomics.
*/
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__)
#define MR 12 /* weight rows per tile: 12 x 2 accumulators of 16 floats take 24 of 32 vector registers */
#define VL 16
#else
#define MR 6 /* 6 x 2 accumulators of 8 floats take 12 of 16 vector registers */
#define VL 8
#endif
#define HALF (VL / 2)
#define ALIGN 64
/* Tiles per block of the column loop. Each group runs a block's tiles in turn, so its packed rows of
   x stay in the L2 cache. The block's rows of every expert stay in cache while all groups use them.
   On a 2-core Zen 4 (1 MiB L2 per core) at BERT-base's shape, blocks of 1, 4 and 16 tiles were
   within 4% of each other; 4 was fastest at K = 8 and within 2% at K = 1. */
#define BLOCK_TILES 4

typedef float vfull __attribute__((vector_size(VL * 4)));
typedef float vhalf __attribute__((vector_size(HALF * 4)));

/* merged[i][:] = sum_k gates[k] * W[experts[k]][f0 + i][:] for the valid rows i; the other rows are zero.
   Each pass adds up to four experts, so a row of the buffer is loaded and stored once per four. */
#define TERMS1 g[0] * w[0][p]
#define TERMS2 TERMS1 + g[1] * w[1][p]
#define TERMS3 TERMS2 + g[2] * w[2][p]
#define TERMS4 TERMS3 + g[3] * w[3][p]
#define ACCUMULATE(TERMS)                                           \
    if (k == 0)                                                     \
        for (int64_t p = 0; p < depth; p++) m[p] = TERMS;           \
    else                                                            \
        for (int64_t p = 0; p < depth; p++) m[p] += TERMS;

static void merge_rows(const float* weight, int64_t f_total, int64_t depth, int64_t f0, int64_t valid,
                       int64_t top_k, const int64_t* experts, const float* gates, float* restrict merged) {
    for (int64_t i = 0; i < MR; i++) {
        float* restrict m = merged + i * depth;
        if (i >= valid) {
            memset(m, 0, depth * sizeof(float));
            continue;
        }
        for (int64_t k = 0; k < top_k; k += 4) {
            int64_t terms = top_k - k < 4 ? top_k - k : 4;
            const float* restrict w[4];
            float g[4];
            for (int64_t t = 0; t < terms; t++) {
                w[t] = weight + (experts[k + t] * f_total + f0 + i) * depth;
                g[t] = gates[k + t];
            }
            switch (terms) {
                case 4: ACCUMULATE(TERMS4) break;
                case 3: ACCUMULATE(TERMS3) break;
                case 2: ACCUMULATE(TERMS2) break;
                default: ACCUMULATE(TERMS1) break;
            }
        }
    }
}

/* Cache lines of the next tile's weight rows to load ahead while this tile's products run: one run
   of MR contiguous rows per expert, walked a few lines every 16 steps of a product. Only the first
   AHEAD_RUNS experts are loaded ahead: at K = 8, loading all eight evicted rows still in use and
   cost 5%, while four gained 3 to 7% at K = 1 to 4. */
#define AHEAD_RUNS 4
typedef struct {
    const char* runs[AHEAD_RUNS];
    int64_t run_count, run_lines, next, per_step;
} ahead_t;

static inline __attribute__((always_inline)) void load_ahead(ahead_t* ahead) {
    for (int64_t n = 0; n < ahead->per_step && ahead->next < ahead->run_count * ahead->run_lines; n++, ahead->next++)
        __builtin_prefetch(ahead->runs[ahead->next / ahead->run_lines] + (ahead->next % ahead->run_lines) * 64, 0, 3);
}

/* acc[i][n] = sum_p w[i][p] * xt[p][n * WIDTH ..], stored into tile [MR][NV * WIDTH]. */
#define MICRO_KERNEL(NAME, VT, NV, WIDTH)                                                            \
    static void NAME(const float* const* w, const float* restrict xt, int64_t depth, float* restrict tile, \
                     ahead_t* ahead) {                                                             \
        VT acc[MR][NV];                                                                            \
        for (int i = 0; i < MR; i++)                                                               \
            for (int n = 0; n < NV; n++) acc[i][n] = (VT){0};                                      \
        for (int64_t p = 0; p < depth; p++) {                                                      \
            if ((p & 15) == 0) load_ahead(ahead);                                       \
            VT xv[NV];                                                                             \
            for (int n = 0; n < NV; n++) xv[n] = *(const VT*)(xt + p * NV * WIDTH + n * WIDTH);   \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; i++) {                                \
                VT b = w[i][p] + (VT){0};                                                          \
                for (int n = 0; n < NV; n++) acc[i][n] += b * xv[n];                               \
            }                                                                                      \
        }                                                                                          \
        for (int i = 0; i < MR; i++)                                                               \
            for (int n = 0; n < NV; n++) memcpy(tile + (i * NV + n) * WIDTH, &acc[i][n], sizeof(VT)); \
    }

MICRO_KERNEL(kernel_double, vfull, 2, VL)
MICRO_KERNEL(kernel_single, vfull, 1, VL)
MICRO_KERNEL(kernel_half, vhalf, 1, HALF)

/* One panel of a group: `rows` rows of x from `row` on, packed transposed at `offset` as [depth][width]. */
typedef struct {
    int64_t row, rows, width, offset;
} panel_t;

/* Split `rows` rows into double-width panels, then single- or half-width ones; return how many. */
static int64_t plan_panels(int64_t first_row, int64_t rows, int64_t depth, panel_t* panels, int64_t* offset) {
    int64_t count = 0, row = first_row, left = rows;
    while (left > 0) {
        int64_t width = HALF;
        if (left >= 2 * VL)
            width = 2 * VL;
        else if (left > HALF)
            width = VL;
        int64_t used = left < width ? left : width;
        panels[count++] = (panel_t){row, used, width, *offset};
        /* Panels start on ALIGN bytes, so the products load their columns with aligned loads. */
        *offset += (width * depth + ALIGN / 4 - 1) / (ALIGN / 4) * (ALIGN / 4);
        row += used;
        left -= used;
    }
    return count;
}

static void pack_panel(const float* x, int64_t depth, const int64_t* x_rows, const panel_t* panel,
                       float* restrict packed) {
    for (int64_t j = 0; j < panel->width; j++) {
        if (j >= panel->rows) {
            for (int64_t p = 0; p < depth; p++) packed[p * panel->width + j] = 0.0f;
            continue;
        }
        int64_t r = panel->row + j;
        const float* source = x + (x_rows ? x_rows[r] : r) * depth;
        for (int64_t p = 0; p < depth; p++) packed[p * panel->width + j] = source[p];
    }
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Return 0, or 1 when a buffer could not be allocated (nothing is written then). */
int grouped_linear_float32(const float* x, int64_t depth, const int64_t* x_rows, const float* weight,
                           const float* bias, int64_t f_total, int64_t groups, const int64_t* offsets,
                           int64_t top_k, const int64_t* experts, const float* gates, const float* row_scale,
                           float* out, const int64_t* out_rows, const uint8_t* accumulate, int threads) {
    /* Each group has at most two panels of fewer than 2 VL rows; every other panel has 2 VL. */
    panel_t* panels = malloc(sizeof(panel_t) * (offsets[groups] / (2 * VL) + 2 * groups + 1));
    int64_t* first_panel = malloc(sizeof(int64_t) * (groups + 1));
    float* ones = malloc(sizeof(float) * (top_k + 1));
    float* zero_row = calloc(depth, sizeof(float));
    /* One merged-rows buffer per thread, allocated here so that a failure stops the call before any work. */
    size_t merged_bytes = (MR * depth * sizeof(float) / ALIGN + 1) * ALIGN;
    char* merged_all = aligned_alloc(ALIGN, merged_bytes * threads);
    float* packed = NULL;
    int64_t packed_floats = 0, panel_count = 0;
    if (panels == NULL || first_panel == NULL || ones == NULL || zero_row == NULL || merged_all == NULL)
        goto done;
    for (int64_t g = 0; g < groups; g++) {
        first_panel[g] = panel_count;
        panel_count += plan_panels(offsets[g], offsets[g + 1] - offsets[g], depth, panels + panel_count, &packed_floats);
    }
    first_panel[groups] = panel_count;
    for (int64_t k = 0; k < top_k; k++) ones[k] = 1.0f;
    packed = aligned_alloc(ALIGN, (packed_floats * sizeof(float) / ALIGN + 1) * ALIGN);
    if (packed == NULL) goto done;
    int64_t tiles = (f_total + MR - 1) / MR;
    int64_t blocks = (tiles + BLOCK_TILES - 1) / BLOCK_TILES;
    int in_place = gates == NULL && top_k == 1;

    _Pragma("omp parallel num_threads(threads)") {
        _Pragma("omp for schedule(static)") for (int64_t q = 0; q < panel_count; q++)
            pack_panel(x, depth, x_rows, &panels[q], packed + panels[q].offset);

        float* merged = (float*)(merged_all + merged_bytes * omp_get_thread_num());
        float tile[MR * 2 * VL] __attribute__((aligned(ALIGN)));
        const float* w[MR];
        float merged_bias[MR];

        _Pragma("omp for schedule(static)") for (int64_t block = 0; block < blocks; block++) {
            int64_t tile_start = block * BLOCK_TILES, tile_stop = min64(tile_start + BLOCK_TILES, tiles);
            for (int64_t g = 0; g < groups; g++) {
                if (first_panel[g] == first_panel[g + 1]) continue;
                const int64_t* selected = experts + g * top_k;
                const float* group_gates = gates ? gates + g * top_k : ones;
                for (int64_t t = tile_start; t < tile_stop; t++) {
                    int64_t f0 = t * MR, valid = min64(f_total - f0, MR);
                    for (int64_t i = 0; i < MR; i++) {
                        float b = 0.0f;
                        for (int64_t k = 0; bias != NULL && i < valid && k < top_k; k++)
                            b += group_gates[k] * bias[selected[k] * f_total + f0 + i];
                        merged_bias[i] = b;
                    }
                    if (in_place) {
                        for (int64_t i = 0; i < MR; i++)
                            w[i] = i < valid ? weight + (selected[0] * f_total + f0 + i) * depth : zero_row;
                    } else {
                        merge_rows(weight, f_total, depth, f0, valid, top_k, selected, group_gates, merged);
                        for (int64_t i = 0; i < MR; i++) w[i] = merged + i * depth;
                    }
                    /* The next tile in this thread's order: the group's next one, else the block's first
                       tile of the next group with rows. */
                    int64_t next_g = g, next_t = t + 1;
                    if (next_t == tile_stop) {
                        next_t = tile_start;
                        for (next_g = g + 1; next_g < groups && first_panel[next_g] == first_panel[next_g + 1]; next_g++)
                            ;
                    }
                    ahead_t ahead = {.run_count = 0, .run_lines = 1, .next = 0, .per_step = 0};
                    if (next_g < groups) {
                        ahead.run_count = min64(top_k, AHEAD_RUNS);
                        ahead.run_lines = (min64(f_total - next_t * MR, MR) * depth * (int64_t)sizeof(float) + 63) / 64;
                        for (int64_t k = 0; k < ahead.run_count; k++)
                            ahead.runs[k] = (const char*)(weight + (experts[next_g * top_k + k] * f_total + next_t * MR) * depth);
                        int64_t steps = (first_panel[g + 1] - first_panel[g]) * ((depth + 15) / 16);
                        ahead.per_step = (ahead.run_count * ahead.run_lines + steps - 1) / steps;
                    }
                    for (int64_t q = first_panel[g]; q < first_panel[g + 1]; q++) {
                        const panel_t* panel = &panels[q];
                        const float* xt = packed + panel->offset;
                        if (panel->width == 2 * VL)
                            kernel_double(w, xt, depth, tile, &ahead);
                        else if (panel->width == VL)
                            kernel_single(w, xt, depth, tile, &ahead);
                        else
                            kernel_half(w, xt, depth, tile, &ahead);
                        for (int64_t j = 0; j < panel->rows; j++) {
                            int64_t r = panel->row + j;
                            float* o = out + (out_rows ? out_rows[r] : r) * f_total + f0;
                            float scale = row_scale ? row_scale[r] : 1.0f;
                            const float* column = tile + j;
                            if (accumulate && accumulate[r])
                                for (int64_t i = 0; i < valid; i++) o[i] += scale * (column[i * panel->width] + merged_bias[i]);
                            else
                                for (int64_t i = 0; i < valid; i++) o[i] = scale * (column[i * panel->width] + merged_bias[i]);
                        }
                    }
                }
            }
        }
    }
done:;
    int failed = packed == NULL;
    free(packed);
    free(merged_all);
    free(zero_row);
    free(ones);
    free(first_panel);
    free(panels);
    return failed;
}
