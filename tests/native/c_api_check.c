/* Exercises kiln_runtime.h the way a device program would. Usage: c_api_check DIR IN.bin OUT.bin
 * Prints the signature, checks error paths, runs once and writes output 0's bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln_runtime.h"

#define CHECK(cond, msg)                                         \
  do {                                                           \
    if (!(cond)) {                                               \
      fprintf(stderr, "FAIL %s: %s\n", msg, kiln_last_error()); \
      return 1;                                                  \
    }                                                            \
  } while (0)

int main(int argc, char** argv) {
  kiln_model* m = NULL;
  CHECK(kiln_model_create("/nonexistent-kiln-dir", &m) != 0 && m == NULL, "bad dir must fail");
  CHECK(strstr(kiln_last_error(), "signature.txt") != NULL, "bad dir error names the file");
  CHECK(kiln_model_create(argv[1], &m) == 0, "create");
  printf("abi %d library %s\n", kiln_runtime_abi_version(), kiln_model_library(m));
  printf("inputs %d outputs %d\n", kiln_model_num_inputs(m), kiln_model_num_outputs(m));
  int64_t shape[16];
  int ndim = 0;
  CHECK(kiln_model_input_shape(m, 0, shape, &ndim) == 0, "input shape");
  size_t n = 4;
  printf("input %s %s", kiln_model_input_name(m, 0), kiln_model_input_dtype(m, 0));
  for (int i = 0; i < ndim; ++i) printf(" %lld", (long long)shape[i]), n *= (size_t)shape[i];
  printf("\n");
  CHECK(kiln_model_input_index(m, "x") == 0, "input index");
  CHECK(kiln_model_input_index(m, "nope") == -1, "unknown input index");
  CHECK(kiln_model_input_name(m, 5) == NULL, "out-of-range name is NULL");
  char* in = malloc(n);
  FILE* f = fopen(argv[2], "rb");
  CHECK(f && fread(in, 1, n, f) == n, "read input");
  fclose(f);
  CHECK(kiln_model_set_input(m, 0, in, n - 4) != 0, "short input must fail");
  CHECK(strstr(kiln_last_error(), "takes") != NULL, "short input error says the size");
  CHECK(kiln_model_get_output(m, 0, in, n) != 0, "output before run must fail");
  CHECK(kiln_model_set_input(m, 0, in, n) == 0, "set input");
  CHECK(kiln_model_run(m) == 0, "run");
  CHECK(kiln_model_run(m) == 0, "run twice");
  for (int o = 0; o < kiln_model_num_outputs(m); ++o) {
    CHECK(kiln_model_output_shape(m, o, shape, &ndim) == 0, "output shape");
    printf("output %s %s", kiln_model_output_name(m, o), kiln_model_output_dtype(m, o));
    for (int i = 0; i < ndim; ++i) printf(" %lld", (long long)shape[i]);
    printf(" nbytes %zu\n", kiln_model_output_nbytes(m, o));
  }
  size_t nb = kiln_model_output_nbytes(m, 0);
  char* out = malloc(nb);
  CHECK(kiln_model_get_output(m, 0, out, nb - 1) != 0, "small output buffer must fail");
  CHECK(kiln_model_get_output(m, 0, out, nb) == 0, "get output");
  f = fopen(argv[3], "wb");
  fwrite(out, 1, nb, f);
  fclose(f);
  kiln_model_destroy(m);
  free(in);
  free(out);
  return 0;
}
