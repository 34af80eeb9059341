/* paddle_te C API: shared types (status codes, tensor descriptor, devices, dtypes).
 *
 * The C API is the boundary between frameworks (Paddle ops, the pybind11 module) and the
 * kernels. It is plain C so any front end can call it; no framework type crosses it.
 * Every function returns a pte_status_t; on failure pte_last_error() holds a message that
 * names the offending argument, its value and what is allowed. The message is thread-local,
 * so concurrent callers (Paddle runs kernels without the GIL) never see each other's text.
 */
#ifndef PADDLE_TE_COMMON_H_
#define PADDLE_TE_COMMON_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define PTE_API __declspec(dllexport)
#else
#define PTE_API __attribute__((visibility("default")))
#endif

typedef enum {
  PTE_SUCCESS = 0,
  PTE_ERROR_INVALID_ARGUMENT = 1, /* bad shape, dtype, value: the caller's fault */
  PTE_ERROR_NOT_SUPPORTED = 2,    /* valid call, but the chosen backend cannot run it */
  PTE_ERROR_CUDA = 3,             /* a CUDA or cuDNN runtime call failed */
  PTE_ERROR_INTERNAL = 4          /* a bug in paddle_te */
} pte_status_t;

/* Text of the last error raised on the calling thread ("" if none). */
PTE_API const char* pte_last_error(void);

typedef enum {
  PTE_FLOAT32 = 0,
  PTE_FLOAT64 = 1,
  PTE_FLOAT16 = 2,
  PTE_BFLOAT16 = 3,
  PTE_INT32 = 4,
  PTE_INT64 = 5,
  PTE_BOOL = 6 /* one byte per element, 0 or 1 */
} pte_dtype_t;

typedef enum { PTE_DEVICE_CPU = 0, PTE_DEVICE_CUDA = 1 } pte_device_t;

#define PTE_MAX_DIMS 8

/* A view of an array owned by the caller. Strides are in elements (not bytes).
 * An absent optional tensor has data == NULL and ndim == 0. */
typedef struct {
  void* data;
  pte_dtype_t dtype;
  int32_t ndim;
  int64_t shape[PTE_MAX_DIMS];
  int64_t strides[PTE_MAX_DIMS];
  pte_device_t device;
  int32_t device_id;
} pte_tensor_t;

/* Name of a dtype ("float32", ...), for messages. */
PTE_API const char* pte_dtype_name(pte_dtype_t dtype);

/* Version string of the core library, e.g. "0.1.0". */
PTE_API const char* pte_version(void);

#ifdef __cplusplus
}
#endif

#endif /* PADDLE_TE_COMMON_H_ */
