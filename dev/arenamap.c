/* Prints where the U-Net's activation arena goes: bytes per buffer kind
 * (values and gradients by producing op, statistics, heads, scratch), for
 * the memory work on the CPU engine. Usage: arenamap [patch] [batch]. */
#include "nn/unet_internal.h"

#include <stdio.h>
#include <stdlib.h>

static void log_to_stdout(mp_log_level_t level, const char *msg, void *user) {
    (void)level, (void)user;
    printf("log: %s\n", msg);
}

int main(int argc, char **argv) {
    mp_log_set_callback(log_to_stdout, NULL);
    mp_unet_config_t c;
    mp_unet_config_default(&c);
    c.threads = 1;
    if (argc > 1) c.patch[0] = c.patch[1] = c.patch[2] = atoi(argv[1]);
    if (argc > 2) c.batch = atoi(argv[2]);
    mp_unet_t *m;
    if (mp_unet_create(&m, &c)) return fprintf(stderr, "%s\n", mp_error_message()), 1;
    static const char *kn[] = {"conv", "deconv", "norm_act", "concat"};
    double val[5] = {0}, grad[5] = {0}, mib = 1048576.0, stats = 0;
    for (int i = 0; i < m->nt; i++) {
        int k = 4;
        for (int j = 0; j < m->nop; j++)
            if (m->op[j].out == i) k = (int)m->op[j].kind;
        val[k] += (double)m->t[i].bytes;
        if (m->t[i].has_grad) grad[k] += (double)m->t[i].bytes;
    }
    for (int j = 0; j < m->nop; j++)
        if (m->op[j].kind == OP_NORM_ACT) stats += 2.0 * (double)(m->t[m->op[j].out].s.n * m->t[m->op[j].out].s.c) * 4;
    for (int k = 0; k < 5; k++)
        printf("%-9s values %8.1f MiB  grads %8.1f MiB\n", k < 4 ? kn[k] : "input", val[k] / mib, grad[k] / mib);
    printf("stats %.2f MiB, scratch %.1f MiB, arena %.1f MiB\n", stats / mib, (double)m->scratch_bytes / mib,
           (double)m->arena_bytes / mib);
    for (int j = 0; j < m->nop; j++)
        if (m->op[j].conv)
            printf("op %2d %-6s %4lld->%4lld %3lld^3 scratch %7.1f MiB  %s / %s / %s\n", j, kn[m->op[j].kind],
                   (long long)m->t[m->op[j].in].s.c, (long long)m->t[m->op[j].out].s.c, (long long)m->t[m->op[j].in].s.d,
                   (double)mp_cpu_conv_scratch_bytes(m->op[j].conv) / mib, mp_cpu_conv_impl(m->op[j].conv, 0),
                   mp_cpu_conv_impl(m->op[j].conv, 1), mp_cpu_conv_impl(m->op[j].conv, 2));
    mp_unet_free(m);
    return 0;
}
