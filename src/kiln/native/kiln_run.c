/*
 * kiln_run -- run a Kiln artifact directory through the C API.
 *
 *   kiln_run DIR [--repeat N] --input NAME=FILE ... --output-dir OUT
 *
 * Inputs are .npy files (C order, matching dtype) or raw little-endian .bin files.
 * Each output i is written as OUT/output_<i>.npy, and OUT/outputs.txt lists
 * "<i> <name>" per line. With --repeat N the model runs N times and the median
 * latency is printed to stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kiln_runtime.h"

static int fail(const char* what) {
  fprintf(stderr, "kiln_run: %s: %s\n", what, kiln_last_error());
  return 1;
}

static const char* npy_descr(const char* dtype) {
  static const char* map[][2] = {{"float32", "<f4"}, {"float16", "<f2"}, {"float64", "<f8"},
                                 {"int8", "|i1"},    {"int16", "<i2"},   {"int32", "<i4"},
                                 {"int64", "<i8"},   {"uint8", "|u1"},   {"uint16", "<u2"},
                                 {"uint32", "<u4"},  {"uint64", "<u8"},  {"bool", "|b1"}};
  for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); ++i)
    if (strcmp(dtype, map[i][0]) == 0) return map[i][1];
  return NULL;
}

/* Read a whole file; for .npy, check the header and return only the data. */
static char* read_input(const char* path, const char* dtype, size_t* nbytes) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  fseek(f, 0, SEEK_SET);
  char* buf = (char*)malloc((size_t)size + 1);
  size_t got = fread(buf, 1, (size_t)size, f);
  fclose(f);
  buf[got] = '\0';
  size_t len = strlen(path);
  if (len < 4 || strcmp(path + len - 4, ".npy") != 0) {
    *nbytes = got;
    return buf;
  }
  if (got < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) goto bad;
  size_t hlen, off;
  if (buf[6] == 1) {
    hlen = (unsigned char)buf[8] | ((size_t)(unsigned char)buf[9] << 8);
    off = 10;
  } else {
    hlen = (unsigned char)buf[8] | ((size_t)(unsigned char)buf[9] << 8) |
           ((size_t)(unsigned char)buf[10] << 16) | ((size_t)(unsigned char)buf[11] << 24);
    off = 12;
  }
  if (off + hlen > got) goto bad;
  char header[4096];
  snprintf(header, sizeof(header), "%.*s", (int)hlen, buf + off);
  char want[64];
  snprintf(want, sizeof(want), "'descr': '%s'", npy_descr(dtype) ? npy_descr(dtype) : "?");
  if (!strstr(header, want) || !strstr(header, "'fortran_order': False")) {
    fprintf(stderr, "kiln_run: %s: expected a C-order %s array, header is %s\n", path, dtype, header);
    free(buf);
    return NULL;
  }
  *nbytes = got - off - hlen;
  memmove(buf, buf + off + hlen, *nbytes);
  return buf;
bad:
  fprintf(stderr, "kiln_run: %s is not a .npy file\n", path);
  free(buf);
  return NULL;
}

static int write_npy(const char* path, const char* dtype, const int64_t* shape, int ndim,
                     const void* data, size_t nbytes) {
  char dict[1024], dims[512] = "";
  for (int i = 0; i < ndim; ++i) {
    char d[32];
    snprintf(d, sizeof(d), "%lld%s", (long long)shape[i], (ndim == 1 || i < ndim - 1) ? "," : "");
    strncat(dims, d, sizeof(dims) - strlen(dims) - 1);
  }
  int n = snprintf(dict, sizeof(dict), "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }",
                   npy_descr(dtype), dims);
  int total = 10 + n + 1;
  int pad = (64 - total % 64) % 64;
  FILE* f = fopen(path, "wb");
  if (!f) return -1;
  unsigned short hlen = (unsigned short)(n + pad + 1);
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  fputc(hlen & 0xff, f);
  fputc(hlen >> 8, f);
  fwrite(dict, 1, (size_t)n, f);
  for (int i = 0; i < pad; ++i) fputc(' ', f);
  fputc('\n', f);
  size_t w = fwrite(data, 1, nbytes, f);
  return (fclose(f) == 0 && w == nbytes) ? 0 : -1;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return (x > y) - (x < y);
}

static int save_outputs(kiln_model* m, const char* out_dir) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/outputs.txt", out_dir);
  FILE* list = fopen(path, "w");
  if (!list) {
    fprintf(stderr, "kiln_run: cannot write %s\n", path);
    return 1;
  }
  for (int i = 0; i < kiln_model_num_outputs(m); ++i) {
    int64_t shape[16];
    int ndim = 0;
    size_t nb = kiln_model_output_nbytes(m, i);
    void* data = malloc(nb ? nb : 1);
    if (kiln_model_output_shape(m, i, shape, &ndim) || kiln_model_get_output(m, i, data, nb)) {
      free(data);
      fclose(list);
      return fail("reading an output");
    }
    snprintf(path, sizeof(path), "%s/output_%d.npy", out_dir, i);
    int rc = write_npy(path, kiln_model_output_dtype(m, i), shape, ndim, data, nb);
    free(data);
    if (rc) {
      fprintf(stderr, "kiln_run: cannot write %s\n", path);
      fclose(list);
      return 1;
    }
    fprintf(list, "%d %s\n", i, kiln_model_output_name(m, i));
  }
  fclose(list);
  return 0;
}

static int set_inputs(kiln_model* m, int argc, char** argv) {
  for (int a = 2; a < argc; ++a) {
    if (strcmp(argv[a], "--input") != 0 || a + 1 >= argc) continue;
    char* spec = argv[++a];
    char* eq = strrchr(spec, '=');
    if (!eq) {
      fprintf(stderr, "kiln_run: --input takes NAME=FILE, got %s\n", spec);
      return 1;
    }
    *eq = '\0';
    int idx = kiln_model_input_index(m, spec);
    if (idx < 0) return fail("--input");
    size_t nb = 0;
    char* data = read_input(eq + 1, kiln_model_input_dtype(m, idx), &nb);
    if (!data) {
      fprintf(stderr, "kiln_run: cannot read input file %s\n", eq + 1);
      return 1;
    }
    int rc = kiln_model_set_input(m, idx, data, nb);
    free(data);
    if (rc) return fail("--input");
  }
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') {
    fprintf(stderr, "usage: kiln_run DIR [--repeat N] --input NAME=FILE ... --output-dir OUT\n");
    return 2;
  }
  const char* out_dir = NULL;
  int repeat = 1;
  for (int a = 2; a + 1 < argc; ++a) {
    if (strcmp(argv[a], "--output-dir") == 0) out_dir = argv[a + 1];
    if (strcmp(argv[a], "--repeat") == 0) repeat = atoi(argv[a + 1]) > 0 ? atoi(argv[a + 1]) : 1;
  }
  double t0 = now_ms();
  kiln_model* m = NULL;
  if (kiln_model_create(argv[1], &m) != 0) return fail("loading the model");
  double load_ms = now_ms() - t0;
  if (strcmp(kiln_model_library(m), "model.so") != 0)
    fprintf(stderr, "kiln_run: this CPU lacks features of model.so; using %s\n",
            kiln_model_library(m));
  int rc = set_inputs(m, argc, argv);
  double* times = (double*)calloc((size_t)repeat, sizeof(double));
  for (int r = 0; rc == 0 && r < repeat; ++r) {
    double s = now_ms();
    if (kiln_model_run(m) != 0) rc = fail("running the model");
    times[r] = now_ms() - s;
  }
  if (rc == 0) {
    qsort(times, (size_t)repeat, sizeof(double), cmp_double);
    fprintf(stderr, "kiln_run: load %.3f ms, run median %.3f ms over %d\n", load_ms,
            times[repeat / 2], repeat);
    if (out_dir) rc = save_outputs(m, out_dir);
  }
  free(times);
  kiln_model_destroy(m);
  return rc;
}
