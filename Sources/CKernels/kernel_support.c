// The vector path and the threads of LightCap's C kernels (kernel_support.h).
#include "kernel_support.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <strings.h>

#if defined(__x86_64__)
int lightcap_kernel_has_avx2(void) {
    static int known = -1;
    if (known < 0) {
        __builtin_cpu_init();
        const char *cap = getenv("LIGHTCAP_KERNEL_ISA");
        known = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                !(cap && strcasecmp(cap, "generic") == 0);
    }
    return known;
}

int lightcap_kernel_has_avx512(void) {
    static int known = -1;
    if (known < 0) {
        const char *cap = getenv("LIGHTCAP_KERNEL_ISA");
        known = lightcap_kernel_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512vl") && !(cap && strcasecmp(cap, "avx2") == 0);
    }
    return known;
}
#else
int lightcap_kernel_has_avx2(void) { return 0; }
int lightcap_kernel_has_avx512(void) { return 0; }
#endif

const char *lightcap_kernel_isa(void) { return lightcap_kernel_has_avx2() ? "avx2+fma" : "generic"; }

// Threads: the work is split over an OpenMP team through libgomp's own entry points (the ABI
// GCC's `#pragma omp parallel` calls), found at run time in the libgomp that oneDNN loads. The
// kernels then run on the same threads as oneDNN's kernels between them: with a second pool
// (Dispatch) the OpenMP threads, still spinning after each oneDNN call, would take the cores
// the kernels want. Without libgomp in the process the work runs on the calling thread.
typedef void (*gomp_parallel_fn)(void (*)(void *), void *, unsigned, unsigned);
typedef int (*omp_int_fn)(void);
static gomp_parallel_fn gomp_parallel;
static omp_int_fn omp_thread_num, omp_num_threads;
static pthread_once_t omp_once = PTHREAD_ONCE_INIT;

static void omp_lookup(void) {
    gomp_parallel_fn p = (gomp_parallel_fn)dlsym(RTLD_DEFAULT, "GOMP_parallel");
    omp_int_fn n = (omp_int_fn)dlsym(RTLD_DEFAULT, "omp_get_thread_num");
    omp_int_fn c = (omp_int_fn)dlsym(RTLD_DEFAULT, "omp_get_num_threads");
    if (p && n && c) {
        gomp_parallel = p;
        omp_thread_num = n;
        omp_num_threads = c;
    }
}

typedef struct {
    void (*body)(const void *args, long begin, long end);
    const void *args;
    long count;
} parallel_task;

static void parallel_part(void *p) {
    const parallel_task *task = p;
    const long i = omp_thread_num(), n = omp_num_threads();
    const long begin = task->count * i / n, end = task->count * (i + 1) / n;
    if (begin < end) task->body(task->args, begin, end);
}

void lightcap_kernel_parallel_for(long count, long threads, void (*body)(const void *, long, long), const void *args) {
    if (threads > count) threads = count;
    if (threads > 1) pthread_once(&omp_once, omp_lookup);
    if (threads <= 1 || !gomp_parallel) {
        if (count > 0) body(args, 0, count);
        return;
    }
    parallel_task task = {body, args, count};
    gomp_parallel(parallel_part, &task, (unsigned)threads, 0);
}

int lightcap_kernel_uses_openmp(void) {
    pthread_once(&omp_once, omp_lookup);
    return gomp_parallel != 0;
}
