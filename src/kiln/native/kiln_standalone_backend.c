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

KILN_EXPORT void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes,
                                           int code_hint, int bits_hint) {
  (void)device_type, (void)device_id, (void)code_hint, (void)bits_hint;
  void* p = NULL;
  return posix_memalign(&p, KILN_ALIGN, nbytes ? (size_t)nbytes : 1) == 0 ? p : NULL;
}

KILN_EXPORT int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr) {
  (void)device_type, (void)device_id;
  free(ptr);
  return 0;
}

/* A fixed pool: thread 0 is the caller, threads 1..n-1 wait for work on a condition variable. */
static struct {
  pthread_once_t once;
  pthread_mutex_t mu;
  pthread_cond_t start, done;
  int threads;
  unsigned generation;
  int pending, failed;
  FTVMParallelLambda fn;
  void* cdata;
  TVMParallelGroupEnv env;
  atomic_int bar_arrived, bar_phase;
} g_pool = {PTHREAD_ONCE_INIT, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
            PTHREAD_COND_INITIALIZER};
static __thread int g_in_task;
static pthread_mutex_t g_launch_mu = PTHREAD_MUTEX_INITIALIZER;

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
  pthread_mutex_lock(&g_pool.mu);
  for (;;) {
    while (g_pool.generation == seen) pthread_cond_wait(&g_pool.start, &g_pool.mu);
    seen = g_pool.generation;
    if (id >= g_pool.env.num_task) continue;
    pthread_mutex_unlock(&g_pool.mu);
    int rc = g_pool.fn(id, &g_pool.env, g_pool.cdata);
    pthread_mutex_lock(&g_pool.mu);
    if (rc != 0) g_pool.failed = 1;
    if (--g_pool.pending == 0) pthread_cond_signal(&g_pool.done);
  }
  return NULL;
}

static void pool_init(void) {
  int n = thread_count();
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
  pthread_mutex_lock(&g_pool.mu);
  g_pool.fn = flambda;
  g_pool.cdata = cdata;
  g_pool.env.num_task = n;
  g_pool.pending = n - 1;
  g_pool.failed = 0;
  g_pool.generation++;
  pthread_cond_broadcast(&g_pool.start);
  pthread_mutex_unlock(&g_pool.mu);
  g_in_task = 1;
  int rc = flambda(0, &g_pool.env, cdata);
  g_in_task = 0;
  pthread_mutex_lock(&g_pool.mu);
  while (g_pool.pending > 0) pthread_cond_wait(&g_pool.done, &g_pool.mu);
  rc = rc != 0 || g_pool.failed ? -1 : 0;
  pthread_mutex_unlock(&g_pool.mu);
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
  }
}
