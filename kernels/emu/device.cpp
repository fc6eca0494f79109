// device.cpp: an emulated CUDA device. Built as a shared library (`make emu`:
//
//	g++ -O2 -fopenmp -std=c++17 -ffp-contract=off -fPIC -shared -o bin/libcompass_emu.so kernels/emu/device.cpp
//
// ) it exports the subset of the CUDA driver API and of cuBLAS/cuBLASLt that
// cgo/ calls, so that the unchanged GPU backend loads it through its dlopen
// path when COMPASS_CUDA_EMULATOR names it, and runs on a machine without a
// GPU:
//
//   - One device with an H100-like profile (compute capability 9.0, 132 SMs,
//     227 KiB of opt-in shared memory per block); memory is host memory.
//   - cuModuleLoadData reads the real embedded PTX: its entry points, each
//     one's .param list, .maxntid and static .shared declarations. Every entry
//     must be a kernel compiled here from the same .cu sources (under
//     cuda_emu.h), with parameters of the same sizes.
//   - cuLaunchKernel checks the launch as the hardware does (block and grid
//     limits, the kernel's __launch_bounds__, static + dynamic shared memory
//     against 48 KiB or the size cuFuncSetAttribute allowed, the device's
//     opt-in maximum), and the arguments against the .param list (see
//     check_params), and returns the driver's error code, with the reason on
//     stderr. Then the kernel runs under the emulator: a kernel whose PTX
//     has no barrier, shuffle, vote, mma or shared memory runs its threads
//     one after another (launch_independent, any order being a valid
//     schedule), the others one OpenMP thread per CUDA thread (launch).
//   - Work is asynchronous as on a GPU: launches, copies, memsets and GEMMs
//     queue up and run at the next synchronisation (stream, event, context,
//     cuMemFree), so a host that reads a result before waiting for it reads
//     what was there before. CUDA_LAUNCH_BLOCKING=1 runs each at once.
//   - Every allocation (device or pinned host) sits between pages that fault
//     on any access, its end right at the upper one; fresh memory is filled
//     with 0xff bytes (NaN as floats, -1 as integers); freed memory faults
//     on any access. A fault names the kernel, the allocation and the offset,
//     and ends the process (a GPU's context would be lost too).
//   - cuBLAS: cublasGemmEx in its documented column-major semantics with
//     plain loops, checking arguments as cuBLAS does.
//   - With COMPASS_EMU_LAUNCH_LOG naming a file, each kernel's name is
//     appended to it at its first launch: the GPU tests check that they
//     ran every kernel of kernels.Table.

// The system headers first: cuda_emu.h defines names (__noinline__) they use.
#include <signal.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../common.cuh"

#include "../adamw.cu"
#include "../attention.cu"
#include "../attention_kv.cu"
#include "../attention_tc.cu"
#include "../cross_entropy.cu"
#include "../dropout.cu"
#include "../elementwise.cu"
#include "../embedding.cu"
#include "../kmeans.cu"
#include "../layernorm.cu"
#include "../lora.cu"
#include "../rmsnorm.cu"
#include "../rope.cu"
#include "../swiglu.cu"


namespace {

// CUresult values (cuda.h).
enum : int {
  CUDA_SUCCESS = 0,
  CUDA_ERROR_INVALID_VALUE = 1,
  CUDA_ERROR_OUT_OF_MEMORY = 2,
  CUDA_ERROR_NOT_INITIALIZED = 3,
  CUDA_ERROR_NO_DEVICE = 100,
  CUDA_ERROR_INVALID_DEVICE = 101,
  CUDA_ERROR_INVALID_IMAGE = 200,
  CUDA_ERROR_INVALID_CONTEXT = 201,
  CUDA_ERROR_INVALID_PTX = 218,
  CUDA_ERROR_INVALID_HANDLE = 400,
  CUDA_ERROR_NOT_FOUND = 500,
  CUDA_ERROR_NOT_READY = 600,
  CUDA_ERROR_ILLEGAL_ADDRESS = 700,
  CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES = 701,
};

struct ErrorText {
  int code;
  const char* name;
  const char* text;
};
const ErrorText kErrors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_INVALID_PTX, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
};

// The device's profile: an H100 SXM's limits.
constexpr int kComputeMajor = 9, kComputeMinor = 0;
constexpr int kSMs = 132;
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kMaxBlockX = 1024, kMaxBlockY = 1024, kMaxBlockZ = 64;
constexpr long long kMaxGridX = 2147483647LL;
constexpr int kMaxGridYZ = 65535;
constexpr int kSharedDefault = 48 * 1024;   // static + dynamic, without opting in
constexpr int kSharedOptIn = 227 * 1024;    // CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
constexpr int kDriverVersion = 12040;       // CUDA 12.4
constexpr size_t kAlign = 256;              // cuMemAlloc's alignment

// Device memory reported: COMPASS_EMU_MEMORY_MB, else 16 GiB (what a CI
// machine's RAM can hold, not an H100's 80 GB).
size_t total_memory() {
  static size_t total = [] {
    const char* e = getenv("COMPASS_EMU_MEMORY_MB");
    long long mb = e != nullptr ? atoll(e) : 0;
    return (size_t)(mb > 0 ? mb : 16 * 1024) << 20;
  }();
  return total;
}

void note(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void note(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "cuda emulator: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
}

// One lock for the whole library: the Go side may call from any thread.
std::recursive_mutex mu;
bool initialised = false;
int sticky_error = CUDA_SUCCESS;  // a fault kills the context, as on a GPU
const char* running = "";         // what runs now, for fault reports
std::string last_launch = "(none)";

// ---- memory

size_t page_size() {
  static size_t p = (size_t)sysconf(_SC_PAGESIZE);
  return p;
}

struct Region {
  uintptr_t map = 0;  // the mapping: guard page, body, guard page
  size_t map_bytes = 0;
  uintptr_t ptr = 0;  // what the caller got
  size_t bytes = 0;   // what the caller asked for
  bool host = false;
  bool freed = false;
};

std::map<uintptr_t, Region> regions;  // live and recently freed, by ptr
std::deque<uintptr_t> quarantine;     // freed, oldest first
constexpr size_t kQuarantine = 4096;
size_t device_in_use = 0;

size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

// map_region maps bytes between two guard pages, the usable end (bytes
// rounded up to kAlign) right at the upper guard, filled with 0xff.
bool map_region(size_t bytes, bool host, uintptr_t* out) {
  size_t page = page_size(), usable = round_up(bytes, kAlign), body = round_up(usable, page);
  void* m = mmap(nullptr, body + 2 * page, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return false;
  uintptr_t map = (uintptr_t)m;
  if (mprotect((void*)(map + page), body, PROT_READ | PROT_WRITE) != 0) {
    munmap(m, body + 2 * page);
    return false;
  }
  Region r;
  r.map = map;
  r.map_bytes = body + 2 * page;
  r.ptr = map + page + body - usable;
  r.bytes = bytes;
  r.host = host;
  memset((void*)r.ptr, 0xff, usable);
  regions[r.ptr] = r;
  *out = r.ptr;
  return true;
}

// unmap_region makes a region fault on any access and keeps it so, until
// kQuarantine later frees have passed, so that a use after free faults.
void unmap_region(Region& r) {
  madvise((void*)r.map, r.map_bytes, MADV_DONTNEED);
  mprotect((void*)r.map, r.map_bytes, PROT_NONE);
  r.freed = true;
  quarantine.push_back(r.ptr);
  while (quarantine.size() > kQuarantine) {
    auto it = regions.find(quarantine.front());
    quarantine.pop_front();
    if (it != regions.end()) {
      munmap((void*)it->second.map, it->second.map_bytes);
      regions.erase(it);
    }
  }
}

// region_of finds the region whose mapping holds address a.
const Region* region_of(uintptr_t a) {
  // A hit in a lower guard page is less than two pages below ptr.
  auto it = regions.upper_bound(a + 2 * page_size());
  while (it != regions.begin()) {
    --it;
    const Region& r = it->second;
    if (a >= r.map && a < r.map + r.map_bytes) return &r;
    if (r.map + r.map_bytes + 64 * page_size() < a) break;
  }
  return nullptr;
}

// live_range reports whether [p, p+n) lies in one live allocation of the
// kind asked for (device or host).
bool live_range(uintptr_t p, size_t n, bool host) {
  const Region* r = region_of(p);
  return r != nullptr && !r->freed && r->host == host && p >= r->ptr && p + n <= r->ptr + round_up(r->bytes, kAlign);
}

// ---- faults

struct sigaction previous_segv;

void on_segv(int sig, siginfo_t* info, void* uctx) {
  uintptr_t a = (uintptr_t)info->si_addr;
  const char* access = "accessed";
#if defined(__x86_64__)
  access = (((ucontext_t*)uctx)->uc_mcontext.gregs[REG_ERR] & 2) ? "wrote" : "read";
#endif
  const emu::SharedBuffer& sm = emu::block.dynamic_smem;
  const Region* r = region_of(a);
  if (r != nullptr) {
    const char* kind = r->host ? "pinned host" : "device";
    if (r->freed) {
      fprintf(stderr, "cuda emulator: CUDA_ERROR_ILLEGAL_ADDRESS: %s %s byte %lld of a freed %s allocation of %zu bytes at 0x%lx\n",
              running, access, (long long)(a - r->ptr), kind, r->bytes, (unsigned long)r->ptr);
    } else if (a >= r->ptr) {
      fprintf(stderr, "cuda emulator: CUDA_ERROR_ILLEGAL_ADDRESS: %s %s byte %lld of a %s allocation of %zu bytes at 0x%lx (%lld past its end)\n",
              running, access, (long long)(a - r->ptr), kind, r->bytes, (unsigned long)r->ptr,
              (long long)(a - r->ptr - round_up(r->bytes, kAlign)));
    } else {
      fprintf(stderr, "cuda emulator: CUDA_ERROR_ILLEGAL_ADDRESS: %s %s %lld bytes before a %s allocation of %zu bytes at 0x%lx\n",
              running, access, (long long)(r->ptr - a), kind, r->bytes, (unsigned long)r->ptr);
    }
    _exit(3);
  }
  if (sm.map != nullptr && a >= (uintptr_t)sm.map && a < (uintptr_t)sm.map + sm.map_bytes) {
    fprintf(stderr, "cuda emulator: CUDA_ERROR_ILLEGAL_ADDRESS: %s %s byte %lld of its %zu bytes of dynamic shared memory\n",
            running, access, (long long)(a - (uintptr_t)sm.data), sm.bytes);
    _exit(3);
  }
  // Not ours: the fault belongs to whoever handled SIGSEGV before (Go).
  if (previous_segv.sa_flags & SA_SIGINFO) {
    previous_segv.sa_sigaction(sig, info, uctx);
  } else if (previous_segv.sa_handler != SIG_DFL && previous_segv.sa_handler != SIG_IGN) {
    previous_segv.sa_handler(sig);
  } else {
    signal(SIGSEGV, SIG_DFL);
  }
}

// FaultReport installs the handler while device work runs.
struct FaultReport {
  FaultReport() {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
  }
  ~FaultReport() { sigaction(SIGSEGV, &previous_segv, nullptr); }
};

// ---- asynchronous work: one queue in issue order (a valid schedule for
// any number of streams).

struct Stream {
  long long last = 0;  // sequence number of its last work
};
Stream legacy_stream;

struct Work {
  long long seq;
  std::function<void()> run;
};
std::deque<Work> pending;
long long issued = 0, completed = 0;

bool launch_blocking() {
  static bool b = [] {
    const char* e = getenv("CUDA_LAUNCH_BLOCKING");
    return e != nullptr && strcmp(e, "1") == 0;
  }();
  return b;
}

// run_until runs the queued work up to sequence number seq.
void run_until(long long seq) {
  if (pending.empty() || pending.front().seq > seq) return;
  FaultReport guard;
  while (!pending.empty() && pending.front().seq <= seq) {
    Work w = std::move(pending.front());
    pending.pop_front();
    if (sticky_error == CUDA_SUCCESS) w.run();
    completed = w.seq;
    running = "";
  }
}
void run_all() { run_until(issued); }

Stream* stream_of(void* s) { return s == nullptr ? &legacy_stream : static_cast<Stream*>(s); }

void enqueue(void* s, std::function<void()> f) {
  Work w{++issued, std::move(f)};
  stream_of(s)->last = w.seq;
  pending.push_back(std::move(w));
  if (launch_blocking()) run_all();
}

// ---- contexts

struct Context {
  int refs = 0;
};
Context primary;
thread_local Context* current = nullptr;

// ready checks what every call needing a context checks.
int ready() {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (sticky_error != CUDA_SUCCESS) return sticky_error;
  if (current == nullptr || primary.refs == 0) return CUDA_ERROR_INVALID_CONTEXT;
  return CUDA_SUCCESS;
}

// ---- modules

// A kernel the emulator can run: its C++ parameter sizes, and a function
// that unpacks kernelParams into them and runs the launch.
struct Emulated {
  const char* name;
  std::vector<size_t> sizes;
  void (*run)(const std::vector<unsigned char>& args, const std::vector<size_t>& offsets, dim3 grid, dim3 block,
              size_t shared);
  // run_independent runs it with launch_independent (see Function).
  void (*run_independent)(const std::vector<unsigned char>& args, const std::vector<size_t>& offsets, dim3 grid,
                          dim3 block, size_t shared);
};

template <class T>
T arg_at(const std::vector<unsigned char>& args, size_t off) {
  T v;
  memcpy(&v, args.data() + off, sizeof v);
  return v;
}

template <class... P, size_t... I>
void call(void (*k)(P...), const std::vector<unsigned char>& args, const std::vector<size_t>& offsets, dim3 grid,
          dim3 block, size_t shared, bool independent, std::index_sequence<I...>) {
  if (independent)
    launch_independent(k, grid, block, arg_at<P>(args, offsets[I])...);
  else
    launch(k, grid, block, shared, arg_at<P>(args, offsets[I])...);
}

template <class... P>
constexpr size_t arity(void (*)(P...)) {
  return sizeof...(P);
}
template <class... P>
std::vector<size_t> sizes_of(void (*)(P...)) {
  return {sizeof(P)...};
}

template <auto K, bool Independent>
void run_kernel(const std::vector<unsigned char>& args, const std::vector<size_t>& offsets, dim3 grid, dim3 block,
                size_t shared) {
  call(K, args, offsets, grid, block, shared, Independent, std::make_index_sequence<arity(K)>{});
}

#define KERNEL(k) \
  Emulated { #k, sizes_of(k), run_kernel<k, false>, run_kernel<k, true> }

const std::vector<Emulated>& emulated() {
  static const std::vector<Emulated> table = {
      KERNEL(adamw),
      KERNEL(kv_cache_write),
      KERNEL(attention_kv),
      KERNEL(attention_forward),
      KERNEL(attention_bidir_forward),
      KERNEL(attention_backward_delta),
      KERNEL(attention_backward_dq),
      KERNEL(attention_backward_dkdv),
      KERNEL(attention_tc_forward_d64),
      KERNEL(attention_tc_forward_d96),
      KERNEL(attention_tc_forward_d128),
      KERNEL(attention_tc_backward_dq_d64),
      KERNEL(attention_tc_backward_dq_d96),
      KERNEL(attention_tc_backward_dq_d128),
      KERNEL(attention_tc_backward_dkdv_d64),
      KERNEL(attention_tc_backward_dkdv_d96),
      KERNEL(attention_tc_backward_dkdv_d128),
      KERNEL(attention_tc_backward_dq_ds_d64),
      KERNEL(attention_tc_backward_dq_ds_d96),
      KERNEL(attention_tc_backward_dq_ds_d128),
      KERNEL(attention_dkdv_sum),
      KERNEL(ce_init),
      KERNEL(ce_chunk_update),
      KERNEL(ce_rescale),
      KERNEL(ce_finalize),
      KERNEL(dropout),
      KERNEL(elementwise_cast),
      KERNEL(elementwise_add),
      KERNEL(elementwise_mul),
      KERNEL(zero_tensors),
      KERNEL(elementwise_scale),
      KERNEL(gelu_forward),
      KERNEL(embedding_forward),
      KERNEL(embedding_backward),
      KERNEL(kmeans_sqnorm),
      KERNEL(kmeans_assign),
      KERNEL(kmeans_split),
      KERNEL(kmeans_assign_tc),
      KERNEL(kmeans_assign_tc_split),
      KERNEL(kmeans_chunk_counts),
      KERNEL(kmeans_chunk_offsets),
      KERNEL(kmeans_cluster_starts),
      KERNEL(kmeans_scatter),
      KERNEL(kmeans_segment_mean),
      KERNEL(layernorm_forward),
      KERNEL(lora_narrow),
      KERNEL(lora_narrow_bf16),
      KERNEL(lora_grad),
      KERNEL(lora_grad_bf16),
      KERNEL(lora_expand),
      KERNEL(rmsnorm_forward),
      KERNEL(rmsnorm_backward),
      KERNEL(rope),
      KERNEL(swiglu_forward),
      KERNEL(swiglu_backward),
  };
  return table;
}

struct Module;

// Function is one entry point as the PTX declares it.
struct Function {
  Module* module = nullptr;
  std::string name;
  std::vector<size_t> param_sizes, param_offsets;  // the .param list, laid out
  size_t param_bytes = 0;
  int max_threads = kMaxThreadsPerBlock;  // .maxntid, i.e. __launch_bounds__
  int static_shared = 0;                  // bytes of its .shared declarations
  int max_dynamic_shared = 0;             // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
  // independent: the PTX body has no barrier, shuffle, vote, mma or
  // shared memory, so its threads never meet and run one after another
  // (launch_independent) unless the launch asks for dynamic shared memory.
  bool independent = false;
  const Emulated* kernel = nullptr;
};

struct Module {
  std::map<std::string, Function> functions;
  bool loaded = true;
};
std::vector<Module*> modules;  // never freed: a stale handle is detected, not reused

bool valid_function(Function* f) {
  for (Module* m : modules) {
    if (!m->loaded) continue;
    for (auto& [name, fn] : m->functions) {
      if (&fn == f) return true;
    }
  }
  return false;
}

// param_size is the size of one .param declaration: ".param .u64 name",
// ".param .align 8 .b8 name[40]".
size_t param_size(const std::string& decl) {
  size_t lb = decl.find('['), rb = decl.find(']');
  if (lb != std::string::npos && rb != std::string::npos) return (size_t)atoll(decl.c_str() + lb + 1);
  for (const char* t : {".u64", ".s64", ".b64", ".f64"})
    if (decl.find(t) != std::string::npos) return 8;
  for (const char* t : {".u32", ".s32", ".b32", ".f32"})
    if (decl.find(t) != std::string::npos) return 4;
  for (const char* t : {".u16", ".s16", ".b16", ".f16"})
    if (decl.find(t) != std::string::npos) return 2;
  for (const char* t : {".u8", ".s8", ".b8"})
    if (decl.find(t) != std::string::npos) return 1;
  return 0;
}

// shared_decl_bytes reads "\t.shared .align 4 .b8 name[4224];".
int shared_decl_bytes(const std::string& line) {
  size_t s = line.find_first_not_of(" \t");
  if (s == std::string::npos || line.compare(s, 8, ".shared ") != 0) return -1;
  size_t lb = line.find('['), rb = line.find(']');
  if (lb == std::string::npos || rb == std::string::npos || rb == lb + 1) return -1;
  return atoi(line.c_str() + lb + 1);
}

// parse_ptx reads the entry points of a PTX module; a failure returns the
// reason.
std::string parse_ptx(const char* text, Module* m) {
  std::vector<std::string> lines;
  for (const char* p = text; *p;) {
    const char* e = strchr(p, '\n');
    if (e == nullptr) e = p + strlen(p);
    lines.emplace_back(p, e);
    p = *e ? e + 1 : e;
  }
  bool target_ok = false;
  for (const std::string& l : lines) {
    if (l.rfind(".target sm_", 0) == 0) {
      int sm = atoi(l.c_str() + 11);
      if (sm > kComputeMajor * 10 + kComputeMinor)
        return "ptxas fatal: PTX " + l.substr(8) + " is newer than the device (sm_90)";
      target_ok = true;
    }
  }
  if (!target_ok) return "ptxas fatal: no .target sm_XX directive";
  for (size_t i = 0; i < lines.size(); i++) {
    const std::string& l = lines[i];
    size_t at = l.find(".entry ");
    if (at == std::string::npos || l.find("//") == 0) continue;
    Function f;
    f.module = m;
    size_t ns = at + 7, ne = l.find_first_of("( \t", ns);
    f.name = l.substr(ns, ne - ns);
    // The .param list, one per line, to the closing parenthesis.
    size_t j = i + 1;
    if (l.find("()") == std::string::npos) {
      for (; j < lines.size() && lines[j].find(')') == std::string::npos; j++) {
        if (lines[j].find(".param") == std::string::npos) continue;
        size_t sz = param_size(lines[j]);
        if (sz == 0) return "ptxas: cannot read parameter \"" + lines[j] + "\" of " + f.name;
        size_t align = 1;
        size_t al = lines[j].find(".align ");
        if (al != std::string::npos) {
          align = (size_t)atoll(lines[j].c_str() + al + 7);
        } else {
          align = sz;
        }
        f.param_bytes = round_up(f.param_bytes, align);
        f.param_sizes.push_back(sz);
        f.param_offsets.push_back(f.param_bytes);
        f.param_bytes += sz;
      }
      j++;
    }
    // Directives (.maxntid) up to the body, then the body to its closing
    // brace at the start of a line.
    for (; j < lines.size() && lines[j].rfind("{", 0) != 0; j++) {
      size_t mx = lines[j].find(".maxntid ");
      if (mx != std::string::npos) {
        int x = 1, y = 1, z = 1;
        sscanf(lines[j].c_str() + mx + 9, "%d, %d, %d", &x, &y, &z);
        f.max_threads = x * y * z;
      }
    }
    f.independent = true;
    for (; j < lines.size() && lines[j].rfind("}", 0) != 0; j++) {
      const std::string& b = lines[j];
      int sh = shared_decl_bytes(b);
      if (sh > 0) f.static_shared += sh;
      for (const char* op : {"bar.", "barrier.", "shfl.", "vote.", "mma.", "ldmatrix", ".shared", "match.", "redux."}) {
        if (b.find(op) != std::string::npos && b.find("//") != 0) f.independent = false;
      }
    }
    f.max_dynamic_shared = kSharedDefault - f.static_shared;
    for (const Emulated& e : emulated()) {
      if (f.name == e.name) f.kernel = &e;
    }
    if (f.kernel == nullptr)
      return "entry " + f.name + " has no emulated kernel: add it to kernels/emu/device.cpp's table";
    if (f.kernel->sizes != f.param_sizes) {
      std::string a, b;
      for (size_t s : f.param_sizes) a += std::to_string(s) + " ";
      for (size_t s : f.kernel->sizes) b += std::to_string(s) + " ";
      return "entry " + f.name + ": the PTX's parameter sizes (" + a + ") differ from the source's (" + b +
             "): the PTX is out of date (make kernels)";
    }
    m->functions[f.name] = f;
    i = j;
  }
  if (m->functions.empty()) return "ptxas: no entry points";
  return "";
}

// check_params checks a launch's kernelParams against the .param list.
// cgo's cc_launch packs the values at natural alignment in one buffer and
// ends the pointer array with NULL and then the end of the packed values
// (the driver reads only as many pointers as the kernel has parameters), so
// the count and each size can be checked here, which a GPU cannot do.
std::string check_params(const Function& f, void** params) {
  size_t n = f.param_sizes.size();
  if (n == 0) return "";
  if (params == nullptr) return "kernelParams is NULL";
  size_t given = 0;
  while (given < 256 && params[given] != nullptr) given++;
  if (given != n)
    return "passes " + std::to_string(given) + " arguments, the PTX's .param list has " + std::to_string(n);
  uintptr_t base = (uintptr_t)params[0];
  for (size_t i = 0; i < n; i++) {
    if ((uintptr_t)params[i] - base != f.param_offsets[i])
      return "argument " + std::to_string(i) + " is at byte " + std::to_string((uintptr_t)params[i] - base) +
             " of the packed arguments, the .param list puts it at " + std::to_string(f.param_offsets[i]) +
             " (an argument before it has the wrong size)";
  }
  uintptr_t end = (uintptr_t)params[n + 1];
  if (end - base != f.param_offsets[n - 1] + f.param_sizes[n - 1])
    return "the arguments end at byte " + std::to_string(end - base) + ", the .param list at " +
           std::to_string(f.param_offsets[n - 1] + f.param_sizes[n - 1]) + " (the last argument has the wrong size)";
  return "";
}

// log_launch appends the name of each kernel the first time it is
// launched to the file COMPASS_EMU_LAUNCH_LOG names, when it names one:
// cgo's GPU tests read it to check that every kernel of kernels.Table ran
// on this device.
void log_launch(const std::string& name) {
  static std::set<std::string> seen;
  if (!seen.insert(name).second) return;
  const char* path = getenv("COMPASS_EMU_LAUNCH_LOG");
  if (path == nullptr || *path == 0) return;
  FILE* f = fopen(path, "a");
  if (f == nullptr) {
    note("cannot append to %s (COMPASS_EMU_LAUNCH_LOG)", path);
    return;
  }
  fprintf(f, "%s\n", name.c_str());
  fclose(f);
}

// ---- events

struct Event {
  long long seq = -1;  // the recording's work, or -1 when never recorded
  double ms = 0;       // when it completed
};

double now_ms() {
  using namespace std::chrono;
  return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

// ---- cuBLAS

struct Blas {
  void* stream = nullptr;
  bool valid = true;
};

enum : int {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_NOT_INITIALIZED = 1,
  CUBLAS_STATUS_INVALID_VALUE = 7,
  CUBLAS_STATUS_EXECUTION_FAILED = 13,
  CUBLAS_STATUS_NOT_SUPPORTED = 15,
};
enum : int { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 };
constexpr int CUBLAS_COMPUTE_32F = 68;

int dt_of(int cuda_type) {
  switch (cuda_type) {
    case CUDA_R_32F:
      return DT_F32;
    case CUDA_R_16F:
      return DT_F16;
    case CUDA_R_16BF:
      return DT_BF16;
  }
  return 0;
}

// gemm_reference is C = alpha op(A) op(B) + beta C in column-major terms,
// op(A) m x k, op(B) k x n; C is not read when beta is 0.
void gemm_reference(int transa, int transb, int m, int n, int k, float alpha, const void* A, int adt, long lda,
                    const void* B, int bdt, long ldb, float beta, void* C, int cdt, long ldc) {
#pragma omp parallel for schedule(static)
  for (int j = 0; j < n; j++) {
    for (int i = 0; i < m; i++) {
      float sum = 0.0f;
      for (int p = 0; p < k; p++) {
        float a = load_f32(A, adt, transa ? (size_t)i * lda + p : (size_t)p * lda + i);
        float b = load_f32(B, bdt, transb ? (size_t)p * ldb + j : (size_t)j * ldb + p);
        sum += a * b;
      }
      size_t c = (size_t)j * ldc + i;
      float v = alpha * sum;
      if (beta != 0.0f) v += beta * load_f32(C, cdt, c);
      store_f32(C, cdt, c, v);
    }
  }
}

// extent_ok checks that a rows x cols column-major operand with leading
// dimension ld at p lies in one live device allocation.
bool extent_ok(const void* p, int dt, long rows, long cols, long ld) {
  if (rows == 0 || cols == 0) return true;
  size_t es = dt == DT_F32 ? 4 : 2;
  size_t bytes = ((size_t)(cols - 1) * ld + rows) * es;
  return live_range((uintptr_t)p, bytes, false);
}

}  // namespace

// ---- the exported driver API

#define EXPORT extern "C" __attribute__((visibility("default")))
#define LOCK std::lock_guard<std::recursive_mutex> lock_(mu)
#define NEED_CONTEXT              \
  do {                            \
    int r_ = ready();             \
    if (r_ != CUDA_SUCCESS) return r_; \
  } while (0)

typedef unsigned long long CUdeviceptr;

EXPORT int cuGetErrorName(int r, const char** s) {
  for (const ErrorText& e : kErrors) {
    if (e.code == r) {
      *s = e.name;
      return CUDA_SUCCESS;
    }
  }
  *s = nullptr;
  return CUDA_ERROR_INVALID_VALUE;
}

EXPORT int cuGetErrorString(int r, const char** s) {
  for (const ErrorText& e : kErrors) {
    if (e.code == r) {
      *s = e.text;
      return CUDA_SUCCESS;
    }
  }
  *s = nullptr;
  return CUDA_ERROR_INVALID_VALUE;
}

EXPORT int cuInit(unsigned flags) {
  LOCK;
  if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
  initialised = true;
  return CUDA_SUCCESS;
}

EXPORT int cuDriverGetVersion(int* v) {
  if (v == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *v = kDriverVersion;
  return CUDA_SUCCESS;
}

EXPORT int cuDeviceGetCount(int* n) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (n == nullptr) return CUDA_ERROR_INVALID_VALUE;
  *n = 1;
  return CUDA_SUCCESS;
}

EXPORT int cuDeviceGet(int* d, int ordinal) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (d == nullptr) return CUDA_ERROR_INVALID_VALUE;
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *d = 0;
  return CUDA_SUCCESS;
}

EXPORT int cuDeviceGetName(char* name, int len, int d) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
  if (name == nullptr || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  snprintf(name, (size_t)len, "compass emulated device (H100 profile, CPU)");
  return CUDA_SUCCESS;
}

EXPORT int cuDeviceGetAttribute(int* v, int attr, int d) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
  if (v == nullptr) return CUDA_ERROR_INVALID_VALUE;
  switch (attr) {  // CUdevice_attribute
    case 1: *v = kMaxThreadsPerBlock; break;
    case 2: *v = kMaxBlockX; break;
    case 3: *v = kMaxBlockY; break;
    case 4: *v = kMaxBlockZ; break;
    case 5: *v = (int)kMaxGridX; break;
    case 6:
    case 7: *v = kMaxGridYZ; break;
    case 8: *v = kSharedDefault; break;
    case 10: *v = 32; break;  // warp size
    case 16: *v = kSMs; break;
    case 75: *v = kComputeMajor; break;
    case 76: *v = kComputeMinor; break;
    case 97: *v = kSharedOptIn; break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

EXPORT int cuDeviceTotalMem_v2(size_t* bytes, int d) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
  *bytes = total_memory();
  return CUDA_SUCCESS;
}

EXPORT int cuDevicePrimaryCtxRetain(void** ctx, int d) {
  LOCK;
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
  primary.refs++;
  *ctx = &primary;
  return CUDA_SUCCESS;
}

EXPORT int cuDevicePrimaryCtxRelease_v2(int d) {
  LOCK;
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (d != 0) return CUDA_ERROR_INVALID_DEVICE;
  if (primary.refs == 0) return CUDA_ERROR_INVALID_CONTEXT;
  if (--primary.refs == 0) {
    run_all();
    size_t n = 0, bytes = 0;
    for (auto& [p, r] : regions) {
      if (!r.freed) n++, bytes += r.bytes;
    }
    if (n > 0) note("the context was released with %zu allocations (%zu bytes) never freed", n, bytes);
  }
  return CUDA_SUCCESS;
}

EXPORT int cuCtxSetCurrent(void* ctx) {
  if (!initialised) return CUDA_ERROR_NOT_INITIALIZED;
  if (ctx != nullptr && ctx != &primary) return CUDA_ERROR_INVALID_CONTEXT;
  current = static_cast<Context*>(ctx);
  return CUDA_SUCCESS;
}

EXPORT int cuCtxSynchronize() {
  LOCK;
  NEED_CONTEXT;
  run_all();
  return sticky_error;
}

EXPORT int cuMemGetInfo_v2(size_t* free_bytes, size_t* total_bytes) {
  LOCK;
  NEED_CONTEXT;
  *total_bytes = total_memory();
  *free_bytes = total_memory() - device_in_use;
  return CUDA_SUCCESS;
}

EXPORT int cuMemAlloc_v2(CUdeviceptr* p, size_t bytes) {
  LOCK;
  NEED_CONTEXT;
  if (p == nullptr || bytes == 0) return CUDA_ERROR_INVALID_VALUE;
  size_t usable = round_up(bytes, kAlign);
  if (usable > total_memory() - device_in_use) return CUDA_ERROR_OUT_OF_MEMORY;
  uintptr_t ptr;
  if (!map_region(bytes, false, &ptr)) return CUDA_ERROR_OUT_OF_MEMORY;
  device_in_use += usable;
  *p = ptr;
  return CUDA_SUCCESS;
}

EXPORT int cuMemFree_v2(CUdeviceptr p) {
  LOCK;
  NEED_CONTEXT;
  run_all();  // freeing waits for the device, as cudaFree does
  auto it = regions.find((uintptr_t)p);
  if (it == regions.end() || it->second.freed || it->second.host) {
    note("cuMemFree of 0x%llx, which is not a live device allocation", p);
    return CUDA_ERROR_INVALID_VALUE;
  }
  device_in_use -= round_up(it->second.bytes, kAlign);
  unmap_region(it->second);
  return CUDA_SUCCESS;
}

EXPORT int cuMemHostAlloc(void** p, size_t bytes, unsigned flags) {
  LOCK;
  NEED_CONTEXT;
  if (p == nullptr || bytes == 0 || flags > 0xf) return CUDA_ERROR_INVALID_VALUE;
  uintptr_t ptr;
  if (!map_region(bytes, true, &ptr)) return CUDA_ERROR_OUT_OF_MEMORY;
  *p = (void*)ptr;
  return CUDA_SUCCESS;
}

EXPORT int cuMemFreeHost(void* p) {
  LOCK;
  NEED_CONTEXT;
  run_all();
  auto it = regions.find((uintptr_t)p);
  if (it == regions.end() || it->second.freed || !it->second.host) {
    note("cuMemFreeHost of %p, which is not a live pinned allocation", p);
    return CUDA_ERROR_INVALID_VALUE;
  }
  unmap_region(it->second);
  return CUDA_SUCCESS;
}

namespace {

// copy_range checks one side of a copy: device memory must be a live
// device allocation; host memory is either pinned (then checked) or
// pageable (anything else).
bool device_range_ok(const char* call, uintptr_t p, size_t n) {
  if (live_range(p, n, false)) return true;
  note("%s: [0x%lx, +%zu) is not inside one live device allocation", call, (unsigned long)p, n);
  return false;
}
bool host_range_ok(const char* call, uintptr_t p, size_t n) {
  const Region* r = region_of(p);
  if (r == nullptr || live_range(p, n, true)) return true;
  note("%s: host range [0x%lx, +%zu) is not inside one live pinned allocation", call, (unsigned long)p, n);
  return false;
}

}  // namespace

EXPORT int cuMemcpyHtoDAsync_v2(CUdeviceptr dst, const void* src, size_t n, void* s) {
  LOCK;
  NEED_CONTEXT;
  if (n == 0) return CUDA_SUCCESS;
  if (!device_range_ok("cuMemcpyHtoDAsync", dst, n) || !host_range_ok("cuMemcpyHtoDAsync", (uintptr_t)src, n))
    return CUDA_ERROR_INVALID_VALUE;
  if (region_of((uintptr_t)src) == nullptr) {  // pageable: staged at the call
    auto staged = std::make_shared<std::vector<unsigned char>>((const unsigned char*)src, (const unsigned char*)src + n);
    enqueue(s, [=] {
      running = "cuMemcpyHtoDAsync";
      memcpy((void*)dst, staged->data(), n);
    });
    return CUDA_SUCCESS;
  }
  enqueue(s, [=] {
    running = "cuMemcpyHtoDAsync";
    memcpy((void*)dst, src, n);
  });
  return CUDA_SUCCESS;
}

EXPORT int cuMemcpyDtoHAsync_v2(void* dst, CUdeviceptr src, size_t n, void* s) {
  LOCK;
  NEED_CONTEXT;
  if (n == 0) return CUDA_SUCCESS;
  if (!device_range_ok("cuMemcpyDtoHAsync", src, n) || !host_range_ok("cuMemcpyDtoHAsync", (uintptr_t)dst, n))
    return CUDA_ERROR_INVALID_VALUE;
  enqueue(s, [=] {
    running = "cuMemcpyDtoHAsync";
    memcpy(dst, (const void*)src, n);
  });
  if (region_of((uintptr_t)dst) == nullptr) run_all();  // pageable: the call returns when the copy is done
  return CUDA_SUCCESS;
}

EXPORT int cuMemcpyDtoDAsync_v2(CUdeviceptr dst, CUdeviceptr src, size_t n, void* s) {
  LOCK;
  NEED_CONTEXT;
  if (n == 0) return CUDA_SUCCESS;
  if (!device_range_ok("cuMemcpyDtoDAsync", dst, n) || !device_range_ok("cuMemcpyDtoDAsync", src, n))
    return CUDA_ERROR_INVALID_VALUE;
  enqueue(s, [=] {
    running = "cuMemcpyDtoDAsync";
    memmove((void*)dst, (const void*)src, n);
  });
  return CUDA_SUCCESS;
}

EXPORT int cuMemsetD8Async(CUdeviceptr p, unsigned char v, size_t n, void* s) {
  LOCK;
  NEED_CONTEXT;
  if (n == 0) return CUDA_SUCCESS;
  if (!device_range_ok("cuMemsetD8Async", p, n)) return CUDA_ERROR_INVALID_VALUE;
  enqueue(s, [=] {
    running = "cuMemsetD8Async";
    memset((void*)p, v, n);
  });
  return CUDA_SUCCESS;
}

EXPORT int cuMemsetD32Async(CUdeviceptr p, unsigned v, size_t n, void* s) {
  LOCK;
  NEED_CONTEXT;
  if (n == 0) return CUDA_SUCCESS;
  if (p % 4 != 0 || !device_range_ok("cuMemsetD32Async", p, n * 4)) return CUDA_ERROR_INVALID_VALUE;
  enqueue(s, [=] {
    running = "cuMemsetD32Async";
    uint32_t* w = (uint32_t*)p;
    for (size_t i = 0; i < n; i++) w[i] = v;
  });
  return CUDA_SUCCESS;
}

// CUjit_option values for the error log.
constexpr int CU_JIT_ERROR_LOG_BUFFER = 5, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;

EXPORT int cuModuleLoadDataEx(void** module, const void* image, unsigned nopts, int* opts, void** vals) {
  LOCK;
  NEED_CONTEXT;
  if (module == nullptr || image == nullptr) return CUDA_ERROR_INVALID_VALUE;
  char* log = nullptr;
  size_t loglen = 0;
  for (unsigned i = 0; i < nopts; i++) {
    if (opts[i] == CU_JIT_ERROR_LOG_BUFFER) log = (char*)vals[i];
    if (opts[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES) loglen = (size_t)vals[i];
  }
  const char* text = (const char*)image;
  if (strncmp(text, "//", 2) != 0 && strncmp(text, ".version", 8) != 0) return CUDA_ERROR_INVALID_IMAGE;
  Module* m = new Module;
  std::string err = parse_ptx(text, m);
  if (!err.empty()) {
    delete m;
    note("cuModuleLoadDataEx: %s", err.c_str());
    if (log != nullptr && loglen > 0) snprintf(log, loglen, "%s", err.c_str());
    return CUDA_ERROR_INVALID_PTX;
  }
  modules.push_back(m);
  *module = m;
  return CUDA_SUCCESS;
}

EXPORT int cuModuleUnload(void* module) {
  LOCK;
  NEED_CONTEXT;
  run_all();
  Module* m = static_cast<Module*>(module);
  for (Module* x : modules) {
    if (x == m && m->loaded) {
      m->loaded = false;
      return CUDA_SUCCESS;
    }
  }
  return CUDA_ERROR_INVALID_HANDLE;
}

EXPORT int cuModuleGetFunction(void** f, void* module, const char* name) {
  LOCK;
  NEED_CONTEXT;
  Module* m = static_cast<Module*>(module);
  bool ok = false;
  for (Module* x : modules) ok = ok || (x == m && m->loaded);
  if (!ok) return CUDA_ERROR_INVALID_HANDLE;
  auto it = m->functions.find(name);
  if (it == m->functions.end()) return CUDA_ERROR_NOT_FOUND;
  *f = &it->second;
  return CUDA_SUCCESS;
}

EXPORT int cuFuncSetAttribute(void* fn, int attr, int value) {
  LOCK;
  NEED_CONTEXT;
  Function* f = static_cast<Function*>(fn);
  if (!valid_function(f)) return CUDA_ERROR_INVALID_HANDLE;
  if (attr != 8) return CUDA_ERROR_INVALID_VALUE;  // only MAX_DYNAMIC_SHARED_SIZE_BYTES
  if (value < 0 || value > kSharedOptIn - f->static_shared) {
    note("cuFuncSetAttribute %s: %d bytes of dynamic shared memory, the device allows %d beside its %d static",
         f->name.c_str(), value, kSharedOptIn - f->static_shared, f->static_shared);
    return CUDA_ERROR_INVALID_VALUE;
  }
  f->max_dynamic_shared = value;
  return CUDA_SUCCESS;
}

EXPORT int cuLaunchKernel(void* fn, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                          unsigned shared, void* s, void** params, void** extra) {
  LOCK;
  NEED_CONTEXT;
  Function* f = static_cast<Function*>(fn);
  if (!valid_function(f)) return CUDA_ERROR_INVALID_HANDLE;
  const char* name = f->name.c_str();
  long long threads = (long long)bx * by * bz;
  if (bx < 1 || by < 1 || bz < 1 || bx > kMaxBlockX || by > kMaxBlockY || bz > kMaxBlockZ ||
      threads > kMaxThreadsPerBlock) {
    note("launch %s: block (%u, %u, %u) is past the device's limits", name, bx, by, bz);
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (threads > f->max_threads) {
    note("launch %s: block of %lld threads, its __launch_bounds__ (.maxntid) allow %d", name, threads, f->max_threads);
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (gx < 1 || gy < 1 || gz < 1 || gx > kMaxGridX || gy > (unsigned)kMaxGridYZ || gz > (unsigned)kMaxGridYZ) {
    note("launch %s: grid (%u, %u, %u) is past the device's limits (x < 2^31, y and z <= 65535)", name, gx, gy, gz);
    return CUDA_ERROR_INVALID_VALUE;
  }
  if ((int)shared > f->max_dynamic_shared || f->static_shared + (long long)shared > kSharedOptIn) {
    note("launch %s: %u bytes of dynamic shared memory beside %d static; the function allows %d dynamic%s", name,
         shared, f->static_shared, f->max_dynamic_shared,
         f->max_dynamic_shared <= kSharedDefault - f->static_shared ? " (48 KiB in all without cuFuncSetAttribute)" : "");
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (extra != nullptr) {
    note("launch %s: the extra argument is not supported here", name);
    return CUDA_ERROR_INVALID_VALUE;
  }
  std::string bad = check_params(*f, params);
  if (!bad.empty()) {
    note("launch %s: %s", name, bad.c_str());
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (threads % 32 != 0) {
    note("launch %s: a block of %lld threads: the emulator runs whole warps only", name, threads);
    return CUDA_ERROR_INVALID_VALUE;
  }
  // The driver copies the argument values at the launch.
  std::vector<unsigned char> args(f->param_bytes);
  for (size_t i = 0; i < f->param_sizes.size(); i++)
    memcpy(args.data() + f->param_offsets[i], params[i], f->param_sizes[i]);
  char desc[256];
  snprintf(desc, sizeof desc, "kernel %s (grid %u,%u,%u block %u,%u,%u shared %u)", name, gx, gy, gz, bx, by, bz,
           shared);
  last_launch = desc;
  log_launch(f->name);
  const Emulated* k = f->kernel;
  std::vector<size_t> offsets = f->param_offsets;
  std::string label = desc;
  auto run = f->independent && shared == 0 ? k->run_independent : k->run;
  enqueue(s, [=] {
    running = label.c_str();
    run(args, offsets, dim3(gx, gy, gz), dim3(bx, by, bz), shared);
  });
  return CUDA_SUCCESS;
}

EXPORT int cuStreamCreate(void** s, unsigned flags) {
  LOCK;
  NEED_CONTEXT;
  if (s == nullptr || flags > 1) return CUDA_ERROR_INVALID_VALUE;
  *s = new Stream;
  return CUDA_SUCCESS;
}

EXPORT int cuStreamDestroy_v2(void* s) {
  LOCK;
  NEED_CONTEXT;
  if (s == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  run_until(stream_of(s)->last);
  delete stream_of(s);
  return CUDA_SUCCESS;
}

EXPORT int cuStreamSynchronize(void* s) {
  LOCK;
  NEED_CONTEXT;
  run_until(stream_of(s)->last);
  return sticky_error;
}

EXPORT int cuEventCreate(void** e, unsigned flags) {
  LOCK;
  NEED_CONTEXT;
  if (e == nullptr || flags > 0xf) return CUDA_ERROR_INVALID_VALUE;
  *e = new Event;
  return CUDA_SUCCESS;
}

EXPORT int cuEventDestroy_v2(void* e) {
  LOCK;
  NEED_CONTEXT;
  if (e == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  Event* ev = static_cast<Event*>(e);
  if (ev->seq >= 0) run_until(ev->seq);  // its pending recording writes to it
  delete ev;
  return CUDA_SUCCESS;
}

EXPORT int cuEventRecord(void* ev, void* s) {
  LOCK;
  NEED_CONTEXT;
  Event* e = static_cast<Event*>(ev);
  if (e == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  enqueue(s, [e] { e->ms = now_ms(); });
  e->seq = issued;
  return CUDA_SUCCESS;
}

EXPORT int cuEventSynchronize(void* ev) {
  LOCK;
  NEED_CONTEXT;
  Event* e = static_cast<Event*>(ev);
  if (e == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (e->seq >= 0) run_until(e->seq);
  return sticky_error;
}

EXPORT int cuEventElapsedTime(float* ms, void* start, void* end) {
  LOCK;
  NEED_CONTEXT;
  Event* a = static_cast<Event*>(start);
  Event* b = static_cast<Event*>(end);
  if (a == nullptr || b == nullptr || ms == nullptr) return CUDA_ERROR_INVALID_HANDLE;
  if (a->seq < 0 || b->seq < 0) return CUDA_ERROR_INVALID_HANDLE;
  if (a->seq > completed || b->seq > completed) return CUDA_ERROR_NOT_READY;
  *ms = (float)(b->ms - a->ms);
  return CUDA_SUCCESS;
}

// cuda.h of CUDA 12.8 and later names it so.
EXPORT int cuEventElapsedTime_v2(float* ms, void* start, void* end) { return cuEventElapsedTime(ms, start, end); }

// ---- the exported cuBLAS and cuBLASLt subset

EXPORT size_t cublasLtGetVersion() { return 120405; }

EXPORT int cublasGetProperty(int type, int* value) {
  if (value == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  switch (type) {
    case 0: *value = 12; return CUBLAS_STATUS_SUCCESS;
    case 1: *value = 4; return CUBLAS_STATUS_SUCCESS;
    case 2: *value = 5; return CUBLAS_STATUS_SUCCESS;
  }
  return CUBLAS_STATUS_INVALID_VALUE;
}

EXPORT const char* cublasGetStatusName(int s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}

EXPORT int cublasCreate_v2(void** h) {
  LOCK;
  if (ready() != CUDA_SUCCESS || h == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  *h = new Blas;
  return CUBLAS_STATUS_SUCCESS;
}

EXPORT int cublasDestroy_v2(void* h) {
  LOCK;
  if (h == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  run_all();
  delete static_cast<Blas*>(h);
  return CUBLAS_STATUS_SUCCESS;
}

EXPORT int cublasSetStream_v2(void* h, void* s) {
  LOCK;
  if (h == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  static_cast<Blas*>(h)->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}

EXPORT int cublasSetWorkspace_v2(void* h, void* ws, size_t bytes) {
  LOCK;
  if (h == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (bytes > 0 && ((uintptr_t)ws % 256 != 0 || !live_range((uintptr_t)ws, bytes, false))) {
    note("cublasSetWorkspace: %zu bytes at %p are not device memory aligned to 256 bytes", bytes, ws);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  return CUBLAS_STATUS_SUCCESS;
}

EXPORT int cublasGemmEx(void* handle, int transa, int transb, int m, int n, int k, const void* alpha, const void* A,
                        int atype, int lda, const void* B, int btype, int ldb, const void* beta, void* C, int ctype,
                        int ldc, int compute, int algo) {
  LOCK;
  Blas* h = static_cast<Blas*>(handle);
  if (h == nullptr || ready() != CUDA_SUCCESS) return CUBLAS_STATUS_NOT_INITIALIZED;
  // Argument checks in cuBLAS's order (cublas_api docs: invalid value).
  if (transa < 0 || transa > 2 || transb < 0 || transb > 2 || m < 0 || n < 0 || k < 0 ||
      lda < std::max(1, transa ? k : m) || ldb < std::max(1, transb ? n : k) || ldc < std::max(1, m)) {
    note("cublasGemmEx: invalid value: trans %d %d, m %d n %d k %d, lda %d ldb %d ldc %d", transa, transb, m, n, k, lda,
         ldb, ldc);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (alpha == nullptr || beta == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  int adt = dt_of(atype), bdt = dt_of(btype), cdt = dt_of(ctype);
  // CUBLAS_COMPUTE_32F's documented type combinations of A, B and C.
  bool types = compute == CUBLAS_COMPUTE_32F && adt != 0 && adt == bdt && cdt != 0 && (cdt == adt || cdt == DT_F32);
  if (!types || algo < -1 || algo > 23) {
    note("cublasGemmEx: types %d x %d -> %d with compute type %d are not supported", atype, btype, ctype, compute);
    return CUBLAS_STATUS_NOT_SUPPORTED;
  }
  if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
  float a = *(const float*)alpha, b = *(const float*)beta;
  // Operands outside their allocations are what a GPU would fault on.
  const char* bad = !extent_ok(A, adt, transa ? k : m, transa ? m : k, lda)   ? "A"
                    : !extent_ok(B, bdt, transb ? n : k, transb ? k : n, ldb) ? "B"
                    : !extent_ok(C, cdt, m, n, ldc)                           ? "C"
                                                                              : nullptr;
  char desc[256];
  snprintf(desc, sizeof desc, "cublasGemmEx (trans %d %d, m %d n %d k %d, lda %d ldb %d ldc %d)", transa, transb, m, n, k,
           lda, ldb, ldc);
  last_launch = desc;
  std::string label = desc;
  if (bad != nullptr) {
    enqueue(h->stream, [=] {
      note("CUDA_ERROR_ILLEGAL_ADDRESS: %s: operand %s reaches past its device allocation", label.c_str(), bad);
      sticky_error = CUDA_ERROR_ILLEGAL_ADDRESS;
    });
    return CUBLAS_STATUS_SUCCESS;
  }
  enqueue(h->stream, [=] {
    running = label.c_str();
    gemm_reference(transa, transb, m, n, k, a, A, adt, lda, B, bdt, ldb, b, C, cdt, ldc);
  });
  return CUBLAS_STATUS_SUCCESS;
}

// compass_emu_last_launch is for the emulator's own tests: the last kernel
// or GEMM issued.
EXPORT const char* compass_emu_last_launch() { return last_launch.c_str(); }
