/*
 * kiln_runtime.h -- the C API of a Kiln artifact.
 *
 * A model directory (an unpacked artifact) holds model.so, signature.txt and the
 * runtime bundle. Every call returns 0 on success and -1 on failure; the message of
 * the last failure in this thread is returned by kiln_last_error().
 *
 *   kiln_model* m;
 *   if (kiln_model_create("./artifact", &m) != 0) puts(kiln_last_error());
 *   kiln_model_set_input(m, 0, data, nbytes);
 *   kiln_model_run(m);
 *   kiln_model_get_output(m, 0, out, out_nbytes);
 *   kiln_model_destroy(m);
 */
#ifndef KILN_RUNTIME_H_
#define KILN_RUNTIME_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_RUNTIME_ABI_VERSION 1

typedef struct kiln_model kiln_model;

/* Load the artifact unpacked in `dir`. Sets TVM_NUM_THREADS to the CPUs this process may use
 * unless TVM_NUM_THREADS or OMP_NUM_THREADS is already set. */
int kiln_model_create(const char* dir, kiln_model** out);
/* Load it on `device`: "cpu", "gpu" (NVIDIA, CUDA device `device_id`), or NULL for the device
 * the artifact was built for (signature.txt "device cuda sm_XX" = the GPU). Inputs and outputs
 * stay host memory: set_input / get_output copy them to and from the GPU. Failure messages
 * start with "device_unavailable: " when this host has no usable GPU or NVIDIA driver, and
 * with "target_mismatch: " when the artifact has no code for the requested device. */
int kiln_model_create_on(const char* dir, const char* device, int device_id, kiln_model** out);
void kiln_model_destroy(kiln_model* model);

int kiln_model_num_inputs(const kiln_model* model);
/* File name of the model library in use: "model.so", or the portable fallback library
 * when this CPU lacks a feature the primary one needs (see "requires" in signature.txt). */
const char* kiln_model_library(const kiln_model* model);

/* Standalone runtime only: time every kernel call. kiln_model_profile(model, 1) starts afresh
 * (returns the number of calls per run), (model, 0) stops; after some runs,
 * kiln_model_profile_entry gives call `index`'s kernel name and the seconds it took in all
 * `runs` runs together. */
int kiln_model_profile(kiln_model* model, int enable);
int kiln_model_profile_entry(const kiln_model* model, int index, const char** kernel,
                             double* seconds, long* runs);
int kiln_model_num_outputs(const kiln_model* model);

/* Name, dtype ("float32", "int64", ...) and shape of input/output `index`.
 * Strings stay valid until kiln_model_destroy. `shape` may be NULL to query ndim only. */
const char* kiln_model_input_name(const kiln_model* model, int index);
const char* kiln_model_input_dtype(const kiln_model* model, int index);
int kiln_model_input_shape(const kiln_model* model, int index, int64_t* shape, int* ndim);
const char* kiln_model_output_name(const kiln_model* model, int index);
const char* kiln_model_output_dtype(const kiln_model* model, int index);
/* Output shapes are those of the last run, or the declared ones before the first run. */
int kiln_model_output_shape(const kiln_model* model, int index, int64_t* shape, int* ndim);

/* Index of the named input, or -1. */
int kiln_model_input_index(const kiln_model* model, const char* name);

/* Copy `nbytes` of dense, row-major data into input `index`; nbytes must match exactly. */
int kiln_model_set_input(kiln_model* model, int index, const void* data, size_t nbytes);
int kiln_model_run(kiln_model* model);
/* Copy output `index` of the last run into `data` (capacity `nbytes`). */
int kiln_model_get_output(kiln_model* model, int index, void* data, size_t nbytes);
/* Bytes needed for output `index` of the last run. */
size_t kiln_model_output_nbytes(const kiln_model* model, int index);

const char* kiln_last_error(void);
int kiln_runtime_abi_version(void);

#ifdef __cplusplus
}
#endif
#endif /* KILN_RUNTIME_H_ */
