/*
 * kiln_runtime.c -- Kiln's C API over the TVM relax VM, written against the plain C ABI of
 * tvm-ffi (tvm/ffi/c_api.h) so that it needs no C++ standard library of its own: it links
 * against libtvm_ffi.so and libtvm_runtime.so from the runtime bundle and nothing else.
 * GPU artifacts ("device cuda sm_XX" in signature.txt) also dlopen the bundle's
 * libcudart.so.13 and libtvm_runtime_cuda.so, and the NVIDIA driver (libcuda.so.1) of the host.
 */
#define _GNU_SOURCE /* sched_getaffinity */
#include "kiln_runtime.h"
#include "kiln_cpu_flags.h"

#include <dlfcn.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tvm/ffi/c_api.h>

#define KILN_MAX_NDIM 16
#define KILN_ALIGN 64

typedef struct {
  char* name;
  char dtype[16];
  DLDataType dl;
  int ndim;
  int64_t shape[KILN_MAX_NDIM];
} tensor_info;

struct kiln_model {
  int n_in, n_out;
  tensor_info* in;
  tensor_info* out;
  void** in_data;
  size_t* in_nbytes;
  DLManagedTensor* in_managed;
  TVMFFIObjectHandle* in_tensor;
  TVMFFIObjectHandle* out_tensor; /* results of the last run, NULL before */
  TVMFFIObjectHandle lib, vm, main_fn;
  char* requires; /* "requires" line: CPU flags the primary library may use */
  char* fallback; /* "fallback" line: a portable library for CPUs that lack them */
  char* library;  /* the library actually loaded */
  char* device;   /* "device" line: "cuda sm_90" for GPU artifacts, NULL for CPU ones */
  int dev_type, dev_id;                   /* where the model runs (kDLCPU or kDLCUDA) */
  TVMFFIObjectHandle copy_from, copy_to;  /* host<->device copies, GPU only */
};

static __thread char g_error[4096];

static void set_error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_error, sizeof(g_error), fmt, ap);
  va_end(ap);
}

static void set_ffi_error(const char* what) {
  TVMFFIObjectHandle err = NULL;
  TVMFFIErrorMoveFromRaised(&err);
  if (err == NULL) {
    set_error("%s failed", what);
    return;
  }
  TVMFFIErrorCell* cell = (TVMFFIErrorCell*)((char*)err + sizeof(TVMFFIObject));
  set_error("%s: %.*s: %.*s", what, (int)cell->kind.size, cell->kind.data, (int)cell->message.size,
            cell->message.data);
  TVMFFIObjectDecRef(err);
}

const char* kiln_last_error(void) { return g_error; }
int kiln_runtime_abi_version(void) { return KILN_RUNTIME_ABI_VERSION; }

static DLTensor* tensor_of(TVMFFIObjectHandle h) {
  return (DLTensor*)((char*)h + sizeof(TVMFFIObject));
}

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
  strtok_r(line, " ", &save); /* kind, already checked */
  char* dtype = strtok_r(NULL, " ", &save);
  char* ndim = strtok_r(NULL, " ", &save);
  if (!dtype || !ndim || strlen(dtype) >= sizeof(t->dtype)) return -1;
  strcpy(t->dtype, dtype);
  if (parse_dtype(dtype, &t->dl) != 0) return -1;
  t->ndim = atoi(ndim);
  if (t->ndim < 0 || t->ndim > KILN_MAX_NDIM) return -1;
  for (int i = 0; i < t->ndim; ++i) {
    char* d = strtok_r(NULL, " ", &save);
    if (!d) return -1;
    t->shape[i] = strtoll(d, NULL, 10);
    if (t->shape[i] < 0) return -1; /* dynamic dims are not supported by this executor yet */
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
  int cap_in = 0, cap_out = 0, ok = 0;
  if (!fgets(line, sizeof(line), f) || strncmp(line, "kiln-signature 1", 16) != 0) goto done;
  while (fgets(line, sizeof(line), f)) {
    if (strncmp(line, "requires ", 9) == 0 && !m->requires) m->requires = dup_line(line + 9);
    if (strncmp(line, "fallback ", 9) == 0 && !m->fallback) m->fallback = dup_line(line + 9);
    if (strncmp(line, "device ", 7) == 0 && !m->device) m->device = dup_line(line + 7);
    int is_in = strncmp(line, "input ", 6) == 0, is_out = strncmp(line, "output ", 7) == 0;
    if (!is_in && !is_out) continue;
    int* n = is_in ? &m->n_in : &m->n_out;
    int* cap = is_in ? &cap_in : &cap_out;
    tensor_info** arr = is_in ? &m->in : &m->out;
    if (*n == *cap) {
      *cap = *cap ? *cap * 2 : 4;
      *arr = (tensor_info*)realloc(*arr, sizeof(tensor_info) * (size_t)*cap);
    }
    memset(&(*arr)[*n], 0, sizeof(tensor_info));
    if (parse_sig_line(line, &(*arr)[*n]) != 0) goto done;
    ++*n;
  }
  ok = 1;
done:
  fclose(f);
  if (!ok) set_error("malformed %s", path);
  return ok ? 0 : -1;
}

static int call(TVMFFIObjectHandle fn, TVMFFIAny* args, int n, TVMFFIAny* ret, const char* what) {
  memset(ret, 0, sizeof(*ret));
  ret->type_index = kTVMFFINone;
  if (TVMFFIFunctionCall(fn, args, n, ret) != 0) {
    set_ffi_error(what);
    return -1;
  }
  return 0;
}

static TVMFFIObjectHandle get_global(const char* name) {
  TVMFFIByteArray nm = {name, strlen(name)};
  TVMFFIObjectHandle out = NULL;
  if (TVMFFIFunctionGetGlobal(&nm, &out) != 0 || out == NULL) set_error("missing global %s", name);
  return out;
}

static TVMFFIAny any_obj(TVMFFIObjectHandle h, int32_t type_index) {
  TVMFFIAny a;
  memset(&a, 0, sizeof(a));
  a.type_index = type_index;
  a.v_obj = (TVMFFIObject*)h;
  return a;
}

static TVMFFIAny any_int(int64_t v) {
  TVMFFIAny a;
  memset(&a, 0, sizeof(a));
  a.type_index = kTVMFFIInt;
  a.v_int64 = v;
  return a;
}

static TVMFFIObjectHandle module_function(TVMFFIObjectHandle mod, const char* name) {
  TVMFFIObjectHandle getter = get_global("ffi.ModuleGetFunction");
  if (!getter) return NULL;
  TVMFFIAny args[3] = {any_obj(mod, kTVMFFIModule), any_int(0), any_int(1)}, ret;
  args[1].type_index = kTVMFFIRawStr;
  args[1].v_c_str = name;
  args[2].type_index = kTVMFFIBool;
  int rc = call(getter, args, 3, &ret, "ModuleGetFunction");
  TVMFFIObjectDecRef(getter);
  if (rc != 0) return NULL;
  if (ret.type_index != kTVMFFIFunction) {
    set_error("model library has no function %s", name);
    return NULL;
  }
  return ret.v_obj;
}

/* Which model library this CPU can run: model.so, or the fallback when a flag is missing. */
static int choose_library(kiln_model* m) {
  char missing[512];
  kiln_missing_cpu_flags(m->requires, missing, sizeof(missing));
  if (missing[0] && !m->fallback) {
    set_error("this CPU lacks%s, which the model library needs; recompile for this CPU", missing);
    return -1;
  }
  int twin = m->fallback && (missing[0] || kiln_force_fallback());
  m->library = dup_line(twin ? m->fallback : "model.so");
  return 0;
}

static int load_vm(kiln_model* m, const char* dir) {
  char path[4096];
  if (choose_library(m) != 0) return -1;
  /* a path without '/' would go through the dlopen search path */
  snprintf(path, sizeof(path), "%s%s/%s", strchr(dir, '/') ? "" : "./", dir, m->library);
  TVMFFIObjectHandle loader = get_global("ffi.ModuleLoadFromFile");
  if (!loader) return -1;
  TVMFFIAny arg, ret;
  memset(&arg, 0, sizeof(arg));
  arg.type_index = kTVMFFIRawStr;
  arg.v_c_str = path;
  int rc = call(loader, &arg, 1, &ret, "loading the model library");
  TVMFFIObjectDecRef(loader);
  if (rc != 0) return -1;
  m->lib = ret.v_obj;
  TVMFFIObjectHandle load_exec = module_function(m->lib, "vm_load_executable");
  if (!load_exec) return -1;
  rc = call(load_exec, NULL, 0, &ret, "vm_load_executable");
  TVMFFIObjectDecRef(load_exec);
  if (rc != 0) return -1;
  m->vm = ret.v_obj;
  TVMFFIObjectHandle init = module_function(m->vm, "vm_initialization");
  if (!init) return -1;
  /* (device_type, device_id, allocator 2 = pooled) per device; a GPU comes with the CPU as host */
  TVMFFIAny iargs[6] = {any_int(m->dev_type), any_int(m->dev_id), any_int(2),
                        any_int(kDLCPU),     any_int(0),         any_int(2)};
  rc = call(init, iargs, m->dev_type == kDLCPU ? 3 : 6, &ret, "vm_initialization");
  TVMFFIObjectDecRef(init);
  if (rc != 0) return -1;
  m->main_fn = module_function(m->vm, "main");
  return m->main_fn ? 0 : -1;
}

/* ---- GPU artifacts ---------------------------------------------------------------------- */

/* Which device to run on: `device` ("cpu", "gpu"/"cuda", or NULL = the artifact's own). */
static int choose_device(kiln_model* m, const char* device, int device_id) {
  int want_gpu = device ? (strcmp(device, "gpu") == 0 || strcmp(device, "cuda") == 0)
                        : m->device != NULL;
  if (device && !want_gpu && strcmp(device, "cpu") != 0) {
    set_error("unknown device '%s' (use cpu or gpu)", device);
    return -1;
  }
  if (want_gpu && !m->device) {
    set_error("target_mismatch: the artifact has no GPU code; load it on the cpu");
    return -1;
  }
  if (!want_gpu && m->device) {
    set_error("target_mismatch: the artifact holds GPU code (%s); load it on the gpu", m->device);
    return -1;
  }
  m->dev_type = want_gpu ? kDLCUDA : kDLCPU;
  m->dev_id = want_gpu ? device_id : 0;
  return 0;
}

/* The NVIDIA driver of this host, then the bundle's CUDA runtime and TVM's CUDA runtime
 * (which registers the loader of the cubins in model.so); then: does GPU `dev_id` exist? */
static int load_cuda(kiln_model* m, const char* dir) {
  void* drv = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
  if (!drv || !dlsym(drv, "cuInit")) {
    set_error("device_unavailable: no NVIDIA driver on this machine (libcuda.so.1: %s); the "
              "artifact needs a GPU (%s) and driver >= 580", drv ? "no cuInit" : dlerror(),
              m->device);
    return -1;
  }
  static const char* libs[] = {"libcudart.so.13", "libtvm_runtime_cuda.so"};
  for (size_t i = 0; i < sizeof(libs) / sizeof(libs[0]); ++i) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, libs[i]);
    if (!dlopen(path, RTLD_NOW | RTLD_GLOBAL)) {
      set_error("device_unavailable: cannot load %s: %s", libs[i], dlerror());
      return -1;
    }
  }
  TVMFFIObjectHandle attr = get_global("runtime.GetDeviceAttr");
  if (!attr) return -1;
  TVMFFIAny args[3] = {any_int(kDLCUDA), any_int(m->dev_id), any_int(0 /* kExist */)}, ret;
  int rc = call(attr, args, 3, &ret, "querying the GPU");
  TVMFFIObjectDecRef(attr);
  if (rc != 0 || ret.type_index != kTVMFFIInt || ret.v_int64 == 0) {
    char why[1024];
    snprintf(why, sizeof(why), "%s", rc ? g_error : "");
    set_error("device_unavailable: CUDA device %d is not available (no such GPU, or a driver "
              "older than the CUDA 13 runtime needs: >= 580)%s%s", m->dev_id, rc ? ": " : "", why);
    return -1;
  }
  m->copy_from = get_global("runtime.TVMTensorCopyFromBytes");
  m->copy_to = get_global("runtime.TVMTensorCopyToBytes");
  return m->copy_from && m->copy_to ? 0 : -1;
}

/* An uninitialised tensor of `t`'s shape and dtype on the model's device. */
static int alloc_device_tensor(kiln_model* m, const tensor_info* t, TVMFFIObjectHandle* out) {
  TVMFFIObjectHandle mk = get_global("ffi.Shape");
  TVMFFIObjectHandle alloc = get_global("runtime.TVMTensorAllocWithScope");
  TVMFFIAny dims[KILN_MAX_NDIM], shape, args[4], ret;
  int rc = mk && alloc ? 0 : -1;
  for (int i = 0; i < t->ndim; ++i) dims[i] = any_int(t->shape[i]);
  if (rc == 0) rc = call(mk, dims, t->ndim, &shape, "making a shape");
  if (rc == 0) {
    memset(args, 0, sizeof(args));
    args[0] = shape;
    args[1].type_index = kTVMFFIDataType;
    args[1].v_dtype = t->dl;
    args[2].type_index = kTVMFFIDevice;
    args[2].v_device.device_type = (DLDeviceType)m->dev_type;
    args[2].v_device.device_id = m->dev_id;
    args[3].type_index = kTVMFFINone;
    rc = call(alloc, args, 4, &ret, "allocating a GPU tensor");
    TVMFFIObjectDecRef(shape.v_obj);
    if (rc == 0) *out = ret.v_obj;
  }
  if (mk) TVMFFIObjectDecRef(mk);
  if (alloc) TVMFFIObjectDecRef(alloc);
  return rc;
}

/* runtime.TVMTensorCopy{From,To}Bytes(tensor, host pointer, nbytes): copies and synchronizes. */
static int copy_bytes(TVMFFIObjectHandle fn, TVMFFIObjectHandle tensor, const void* data,
                      size_t nbytes, const char* what) {
  TVMFFIAny args[3] = {any_obj(tensor, kTVMFFITensor), any_int(0), any_int((int64_t)nbytes)}, ret;
  args[1].type_index = kTVMFFIOpaquePtr;
  args[1].v_ptr = (void*)data;
  return call(fn, args, 3, &ret, what);
}

static int make_inputs(kiln_model* m) {
  m->in_data = (void**)calloc((size_t)m->n_in, sizeof(void*));
  m->in_nbytes = (size_t*)calloc((size_t)m->n_in, sizeof(size_t));
  m->in_managed = (DLManagedTensor*)calloc((size_t)m->n_in, sizeof(DLManagedTensor));
  m->in_tensor = (TVMFFIObjectHandle*)calloc((size_t)m->n_in, sizeof(TVMFFIObjectHandle));
  m->out_tensor = (TVMFFIObjectHandle*)calloc((size_t)(m->n_out ? m->n_out : 1), sizeof(void*));
  for (int i = 0; i < m->n_in; ++i) {
    tensor_info* t = &m->in[i];
    size_t nb = nbytes_of(&t->dl, t->ndim, t->shape);
    m->in_nbytes[i] = nb;
    if (m->dev_type != kDLCPU) {
      if (alloc_device_tensor(m, t, &m->in_tensor[i]) != 0) return -1;
      continue;
    }
    m->in_data[i] = aligned_alloc(KILN_ALIGN, (nb + KILN_ALIGN - 1) / KILN_ALIGN * KILN_ALIGN + KILN_ALIGN);
    memset(m->in_data[i], 0, nb);
    DLTensor* dl = &m->in_managed[i].dl_tensor;
    dl->data = m->in_data[i];
    dl->device.device_type = kDLCPU;
    dl->ndim = t->ndim;
    dl->dtype = t->dl;
    dl->shape = t->shape;
    if (TVMFFITensorFromDLPack(&m->in_managed[i], KILN_ALIGN, 1, &m->in_tensor[i]) != 0) {
      set_ffi_error("creating input tensor");
      return -1;
    }
  }
  return 0;
}

/* TVM's thread pool defaults to half the cores; use every core this process may run on,
 * unless the user chose (TVM_NUM_THREADS or OMP_NUM_THREADS). */
static void default_thread_count(void) {
  if (getenv("TVM_NUM_THREADS") || getenv("OMP_NUM_THREADS")) return;
  cpu_set_t set;
  int n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
  char buf[16];
  snprintf(buf, sizeof(buf), "%d", n > 0 ? n : 1);
  setenv("TVM_NUM_THREADS", buf, 0);
}

int kiln_model_create(const char* dir, kiln_model** out) {
  return kiln_model_create_on(dir, NULL, 0, out);
}

int kiln_model_create_on(const char* dir, const char* device, int device_id, kiln_model** out) {
  default_thread_count();
  kiln_model* m = (kiln_model*)calloc(1, sizeof(kiln_model));
  *out = NULL;
  if (read_signature(m, dir) != 0 || choose_device(m, device, device_id) != 0 ||
      (m->dev_type != kDLCPU && load_cuda(m, dir) != 0) || load_vm(m, dir) != 0 ||
      make_inputs(m) != 0) {
    kiln_model_destroy(m);
    return -1;
  }
  *out = m;
  return 0;
}

static void release_outputs(kiln_model* m) {
  for (int i = 0; i < m->n_out; ++i) {
    if (m->out_tensor[i]) TVMFFIObjectDecRef(m->out_tensor[i]);
    m->out_tensor[i] = NULL;
  }
}

void kiln_model_destroy(kiln_model* m) {
  if (!m) return;
  if (m->out_tensor) release_outputs(m);
  for (int i = 0; m->in_tensor && i < m->n_in; ++i)
    if (m->in_tensor[i]) TVMFFIObjectDecRef(m->in_tensor[i]);
  if (m->main_fn) TVMFFIObjectDecRef(m->main_fn);
  if (m->vm) TVMFFIObjectDecRef(m->vm);
  if (m->lib) TVMFFIObjectDecRef(m->lib);
  if (m->copy_from) TVMFFIObjectDecRef(m->copy_from);
  if (m->copy_to) TVMFFIObjectDecRef(m->copy_to);
  free(m->device);
  for (int i = 0; m->in_data && i < m->n_in; ++i) free(m->in_data[i]);
  for (int i = 0; i < m->n_in; ++i) free(m->in[i].name);
  for (int i = 0; i < m->n_out; ++i) free(m->out[i].name);
  free(m->in);
  free(m->out);
  free(m->requires);
  free(m->fallback);
  free(m->library);
  free(m->in_data);
  free(m->in_nbytes);
  free(m->in_managed);
  free(m->in_tensor);
  free(m->out_tensor);
  free(m);
}

int kiln_model_num_inputs(const kiln_model* m) { return m->n_in; }
const char* kiln_model_library(const kiln_model* m) { return m->library; }
int kiln_model_num_outputs(const kiln_model* m) { return m->n_out; }

static int check_index(int index, int n, const char* kind) {
  if (index < 0 || index >= n) {
    set_error("%s index %d out of range [0, %d)", kind, index, n);
    return -1;
  }
  return 0;
}

const char* kiln_model_input_name(const kiln_model* m, int i) {
  return check_index(i, m->n_in, "input") ? NULL : m->in[i].name;
}
const char* kiln_model_input_dtype(const kiln_model* m, int i) {
  return check_index(i, m->n_in, "input") ? NULL : m->in[i].dtype;
}
const char* kiln_model_output_name(const kiln_model* m, int i) {
  return check_index(i, m->n_out, "output") ? NULL : m->out[i].name;
}
const char* kiln_model_output_dtype(const kiln_model* m, int i) {
  return check_index(i, m->n_out, "output") ? NULL : m->out[i].dtype;
}

int kiln_model_input_index(const kiln_model* m, const char* name) {
  for (int i = 0; i < m->n_in; ++i)
    if (strcmp(m->in[i].name, name) == 0) return i;
  set_error("no input named '%s'", name);
  return -1;
}

static void copy_shape(int ndim, const int64_t* src, int64_t* shape, int* out_ndim) {
  *out_ndim = ndim;
  if (shape) memcpy(shape, src, sizeof(int64_t) * (size_t)ndim);
}

int kiln_model_input_shape(const kiln_model* m, int i, int64_t* shape, int* ndim) {
  if (check_index(i, m->n_in, "input")) return -1;
  copy_shape(m->in[i].ndim, m->in[i].shape, shape, ndim);
  return 0;
}

int kiln_model_output_shape(const kiln_model* m, int i, int64_t* shape, int* ndim) {
  if (check_index(i, m->n_out, "output")) return -1;
  if (m->out_tensor[i]) {
    DLTensor* t = tensor_of(m->out_tensor[i]);
    copy_shape(t->ndim, t->shape, shape, ndim);
  } else {
    copy_shape(m->out[i].ndim, m->out[i].shape, shape, ndim);
  }
  return 0;
}

int kiln_model_set_input(kiln_model* m, int i, const void* data, size_t nbytes) {
  if (check_index(i, m->n_in, "input")) return -1;
  if (nbytes != m->in_nbytes[i]) {
    set_error("input '%s' takes %zu bytes, got %zu", m->in[i].name, m->in_nbytes[i], nbytes);
    return -1;
  }
  if (m->dev_type != kDLCPU)
    return copy_bytes(m->copy_from, m->in_tensor[i], data, nbytes, "copying an input to the GPU");
  memcpy(m->in_data[i], data, nbytes);
  return 0;
}

static int take_output(kiln_model* m, int i, TVMFFIAny* value) {
  if (value->type_index != kTVMFFITensor) {
    set_error("output %d is not a tensor (type index %d)", i, value->type_index);
    return -1;
  }
  int on = tensor_of(value->v_obj)->device.device_type;
  if (on != kDLCPU && on != m->dev_type) {
    set_error("output %d is on device type %d, the model runs on %d", i, on, m->dev_type);
    TVMFFIObjectDecRef(value->v_obj);
    return -1;
  }
  m->out_tensor[i] = value->v_obj;
  return 0;
}

static int unpack_outputs(kiln_model* m, TVMFFIAny* ret) {
  if (ret->type_index == kTVMFFITensor) {
    if (m->n_out != 1) {
      set_error("model returned 1 output, signature declares %d", m->n_out);
      TVMFFIObjectDecRef(ret->v_obj);
      return -1;
    }
    return take_output(m, 0, ret);
  }
  if (ret->type_index != kTVMFFIArray) {
    set_error("model returned an unsupported value (type index %d)", ret->type_index);
    if (ret->type_index >= kTVMFFIStaticObjectBegin) TVMFFIObjectDecRef(ret->v_obj);
    return -1;
  }
  TVMFFIObjectHandle getitem = get_global("ffi.ArrayGetItem");
  int rc = getitem ? 0 : -1;
  for (int i = 0; rc == 0 && i < m->n_out; ++i) {
    TVMFFIAny args[2] = {any_obj(ret->v_obj, kTVMFFIArray), any_int(i)}, item;
    rc = call(getitem, args, 2, &item, "reading output tuple");
    if (rc == 0) rc = take_output(m, i, &item);
  }
  if (getitem) TVMFFIObjectDecRef(getitem);
  TVMFFIObjectDecRef(ret->v_obj);
  return rc;
}

int kiln_model_run(kiln_model* m) {
  TVMFFIAny args[64], ret;
  if (m->n_in > 64) {
    set_error("at most 64 inputs are supported");
    return -1;
  }
  for (int i = 0; i < m->n_in; ++i) args[i] = any_obj(m->in_tensor[i], kTVMFFITensor);
  release_outputs(m);
  if (call(m->main_fn, args, m->n_in, &ret, "running the model") != 0) return -1;
  return unpack_outputs(m, &ret);
}

size_t kiln_model_output_nbytes(const kiln_model* m, int i) {
  if (check_index(i, m->n_out, "output") || !m->out_tensor[i]) return 0;
  DLTensor* t = tensor_of(m->out_tensor[i]);
  return nbytes_of(&t->dtype, t->ndim, t->shape);
}

int kiln_model_get_output(kiln_model* m, int i, void* data, size_t nbytes) {
  if (check_index(i, m->n_out, "output")) return -1;
  if (!m->out_tensor[i]) {
    set_error("no output yet: call kiln_model_run first");
    return -1;
  }
  DLTensor* t = tensor_of(m->out_tensor[i]);
  size_t need = nbytes_of(&t->dtype, t->ndim, t->shape);
  if (nbytes < need) {
    set_error("output '%s' needs %zu bytes, buffer has %zu", m->out[i].name, need, nbytes);
    return -1;
  }
  if (t->strides != NULL) {
    for (int d = t->ndim - 1, expect = 1; d >= 0; expect *= (int)t->shape[d], --d) {
      if (t->shape[d] != 1 && t->strides[d] != expect) {
        set_error("output '%s' is not contiguous", m->out[i].name);
        return -1;
      }
    }
  }
  if (t->device.device_type != kDLCPU)
    return copy_bytes(m->copy_to, m->out_tensor[i], data, need, "copying an output from the GPU");
  memcpy(data, (char*)t->data + t->byte_offset, need);
  return 0;
}
