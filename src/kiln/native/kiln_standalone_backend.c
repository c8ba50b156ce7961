/*
 * kiln_standalone_backend.c -- the C symbols TVM's compiled kernels call, for the standalone
 * executor (kiln_standalone_runtime.c), so that no libtvm_runtime / libtvm_ffi is needed:
 * the tvm-ffi error hook (TVMFFIErrorSetRaisedFromCStrParts), TVM's backend API
 * (TVMBackendParallelLaunch / ParallelBarrier over a fixed pthread pool,
 * TVMBackendAllocWorkspace / FreeWorkspace), and the context-function pointers
 * ("__TVMBackend*") that TVM's LLVM codegen leaves in model.so for the loader to fill.
 */
#define _GNU_SOURCE /* sched_getaffinity */
#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <tvm/ffi/c_api.h>

#define KILN_ALIGN 64
#define KILN_MAX_THREADS 64
#define KILN_EXPORT __attribute__((visibility("default")))

/* the message of the last kernel failure in this thread (read by kiln_standalone_runtime.c) */
__thread char g_kernel_error[2048];

KILN_EXPORT void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts,
                                                   int32_t n) {
  snprintf(g_kernel_error, sizeof(g_kernel_error), "%s: ", kind ? kind : "Error");
  for (int32_t i = 0; i < n; ++i) {
    size_t len = strlen(g_kernel_error);
    if (parts[i]) snprintf(g_kernel_error + len, sizeof(g_kernel_error) - len, "%s", parts[i]);
  }
}

KILN_EXPORT void TVMFFIErrorSetRaisedFromCStr(const char* kind, const char* message) {
  TVMFFIErrorSetRaisedFromCStrParts(kind, &message, 1);
}

static int unsupported_call(void) {
  const char* msg = "the kernels called a TVM runtime function the standalone executor lacks";
  TVMFFIErrorSetRaisedFromCStrParts("RuntimeError", &msg, 1);
  return -1;
}
static int stub_function_call(void* f, TVMFFIAny* a, int32_t n, TVMFFIAny* r) {
  (void)f, (void)a, (void)n, (void)r;
  return unsupported_call();
}
static int stub_mod_lookup(void* lib, const char* name, void** out) {
  (void)lib, (void)name, (void)out;
  return unsupported_call();
}

static pthread_mutex_t g_once_mu = PTHREAD_MUTEX_INITIALIZER;
static int handle_init_once(void** handle, int (*init)(void** result)) {
  pthread_mutex_lock(&g_once_mu);
  int rc = *handle == NULL ? init(handle) : 0;
  pthread_mutex_unlock(&g_once_mu);
  return rc;
}

typedef struct {
  void* sync_handle;
  int32_t num_task;
} TVMParallelGroupEnv;
typedef int (*FTVMParallelLambda)(int task_id, TVMParallelGroupEnv* penv, void* cdata);

/* Workspaces (the kernels' intermediate buffers) come from a small cache of freed blocks:
 * a large malloc is an mmap whose pages fault and get zeroed on first touch, every inference
 * (EfficientNet-style model: 2,400 page faults and 9 ms a run before this cache). Each block
 * carries its size in a header of KILN_ALIGN bytes. */
#define KILN_WS_CACHE 32
static atomic_long g_launches, g_ws_mallocs, g_split_launches;
static struct {
  pthread_mutex_t mu;
  void* block[KILN_WS_CACHE];
  size_t size[KILN_WS_CACHE];
  int n;
} g_ws = {PTHREAD_MUTEX_INITIALIZER, {0}, {0}, 0};

KILN_EXPORT void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes,
                                           int code_hint, int bits_hint) {
  (void)device_type, (void)device_id, (void)code_hint, (void)bits_hint;
  size_t want = (size_t)nbytes + KILN_ALIGN, best = 0;
  void* base = NULL;
  pthread_mutex_lock(&g_ws.mu);
  int pick = -1;
  for (int i = 0; i < g_ws.n; ++i) /* the smallest cached block that fits, at most 2x */
    if (g_ws.size[i] >= want && g_ws.size[i] <= 2 * want && (pick < 0 || g_ws.size[i] < best))
      pick = i, best = g_ws.size[i];
  if (pick >= 0) {
    base = g_ws.block[pick];
    g_ws.block[pick] = g_ws.block[--g_ws.n];
    g_ws.size[pick] = g_ws.size[g_ws.n];
  }
  pthread_mutex_unlock(&g_ws.mu);
  if (!base) {
    atomic_fetch_add(&g_ws_mallocs, 1);
    if (posix_memalign(&base, KILN_ALIGN, want) != 0) return NULL;
    best = want;
  }
  *(size_t*)base = best;
  return (char*)base + KILN_ALIGN;
}

KILN_EXPORT int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr) {
  (void)device_type, (void)device_id;
  if (!ptr) return 0;
  void* base = (char*)ptr - KILN_ALIGN;
  size_t size = *(size_t*)base;
  pthread_mutex_lock(&g_ws.mu);
  if (g_ws.n < KILN_WS_CACHE) {
    g_ws.block[g_ws.n] = base, g_ws.size[g_ws.n++] = size, base = NULL;
  } else { /* full: keep the larger block, free the smallest */
    int small = 0;
    for (int i = 1; i < g_ws.n; ++i)
      if (g_ws.size[i] < g_ws.size[small]) small = i;
    if (g_ws.size[small] < size) {
      void* old = g_ws.block[small];
      g_ws.block[small] = base, g_ws.size[small] = size, base = old;
    }
  }
  pthread_mutex_unlock(&g_ws.mu);
  free(base);
  return 0;
}

/* A fixed pool: thread 0 is the caller, threads 1..n-1 wait for work. A waiting worker first
 * spins, then sleeps on a condition variable. It spins for the block time: KILN_SPIN_MS
 * milliseconds after its last task (default KILN_BLOCKTIME_MS, 100; 0 means KILN_SPIN_NS,
 * 0.2 ms), as Intel OpenMP's KMP_BLOCKTIME (200 ms) and ONNX Runtime's intra-op pool (100-200
 * ms here) do: within a run a model launches one parallel region per kernel, tens of
 * microseconds apart, and a futex sleep and wake-up per kernel cost a few milliseconds a run;
 * between runs a sleeping worker costs a wake-up and the VM's cores ramp up again (a ResNet-18
 * run 30% slower after a 50 ms pause). The block time also decides what a run beside another
 * runtime's pool in the same process costs: on 2 cores, a run that starts while the other pool
 * spins takes about twice as long, so two pools that spin alike pay alike. The caller spins
 * KILN_SPIN_NS for its workers to finish, then sleeps.
 *
 * Tasks are claimed, not assigned: the caller and the workers take task ids from one counter,
 * so a worker that the OS has not scheduled yet (another process's or library's thread spinning
 * on its core: ONNX Runtime's pool does so for tens of milliseconds after each run) costs
 * nothing; the caller runs that task itself instead of waiting a time slice for it (2 ms a run
 * on a small MLP otherwise). The counter word packs the launch's generation (high 32 bits), its
 * task count (bits 16-31) and the next task id (bits 0-15), so that a late worker can never
 * claim a task of a later launch with the task count of an earlier one.
 *
 * Claiming does not help once a worker has started a task and then lost its core: the caller
 * waits for it. A region that ran for KILN_SPLIT_NS or more last time is therefore split into
 * KILN_TASKS_PER_THREAD tasks per thread, so that a late or descheduled worker holds up a small
 * share of it, not half (ResNet-18 / ResNet-50 batch 1 on 2 threads: 4-6% faster with nothing
 * else running; shorter regions keep one task per thread: a 0.15 ms MLP ran 3% slower split). (Going serial for a while after such a wait was tried: on this shared VM such
 * waits happen hundreds of times a second with nothing else running, and the serial windows
 * made an idle EfficientNet-style run go from 14.5 to 25 ms.)
 *
 * A kernel that synchronizes its tasks (TVMBackendParallelBarrier) needs them all running at
 * once: a library that references the barrier switches the pool to one task per thread,
 * waited for (g_static_tasks). */
#define KILN_SPIN_NS 200000L
#ifndef KILN_BLOCKTIME_MS
#define KILN_BLOCKTIME_MS 100
#endif
#define KILN_BLOCKTIME_MAX_MS 10000
#ifndef KILN_TASKS_PER_THREAD
#define KILN_TASKS_PER_THREAD 8
#endif
#ifndef KILN_SPLIT_NS
#define KILN_SPLIT_NS 200000L
#endif
#define KILN_REGIONS 512
/* The last duration of each parallel region (by its lambda), read and written under
 * g_launch_mu: a region that ran for KILN_SPLIT_NS or more is split into more tasks. */
static struct region { FTVMParallelLambda fn; long ns; } g_regions[KILN_REGIONS];
static struct {
  pthread_once_t once;
  pthread_mutex_t mu;
  pthread_cond_t start, done;
  int threads;
  long block_ns; /* how long an idle worker spins before it sleeps */
  _Atomic unsigned long long word; /* generation << 32 | num_task << 16 | next task */
  atomic_int finished, failed, sleeping;
  FTVMParallelLambda fn;
  void* cdata;
  TVMParallelGroupEnv env;
  atomic_int bar_arrived, bar_phase;
} g_pool = {PTHREAD_ONCE_INIT, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
            PTHREAD_COND_INITIALIZER};
static __thread int g_in_task;
static pthread_mutex_t g_launch_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_int g_static_tasks;

#define GEN(w) ((unsigned)((w) >> 32))
#define NTASK(w) ((int)(((w) >> 16) & 0xffff))
#define NEXT(w) ((int)((w) & 0xffff))

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || (defined(__arm__) && __ARM_ARCH >= 7)
  __asm__ __volatile__("yield");
#endif
}

static long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static int launched_since(unsigned seen) { return GEN(atomic_load(&g_pool.word)) != seen; }
static int all_finished(unsigned n) { return atomic_load(&g_pool.finished) >= (int)n; }

/* Spin until ready(arg) or ``ns`` pass; whether it became ready. */
static int spin_until(int (*ready)(unsigned), unsigned arg, long ns) {
  long until = now_ns() + ns;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready(arg)) return 1;
      cpu_relax();
    }
    if (now_ns() > until) return 0;
  }
}

static void finish_task(int id, int n) {
  if (g_pool.fn(id, &g_pool.env, g_pool.cdata) != 0) atomic_store(&g_pool.failed, 1);
  if (atomic_fetch_add(&g_pool.finished, 1) + 1 == n && atomic_load(&g_pool.sleeping)) {
    pthread_mutex_lock(&g_pool.mu);
    pthread_cond_broadcast(&g_pool.done);
    pthread_mutex_unlock(&g_pool.mu);
  }
}

/* Run the tasks of launch ``gen`` that nobody has claimed yet; in the one-task-per-thread mode
 * (``own`` >= 0) just task ``own``. */
static void run_tasks(unsigned gen, int own) {
  for (;;) {
    unsigned long long w = atomic_load(&g_pool.word);
    if (GEN(w) != gen) return;
    if (own >= 0) { /* the launch waits for every task, so this generation is still current */
      if (own < NTASK(w)) finish_task(own, NTASK(w));
      return;
    }
    if (NEXT(w) >= NTASK(w)) return;
    if (atomic_compare_exchange_weak(&g_pool.word, &w, w + 1)) finish_task(NEXT(w), NTASK(w));
  }
}

/* KILN_NUM_THREADS, TVM_NUM_THREADS or OMP_NUM_THREADS, else the CPUs this process may use. */
static int thread_count(void) {
  const char* names[] = {"KILN_NUM_THREADS", "TVM_NUM_THREADS", "OMP_NUM_THREADS"};
  int n = 0;
  for (int i = 0; i < 3 && n <= 0; ++i)
    if (getenv(names[i])) n = atoi(getenv(names[i]));
  if (n <= 0) {
    cpu_set_t set;
    n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  }
  return n < 1 ? 1 : (n > KILN_MAX_THREADS ? KILN_MAX_THREADS : n);
}

static void* worker(void* arg) {
  int id = (int)(intptr_t)arg;
  unsigned seen = 0;
  g_in_task = 1;
  for (;;) {
    if (!spin_until(launched_since, seen, g_pool.block_ns)) {
      pthread_mutex_lock(&g_pool.mu);
      while (GEN(atomic_load(&g_pool.word)) == seen) pthread_cond_wait(&g_pool.start, &g_pool.mu);
      pthread_mutex_unlock(&g_pool.mu);
    }
    seen = GEN(atomic_load(&g_pool.word));
    run_tasks(seen, atomic_load(&g_static_tasks) ? id : -1);
  }
  return NULL;
}

/* KILN_SPIN_MS (milliseconds, a decimal), else KILN_BLOCKTIME_MS; 0 (or less): KILN_SPIN_NS. */
static long block_time_ns(void) {
  const char* v = getenv("KILN_SPIN_MS");
  double ms = KILN_BLOCKTIME_MS;
  if (v && *v) {
    char* end;
    double parsed = strtod(v, &end);
    if (end != v) ms = parsed;
  }
  if (!(ms >= 0)) ms = 0; /* negative or NaN */
  if (ms > KILN_BLOCKTIME_MAX_MS) ms = KILN_BLOCKTIME_MAX_MS;
  long ns = (long)(ms * 1e6);
  return ns < KILN_SPIN_NS ? KILN_SPIN_NS : ns;
}

static void pool_init(void) {
  int n = thread_count();
  g_pool.block_ns = block_time_ns();
  g_pool.threads = 1;
  for (int i = 1; i < n; ++i) {
    pthread_t tid;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&tid, &attr, worker, (void*)(intptr_t)i) == 0) g_pool.threads++;
    pthread_attr_destroy(&attr);
  }
}

KILN_EXPORT int TVMBackendParallelLaunch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  atomic_fetch_add(&g_launches, 1);
  if (g_in_task) { /* nested parallel region: run it serially in this thread */
    TVMParallelGroupEnv env = {NULL, 1};
    return flambda(0, &env, cdata);
  }
  pthread_once(&g_pool.once, pool_init);
  int n = num_task <= 0 || num_task > g_pool.threads ? g_pool.threads : num_task;
  if (n == 1 || pthread_mutex_trylock(&g_launch_mu) != 0) {
    /* one thread, or another model is using the pool right now: run the tasks here, one
     * after another (the lambdas split work by num_task, so 1 task does it all) */
    TVMParallelGroupEnv env = {NULL, 1};
    return flambda(0, &env, cdata);
  }
  int fixed = atomic_load(&g_static_tasks) || num_task > 0;
  struct region* site = &g_regions[((uintptr_t)flambda >> 4) % KILN_REGIONS];
  int split = !fixed && site->fn == flambda && site->ns >= KILN_SPLIT_NS;
  int tasks = split ? n * KILN_TASKS_PER_THREAD : n;
  long start = now_ns();
  if (split) atomic_fetch_add(&g_split_launches, 1);
  g_pool.fn = flambda;
  g_pool.cdata = cdata;
  g_pool.env.num_task = tasks;
  atomic_store(&g_pool.finished, 0);
  atomic_store(&g_pool.failed, 0);
  unsigned gen = GEN(atomic_load(&g_pool.word)) + 1;
  pthread_mutex_lock(&g_pool.mu);
  atomic_store(&g_pool.word, (unsigned long long)gen << 32 | (unsigned long long)tasks << 16);
  pthread_cond_broadcast(&g_pool.start);
  pthread_mutex_unlock(&g_pool.mu);
  g_in_task = 1;
  run_tasks(gen, atomic_load(&g_static_tasks) ? 0 : -1);
  g_in_task = 0;
  if (!spin_until(all_finished, (unsigned)tasks, KILN_SPIN_NS)) {
    pthread_mutex_lock(&g_pool.mu);
    atomic_fetch_add(&g_pool.sleeping, 1);
    while (atomic_load(&g_pool.finished) < tasks) pthread_cond_wait(&g_pool.done, &g_pool.mu);
    atomic_fetch_sub(&g_pool.sleeping, 1);
    pthread_mutex_unlock(&g_pool.mu);
  }
  int rc = atomic_load(&g_pool.failed) ? -1 : 0;
  site->fn = flambda;
  site->ns = now_ns() - start;
  pthread_mutex_unlock(&g_launch_mu);
  return rc;
}

KILN_EXPORT int TVMBackendParallelBarrier(int task_id, TVMParallelGroupEnv* penv) {
  (void)task_id;
  if (penv->num_task <= 1) return 0;
  int phase = atomic_load(&g_pool.bar_phase);
  if (atomic_fetch_add(&g_pool.bar_arrived, 1) + 1 == penv->num_task) {
    atomic_store(&g_pool.bar_arrived, 0);
    atomic_fetch_add(&g_pool.bar_phase, 1);
  } else {
    while (atomic_load(&g_pool.bar_phase) == phase) sched_yield();
  }
  return 0;
}


/* Diagnostics (tests, benchmarks): parallel regions launched here, its threads, and the
 * workspace blocks it had to allocate (not served from the cache). */
KILN_EXPORT void kiln_standalone_stats(long* launches, int* threads, long* workspace_mallocs) {
  if (launches) *launches = atomic_load(&g_launches);
  if (threads) *threads = g_pool.threads;
  if (workspace_mallocs) *workspace_mallocs = atomic_load(&g_ws_mallocs);
}

/* The block time in milliseconds: the pool's, or (before its first launch) what it will be. */
KILN_EXPORT double kiln_standalone_block_ms(void) {
  long ns = g_pool.block_ns ? g_pool.block_ns : block_time_ns();
  return (double)ns / 1e6;
}

/* Parallel regions launched as KILN_TASKS_PER_THREAD tasks per thread (tests). */
KILN_EXPORT long kiln_standalone_split_launches(void) { return atomic_load(&g_split_launches); }

/* Fill the context-function pointers TVM's LLVM codegen leaves in model.so. */
void kiln_standalone_init_context(void* lib) {
  static const struct { const char* name; void* fn; } table[] = {
      {"__TVMFFIFunctionCall", (void*)stub_function_call},
      {"__TVMFFIErrorSetRaisedFromCStr", (void*)TVMFFIErrorSetRaisedFromCStr},
      {"__TVMFFIEnvModLookupFromImports", (void*)stub_mod_lookup},
      {"__TVMFFIHandleInitOnce", (void*)handle_init_once},
      {"__TVMBackendAllocWorkspace", (void*)TVMBackendAllocWorkspace},
      {"__TVMBackendFreeWorkspace", (void*)TVMBackendFreeWorkspace},
      {"__TVMBackendParallelLaunch", (void*)TVMBackendParallelLaunch},
      {"__TVMBackendParallelBarrier", (void*)TVMBackendParallelBarrier}};
  for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); ++i) {
    void** slot = (void**)dlsym(lib, table[i].name);
    if (slot) *slot = table[i].fn;
    if (slot && table[i].fn == (void*)TVMBackendParallelBarrier) atomic_store(&g_static_tasks, 1);
  }
}
