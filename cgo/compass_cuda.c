// compass_cuda.c: calls into libcuda.so.1, libcublas and libcublasLt
// through function pointers resolved at run time (see compass_cuda.h).
#include "compass_cuda.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

// The CUDA driver API's constants compass needs (cuda.h's values).
#define CU_JIT_INFO_LOG_BUFFER 3
#define CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES 4
#define CU_JIT_ERROR_LOG_BUFFER 5
#define CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES 6
#define CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES 8
#define CU_STREAM_NON_BLOCKING 1
#define CU_EVENT_DEFAULT 0
#define CUBLAS_COMPUTE_32F 68
#define CUBLAS_GEMM_DEFAULT (-1)

static CUresult (*p_cuGetErrorName)(CUresult, const char **);
static CUresult (*p_cuGetErrorString)(CUresult, const char **);
static CUresult (*p_cuInit)(unsigned int);
static CUresult (*p_cuDriverGetVersion)(int *);
static CUresult (*p_cuDeviceGetCount)(int *);
static CUresult (*p_cuDeviceGet)(CUdevice *, int);
static CUresult (*p_cuDeviceGetName)(char *, int, CUdevice);
static CUresult (*p_cuDeviceGetAttribute)(int *, int, CUdevice);
static CUresult (*p_cuDeviceTotalMem)(size_t *, CUdevice);
static CUresult (*p_cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
static CUresult (*p_cuDevicePrimaryCtxRelease)(CUdevice);
static CUresult (*p_cuCtxSetCurrent)(CUcontext);
static CUresult (*p_cuCtxSynchronize)(void);
static CUresult (*p_cuMemGetInfo)(size_t *, size_t *);
static CUresult (*p_cuMemAlloc)(CUdeviceptr *, size_t);
static CUresult (*p_cuMemFree)(CUdeviceptr);
static CUresult (*p_cuMemHostAlloc)(void **, size_t, unsigned int);
static CUresult (*p_cuMemFreeHost)(void *);
static CUresult (*p_cuMemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
static CUresult (*p_cuMemcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream);
static CUresult (*p_cuMemcpyDtoDAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
static CUresult (*p_cuMemsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
static CUresult (*p_cuMemsetD32Async)(CUdeviceptr, unsigned int, size_t, CUstream);
static CUresult (*p_cuModuleLoadDataEx)(CUmodule *, const void *, unsigned int, int *, void **);
static CUresult (*p_cuModuleUnload)(CUmodule);
static CUresult (*p_cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
static CUresult (*p_cuFuncSetAttribute)(CUfunction, int, int);
static CUresult (*p_cuLaunchKernel)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int, unsigned int,
                                    unsigned int, unsigned int, CUstream, void **, void **);
static CUresult (*p_cuStreamCreate)(CUstream *, unsigned int);
static CUresult (*p_cuStreamDestroy)(CUstream);
static CUresult (*p_cuStreamSynchronize)(CUstream);
static CUresult (*p_cuEventCreate)(CUevent *, unsigned int);
static CUresult (*p_cuEventDestroy)(CUevent);
static CUresult (*p_cuEventRecord)(CUevent, CUstream);
static CUresult (*p_cuEventSynchronize)(CUevent);
static CUresult (*p_cuEventElapsedTime)(float *, CUevent, CUevent);

// resolve looks up the first of names that lib exports (the versioned
// entry point first, where the driver API versions one).
static int resolve(void *lib, void **fn, const char *const *names, char *err, int errlen) {
  for (int i = 0; names[i] != NULL; i++) {
    *fn = dlsym(lib, names[i]);
    if (*fn != NULL) return 1;
  }
  snprintf(err, errlen, "symbol %s not found", names[0]);
  return 0;
}

#define RESOLVE(lib, fn, ...)                                       \
  do {                                                              \
    static const char *const names_[] = {__VA_ARGS__, NULL};        \
    if (!resolve(lib, (void **)&(fn), names_, err, errlen)) {       \
      return CC_LOAD_NO_SYMBOL;                                     \
    }                                                               \
  } while (0)

int cc_cuda_load(const char *path, char *err, int errlen) {
  // RTLD_LOCAL: nothing else in the process should bind to these symbols.
  void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    const char *e = dlerror();
    snprintf(err, errlen, "%s", e != NULL ? e : "dlopen failed");
    return CC_LOAD_NO_LIBRARY;
  }
  RESOLVE(lib, p_cuGetErrorName, "cuGetErrorName");
  RESOLVE(lib, p_cuGetErrorString, "cuGetErrorString");
  RESOLVE(lib, p_cuInit, "cuInit");
  RESOLVE(lib, p_cuDriverGetVersion, "cuDriverGetVersion");
  RESOLVE(lib, p_cuDeviceGetCount, "cuDeviceGetCount");
  RESOLVE(lib, p_cuDeviceGet, "cuDeviceGet");
  RESOLVE(lib, p_cuDeviceGetName, "cuDeviceGetName");
  RESOLVE(lib, p_cuDeviceGetAttribute, "cuDeviceGetAttribute");
  RESOLVE(lib, p_cuDeviceTotalMem, "cuDeviceTotalMem_v2");
  RESOLVE(lib, p_cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
  RESOLVE(lib, p_cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease");
  RESOLVE(lib, p_cuCtxSetCurrent, "cuCtxSetCurrent");
  RESOLVE(lib, p_cuCtxSynchronize, "cuCtxSynchronize");
  RESOLVE(lib, p_cuMemGetInfo, "cuMemGetInfo_v2");
  RESOLVE(lib, p_cuMemAlloc, "cuMemAlloc_v2");
  RESOLVE(lib, p_cuMemFree, "cuMemFree_v2");
  RESOLVE(lib, p_cuMemHostAlloc, "cuMemHostAlloc");
  RESOLVE(lib, p_cuMemFreeHost, "cuMemFreeHost");
  RESOLVE(lib, p_cuMemcpyHtoDAsync, "cuMemcpyHtoDAsync_v2");
  RESOLVE(lib, p_cuMemcpyDtoHAsync, "cuMemcpyDtoHAsync_v2");
  RESOLVE(lib, p_cuMemcpyDtoDAsync, "cuMemcpyDtoDAsync_v2");
  RESOLVE(lib, p_cuMemsetD8Async, "cuMemsetD8Async");
  RESOLVE(lib, p_cuMemsetD32Async, "cuMemsetD32Async");
  RESOLVE(lib, p_cuModuleLoadDataEx, "cuModuleLoadDataEx");
  RESOLVE(lib, p_cuModuleUnload, "cuModuleUnload");
  RESOLVE(lib, p_cuModuleGetFunction, "cuModuleGetFunction");
  RESOLVE(lib, p_cuFuncSetAttribute, "cuFuncSetAttribute");
  RESOLVE(lib, p_cuLaunchKernel, "cuLaunchKernel");
  RESOLVE(lib, p_cuStreamCreate, "cuStreamCreate");
  RESOLVE(lib, p_cuStreamDestroy, "cuStreamDestroy_v2");
  RESOLVE(lib, p_cuStreamSynchronize, "cuStreamSynchronize");
  RESOLVE(lib, p_cuEventCreate, "cuEventCreate");
  RESOLVE(lib, p_cuEventDestroy, "cuEventDestroy_v2");
  RESOLVE(lib, p_cuEventRecord, "cuEventRecord");
  RESOLVE(lib, p_cuEventSynchronize, "cuEventSynchronize");
  // cuda.h of CUDA 13 maps cuEventElapsedTime to the _v2 entry point;
  // older drivers have only the first.
  RESOLVE(lib, p_cuEventElapsedTime, "cuEventElapsedTime_v2", "cuEventElapsedTime");
  return CC_LOAD_OK;
}

const char *cc_error_name(CUresult r) {
  const char *s = NULL;
  if (p_cuGetErrorName == NULL || p_cuGetErrorName(r, &s) != 0) return NULL;
  return s;
}

const char *cc_error_string(CUresult r) {
  const char *s = NULL;
  if (p_cuGetErrorString == NULL || p_cuGetErrorString(r, &s) != 0) return NULL;
  return s;
}

CUresult cc_init(void) { return p_cuInit(0); }
CUresult cc_driver_version(int *v) { return p_cuDriverGetVersion(v); }
CUresult cc_device_count(int *n) { return p_cuDeviceGetCount(n); }
CUresult cc_device_get(CUdevice *d, int ordinal) { return p_cuDeviceGet(d, ordinal); }
CUresult cc_device_name(char *name, int len, CUdevice d) { return p_cuDeviceGetName(name, len, d); }
CUresult cc_device_attribute(int *v, int attr, CUdevice d) { return p_cuDeviceGetAttribute(v, attr, d); }
CUresult cc_device_total_mem(size_t *bytes, CUdevice d) { return p_cuDeviceTotalMem(bytes, d); }
CUresult cc_primary_ctx_retain(CUcontext *ctx, CUdevice d) { return p_cuDevicePrimaryCtxRetain(ctx, d); }
CUresult cc_primary_ctx_release(CUdevice d) { return p_cuDevicePrimaryCtxRelease(d); }

// WITH_CTX makes ctx current on this thread, then returns the call's result.
#define WITH_CTX(ctx, call)                     \
  do {                                          \
    CUresult r_ = p_cuCtxSetCurrent(ctx);       \
    if (r_ != 0) return r_;                     \
    return (call);                              \
  } while (0)

CUresult cc_ctx_synchronize(CUcontext ctx) { WITH_CTX(ctx, p_cuCtxSynchronize()); }
CUresult cc_mem_get_info(CUcontext ctx, size_t *free_bytes, size_t *total_bytes) {
  WITH_CTX(ctx, p_cuMemGetInfo(free_bytes, total_bytes));
}
CUresult cc_mem_alloc(CUcontext ctx, CUdeviceptr *p, size_t bytes) { WITH_CTX(ctx, p_cuMemAlloc(p, bytes)); }
CUresult cc_mem_free(CUcontext ctx, CUdeviceptr p) { WITH_CTX(ctx, p_cuMemFree(p)); }
CUresult cc_mem_host_alloc(CUcontext ctx, void **p, size_t bytes) { WITH_CTX(ctx, p_cuMemHostAlloc(p, bytes, 0)); }
CUresult cc_mem_free_host(CUcontext ctx, void *p) { WITH_CTX(ctx, p_cuMemFreeHost(p)); }
CUresult cc_memcpy_htod(CUcontext ctx, CUdeviceptr dst, const void *src, size_t bytes, CUstream s) {
  WITH_CTX(ctx, p_cuMemcpyHtoDAsync(dst, src, bytes, s));
}
CUresult cc_memcpy_dtoh(CUcontext ctx, void *dst, CUdeviceptr src, size_t bytes, CUstream s) {
  WITH_CTX(ctx, p_cuMemcpyDtoHAsync(dst, src, bytes, s));
}
CUresult cc_memcpy_dtod(CUcontext ctx, CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s) {
  WITH_CTX(ctx, p_cuMemcpyDtoDAsync(dst, src, bytes, s));
}
CUresult cc_memset_d8(CUcontext ctx, CUdeviceptr p, unsigned char v, size_t n, CUstream s) {
  WITH_CTX(ctx, p_cuMemsetD8Async(p, v, n, s));
}
CUresult cc_memset_d32(CUcontext ctx, CUdeviceptr p, unsigned int v, size_t n, CUstream s) {
  WITH_CTX(ctx, p_cuMemsetD32Async(p, v, n, s));
}

// cc_module_load JIT-compiles PTX (or loads a cubin) into ctx, writing the
// JIT's error log into log when it fails.
CUresult cc_module_load(CUcontext ctx, CUmodule *m, const void *image, char *log, int loglen) {
  int opts[2] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void *vals[2] = {log, (void *)(size_t)loglen};
  if (loglen > 0) log[0] = 0;
  WITH_CTX(ctx, p_cuModuleLoadDataEx(m, image, 2, opts, vals));
}
CUresult cc_module_unload(CUcontext ctx, CUmodule m) { WITH_CTX(ctx, p_cuModuleUnload(m)); }
CUresult cc_module_function(CUcontext ctx, CUfunction *f, CUmodule m, const char *name) {
  WITH_CTX(ctx, p_cuModuleGetFunction(f, m, name));
}
CUresult cc_func_set_max_dynamic_shared(CUcontext ctx, CUfunction f, int bytes) {
  WITH_CTX(ctx, p_cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes));
}

// The most kernel arguments, and bytes of them, one launch may pass.
#define CC_MAX_ARGS 64
#define CC_MAX_ARG_BYTES 1024

// cc_launch copies the packed argument values into C memory (args holds
// nargs values at offsets, argbytes in all) and launches f on stream s.
// cuLaunchKernel reads the values during the call; nothing is kept.
//
// The pointer array ends with NULL and then the end of the packed values.
// The driver reads only as many pointers as the kernel has parameters; the
// emulated device (kernels/emu/device.cpp) reads these two to check the
// count and size of every argument against the PTX's .param list.
CUresult cc_launch(CUcontext ctx, CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                   unsigned int by, unsigned int bz, unsigned int shared, CUstream s, const unsigned char *args,
                   const int *offsets, int nargs, int argbytes) {
  _Alignas(16) unsigned char buf[CC_MAX_ARG_BYTES];
  void *params[CC_MAX_ARGS + 2];
  if (nargs > CC_MAX_ARGS || argbytes > CC_MAX_ARG_BYTES || nargs < 0 || argbytes < 0) {
    return 1;  // CUDA_ERROR_INVALID_VALUE
  }
  memcpy(buf, args, (size_t)argbytes);
  for (int i = 0; i < nargs; i++) params[i] = buf + offsets[i];
  params[nargs] = NULL;
  params[nargs + 1] = buf + argbytes;
  WITH_CTX(ctx, p_cuLaunchKernel(f, gx, gy, gz, bx, by, bz, shared, s, params, NULL));
}

CUresult cc_stream_create(CUcontext ctx, CUstream *s) { WITH_CTX(ctx, p_cuStreamCreate(s, CU_STREAM_NON_BLOCKING)); }
CUresult cc_stream_destroy(CUcontext ctx, CUstream s) { WITH_CTX(ctx, p_cuStreamDestroy(s)); }
CUresult cc_stream_synchronize(CUcontext ctx, CUstream s) { WITH_CTX(ctx, p_cuStreamSynchronize(s)); }
CUresult cc_event_create(CUcontext ctx, CUevent *e) { WITH_CTX(ctx, p_cuEventCreate(e, CU_EVENT_DEFAULT)); }
CUresult cc_event_destroy(CUcontext ctx, CUevent e) { WITH_CTX(ctx, p_cuEventDestroy(e)); }
CUresult cc_event_record(CUcontext ctx, CUevent e, CUstream s) { WITH_CTX(ctx, p_cuEventRecord(e, s)); }
CUresult cc_event_synchronize(CUcontext ctx, CUevent e) { WITH_CTX(ctx, p_cuEventSynchronize(e)); }
CUresult cc_event_elapsed(CUcontext ctx, float *ms, CUevent start, CUevent end) {
  WITH_CTX(ctx, p_cuEventElapsedTime(ms, start, end));
}

// cuBLAS.

static cublasStatus_t (*p_cublasCreate)(cublasHandle_t *);
static cublasStatus_t (*p_cublasDestroy)(cublasHandle_t);
static cublasStatus_t (*p_cublasGetProperty)(int, int *);
static cublasStatus_t (*p_cublasSetStream)(cublasHandle_t, CUstream);
static cublasStatus_t (*p_cublasSetWorkspace)(cublasHandle_t, void *, size_t);
static const char *(*p_cublasGetStatusName)(cublasStatus_t);
static cublasStatus_t (*p_cublasGemmEx)(cublasHandle_t, int, int, int, int, int, const void *, const void *, int, int,
                                        const void *, int, int, const void *, void *, int, int, int, int);
static size_t (*p_cublasLtGetVersion)(void);

int cc_cublas_load(const char *lt_path, const char *path, char *err, int errlen) {
  // cuBLASLt first and global: libcublas names it as a dependency, and the
  // loader then finds it by its soname among the loaded libraries even when
  // the folder is not on the search path.
  void *lt = dlopen(lt_path, RTLD_NOW | RTLD_GLOBAL);
  if (lt == NULL) {
    const char *e = dlerror();
    snprintf(err, errlen, "%s", e != NULL ? e : "dlopen failed");
    return CC_LOAD_NO_LIBRARY;
  }
  void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    const char *e = dlerror();
    snprintf(err, errlen, "%s", e != NULL ? e : "dlopen failed");
    return CC_LOAD_NO_LIBRARY;
  }
  RESOLVE(lt, p_cublasLtGetVersion, "cublasLtGetVersion");
  RESOLVE(lib, p_cublasCreate, "cublasCreate_v2");
  RESOLVE(lib, p_cublasDestroy, "cublasDestroy_v2");
  RESOLVE(lib, p_cublasGetProperty, "cublasGetProperty");
  RESOLVE(lib, p_cublasSetStream, "cublasSetStream_v2");
  RESOLVE(lib, p_cublasSetWorkspace, "cublasSetWorkspace_v2");
  // Older cuBLAS 11 lacks the status names; Go then prints the number.
  p_cublasGetStatusName = (const char *(*)(cublasStatus_t))dlsym(lib, "cublasGetStatusName");
  RESOLVE(lib, p_cublasGemmEx, "cublasGemmEx");
  return CC_LOAD_OK;
}

const char *cc_cublas_status_name(cublasStatus_t s) {
  if (p_cublasGetStatusName == NULL) return NULL;
  return p_cublasGetStatusName(s);
}

// cc_cublas_version is major*10000 + minor*100 + patch, as cublasGetVersion
// reports it (libraryPropertyType: MAJOR_VERSION 0, MINOR 1, PATCH_LEVEL 2).
cublasStatus_t cc_cublas_version(int *v) {
  int major = 0, minor = 0, patch = 0;
  cublasStatus_t s = p_cublasGetProperty(0, &major);
  if (s == 0) s = p_cublasGetProperty(1, &minor);
  if (s == 0) s = p_cublasGetProperty(2, &patch);
  *v = major * 10000 + minor * 100 + patch;
  return s;
}
size_t cc_cublaslt_version(void) { return p_cublasLtGetVersion(); }

// The cuBLAS calls run on the context current on the calling thread, so
// each makes ctx current first; a failure to do so reads as
// CUBLAS_STATUS_NOT_INITIALIZED.
#define CUBLAS_WITH_CTX(ctx, call)               \
  do {                                           \
    if (p_cuCtxSetCurrent(ctx) != 0) return 1;   \
    return (call);                               \
  } while (0)

cublasStatus_t cc_cublas_create(CUcontext ctx, cublasHandle_t *h) { CUBLAS_WITH_CTX(ctx, p_cublasCreate(h)); }
cublasStatus_t cc_cublas_destroy(CUcontext ctx, cublasHandle_t h) { CUBLAS_WITH_CTX(ctx, p_cublasDestroy(h)); }
cublasStatus_t cc_cublas_set_stream(CUcontext ctx, cublasHandle_t h, CUstream s) {
  CUBLAS_WITH_CTX(ctx, p_cublasSetStream(h, s));
}
cublasStatus_t cc_cublas_set_workspace(CUcontext ctx, cublasHandle_t h, CUdeviceptr ws, size_t bytes) {
  CUBLAS_WITH_CTX(ctx, p_cublasSetWorkspace(h, (void *)(size_t)ws, bytes));
}

// cc_cublas_gemm is cublasGemmEx in column-major terms with float32
// accumulation (CUBLAS_COMPUTE_32F: no TF32) and host scalars.
cublasStatus_t cc_cublas_gemm(CUcontext ctx, cublasHandle_t h, int transa, int transb, int m, int n, int k,
                              float alpha, CUdeviceptr a, int atype, int lda, CUdeviceptr b, int btype, int ldb,
                              float beta, CUdeviceptr c, int ctype, int ldc) {
  CUBLAS_WITH_CTX(ctx, p_cublasGemmEx(h, transa, transb, m, n, k, &alpha, (const void *)(size_t)a, atype, lda,
                                      (const void *)(size_t)b, btype, ldb, &beta, (void *)(size_t)c, ctype, ldc,
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}
