/*
 * kiln_standalone_runtime.c -- Kiln's C API (kiln_runtime.h) without libtvm_runtime.
 *
 * The artifact carries model.so (TVM's compiled kernels only, each exported as a tvm-ffi
 * packed function "__tvm_ffi_<name>"), plan.txt (written by kiln/standalone/plan.py from the
 * memory-planned Relax program: one arena, the tensors in it, the kernel calls in order) and
 * params.bin (the weights, 64-byte aligned). This file is the whole runtime: it loads the plan,
 * allocates the arena once, and calls the kernels in order. The few C symbols the kernels
 * need (the tvm-ffi error hook, TVM's parallel-launch / workspace backend) are in
 * kiln_standalone_backend.c. Plain C11 + pthreads; builds for every Linux arch zig targets.
 */
#include "kiln_runtime.h"
#include "kiln_cpu_flags.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <tvm/ffi/c_api.h>

#define KILN_MAX_NDIM 16
#define KILN_ALIGN 64
#define KILN_EXPORT __attribute__((visibility("default")))

/* kiln_standalone_backend.c: what the kernels call, and the pool behind it */
extern __thread char g_kernel_error[2048];
void kiln_standalone_init_context(void* lib);

typedef struct {
  char* name;
  char dtype[16];
  DLDataType dl;
  int ndim;
  int64_t shape[KILN_MAX_NDIM];
} tensor_info;

typedef struct {
  TVMFFISafeCallType fn;
  char* symbol;
  int nargs;
  TVMFFIAny* args;
} kernel_call;

struct kiln_model {
  int n_in, n_out, n_tensors, n_calls;
  tensor_info* in;
  tensor_info* out;
  void** in_data;   /* one 64-byte aligned buffer per input */
  int* out_tensor;  /* plan tensor of each output */
  char* arena;      /* the planned activation memory, allocated once */
  char* weights;    /* params.bin */
  int64_t arena_bytes, weight_bytes;
  DLTensor* tensors;
  int64_t* shapes;  /* KILN_MAX_NDIM per tensor */
  kernel_call* calls;
  void* lib;
  int ran;
  double* prof_s;  /* kiln_model_profile: seconds in each call, summed over runs (NULL: off) */
  long prof_runs;
  char* requires;  /* signature.txt "requires": CPU flags model.so may use (x86_64) */
  char* fallback;  /* "fallback": the portable kernel library for CPUs that lack them */
  char* fallback_plan; /* "fallback_plan <plan> <params>": the twin's own plan, if it differs */
  const char* library; /* the kernel library in use */
  const char* plan_file;
  const char* params_file;
};

static __thread char g_error[4096];

static void set_error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_error, sizeof(g_error), fmt, ap);
  va_end(ap);
}

KILN_EXPORT const char* kiln_last_error(void) { return g_error; }
KILN_EXPORT int kiln_runtime_abi_version(void) { return KILN_RUNTIME_ABI_VERSION; }

/* ---- signature.txt, plan.txt, params.bin ---- */

static int parse_dtype(const char* s, DLDataType* out) {
  static const struct { const char* name; uint8_t code, bits; } table[] = {
      {"float32", kDLFloat, 32}, {"float16", kDLFloat, 16}, {"float64", kDLFloat, 64},
      {"bfloat16", kDLBfloat, 16}, {"int8", kDLInt, 8},     {"int16", kDLInt, 16},
      {"int32", kDLInt, 32},     {"int64", kDLInt, 64},     {"uint8", kDLUInt, 8},
      {"uint16", kDLUInt, 16},   {"uint32", kDLUInt, 32},   {"uint64", kDLUInt, 64},
      {"bool", kDLBool, 8}};
  for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); ++i) {
    if (strcmp(s, table[i].name) == 0) {
      out->code = table[i].code;
      out->bits = table[i].bits;
      out->lanes = 1;
      return 0;
    }
  }
  return -1;
}

static size_t nbytes_of(const DLDataType* dt, int ndim, const int64_t* shape) {
  size_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= (size_t)shape[i];
  return n * ((dt->bits * dt->lanes + 7) / 8);
}

/* One line of signature.txt: "<kind> <dtype> <ndim> <d0> ... <name>". */
static int parse_sig_line(char* line, tensor_info* t) {
  char* save = NULL;
  strtok_r(line, " ", &save);
  char* dtype = strtok_r(NULL, " ", &save);
  char* ndim = strtok_r(NULL, " ", &save);
  if (!dtype || !ndim || strlen(dtype) >= sizeof(t->dtype) || parse_dtype(dtype, &t->dl) != 0)
    return -1;
  strcpy(t->dtype, dtype);
  t->ndim = atoi(ndim);
  if (t->ndim < 0 || t->ndim > KILN_MAX_NDIM) return -1;
  for (int i = 0; i < t->ndim; ++i) {
    char* d = strtok_r(NULL, " ", &save);
    if (!d || (t->shape[i] = strtoll(d, NULL, 10)) < 0) return -1; /* static shapes only */
  }
  if (save == NULL || *save == '\0') return -1;
  size_t len = strcspn(save, "\r\n");
  t->name = (char*)malloc(len + 1);
  memcpy(t->name, save, len);
  t->name[len] = '\0';
  return 0;
}

static char* dup_line(const char* s) {
  size_t len = strcspn(s, "\r\n");
  char* out = (char*)malloc(len + 1);
  memcpy(out, s, len);
  out[len] = '\0';
  return out;
}

static int read_signature(kiln_model* m, const char* dir) {
  char path[4096], line[8192];
  snprintf(path, sizeof(path), "%s/signature.txt", dir);
  FILE* f = fopen(path, "r");
  if (!f) {
    set_error("cannot open %s", path);
    return -1;
  }
  int ok = fgets(line, sizeof(line), f) && strncmp(line, "kiln-signature 1", 16) == 0;
  while (ok && fgets(line, sizeof(line), f)) {
    if (strncmp(line, "requires ", 9) == 0 && !m->requires) m->requires = dup_line(line + 9);
    if (strncmp(line, "fallback ", 9) == 0 && !m->fallback) m->fallback = dup_line(line + 9);
    if (strncmp(line, "fallback_plan ", 14) == 0 && !m->fallback_plan)
      m->fallback_plan = dup_line(line + 14);
    int is_in = strncmp(line, "input ", 6) == 0, is_out = strncmp(line, "output ", 7) == 0;
    if (!is_in && !is_out) continue;
    int* n = is_in ? &m->n_in : &m->n_out;
    tensor_info** arr = is_in ? &m->in : &m->out;
    *arr = (tensor_info*)realloc(*arr, sizeof(tensor_info) * (size_t)(*n + 1));
    memset(&(*arr)[*n], 0, sizeof(tensor_info));
    ok = parse_sig_line(line, &(*arr)[(*n)++]) == 0;
  }
  fclose(f);
  if (!ok) set_error("malformed %s", path);
  return ok ? 0 : -1;
}

static void* aligned_calloc(int64_t nbytes) {
  void* p = NULL;
  if (posix_memalign(&p, KILN_ALIGN, nbytes > 0 ? (size_t)nbytes : 1) != 0) return NULL;
  memset(p, 0, nbytes > 0 ? (size_t)nbytes : 1);
  return p;
}

static int read_weights(kiln_model* m, const char* dir) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/%s", dir, m->params_file);
  if (!(m->weights = (char*)aligned_calloc(m->weight_bytes))) {
    set_error("out of memory for %lld bytes of weights", (long long)m->weight_bytes);
    return -1;
  }
  if (m->weight_bytes == 0) return 0;
  FILE* f = fopen(path, "rb");
  size_t got = f ? fread(m->weights, 1, (size_t)m->weight_bytes, f) : 0;
  if (f) fclose(f);
  if (got != (size_t)m->weight_bytes) {
    set_error("cannot read %lld bytes of weights from %s", (long long)m->weight_bytes, path);
    return -1;
  }
  return 0;
}

/* "t <kind a|w|i> <offset or input index> <dtype> <ndim> <dims...>" */
static int read_tensor(kiln_model* m, FILE* f, int id) {
  char kind[4], dtype[16];
  long long where;
  int ndim;
  DLTensor* t = &m->tensors[id];
  if (fscanf(f, " t %3s %lld %15s %d", kind, &where, dtype, &ndim) != 4 || ndim < 0 ||
      ndim > KILN_MAX_NDIM || parse_dtype(dtype, &t->dtype) != 0)
    return -1;
  t->ndim = ndim;
  t->shape = m->shapes + (size_t)id * KILN_MAX_NDIM;
  for (int i = 0; i < ndim; ++i)
    if (fscanf(f, " %lld", (long long*)&t->shape[i]) != 1 || t->shape[i] < 0) return -1;
  t->device.device_type = kDLCPU;
  int64_t size = (int64_t)nbytes_of(&t->dtype, ndim, t->shape);
  if (kind[0] == 'a' && where >= 0 && where + size <= m->arena_bytes) {
    t->data = m->arena + where;
  } else if (kind[0] == 'w' && where >= 0 && where + size <= m->weight_bytes) {
    t->data = m->weights + where;
  } else if (kind[0] == 'i' && where >= 0 && where < m->n_in &&
             (size_t)size == nbytes_of(&m->in[where].dl, m->in[where].ndim, m->in[where].shape)) {
    t->data = m->in_data[where];
  } else {
    return -1;
  }
  return 0;
}

/* "c <symbol> <nargs> <T<tensor>|I<int>>..." */
static int read_call(kiln_model* m, FILE* f, kernel_call* c) {
  char symbol[512], arg[64];
  if (fscanf(f, " c %500s %d", symbol, &c->nargs) != 2 || c->nargs < 0 || c->nargs > 1024)
    return -1;
  c->symbol = (char*)malloc(strlen(symbol) + 16);
  sprintf(c->symbol, "__tvm_ffi_%s", symbol);
  c->fn = (TVMFFISafeCallType)dlsym(m->lib, c->symbol);
  if (!c->fn) {
    set_error("%s has no kernel %s", m->library, c->symbol);
    return -2;
  }
  c->args = (TVMFFIAny*)calloc((size_t)c->nargs + 1, sizeof(TVMFFIAny));
  for (int i = 0; i < c->nargs; ++i) {
    if (fscanf(f, " %63s", arg) != 1) return -1;
    long long v = strtoll(arg + 1, NULL, 10);
    if (arg[0] == 'T' && v >= 0 && v < m->n_tensors) {
      c->args[i].type_index = kTVMFFIDLTensorPtr;
      c->args[i].v_ptr = &m->tensors[v];
    } else if (arg[0] == 'I') {
      c->args[i].type_index = kTVMFFIInt;
      c->args[i].v_int64 = v;
    } else {
      return -1;
    }
  }
  return 0;
}

static int read_plan_body(kiln_model* m, FILE* f) {
  int rc = 0;
  for (int i = 0; i < m->n_tensors && rc == 0; ++i) rc = read_tensor(m, f, i);
  if (rc != 0 || fscanf(f, " calls %d", &m->n_calls) != 1 || m->n_calls < 0) return -1;
  m->calls = (kernel_call*)calloc((size_t)m->n_calls + 1, sizeof(kernel_call));
  for (int i = 0; i < m->n_calls && rc == 0; ++i) rc = read_call(m, f, &m->calls[i]);
  if (rc != 0) return rc;
  int n_out = -1;
  if (fscanf(f, " outputs %d", &n_out) != 1 || n_out != m->n_out) return -1;
  m->out_tensor = (int*)calloc((size_t)n_out + 1, sizeof(int));
  for (int i = 0; i < n_out; ++i) {
    int id;
    if (fscanf(f, " o %d", &id) != 1 || id < 0 || id >= m->n_tensors) return -1;
    const DLTensor* t = &m->tensors[id];
    if (nbytes_of(&t->dtype, t->ndim, t->shape) !=
        nbytes_of(&m->out[i].dl, m->out[i].ndim, m->out[i].shape))
      return -1;
    m->out_tensor[i] = id;
  }
  return 0;
}

static int read_plan(kiln_model* m, const char* dir) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/%s", dir, m->plan_file);
  FILE* f = fopen(path, "r");
  if (!f) {
    set_error("cannot open %s", path);
    return -1;
  }
  long long arena = -1, weights = -1;
  int rc = fscanf(f, "kiln-plan 1 arena %lld weights %lld tensors %d", &arena, &weights,
                  &m->n_tensors) == 3 && arena >= 0 && weights >= 0 && m->n_tensors >= 0
               ? 0 : -1;
  m->arena_bytes = arena;
  m->weight_bytes = weights;
  if (rc == 0 && !(m->arena = (char*)aligned_calloc(arena))) {
    fclose(f);
    set_error("out of memory for the %lld-byte arena", arena);
    return -1;
  }
  if (rc == 0 && read_weights(m, dir) != 0) {
    fclose(f);
    return -1;
  }
  if (rc == 0) {
    m->tensors = (DLTensor*)calloc((size_t)m->n_tensors + 1, sizeof(DLTensor));
    m->shapes = (int64_t*)calloc(((size_t)m->n_tensors + 1) * KILN_MAX_NDIM, sizeof(int64_t));
    rc = read_plan_body(m, f);
  }
  fclose(f);
  if (rc == -1) set_error("malformed %s", path);
  return rc == 0 ? 0 : -1;
}

/* Which kernel library this CPU can run, as kiln_runtime.c decides: model.so, or the portable
 * twin when /proc/cpuinfo lacks a flag of the "requires" line (KILN_FORCE_FALLBACK=1: the twin
 * whenever the artifact has one). The twin uses its own plan when "fallback_plan" names one. */
static int choose_library(kiln_model* m) {
  char missing[512];
  kiln_missing_cpu_flags(m->requires, missing, sizeof(missing));
  if (missing[0] && !m->fallback) {
    set_error("this CPU lacks%s, which the model library needs; recompile for this CPU", missing);
    return -1;
  }
  int twin = m->fallback && (missing[0] || kiln_force_fallback());
  m->library = twin ? m->fallback : "model.so";
  m->plan_file = "plan.txt";
  m->params_file = "params.bin";
  if (twin && m->fallback_plan) { /* "<plan> <params>" */
    char* space = strchr(m->fallback_plan, ' ');
    if (!space) {
      set_error("malformed fallback_plan line in signature.txt");
      return -1;
    }
    *space = '\0';
    m->plan_file = m->fallback_plan;
    m->params_file = space + 1;
  }
  return 0;
}

KILN_EXPORT int kiln_model_create(const char* dir, kiln_model** out) {
  char path[4096];
  kiln_model* m = (kiln_model*)calloc(1, sizeof(kiln_model));
  *out = NULL;
  if (read_signature(m, dir) != 0) goto fail;
  m->in_data = (void**)calloc((size_t)m->n_in + 1, sizeof(void*));
  for (int i = 0; i < m->n_in; ++i)
    if (!(m->in_data[i] = aligned_calloc(
              (int64_t)nbytes_of(&m->in[i].dl, m->in[i].ndim, m->in[i].shape)))) {
      set_error("out of memory for input %d", i);
      goto fail;
    }
  if (choose_library(m) != 0) goto fail;
  snprintf(path, sizeof(path), "%s%s/%s", strchr(dir, '/') ? "" : "./", dir, m->library);
  /* RTLD_DEEPBIND: the kernels' error hook binds to this runtime even in a process where
   * libtvm_ffi was loaded first (Python that imported tvm) */
#ifdef RTLD_DEEPBIND
  m->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
#else
  m->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
#endif
  if (!m->lib) {
    set_error("cannot load %s: %s", path, dlerror());
    goto fail;
  }
  kiln_standalone_init_context(m->lib);
  if (read_plan(m, dir) != 0) goto fail;
  *out = m;
  return 0;
fail:
  kiln_model_destroy(m);
  return -1;
}

/* CPU-only runtime: "cpu" or NULL (the device the artifact was built for). */
KILN_EXPORT int kiln_model_create_on(const char* dir, const char* device, int device_id, kiln_model** out) {
  (void)device_id;
  if (device && strcmp(device, "cpu") != 0) {
    *out = NULL;
    set_error("target_mismatch: this artifact runs on the CPU only, not on '%s'", device);
    return -1;
  }
  return kiln_model_create(dir, out);
}

KILN_EXPORT void kiln_model_destroy(kiln_model* m) {
  if (!m) return;
  for (int i = 0; i < m->n_in; ++i) free(m->in_data ? m->in_data[i] : NULL), free(m->in[i].name);
  for (int i = 0; i < m->n_out; ++i) free(m->out[i].name);
  for (int i = 0; m->calls && i < m->n_calls; ++i) free(m->calls[i].args), free(m->calls[i].symbol);
  if (m->lib) dlclose(m->lib);
  free(m->in), free(m->out), free(m->in_data), free(m->out_tensor), free(m->arena);
  free(m->weights), free(m->tensors), free(m->shapes), free(m->calls);
  free(m->requires), free(m->fallback), free(m->fallback_plan), free(m->prof_s), free(m);
}

KILN_EXPORT int kiln_model_num_inputs(const kiln_model* m) { return m ? m->n_in : 0; }
KILN_EXPORT int kiln_model_num_outputs(const kiln_model* m) { return m ? m->n_out : 0; }
KILN_EXPORT const char* kiln_model_library(const kiln_model* m) { return m ? m->library : NULL; }

static const tensor_info* info(const kiln_model* m, int index, int is_in) {
  int n = is_in ? m->n_in : m->n_out;
  if (index < 0 || index >= n) {
    set_error("%s index %d out of range [0, %d)", is_in ? "input" : "output", index, n);
    return NULL;
  }
  return is_in ? &m->in[index] : &m->out[index];
}

KILN_EXPORT const char* kiln_model_input_name(const kiln_model* m, int i) {
  const tensor_info* t = info(m, i, 1);
  return t ? t->name : NULL;
}
KILN_EXPORT const char* kiln_model_input_dtype(const kiln_model* m, int i) {
  const tensor_info* t = info(m, i, 1);
  return t ? t->dtype : NULL;
}
KILN_EXPORT const char* kiln_model_output_name(const kiln_model* m, int i) {
  const tensor_info* t = info(m, i, 0);
  return t ? t->name : NULL;
}
KILN_EXPORT const char* kiln_model_output_dtype(const kiln_model* m, int i) {
  const tensor_info* t = info(m, i, 0);
  return t ? t->dtype : NULL;
}

static int shape_of(const tensor_info* t, int64_t* shape, int* ndim) {
  if (!t) return -1;
  *ndim = t->ndim;
  if (shape) memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
  return 0;
}
KILN_EXPORT int kiln_model_input_shape(const kiln_model* m, int i, int64_t* shape, int* ndim) {
  return shape_of(info(m, i, 1), shape, ndim);
}
KILN_EXPORT int kiln_model_output_shape(const kiln_model* m, int i, int64_t* shape, int* ndim) {
  return shape_of(info(m, i, 0), shape, ndim);
}

KILN_EXPORT int kiln_model_input_index(const kiln_model* m, const char* name) {
  for (int i = 0; i < m->n_in; ++i)
    if (strcmp(m->in[i].name, name) == 0) return i;
  set_error("no input named '%s'", name);
  return -1;
}

KILN_EXPORT int kiln_model_set_input(kiln_model* m, int i, const void* data, size_t nbytes) {
  const tensor_info* t = info(m, i, 1);
  if (!t) return -1;
  size_t need = nbytes_of(&t->dl, t->ndim, t->shape);
  if (nbytes != need) {
    set_error("input '%s' takes %zu bytes (%s), got %zu", t->name, need, t->dtype, nbytes);
    return -1;
  }
  memcpy(m->in_data[i], data, nbytes);
  return 0;
}

static void trace_call(const kernel_call* c, int i);

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

KILN_EXPORT int kiln_model_run(kiln_model* m) {
  TVMFFIAny ret;
  int trace = getenv("KILN_TRACE") != NULL;
  double t0 = 0;
  for (int i = 0; i < m->n_calls; ++i) {
    kernel_call* c = &m->calls[i];
    memset(&ret, 0, sizeof(ret));
    g_kernel_error[0] = '\0';
    if (m->prof_s) t0 = now_s();
    if (c->fn(NULL, c->args, c->nargs, &ret) != 0) {
      set_error("kernel %s (call %d of %d) failed: %s", c->symbol + 10, i + 1, m->n_calls,
                g_kernel_error[0] ? g_kernel_error : "no message");
      return -1;
    }
    if (m->prof_s) m->prof_s[i] += now_s() - t0;
    if (trace) trace_call(c, i);
  }
  if (m->prof_s) m->prof_runs++;
  m->ran = 1;
  return 0;
}

/* Per-kernel timing (the standalone runtime only): enable != 0 starts it afresh (zeroed),
 * 0 stops it. Returns the number of kernel calls per run, -1 on error. */
KILN_EXPORT int kiln_model_profile(kiln_model* m, int enable) {
  if (!m) return -1;
  free(m->prof_s);
  m->prof_s = NULL;
  m->prof_runs = 0;
  if (enable && !(m->prof_s = (double*)calloc((size_t)m->n_calls + 1, sizeof(double)))) {
    set_error("out of memory for the profile");
    return -1;
  }
  return m->n_calls;
}

/* Call `index` of a run: its kernel's name, the seconds it took summed over `runs` runs. */
KILN_EXPORT int kiln_model_profile_entry(const kiln_model* m, int index, const char** kernel,
                                         double* seconds, long* runs) {
  if (!m || !m->prof_s || index < 0 || index >= m->n_calls) {
    set_error("no profile entry %d (call kiln_model_profile(model, 1) and run first)", index);
    return -1;
  }
  *kernel = m->calls[index].symbol + 10;
  *seconds = m->prof_s[index];
  *runs = m->prof_runs;
  return 0;
}

/* KILN_TRACE=1: after each kernel, print its name and the sum of its last (output) argument. */
static void trace_call(const kernel_call* c, int i) {
  const TVMFFIAny* last = c->nargs ? &c->args[c->nargs - 1] : NULL;
  double sum = 0;
  if (last && last->type_index == kTVMFFIDLTensorPtr) {
    const DLTensor* t = (const DLTensor*)last->v_ptr;
    size_t n = nbytes_of(&t->dtype, t->ndim, t->shape) / 4;
    if (t->dtype.code == kDLFloat && t->dtype.bits == 32)
      for (size_t k = 0; k < n; ++k) sum += ((const float*)t->data)[k];
  }
  fprintf(stderr, "kiln-trace %d %s %.9g\n", i, c->symbol + 10, sum);
}

KILN_EXPORT size_t kiln_model_output_nbytes(const kiln_model* m, int i) {
  const tensor_info* t = info(m, i, 0);
  return t && m->ran ? nbytes_of(&t->dl, t->ndim, t->shape) : 0;
}

KILN_EXPORT int kiln_model_get_output(kiln_model* m, int i, void* data, size_t nbytes) {
  const tensor_info* t = info(m, i, 0);
  if (!t) return -1;
  if (!m->ran) {
    set_error("no output yet: call kiln_model_run first");
    return -1;
  }
  size_t need = kiln_model_output_nbytes(m, i);
  if (nbytes < need) {
    set_error("output '%s' needs %zu bytes, buffer has %zu", t->name, need, nbytes);
    return -1;
  }
  memcpy(data, m->tensors[m->out_tensor[i]].data, need);
  return 0;
}
