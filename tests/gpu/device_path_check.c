/* Exercises kiln_runtime.c's GPU-only helpers (device choice, tensor allocation through
 * runtime.TVMTensorAllocWithScope, host<->device copies through TVMTensorCopy{From,To}Bytes)
 * with the CPU standing in for the GPU, since no GPU is here. Includes the source so that
 * its static functions are reachable. Prints "ok" or the first failure. */
#include "kiln_runtime.c"

static int fail(const char* what) {
  printf("FAIL %s: %s\n", what, kiln_last_error());
  return 1;
}

int main(void) {
  kiln_model m;
  memset(&m, 0, sizeof(m));
  /* device choice against the artifact's "device" line */
  m.device = dup_line("cuda sm_90");
  if (choose_device(&m, NULL, 3) != 0 || m.dev_type != kDLCUDA || m.dev_id != 3)
    return fail("default device of a GPU artifact");
  if (choose_device(&m, "cpu", 0) == 0 || strncmp(kiln_last_error(), "target_mismatch: ", 17))
    return fail("cpu for a GPU artifact must be refused");
  free(m.device);
  m.device = NULL;
  if (choose_device(&m, "gpu", 0) == 0 || strncmp(kiln_last_error(), "target_mismatch: ", 17))
    return fail("gpu for a CPU artifact must be refused");
  if (choose_device(&m, "tpu", 0) == 0) return fail("unknown device must be refused");
  /* allocation and copies, on the CPU "device" */
  m.dev_type = kDLCPU;
  m.copy_from = get_global("runtime.TVMTensorCopyFromBytes");
  m.copy_to = get_global("runtime.TVMTensorCopyToBytes");
  if (!m.copy_from || !m.copy_to) return fail("copy functions");
  tensor_info t;
  memset(&t, 0, sizeof(t));
  parse_dtype("float32", &t.dl);
  t.ndim = 3;
  t.shape[0] = 2, t.shape[1] = 3, t.shape[2] = 4;
  TVMFFIObjectHandle tensor = NULL;
  if (alloc_device_tensor(&m, &t, &tensor) != 0) return fail("alloc_device_tensor");
  DLTensor* dl = tensor_of(tensor);
  if (dl->ndim != 3 || dl->shape[2] != 4 || dl->dtype.bits != 32) return fail("tensor shape");
  float in[24], out[24];
  for (int i = 0; i < 24; ++i) in[i] = (float)i * 0.5f, out[i] = -1.0f;
  if (copy_bytes(m.copy_from, tensor, in, sizeof(in), "copy in") != 0) return fail("copy in");
  if (copy_bytes(m.copy_to, tensor, out, sizeof(out), "copy out") != 0) return fail("copy out");
  if (memcmp(in, out, sizeof(in)) != 0) return fail("round trip differs");
  if (copy_bytes(m.copy_from, tensor, in, 8, "short copy") == 0) return fail("size mismatch");
  TVMFFIObjectDecRef(tensor);
  TVMFFIObjectDecRef(m.copy_from);
  TVMFFIObjectDecRef(m.copy_to);
  printf("ok\n");
  return 0;
}
