// driver.cpp: runs the kernels of kernels/*.cu under the emulator
// (cuda_emu.h) for the Go tests (kernels/emu_test.go), which build it with
//
//	g++ -O2 -fopenmp -std=c++17 -ffp-contract=off -o driver emu/driver.cpp
//
// Usage: driver COMMAND DIR [key=value ...]. A command launches one kernel,
// or the sequence of launches one backend op needs, on tensors read from
// DIR/NAME.in and writes its outputs to DIR/NAME.out. The launch shapes come
// from the Go side's table (kernels.go) as KERNEL.grid=x,y,z, KERNEL.block=n
// and KERNEL.shared=bytes, so that the table is what runs here.
//
// A tensor file is "CEMU", uint32 dtype (tensor.DType: 1 F32, 2 BF16,
// 3 F16, 4 I32), uint32 rank, int64 dims[rank], then the elements, all
// little-endian. Outputs start poisoned (every byte 0xff: NaN, or -1) so
// that an element no thread wrote shows; every buffer has 64 guard bytes on
// each side, checked after the launches, so that a write out of bounds
// shows too.
#include "../common.cuh"

#include "../adamw.cu"
#include "../attention.cu"
#include "../attention_kv.cu"
#include "../cross_entropy.cu"
#include "../dropout.cu"
#include "../elementwise.cu"
#include "../embedding.cu"
#include "../kmeans.cu"
#include "../lora.cu"
#include "../rmsnorm.cu"
#include "../rope.cu"
#include "../swiglu.cu"

#include <algorithm>
#include <climits>
#include <map>
#include <string>
#include <vector>

// Built with -fsanitize=address (EMU_CXXFLAGS), the guard bytes are also
// poisoned for AddressSanitizer, so that a read out of bounds is caught too.
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#define GUARD_POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define GUARD_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define GUARD_POISON(p, n)
#define GUARD_UNPOISON(p, n)
#endif

namespace {

constexpr int DT_I32 = 4;
constexpr size_t kGuard = 64;
constexpr unsigned char kCanary = 0xa5;

[[noreturn]] void die(const std::string& msg) {
  fprintf(stderr, "driver: %s\n", msg.c_str());
  exit(2);
}

size_t dtype_size(int dt) {
  switch (dt) {
    case DT_F32:
    case DT_I32:
      return 4;
    case DT_BF16:
    case DT_F16:
      return 2;
  }
  die("unknown dtype " + std::to_string(dt));
}

struct Buffer {
  int dtype = 0;
  std::vector<int64_t> shape;
  std::vector<unsigned char> bytes;  // guard, elements, guard
  bool output = false;

  size_t numel() const {
    size_t n = 1;
    for (int64_t d : shape) n *= (size_t)d;
    return n;
  }
  size_t nbytes() const { return numel() * dtype_size(dtype); }
  void* data() { return bytes.data() + kGuard; }
  template <class T>
  T* as() {
    return reinterpret_cast<T*>(data());
  }
  void allocate(unsigned char fill) {
    bytes.assign(nbytes() + 2 * kGuard, kCanary);
    memset(data(), fill, nbytes());
    GUARD_POISON(bytes.data(), kGuard);
    GUARD_POISON(bytes.data() + kGuard + nbytes(), kGuard);
  }
  bool guards_intact() {
    GUARD_UNPOISON(bytes.data(), bytes.size());
    for (size_t i = 0; i < kGuard; i++) {
      if (bytes[i] != kCanary || bytes[bytes.size() - 1 - i] != kCanary) return false;
    }
    return true;
  }
  int64_t dim(int i) const { return shape[i < 0 ? shape.size() + i : i]; }
};

struct Run {
  std::string dir;
  std::map<std::string, std::string> params;
  std::map<std::string, Buffer> bufs;

  std::string path(const std::string& name, const char* ext) { return dir + "/" + name + ext; }

  bool has_input(const std::string& name) {
    FILE* f = fopen(path(name, ".in").c_str(), "rb");
    if (f) fclose(f);
    return f != nullptr;
  }

  Buffer& in(const std::string& name) {
    auto it = bufs.find(name);
    if (it != bufs.end()) return it->second;
    std::string p = path(name, ".in");
    FILE* f = fopen(p.c_str(), "rb");
    if (!f) die("cannot open " + p);
    Buffer b;
    char magic[4];
    uint32_t dt, rank;
    if (fread(magic, 1, 4, f) != 4 || memcmp(magic, "CEMU", 4) != 0 || fread(&dt, 4, 1, f) != 1 ||
        fread(&rank, 4, 1, f) != 1 || rank > 8)
      die("bad header in " + p);
    b.dtype = (int)dt;
    b.shape.resize(rank);
    if (rank > 0 && fread(b.shape.data(), 8, rank, f) != rank) die("bad header in " + p);
    b.allocate(0);
    if (b.nbytes() > 0 && fread(b.data(), 1, b.nbytes(), f) != b.nbytes()) die("short file " + p);
    fclose(f);
    return bufs[name] = std::move(b);
  }

  // inout reads a tensor that the kernels update in place.
  Buffer& inout(const std::string& name) {
    Buffer& b = in(name);
    b.output = true;
    return b;
  }

  // out allocates an output, poisoned.
  Buffer& out(const std::string& name, int dtype, std::vector<int64_t> shape) {
    Buffer b;
    b.dtype = dtype;
    b.shape = std::move(shape);
    b.allocate(0xff);
    b.output = true;
    return bufs[name] = std::move(b);
  }

  // scratch allocates device memory that is not returned, poisoned.
  Buffer& scratch(const std::string& name, int dtype, std::vector<int64_t> shape) {
    Buffer& b = out(name, dtype, std::move(shape));
    b.output = false;
    return b;
  }

  const std::string& param(const std::string& key) {
    auto it = params.find(key);
    if (it == params.end()) die("missing parameter " + key);
    return it->second;
  }
  long long i(const std::string& key) { return std::stoll(param(key)); }
  float f(const std::string& key) { return strtof(param(key).c_str(), nullptr); }

  // shape reads the launch shape the Go side computed for a kernel.
  void shape(const std::string& kernel, dim3& grid, dim3& block, size_t& shared) {
    unsigned g[3] = {1, 1, 1};
    if (sscanf(param(kernel + ".grid").c_str(), "%u,%u,%u", &g[0], &g[1], &g[2]) != 3)
      die("bad " + kernel + ".grid");
    grid = dim3(g[0], g[1], g[2]);
    block = dim3((unsigned)i(kernel + ".block"));
    shared = (size_t)i(kernel + ".shared");
  }

  void finish() {
    for (auto& [name, b] : bufs) {
      if (!b.guards_intact()) die("a kernel wrote outside tensor " + name);
    }
    for (auto& [name, b] : bufs) {
      if (!b.output) continue;
      std::string p = path(name, ".out");
      FILE* f = fopen(p.c_str(), "wb");
      if (!f) die("cannot create " + p);
      uint32_t dt = (uint32_t)b.dtype, rank = (uint32_t)b.shape.size();
      fwrite("CEMU", 1, 4, f);
      fwrite(&dt, 4, 1, f);
      fwrite(&rank, 4, 1, f);
      if (rank > 0) fwrite(b.shape.data(), 8, rank, f);
      if (fwrite(b.data(), 1, b.nbytes(), f) != b.nbytes() || fclose(f) != 0) die("cannot write " + p);
    }
  }
};

// launch_as launches kernel with the shape the Go table gave for name.
template <class... P, class... A>
void launch_as(Run& run, const char* name, void (*kernel)(P...), A... args) {
  dim3 grid, block;
  size_t shared;
  run.shape(name, grid, block, shared);
  launch(kernel, grid, block, shared, args...);
}

// rows_of is the product of all dimensions but the last.
int rows_of(const Buffer& b) { return (int)(b.numel() / (size_t)b.dim(-1)); }

// ---- elementwise.cu

void cmd_cast(Run& run) {
  Buffer& x = run.in("x");
  Buffer& out = run.out("out", (int)run.i("out_dtype"), x.shape);
  launch_as(run, "elementwise_cast", elementwise_cast, out.data(), out.dtype, (const void*)x.data(), x.dtype,
            x.numel());
}

template <class K>
void binary(Run& run, const char* name, K kernel) {
  Buffer& a = run.in("a");
  Buffer& b = run.in("b");
  Buffer& out = run.out("out", (int)run.i("out_dtype"), a.shape);
  launch_as(run, name, kernel, out.data(), out.dtype, (const void*)a.data(), a.dtype, (const void*)b.data(), b.dtype,
            a.numel(), b.numel());
}
void cmd_add(Run& run) { binary(run, "elementwise_add", elementwise_add); }
void cmd_mul(Run& run) { binary(run, "elementwise_mul", elementwise_mul); }

void cmd_scale(Run& run) {
  Buffer& a = run.in("a");
  Buffer& out = run.out("out", (int)run.i("out_dtype"), a.shape);
  launch_as(run, "elementwise_scale", elementwise_scale, out.data(), out.dtype, (const void*)a.data(), a.dtype,
            run.f("s"), a.numel());
}

// ---- dropout.cu

void cmd_dropout(Run& run) {
  Buffer& x = run.in("x");
  Buffer& out = run.out("out", (int)run.i("out_dtype"), x.shape);
  launch_as(run, "dropout", dropout, out.data(), out.dtype, (const void*)x.data(), x.dtype, x.numel(),
            std::stoull(run.param("seed")), std::stoull(run.param("threshold")), run.f("scale"));
}

// ---- rmsnorm.cu

void cmd_rmsnorm_forward(Run& run) {
  Buffer& x = run.in("x");
  Buffer& w = run.in("w");
  int rows = rows_of(x), H = (int)x.dim(-1);
  Buffer& out = run.out("out", (int)run.i("out_dtype"), x.shape);
  Buffer& rstd = run.out("rstd", DT_F32, {rows});
  launch_as(run, "rmsnorm_forward", rmsnorm_forward, out.data(), out.dtype, rstd.as<float>(), (const void*)x.data(),
            x.dtype, (const void*)w.data(), w.dtype, rows, H, run.f("eps"));
}

void cmd_rmsnorm_backward(Run& run) {
  Buffer& dout = run.in("dout");
  Buffer& x = run.in("x");
  Buffer& w = run.in("w");
  Buffer& rstd = run.in("rstd");
  int rows = rows_of(x), H = (int)x.dim(-1);
  Buffer& dx = run.out("dx", (int)run.i("dx_dtype"), x.shape);
  launch_as(run, "rmsnorm_backward", rmsnorm_backward, dx.data(), dx.dtype, (const void*)dout.data(), dout.dtype,
            (const void*)x.data(), x.dtype, (const void*)w.data(), w.dtype, (const float*)rstd.as<float>(), rows, H);
}

// ---- rope.cu

void cmd_rope(Run& run) {
  Buffer& cos = run.in("cos");
  Buffer& sin = run.in("sin");
  int N = (int)cos.dim(0), half = (int)cos.dim(1);
  int heads = (int)run.i("heads");
  Buffer* x;
  Buffer* out;
  if (run.i("inplace")) {  // out is x, as model/forward.go calls it
    x = out = &run.inout("x");
  } else {
    x = &run.in("x");
    out = &run.out("out", (int)run.i("out_dtype"), x->shape);
  }
  int D = (int)x->dim(-1);
  launch_as(run, "rope", rope, out->data(), out->dtype, (const void*)x->data(), x->dtype,
            (const float*)cos.as<float>(), (const float*)sin.as<float>(), N, heads, D, half, (int)run.i("inverse"));
}

// ---- swiglu.cu

void cmd_swiglu_forward(Run& run) {
  Buffer& gate = run.in("gate");
  Buffer& up = run.in("up");
  Buffer& out = run.out("out", (int)run.i("out_dtype"), gate.shape);
  launch_as(run, "swiglu_forward", swiglu_forward, out.data(), out.dtype, (const void*)gate.data(), gate.dtype,
            (const void*)up.data(), up.dtype, gate.numel());
}

void cmd_swiglu_backward(Run& run) {
  Buffer& dout = run.in("dout");
  Buffer& gate = run.in("gate");
  Buffer& up = run.in("up");
  Buffer& dgate = run.out("dgate", (int)run.i("dgate_dtype"), gate.shape);
  Buffer& dup = run.out("dup", (int)run.i("dup_dtype"), gate.shape);
  launch_as(run, "swiglu_backward", swiglu_backward, dgate.data(), dgate.dtype, dup.data(), dup.dtype,
            (const void*)dout.data(), dout.dtype, (const void*)gate.data(), gate.dtype, (const void*)up.data(),
            up.dtype, gate.numel());
}

// ---- embedding.cu

void cmd_embedding_forward(Run& run) {
  Buffer& table = run.in("table");
  Buffer& ids = run.in("ids");
  int V = (int)table.dim(0), H = (int)table.dim(1), N = (int)ids.numel();
  Buffer& out = run.out("out", (int)run.i("out_dtype"), {N, H});
  Buffer& bad = run.out("bad", DT_I32, {1});
  bad.as<int>()[0] = INT_MAX;  // as the caller sets it before the launch
  launch_as(run, "embedding_forward", embedding_forward, out.data(), out.dtype, (const void*)table.data(),
            table.dtype, (const int*)ids.as<int>(), N, H, V, bad.as<int>());
}

void cmd_embedding_backward(Run& run) {
  Buffer& dtable = run.inout("dtable");
  Buffer& dout = run.in("dout");
  Buffer& ids = run.in("ids");
  int V = (int)dtable.dim(0), H = (int)dtable.dim(1), N = (int)ids.numel();
  launch_as(run, "embedding_backward", embedding_backward, dtable.as<float>(), (const void*)dout.data(), dout.dtype,
            (const int*)ids.as<int>(), N, H, V);
}

// ---- cross_entropy.cu: the whole launch sequence of the file's comment,
// with plain loops for the two cuBLAS products.

void cmd_cross_entropy(Run& run) {
  Buffer& h = run.in("h");
  Buffer& w = run.in("w");
  Buffer& labels = run.in("labels");
  int N = rows_of(h), H = (int)h.dim(-1), V = (int)w.dim(0);
  int chunk = (int)run.i("chunk");
  bool want_dh = run.i("want_dh") != 0;
  Buffer& logprob = run.out("logprob", DT_F32, {N});
  Buffer& m = run.scratch("m", DT_F32, {N});
  Buffer& s = run.scratch("s", DT_F32, {N});
  Buffer& target = run.scratch("target", DT_F32, {N});
  Buffer& rescale = run.scratch("rescale", DT_F32, {N});
  Buffer& logits = run.scratch("logits", DT_F32, {N, chunk});
  Buffer* dh = nullptr;
  float* acc = nullptr;
  if (want_dh) {
    dh = &run.out("dh", (int)run.i("dh_dtype"), h.shape);
    // As the CPU op does: dh itself is the accumulator when it is F32.
    acc = dh->dtype == DT_F32 ? dh->as<float>() : run.scratch("acc", DT_F32, {N, H}).as<float>();
  }
  const int* lab = labels.as<int>();
  float* P = logits.as<float>();

  launch_as(run, "ce_init", ce_init, m.as<float>(), s.as<float>(), target.as<float>(), acc, N, H);
  for (int c0 = 0; c0 < V; c0 += chunk) {
    int n = std::min(chunk, V - c0);
    for (int i = 0; i < N; i++) {  // cuBLAS: logits = h w_c^T
      for (int j = 0; j < n; j++) {
        float sum = 0.0f;
        for (int k = 0; k < H; k++)
          sum += load_f32(h.data(), h.dtype, (size_t)i * H + k) * load_f32(w.data(), w.dtype, (size_t)(c0 + j) * H + k);
        P[(size_t)i * n + j] = sum;
      }
    }
    launch_as(run, "ce_chunk_update", ce_chunk_update, P, rescale.as<float>(), m.as<float>(), s.as<float>(),
              target.as<float>(), lab, N, n, c0);
    if (!want_dh) continue;
    launch_as(run, "ce_rescale", ce_rescale, acc, (const float*)rescale.as<float>(), N, H);
    for (int i = 0; i < N; i++) {  // cuBLAS: acc += P w_c
      for (int k = 0; k < H; k++) {
        float sum = 0.0f;
        for (int j = 0; j < n; j++) sum += P[(size_t)i * n + j] * load_f32(w.data(), w.dtype, (size_t)(c0 + j) * H + k);
        acc[(size_t)i * H + k] += sum;
      }
    }
  }
  launch_as(run, "ce_finalize", ce_finalize, logprob.as<float>(), dh ? dh->data() : nullptr, dh ? dh->dtype : DT_F32,
            (const float*)acc, (const void*)w.data(), w.dtype, (const float*)m.as<float>(),
            (const float*)s.as<float>(), (const float*)target.as<float>(), lab, N, H, run.f("grad_scale"));
}

// ---- attention.cu

// doc_start is the optional input doc_start (I32 [B, T]), or null: one
// document per row.
const int* doc_start(Run& run) {
  return run.has_input("doc_start") ? (const int*)run.in("doc_start").as<int>() : nullptr;
}

void cmd_attention_forward(Run& run) {
  Buffer& q = run.in("q");
  Buffer& k = run.in("k");
  Buffer& v = run.in("v");
  int B = (int)q.dim(0), T = (int)q.dim(1), Hq = (int)q.dim(2), Hkv = (int)k.dim(2), D = (int)q.dim(3);
  Buffer& out = run.out("out", (int)run.i("out_dtype"), q.shape);
  Buffer& lse = run.out("lse", DT_F32, {B, Hq, T});
  launch_as(run, "attention_forward", attention_forward, out.data(), out.dtype, lse.as<float>(),
            (const void*)q.data(), q.dtype, (const void*)k.data(), k.dtype, (const void*)v.data(), v.dtype,
            doc_start(run), B, T, Hq, Hkv, D, run.f("scale"));
}

// ---- attention_kv.cu

void cmd_attention_kv(Run& run) {
  Buffer& q = run.in("q");
  Buffer& k = run.in("k");
  Buffer& v = run.in("v");
  Buffer& kc = run.inout("k_cache");
  Buffer& vc = run.inout("v_cache");
  Buffer& pos = run.in("pos");
  int B = (int)q.dim(0), Tq = (int)q.dim(1), Hq = (int)q.dim(2), Hkv = (int)k.dim(2), D = (int)q.dim(3);
  int S = (int)kc.dim(1);
  Buffer& out = run.out("out", (int)run.i("out_dtype"), q.shape);
  launch_as(run, "kv_cache_write", kv_cache_write, kc.data(), kc.dtype, vc.data(), vc.dtype, (const void*)k.data(),
            k.dtype, (const void*)v.data(), v.dtype, (const int*)pos.as<int>(), B, Tq, S, Hkv, D);
  launch_as(run, "attention_kv", attention_kv, out.data(), out.dtype, (const void*)q.data(), q.dtype,
            (const void*)kc.data(), kc.dtype, (const void*)vc.data(), vc.dtype, (const int*)pos.as<int>(), B, Tq, S,
            Hq, Hkv, D, run.f("scale"));
}

void cmd_attention_backward(Run& run) {
  Buffer& dout = run.in("dout");
  Buffer& q = run.in("q");
  Buffer& k = run.in("k");
  Buffer& v = run.in("v");
  Buffer& o = run.in("out");
  Buffer& lse = run.in("lse");
  int B = (int)q.dim(0), T = (int)q.dim(1), Hq = (int)q.dim(2), Hkv = (int)k.dim(2), D = (int)q.dim(3);
  float scale = run.f("scale");
  Buffer& delta = run.out("delta", DT_F32, {B, Hq, T});
  Buffer& dq = run.out("dq", (int)run.i("dq_dtype"), q.shape);
  Buffer& dk = run.out("dk", (int)run.i("dk_dtype"), k.shape);
  Buffer& dv = run.out("dv", (int)run.i("dv_dtype"), v.shape);
  launch_as(run, "attention_backward_delta", attention_backward_delta, delta.as<float>(), (const void*)dout.data(),
            dout.dtype, (const void*)o.data(), o.dtype, B, T, Hq, D);
  launch_as(run, "attention_backward_dq", attention_backward_dq, dq.data(), dq.dtype, (const void*)q.data(), q.dtype,
            (const void*)k.data(), k.dtype, (const void*)v.data(), v.dtype, doc_start(run), (const void*)dout.data(),
            dout.dtype, (const float*)lse.as<float>(), (const float*)delta.as<float>(), B, T, Hq, Hkv, D, scale);
  launch_as(run, "attention_backward_dkdv", attention_backward_dkdv, dk.data(), dk.dtype, dv.data(), dv.dtype,
            (const void*)q.data(), q.dtype, (const void*)k.data(), k.dtype, (const void*)v.data(), v.dtype,
            doc_start(run), (const void*)dout.data(), dout.dtype, (const float*)lse.as<float>(),
            (const float*)delta.as<float>(), B, T, Hq, Hkv, D, scale);
}

// ---- lora.cu

void cmd_lora_gemm(Run& run) {
  Buffer& a = run.in("a");
  Buffer& b = run.in("b");
  int M = (int)run.i("M"), Ncols = (int)run.i("Ncols"), K = (int)run.i("K");
  long long ldc = run.i("ldc");
  // C is read when beta != 0 (or when the test checks that columns past
  // Ncols stay untouched); otherwise it starts poisoned.
  Buffer& c = run.has_input("c") ? run.inout("c") : run.out("c", (int)run.i("c_dtype"), {M, ldc});
  launch_as(run, "lora_gemm", lora_gemm, c.data(), c.dtype, ldc, (const void*)a.data(), a.dtype, run.i("sam"),
            run.i("sak"), (const void*)b.data(), b.dtype, run.i("sbk"), run.i("sbn"), M, Ncols, K, run.f("alpha"),
            run.f("beta"), (int)run.i("split"));
}

// ---- adamw.cu

void cmd_adamw(Run& run) {
  int n = (int)run.i("tensors");
  Buffer& table = run.scratch("table", DT_I32, {n * (int64_t)sizeof(AdamWTensor) / 4});
  AdamWTensor* rows = table.as<AdamWTensor>();
  for (int i = 0; i < n; i++) {
    std::string s = std::to_string(i);
    Buffer& p = run.inout("p" + s);
    rows[i] = {p.as<float>(), run.in("g" + s).as<float>(), run.inout("m" + s).as<float>(),
               run.inout("v" + s).as<float>(), (long long)p.numel()};
  }
  launch_as(run, "adamw", adamw, (const AdamWTensor*)rows, n, run.f("decay"), run.f("beta1"), run.f("beta2"),
            run.f("eps"), run.f("step_size"), run.f("bc2_sqrt"));
}

// ---- kmeans.cu

void cmd_kmeans_assign(Run& run) {
  Buffer& x = run.in("x");
  Buffer& c = run.in("c");
  int N = (int)x.dim(0), Dm = (int)x.dim(1), K = (int)c.dim(0);
  Buffer& xn = run.out("xn", DT_F32, {N});
  Buffer& cn = run.out("cn", DT_F32, {K});
  Buffer& assign = run.out("assign", DT_I32, {N});
  Buffer& dist = run.out("dist", DT_F32, {N});
  launch_as(run, "kmeans_sqnorm_c", kmeans_sqnorm, cn.as<float>(), (const void*)c.data(), c.dtype, K, Dm);
  launch_as(run, "kmeans_sqnorm_x", kmeans_sqnorm, xn.as<float>(), (const void*)x.data(), x.dtype, N, Dm);
  launch_as(run, "kmeans_assign", kmeans_assign, assign.as<int>(), dist.as<float>(), (const void*)x.data(), x.dtype,
            (const float*)xn.as<float>(), (const float*)c.as<float>(), (const float*)cn.as<float>(), N, K, Dm);
}

void cmd_kmeans_update(Run& run) {
  Buffer& x = run.in("x");
  Buffer& assign = run.in("assign");
  Buffer& c = run.inout("c");
  int N = (int)x.dim(0), Dm = (int)x.dim(1), K = (int)c.dim(0);
  Buffer& sums = run.out("sums", DT_F32, {K, Dm});
  Buffer& counts = run.out("counts", DT_I32, {K});
  memset(sums.data(), 0, sums.nbytes());  // the caller's cuMemsetD32
  memset(counts.data(), 0, counts.nbytes());
  launch_as(run, "kmeans_accumulate", kmeans_accumulate, sums.as<float>(), counts.as<int>(), (const void*)x.data(),
            x.dtype, (const int*)assign.as<int>(), N, Dm);
  launch_as(run, "kmeans_divide", kmeans_divide, c.as<float>(), (const float*)sums.as<float>(),
            (const int*)counts.as<int>(), K, Dm);
}

// ---- the emulator itself

// selftest_kernel checks the emulated primitives against what CUDA
// documents; each failed check adds to fails[check] (a 2D block of
// 32 x 4 threads, 2 blocks).
enum {
  kXor,
  kDown,
  kUp,
  kIdx,
  kWide,
  kBallot,
  kAnyAll,
  kAtomics,
  kSync,
  kPoison,
  kIndex,
  kChecks
};
const char* const kCheckNames[kChecks] = {"shfl_xor", "shfl_down", "shfl_up",     "shfl",  "shfl 64-bit", "ballot",
                                          "any/all",  "atomics",   "syncthreads", "poison", "thread index"};

__global__ void selftest_kernel(int* fails, int* counter, float* fsum, int* imax, int* imin, int* cas_winner) {
  DYNAMIC_SHARED(int, dyn);
  __shared__ int s[128];
  int t = threadIdx.x + blockDim.x * threadIdx.y, lane = t & 31;
  auto check = [&](int id, bool ok) {
    if (!ok) atomicAdd(&fails[id], 1);
  };
  check(kIndex, (int)threadIdx.x == lane && (int)threadIdx.y == t / 32 && blockDim.x == 32 && blockDim.y == 4 &&
                    gridDim.x == 2);
  bool poisoned = dyn[t] == -1;  // before anyone writes it
  __syncthreads();
  dyn[t] = t;
  check(kPoison, poisoned);

  int base = 100 * (int)blockIdx.x;
  check(kXor, __shfl_xor_sync(0xffffffffu, base + lane, 5) == base + (lane ^ 5));
  // width 8: lanes whose source is past their group of 8 keep their value
  int down = __shfl_down_sync(0xffffffffu, base + lane, 3, 8);
  check(kDown, down == base + ((lane & 7) + 3 < 8 ? lane + 3 : lane));
  int up = __shfl_up_sync(0xffffffffu, base + lane, 5, 16);
  check(kUp, up == base + ((lane & 15) >= 5 ? lane - 5 : lane));
  int idx = __shfl_sync(0xffffffffu, base + lane, 7, 4);  // lane 7 % 4 = 3 of each group of 4
  check(kIdx, idx == base + (lane & ~3) + 3);
  double wide = __shfl_xor_sync(0xffffffffu, (double)lane * 1e10 + 0.5, 31);
  check(kWide, wide == (double)(lane ^ 31) * 1e10 + 0.5);

  unsigned ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
  unsigned want = 0;
  for (int l = 0; l < 32; l += 3) want |= 1u << l;
  check(kBallot, ballot == want);
  check(kAnyAll, __any_sync(0xffffffffu, lane == 17) && !__any_sync(0xffffffffu, 0) &&
                     __all_sync(0xffffffffu, 1) && !__all_sync(0xffffffffu, lane != 4));

  atomicAdd(counter, 1);
  atomicAdd(fsum, 0.5f);
  atomicMax(imax, t * 7 % 128);
  atomicMin(imin, 1000 - t);
  atomicCAS(cas_winner, -1, t);  // one thread wins; the host checks the winner is a thread

  s[t] = t * 3;
  __syncthreads();
  check(kSync, s[(t + 1) % 128] == ((t + 1) % 128) * 3 && dyn[(t + 5) % 128] == (t + 5) % 128);
  __syncthreads();
}

void cmd_selftest(Run& run) {
  Buffer& fails = run.out("fails", DT_I32, {kChecks});
  memset(fails.data(), 0, fails.nbytes());
  int counter = 0, imax = -1, imin = 1 << 30, cas_winner = -1;
  float fsum = 0.0f;
  launch(selftest_kernel, dim3(2), dim3(32, 4), 128 * sizeof(int), fails.as<int>(), &counter, &fsum, &imax, &imin,
         &cas_winner);
  int* f = fails.as<int>();
  if (counter != 256 || fsum != 128.0f || imax != 127 || imin != 1000 - 127 || cas_winner < 0 || cas_winner >= 128)
    f[kAtomics]++;
  // The bf16 and half types convert as cuda_bf16.h and cuda_fp16.h: nearest
  // even, canonical NaN.
  bool types = __bfloat16_as_ushort(__float2bfloat16(1.00390625f)) == 0x3f80 &&  // tie to even: down
               __bfloat16_as_ushort(__float2bfloat16(1.01171875f)) == 0x3f82 &&  // tie to even: up
               __bfloat16_as_ushort(__float2bfloat16(__uint_as_float(0x7fc12345u))) == 0x7fff &&
               __bfloat162float(__ushort_as_bfloat16(0xc0a0)) == -5.0f &&
               __half_as_ushort(__float2half(65504.0f)) == 0x7bff && __half_as_ushort(__float2half(65520.0f)) == 0x7c00 &&
               __half2float(__ushort_as_half(0x0001)) == 5.9604644775390625e-8f &&
               __half_as_ushort(__float2half(__uint_as_float(0x7f800001u))) == 0x7fff;
  for (int i = 0; i < kChecks; i++) {
    if (f[i] != 0) fprintf(stderr, "selftest: %s failed (%d threads)\n", kCheckNames[i], f[i]);
  }
  if (!types) fprintf(stderr, "selftest: bf16/half conversions failed\n");
  for (int i = 0; i < kChecks; i++) {
    if (f[i] != 0 || !types) exit(1);
  }
}

const std::map<std::string, void (*)(Run&)> kCommands = {
    {"selftest", cmd_selftest},
    {"cast", cmd_cast},
    {"add", cmd_add},
    {"mul", cmd_mul},
    {"scale", cmd_scale},
    {"dropout", cmd_dropout},
    {"rmsnorm_forward", cmd_rmsnorm_forward},
    {"rmsnorm_backward", cmd_rmsnorm_backward},
    {"rope", cmd_rope},
    {"swiglu_forward", cmd_swiglu_forward},
    {"swiglu_backward", cmd_swiglu_backward},
    {"embedding_forward", cmd_embedding_forward},
    {"embedding_backward", cmd_embedding_backward},
    {"cross_entropy", cmd_cross_entropy},
    {"attention_forward", cmd_attention_forward},
    {"attention_backward", cmd_attention_backward},
    {"attention_kv", cmd_attention_kv},
    {"lora_gemm", cmd_lora_gemm},
    {"adamw", cmd_adamw},
    {"kmeans_assign", cmd_kmeans_assign},
    {"kmeans_update", cmd_kmeans_update},
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) die("usage: driver COMMAND DIR [key=value ...]");
  auto cmd = kCommands.find(argv[1]);
  if (cmd == kCommands.end()) die(std::string("unknown command ") + argv[1]);
  Run run;
  run.dir = argv[2];
  for (int i = 3; i < argc; i++) {
    const char* eq = strchr(argv[i], '=');
    if (!eq) die(std::string("bad parameter ") + argv[i]);
    run.params[std::string(argv[i], eq - argv[i])] = eq + 1;
  }
  cmd->second(run);
  run.finish();
  return 0;
}
