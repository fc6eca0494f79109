// compass_cuda.h: the few CUDA driver API and cuBLAS types compass uses,
// declared here so that building needs no CUDA headers, and the shim that
// calls the libraries through pointers resolved with dlopen/dlsym at run
// time (compass_cuda.c).
//
// Every driver call that needs a context takes it and makes it current
// first: a goroutine may run each cgo call on a different OS thread, and
// the current context is per thread.
#ifndef COMPASS_CUDA_H
#define COMPASS_CUDA_H

#include <stddef.h>

typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef unsigned long long CUdeviceptr;

typedef int cublasStatus_t;
typedef struct cublasContext *cublasHandle_t;

// Load results: 0, or one of these (the error text says which library or
// symbol).
#define CC_LOAD_OK 0
#define CC_LOAD_NO_LIBRARY 1
#define CC_LOAD_NO_SYMBOL 2

// The driver API.
int cc_cuda_load(const char *path, char *err, int errlen);
const char *cc_error_name(CUresult r);
const char *cc_error_string(CUresult r);
CUresult cc_init(void);
CUresult cc_driver_version(int *v);
CUresult cc_device_count(int *n);
CUresult cc_device_get(CUdevice *d, int ordinal);
CUresult cc_device_name(char *name, int len, CUdevice d);
CUresult cc_device_attribute(int *v, int attr, CUdevice d);
CUresult cc_device_total_mem(size_t *bytes, CUdevice d);
CUresult cc_primary_ctx_retain(CUcontext *ctx, CUdevice d);
CUresult cc_primary_ctx_release(CUdevice d);
CUresult cc_ctx_synchronize(CUcontext ctx);
CUresult cc_mem_get_info(CUcontext ctx, size_t *free_bytes, size_t *total_bytes);
CUresult cc_mem_alloc(CUcontext ctx, CUdeviceptr *p, size_t bytes);
CUresult cc_mem_free(CUcontext ctx, CUdeviceptr p);
CUresult cc_mem_host_alloc(CUcontext ctx, void **p, size_t bytes);
CUresult cc_mem_free_host(CUcontext ctx, void *p);
CUresult cc_memcpy_htod(CUcontext ctx, CUdeviceptr dst, const void *src, size_t bytes, CUstream s);
CUresult cc_memcpy_dtoh(CUcontext ctx, void *dst, CUdeviceptr src, size_t bytes, CUstream s);
CUresult cc_memcpy_dtod(CUcontext ctx, CUdeviceptr dst, CUdeviceptr src, size_t bytes, CUstream s);
CUresult cc_memset_d8(CUcontext ctx, CUdeviceptr p, unsigned char v, size_t n, CUstream s);
CUresult cc_memset_d32(CUcontext ctx, CUdeviceptr p, unsigned int v, size_t n, CUstream s);
CUresult cc_module_load(CUcontext ctx, CUmodule *m, const void *image, char *log, int loglen);
CUresult cc_module_unload(CUcontext ctx, CUmodule m);
CUresult cc_module_function(CUcontext ctx, CUfunction *f, CUmodule m, const char *name);
CUresult cc_func_set_max_dynamic_shared(CUcontext ctx, CUfunction f, int bytes);
CUresult cc_launch(CUcontext ctx, CUfunction f, unsigned int gx, unsigned int gy, unsigned int gz, unsigned int bx,
                   unsigned int by, unsigned int bz, unsigned int shared, CUstream s, const unsigned char *args,
                   const int *offsets, int nargs, int argbytes);
CUresult cc_stream_create(CUcontext ctx, CUstream *s);
CUresult cc_stream_destroy(CUcontext ctx, CUstream s);
CUresult cc_stream_synchronize(CUcontext ctx, CUstream s);
CUresult cc_event_create(CUcontext ctx, CUevent *e);
CUresult cc_event_destroy(CUcontext ctx, CUevent e);
CUresult cc_event_record(CUcontext ctx, CUevent e, CUstream s);
CUresult cc_event_synchronize(CUcontext ctx, CUevent e);
CUresult cc_event_elapsed(CUcontext ctx, float *ms, CUevent start, CUevent end);

// cuBLAS (and cuBLASLt, which cuBLAS links against).
int cc_cublas_load(const char *lt_path, const char *path, char *err, int errlen);
const char *cc_cublas_status_name(cublasStatus_t s);
cublasStatus_t cc_cublas_version(int *v);
size_t cc_cublaslt_version(void);
cublasStatus_t cc_cublas_create(CUcontext ctx, cublasHandle_t *h);
cublasStatus_t cc_cublas_destroy(CUcontext ctx, cublasHandle_t h);
cublasStatus_t cc_cublas_set_stream(CUcontext ctx, cublasHandle_t h, CUstream s);
cublasStatus_t cc_cublas_set_workspace(CUcontext ctx, cublasHandle_t h, CUdeviceptr ws, size_t bytes);
cublasStatus_t cc_cublas_gemm(CUcontext ctx, cublasHandle_t h, int transa, int transb, int m, int n, int k,
                              float alpha, CUdeviceptr a, int atype, int lda, CUdeviceptr b, int btype, int ldb,
                              float beta, CUdeviceptr c, int ctype, int ldc);

#endif
