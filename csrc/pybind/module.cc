// paddle_te_core: the C API (csrc/include/paddle_te) as a Python module over DLPack tensors
// (SPEC §5). It is the only pybind11 code of the project (STYLE habit 5).
//
// * Arguments are any objects with __dlpack__/__dlpack_device__ (numpy on the CPU; torch, cupy,
//   Paddle on the GPU). CUDA tensors are exported with __dlpack__(stream=S) where S is the
//   stream the call runs on (1 = the legacy default stream when `stream` is None), so the
//   producer orders its pending work before ours as the protocol prescribes; once per producer
//   and device in a call: its later tensors are exported with stream=-1 (see Imported::import).
// * Outputs are written in place through the exported views.
// * Errors: INVALID_ARGUMENT / NOT_SUPPORTED -> ValueError, CUDA / INTERNAL -> RuntimeError,
//   with pte_last_error()'s text (which names the argument).
// * The GIL is released around every C call; DLPack deleters run with the GIL held (numpy's
//   deleter touches Python objects).
// * Workspace of the attention calls: allocated per call. On CUDA with cudaMallocAsync on the
//   call's stream and released with cudaFreeAsync right after the launch (stream ordered, no
//   sync); on the CPU from the heap.
// * mask_to_cu_seqlens makes no device->host copy on CUDA (issue 17): the right-padding verdict
//   is checked where that is free (CPU masks), on CUDA only with check=True (one copy and a
//   sync); `valid=` (an int32 [1] tensor) receives the verdict for the caller to read. So the
//   call can be captured in a CUDA graph.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#ifdef PTE_WITH_CUDA
#include <cuda_runtime.h>
#endif

#include "paddle_te/paddle_te.h"
#include "pybind/dlpack.h"

namespace py = pybind11;

namespace pte {
// Hidden like pybind11's own namespace (the module exports only PyInit_paddle_te_core).
namespace __attribute__((visibility("hidden"))) pyb {

using dlpack::DLManagedTensor;

// ---- errors -----------------------------------------------------------------------------------

[[noreturn]] void raise_status(pte_status_t st) {
  const std::string msg = pte_last_error();
  if (st == PTE_ERROR_INVALID_ARGUMENT || st == PTE_ERROR_NOT_SUPPORTED) throw py::value_error(msg);
  throw std::runtime_error(msg.empty() ? "paddle_te: internal error" : msg);
}

void check_status(pte_status_t st) {
  if (st != PTE_SUCCESS) raise_status(st);
}

#ifdef PTE_WITH_CUDA
void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess)
    throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(e));
}
#endif

// ---- DLPack import ----------------------------------------------------------------------------

// One imported argument: owns the DLManagedTensor until destroyed (with the GIL held).
class Imported {
 public:
  Imported() = default;
  Imported(const Imported&) = delete;
  Imported& operator=(const Imported&) = delete;
  ~Imported() {
    if (managed_ != nullptr && managed_->deleter != nullptr) managed_->deleter(managed_);
  }

  pte_tensor_t tensor{};  // zeroed = absent
  bool present = false;

  // The producer (Python type, DLPack device) whose __dlpack__ already ordered its pending work
  // before the call's stream in this call (null type: none yet).
  struct Synced {
    PyTypeObject* type = nullptr;
    int dev_type = 0, dev_id = -1;
  };

  // Import `obj` as argument `name`. `stream` is the call's stream (0 = default stream).
  void import(const py::handle& obj, const char* name, intptr_t stream, Synced& synced) {
    if (obj.is_none()) return;
    if (!py::hasattr(obj, "__dlpack__") || !py::hasattr(obj, "__dlpack_device__"))
      throw py::type_error(std::string(name) + ": expected an array with __dlpack__ (numpy, torch, "
                           "cupy, paddle), got " + std::string(py::str(py::type::of(obj))));
    py::tuple dev = obj.attr("__dlpack_device__")();
    const int dev_type = dev[0].cast<int>();
    py::object cap;
    if (dev_type == dlpack::kDLCUDA || dev_type == dlpack::kDLCUDAManaged) {
      // DLPack stream semantics for CUDA: 1 = legacy default stream, otherwise the handle.
      // The first tensor of a producer and device makes the call's stream wait for all the work
      // queued on the producer's current stream (an event), which covers every later tensor of
      // that producer and device in the call: those are exported with stream=-1 (the protocol's
      // "no synchronization"), which spares the producer's per-tensor stream handling (torch:
      // ExternalStream + current_stream in Python, a measurable host cost per call).
      const int dev_id = dev[1].cast<int>();
      PyTypeObject* type = Py_TYPE(obj.ptr());
      const bool covered =
          synced.type == type && synced.dev_type == dev_type && synced.dev_id == dev_id;
      cap = obj.attr("__dlpack__")(
          py::arg("stream") = covered ? intptr_t(-1) : stream == 0 ? intptr_t(1) : stream);
      if (!covered) synced = Synced{type, dev_type, dev_id};
    } else {
      cap = obj.attr("__dlpack__")();
    }
    PyObject* c = cap.ptr();
    if (!PyCapsule_IsValid(c, dlpack::kCapsuleName))
      throw py::type_error(std::string(name) + ": __dlpack__() did not return a 'dltensor' capsule");
    managed_ = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(c, dlpack::kCapsuleName));
    if (managed_ == nullptr) throw py::error_already_set();
    // We own it now: the renamed capsule's destructor leaves it alone.
    PyCapsule_SetName(c, dlpack::kUsedCapsuleName);
    convert(name);
    present = true;
  }

 private:
  void convert(const char* name) {
    const dlpack::DLTensor& t = managed_->dl_tensor;
    auto fail = [&](const std::string& why) {
      throw py::value_error(std::string(name) + ": " + why);
    };
    if (t.ndim < 0 || t.ndim > PTE_MAX_DIMS)
      fail("ndim=" + std::to_string(t.ndim) + ": at most " + std::to_string(PTE_MAX_DIMS));
    if (t.dtype.lanes != 1) fail("vector dtypes (lanes=" + std::to_string(t.dtype.lanes) + ")");
    const int code = t.dtype.code, bits = t.dtype.bits;
    pte_dtype_t dt;
    if (code == dlpack::kDLFloat && bits == 32) dt = PTE_FLOAT32;
    else if (code == dlpack::kDLFloat && bits == 64) dt = PTE_FLOAT64;
    else if (code == dlpack::kDLFloat && bits == 16) dt = PTE_FLOAT16;
    else if (code == dlpack::kDLBfloat && bits == 16) dt = PTE_BFLOAT16;
    else if (code == dlpack::kDLInt && bits == 32) dt = PTE_INT32;
    else if (code == dlpack::kDLInt && bits == 64) dt = PTE_INT64;
    // bool, and uint8 as bool (one byte, 0 or 1): frameworks without a bool DLPack code use it.
    else if ((code == dlpack::kDLBool || code == dlpack::kDLUInt) && bits == 8) dt = PTE_BOOL;
    else
      fail("unsupported dtype (DLPack code " + std::to_string(code) + ", bits " +
           std::to_string(bits) + "); allowed: float16, bfloat16, float32, float64, int32, "
           "int64, bool");
    switch (t.device.device_type) {
      case dlpack::kDLCPU:
      case dlpack::kDLCUDAHost:
        tensor.device = PTE_DEVICE_CPU;
        break;
      case dlpack::kDLCUDA:
      case dlpack::kDLCUDAManaged:
        tensor.device = PTE_DEVICE_CUDA;
        break;
      default:
        fail("unsupported DLPack device type " + std::to_string(t.device.device_type) +
             " (CPU or CUDA)");
    }
    tensor.device_id = t.device.device_id;
    tensor.dtype = dt;
    tensor.ndim = t.ndim;
    tensor.data = static_cast<char*>(t.data) + t.byte_offset;
    int64_t contiguous = 1;
    for (int i = t.ndim - 1; i >= 0; --i) {
      tensor.shape[i] = t.shape[i];
      tensor.strides[i] = t.strides != nullptr ? t.strides[i] : contiguous;
      contiguous *= t.shape[i];
    }
  }

  DLManagedTensor* managed_ = nullptr;
};

// The arguments of one call, imported together; the device of the first CUDA tensor becomes the
// current device for the duration of the C call.
class Args {
 public:
  explicit Args(intptr_t stream) : stream_(stream) {}
  const pte_tensor_t& add(const py::handle& obj, const char* name) {
    items_.emplace_back(new Imported());
    items_.back()->import(obj, name, stream_, synced_);
    return items_.back()->tensor;
  }
  int cuda_device() const {
    for (const auto& it : items_)
      if (it->present && it->tensor.device == PTE_DEVICE_CUDA) return it->tensor.device_id;
    return -1;
  }
  void* stream() const { return reinterpret_cast<void*>(stream_); }

 private:
  intptr_t stream_;
  Imported::Synced synced_;
  std::vector<std::unique_ptr<Imported>> items_;
};

intptr_t stream_of(const py::object& stream) {
  if (stream.is_none()) return 0;
  return static_cast<intptr_t>(stream.cast<long long>());
}

// Sets the current CUDA device for a scope (no-op without CUDA or for CPU calls).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
#ifdef PTE_WITH_CUDA
    if (device < 0) return;
    check_cuda(cudaGetDevice(&prev_), "cudaGetDevice");
    if (prev_ != device) check_cuda(cudaSetDevice(device), "cudaSetDevice");
    else prev_ = -1;
#else
    (void)device;
#endif
  }
  ~DeviceGuard() {
#ifdef PTE_WITH_CUDA
    if (prev_ >= 0) cudaSetDevice(prev_);
#endif
  }

 private:
  int prev_ = -1;
};

// ---- string keywords -----------------------------------------------------------------------

template <typename E>
struct Choice {
  const char* name;
  E value;
};

template <typename E, size_t N>
E parse(const std::string& s, const char* arg, const Choice<E> (&choices)[N],
        const char* extra = "") {
  std::string allowed;
  for (const auto& c : choices) {
    if (s == c.name) return c.value;
    allowed += std::string(allowed.empty() ? "" : ", ") + "'" + c.name + "'";
  }
  throw py::value_error(std::string(arg) + "='" + s + "': must be one of " + allowed + extra);
}

// The attention vocabularies come from the C API's tables (pte_*_parse), so every front end
// accepts and names the same words.
template <typename E>
E parse_word(pte_status_t (*parse)(const char*, E*), const std::string& s, const char* extra = "") {
  E value{};
  if (parse(s.c_str(), &value) != PTE_SUCCESS)
    throw py::value_error(std::string(pte_last_error()) + extra);
  return value;
}

const Choice<pte_softmax_causal_t> kCausal[] = {{"top_left", PTE_SOFTMAX_CAUSAL_TOP_LEFT},
                                                {"bottom_right", PTE_SOFTMAX_CAUSAL_BOTTOM_RIGHT}};

// ---- workspace --------------------------------------------------------------------------------

// Per-call scratch on the tensors' device (see the header comment).
class Workspace {
 public:
  Workspace(size_t bytes, bool cuda, void* stream) : cuda_(cuda), stream_(stream) {
    if (bytes == 0) return;
#ifdef PTE_WITH_CUDA
    if (cuda) {
      check_cuda(cudaMallocAsync(&ptr_, bytes, static_cast<cudaStream_t>(stream)),
                 "cudaMallocAsync(workspace)");
      return;
    }
#endif
    host_.resize(bytes);
    ptr_ = host_.data();
  }
  ~Workspace() {
#ifdef PTE_WITH_CUDA
    if (cuda_ && ptr_ != nullptr) cudaFreeAsync(ptr_, static_cast<cudaStream_t>(stream_));
#endif
  }
  void* ptr() const { return ptr_; }

 private:
  bool cuda_;
  void* stream_;
  void* ptr_ = nullptr;
  std::vector<unsigned char> host_;
};

// ---- running a C call -------------------------------------------------------------------------

// Runs `call` on the arguments' CUDA device with the GIL released; its status.
template <typename F>
pte_status_t call_nogil(const Args& a, F&& call) {
  DeviceGuard guard(a.cuda_device());
  py::gil_scoped_release nogil;
  return call();
}

// Runs call(p); raises on failure.
template <typename P>
void run(const Args& a, const P& p, pte_status_t (*call)(const P*)) {
  check_status(call_nogil(a, [&] { return call(&p); }));
}

// Runs call(p) with the per-call workspace size(p) asks for, on q's device (see the header
// comment); raises on failure.
template <typename P>
void run(const Args& a, P& p, pte_status_t (*size)(const P*, size_t*),
         pte_status_t (*call)(const P*)) {
  const bool cuda = p.q.device == PTE_DEVICE_CUDA;
  check_status(call_nogil(a, [&] {
    size_t bytes = 0;
    const pte_status_t st = size(&p, &bytes);
    if (st != PTE_SUCCESS) return st;
    Workspace ws(bytes, cuda, p.stream);
    p.workspace = ws.ptr();
    p.workspace_size = bytes;
    return call(&p);
  }));
}

// ---- keywords shared by the attention and decode calls ----------------------------------------

// softmax_scale=None: 1/sqrt(d), d = q's head dim.
double softmax_scale_or_default(const py::object& scale, const pte_tensor_t& q) {
  if (!scale.is_none()) return scale.cast<double>();
  const int64_t d = q.ndim > 0 ? q.shape[q.ndim - 1] : 0;
  if (d <= 0) throw py::value_error("q: head dim must be > 0 to derive softmax_scale");
  return 1.0 / std::sqrt(double(d));
}

// window_size=(left, right).
void parse_window(const py::object& window_size, int64_t* left, int64_t* right) {
  py::sequence w = window_size.cast<py::sequence>();
  if (w.size() != 2)
    throw py::value_error("window_size=" + std::string(py::repr(window_size)) +
                          ": must be a pair (left, right)");
  *left = w[0].cast<int64_t>();
  *right = w[1].cast<int64_t>();
}

// ---- attention --------------------------------------------------------------------------------

struct AttnKw {
  py::object cu_seqlens_q, cu_seqlens_kv, max_seqlen_q, max_seqlen_kv;
  std::string qkv_format, attn_mask_type;
  py::object window_size, softmax_scale;
  double dropout;
  py::object seed, offset;
  std::string backend;
  py::object stream;
  bool deterministic;
  py::object startend_row_indices;  // FlashMask (SPEC §9) or None
};

uint64_t as_u64(const py::object& v, const char* name) {
  if (PyLong_Check(v.ptr()) == 0) throw py::type_error(std::string(name) + ": expected an int");
  // Modulo 2^64, so negative seeds are accepted as their two's complement.
  const unsigned long long u = PyLong_AsUnsignedLongLongMask(v.ptr());
  if (PyErr_Occurred()) throw py::error_already_set();
  return u;
}

// The params of one attention call: q, k, v, out, lse (None: absent) and the keywords, imported
// into `a`.
pte_attn_params_t attn_params(Args& a, const py::object& q, const py::object& k,
                              const py::object& v, const py::object& out, const py::object& lse,
                              const AttnKw& kw) {
  pte_attn_params_t p;
  pte_attn_params_init(&p);
  p.q = a.add(q, "q");
  p.k = a.add(k, "k");
  p.v = a.add(v, "v");
  p.out = a.add(out, "out");
  p.lse = a.add(lse, "lse");
  p.cu_seqlens_q = a.add(kw.cu_seqlens_q, "cu_seqlens_q");
  p.cu_seqlens_kv = a.add(kw.cu_seqlens_kv, "cu_seqlens_kv");
  p.max_seqlen_q = kw.max_seqlen_q.is_none() ? 0 : kw.max_seqlen_q.cast<int64_t>();
  p.max_seqlen_kv = kw.max_seqlen_kv.is_none() ? 0 : kw.max_seqlen_kv.cast<int64_t>();
  p.qkv_format = parse_word(pte_qkv_format_parse, kw.qkv_format);
  p.mask_type = parse_word(pte_mask_type_parse, kw.attn_mask_type,
                           " ('arbitrary' masks run through the unfused path of the layers)");
  if (kw.window_size.is_none())
    p.window_left = p.window_right = -1;
  else
    parse_window(kw.window_size, &p.window_left, &p.window_right);
  p.softmax_scale = softmax_scale_or_default(kw.softmax_scale, p.q);
  p.dropout = float(kw.dropout);
  p.seed = as_u64(kw.seed, "seed");
  p.offset = as_u64(kw.offset, "offset");
  p.deterministic = kw.deterministic ? 1 : 0;
  p.backend = parse_word(pte_backend_parse, kw.backend,
                         " ('unfused' is a path of the Paddle layers, not of the core)");
  p.stream = a.stream();
  p.startend_row_indices = a.add(kw.startend_row_indices, "startend_row_indices");
  return p;
}

void fused_attn_fwd(py::object q, py::object k, py::object v, py::object out, py::object lse,
                    const AttnKw& kw) {
  Args a(stream_of(kw.stream));
  pte_attn_params_t p = attn_params(a, q, k, v, out, lse, kw);
  run(a, p, pte_attn_fwd_workspace_size, pte_attn_fwd);
}

void fused_attn_bwd(py::object q, py::object k, py::object v, py::object out, py::object d_out,
                    py::object lse, py::object d_q, py::object d_k, py::object d_v,
                    const AttnKw& kw) {
  Args a(stream_of(kw.stream));
  pte_attn_params_t p = attn_params(a, q, k, v, out, lse, kw);
  p.d_out = a.add(d_out, "d_out");
  p.d_q = a.add(d_q, "d_q");
  p.d_k = a.add(d_k, "d_k");
  p.d_v = a.add(d_v, "d_v");
  run(a, p, pte_attn_bwd_workspace_size, pte_attn_bwd);
}

// The capability check (pte_attn_check) of one call, without running it: "" when `backend` can
// run it, else the core's reason (NOT_SUPPORTED). Bad arguments (INVALID_ARGUMENT) raise, since
// they are no backend's limitation. backward=True checks the backward pass; its gradient
// tensors are taken to be shaped like q, k, v and out, and a missing lse like the one the call
// needs (the check reads no data).
std::string attn_check(py::object q, py::object k, py::object v, py::object out, py::object lse,
                       const AttnKw& kw, bool backward) {
  Args a(stream_of(kw.stream));
  pte_attn_params_t p = attn_params(a, q, k, v, out, lse, kw);
  if (p.lse.data == nullptr && p.q.data != nullptr && (backward || p.dropout > 0.f)) {
    // The lse these calls need, described from q's shape (float32 [b, h, s_q] / [h, t_q]).
    const pte_tensor_t& q_t = p.q;
    p.lse = q_t;
    p.lse.dtype = PTE_FLOAT32;
    if (p.qkv_format == PTE_QKV_THD && q_t.ndim == 3) {
      p.lse.ndim = 2;
      p.lse.shape[0] = q_t.shape[1];
      p.lse.shape[1] = q_t.shape[0];
    } else if (q_t.ndim == 4) {
      const bool bshd = p.qkv_format == PTE_QKV_BSHD;
      p.lse.ndim = 3;
      p.lse.shape[0] = bshd ? q_t.shape[0] : q_t.shape[1];
      p.lse.shape[1] = q_t.shape[2];
      p.lse.shape[2] = bshd ? q_t.shape[1] : q_t.shape[0];
    }
    for (int i = p.lse.ndim - 1, st = 1; i >= 0; st *= int(p.lse.shape[i]), --i)
      p.lse.strides[i] = st;
  }
  if (backward) {
    p.d_out = p.out;
    p.d_q = p.q;
    p.d_k = p.k;
    p.d_v = p.v;
  }
  const pte_status_t st =
      call_nogil(a, [&] { return pte_attn_check(&p, p.backend, backward ? 1 : 0); });
  if (st == PTE_SUCCESS) return "";
  if (st == PTE_ERROR_NOT_SUPPORTED) return pte_last_error();
  raise_status(st);
}

// ---- softmax ----------------------------------------------------------------------------------

void softmax_fwd(py::object x, py::object y, py::object mask, double scale, py::object causal,
                 py::object stream) {
  Args a(stream_of(stream));
  pte_softmax_params_t p;
  pte_softmax_params_init(&p);
  p.x = a.add(x, "x");
  p.y = a.add(y, "y");
  p.mask = a.add(mask, "mask");
  p.scale = scale;
  p.causal = causal.is_none() ? PTE_SOFTMAX_NO_CAUSAL
                              : parse(causal.cast<std::string>(), "causal", kCausal,
                                      " or None");
  p.stream = a.stream();
  run(a, p, pte_softmax_fwd);
}

void softmax_bwd(py::object y, py::object d_y, py::object d_x, double scale, py::object stream) {
  Args a(stream_of(stream));
  pte_softmax_params_t p;
  pte_softmax_params_init(&p);
  p.y = a.add(y, "y");
  p.d_y = a.add(d_y, "d_y");
  p.d_x = a.add(d_x, "d_x");
  p.scale = scale;
  p.stream = a.stream();
  run(a, p, pte_softmax_bwd);
}

// ---- mask -> cu_seqlens -----------------------------------------------------------------------

// `check`: None = check where it is free (CPU masks), never on CUDA; True = check on CUDA too
// (one device->host copy and a stream sync); False = never. `valid` (int32 [1]) receives the
// verdict instead, read by nobody here (then `check` must not be True).
void mask_to_cu_seqlens(py::object mask, py::object cu_q, py::object cu_kv, py::object mask_kv,
                        py::object valid, py::object check_arg, py::object stream) {
  Args a(stream_of(stream));
  pte_seqlens_params_t p;
  pte_seqlens_params_init(&p);
  p.mask = a.add(mask, "mask");
  p.mask_kv = a.add(mask_kv, "mask_kv");
  p.cu_seqlens_q = a.add(cu_q, "cu_seqlens_q");
  p.cu_seqlens_kv = a.add(cu_kv, "cu_seqlens_kv");
  p.stream = a.stream();
  const bool cuda = p.mask.device == PTE_DEVICE_CUDA;
  const bool own_valid = valid.is_none();
  if (!check_arg.is_none() && !PyBool_Check(check_arg.ptr()))
    throw py::type_error("check=" + std::string(py::repr(check_arg)) +
                         ": must be None, True or False");
  const bool check = check_arg.is_none() ? (own_valid && !cuda) : check_arg.cast<bool>();
  if (check && !own_valid)
    throw py::value_error("check=True with valid=...: the verdict goes to `valid` for the caller "
                          "to read; pass one of them");
  if (!own_valid) p.valid = a.add(valid, "valid");
  DeviceGuard guard(a.cuda_device());
  int32_t host_valid = 1;
  pte_status_t st;
  std::string cuda_error;
  {
    py::gil_scoped_release nogil;
    [[maybe_unused]] void* dev_valid = nullptr;
    if (own_valid) {
      // An internal int32 [1] for the verdict, on the mask's device.
      p.valid = p.mask;
      p.valid.dtype = PTE_INT32;
      p.valid.ndim = 1;
      p.valid.shape[0] = 1;
      p.valid.strides[0] = 1;
      p.valid.data = &host_valid;
#ifdef PTE_WITH_CUDA
      if (cuda) {
        // Stream-ordered, so the call stays capturable in a CUDA graph when nothing is read.
        cudaError_t e = cudaMallocAsync(&dev_valid, sizeof(int32_t),
                                        static_cast<cudaStream_t>(p.stream));
        if (e != cudaSuccess) cuda_error = std::string("cudaMallocAsync: ") + cudaGetErrorString(e);
        p.valid.data = dev_valid;
      }
#endif
    }
    st = cuda_error.empty() ? pte_mask_to_cu_seqlens(&p) : PTE_SUCCESS;
#ifdef PTE_WITH_CUDA
    if (dev_valid != nullptr) {
      cudaStream_t s = static_cast<cudaStream_t>(p.stream);
      if (check && st == PTE_SUCCESS && cuda_error.empty()) {
        // check=True on CUDA: the one documented device->host copy (and sync).
        cudaError_t e = cudaMemcpyAsync(&host_valid, dev_valid, sizeof(int32_t),
                                        cudaMemcpyDeviceToHost, s);
        if (e == cudaSuccess) e = cudaStreamSynchronize(s);
        if (e != cudaSuccess) cuda_error = std::string("reading the verdict: ") + cudaGetErrorString(e);
      }
      cudaFreeAsync(dev_valid, s);
    }
#endif
  }
  if (!cuda_error.empty()) throw std::runtime_error(cuda_error);
  check_status(st);
  if (check && host_valid == 0)
    throw py::value_error(
        "mask is not right padding (left padding, holes, or a full mask that is not the outer OR "
        "of a query and a key padding mask); use attn_mask_type=\"arbitrary\" for such a mask");
}

// ---- decode ---------------------------------------------------------------------------------

void decode_attn(py::object q, py::object k_cache, py::object v_cache, py::object cache_seqlens,
                 py::object out, py::object k_new, py::object v_new, py::object block_table,
                 py::object lse, py::object softmax_scale, py::object window_size, int num_splits,
                 const std::string& backend, py::object stream) {
  Args a(stream_of(stream));
  pte_decode_params_t p;
  pte_decode_params_init(&p);
  p.q = a.add(q, "q");
  p.k_cache = a.add(k_cache, "k_cache");
  p.v_cache = a.add(v_cache, "v_cache");
  p.cache_seqlens = a.add(cache_seqlens, "cache_seqlens");
  p.out = a.add(out, "out");
  p.k_new = a.add(k_new, "k_new");
  p.v_new = a.add(v_new, "v_new");
  p.block_table = a.add(block_table, "block_table");
  p.lse = a.add(lse, "lse");
  p.softmax_scale = softmax_scale_or_default(softmax_scale, p.q);
  parse_window(window_size, &p.window_left, &p.window_right);
  p.num_splits = num_splits;
  p.backend = parse_word(pte_backend_parse, backend);
  p.stream = a.stream();
  // cudaMallocAsync on the call's stream is capturable: a CUDA graph records it as a memory node,
  // so a captured decode step replays without host work.
  run(a, p, pte_decode_workspace_size, pte_decode_attn);
}

// ---- lse merge (context parallelism) -------------------------------------------------------

void attn_merge(py::object out_a, py::object lse_a, py::object out_b, py::object lse_b,
                py::object out, py::object lse, const std::string& qkv_format,
                py::object stream) {
  Args a(stream_of(stream));
  pte_merge_params_t p;
  pte_merge_params_init(&p);
  p.out_a = a.add(out_a, "out_a");
  p.lse_a = a.add(lse_a, "lse_a");
  p.out_b = a.add(out_b, "out_b");
  p.lse_b = a.add(lse_b, "lse_b");
  p.out = a.add(out, "out");
  p.lse = a.add(lse, "lse");
  p.qkv_format = parse_word(pte_qkv_format_parse, qkv_format);
  p.stream = a.stream();
  run(a, p, pte_attn_merge);
}

// ---- backends -------------------------------------------------------------------------------

py::dict backends() {
  py::dict d;
  // Every concrete backend, as the C API names them (value 0 is auto).
  for (int i = PTE_BACKEND_AUTO + 1; pte_backend_name(pte_backend_t(i)) != nullptr; ++i) {
    const pte_backend_t b = pte_backend_t(i);
    const char* reason = nullptr;
    const int ok = pte_backend_available(b, &reason);
    py::dict e;
    e["available"] = ok != 0;
    e["reason"] = std::string(ok ? "" : (reason ? reason : ""));
    d[pte_backend_name(b)] = e;
  }
  return d;
}

}  // namespace pyb
}  // namespace pte

PYBIND11_MODULE(paddle_te_core, m) {
  using namespace pte::pyb;
  namespace py = pybind11;
  m.doc() = "paddle_te core kernels over DLPack tensors (numpy, torch, cupy, paddle). SPEC §5.";
  m.attr("__version__") = pte_version();
#ifdef PTE_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif

  auto attn_kw = [](py::object cu_q, py::object cu_kv, py::object mq, py::object mkv,
                    std::string fmt, std::string mt, py::object win, py::object scale,
                    double dropout, py::object seed, py::object offset, std::string backend,
                    py::object stream, bool deterministic, py::object startend) {
    return AttnKw{cu_q, cu_kv, mq, mkv, fmt, mt, win, scale, dropout, seed, offset, backend,
                  stream, deterministic, startend};
  };

  m.def(
      "fused_attn_fwd",
      [attn_kw](py::object q, py::object k, py::object v, py::object out, py::object lse,
                py::object cu_q, py::object cu_kv, py::object mq, py::object mkv,
                std::string fmt, std::string mt, py::object win, py::object scale,
                double dropout, py::object seed, py::object offset, std::string backend,
                py::object stream, py::object startend) {
        fused_attn_fwd(q, k, v, out, lse,
                       attn_kw(cu_q, cu_kv, mq, mkv, fmt, mt, win, scale, dropout, seed, offset,
                               backend, stream, false, startend));
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::kw_only(),
      py::arg("lse") = py::none(), py::arg("cu_seqlens_q") = py::none(),
      py::arg("cu_seqlens_kv") = py::none(), py::arg("max_seqlen_q") = py::none(),
      py::arg("max_seqlen_kv") = py::none(), py::arg("qkv_format") = "bshd",
      py::arg("attn_mask_type") = "no_mask", py::arg("window_size") = py::make_tuple(-1, -1),
      py::arg("softmax_scale") = py::none(), py::arg("dropout") = 0.0, py::arg("seed") = 0,
      py::arg("offset") = 0, py::arg("backend") = "auto", py::arg("stream") = py::none(),
      py::arg("startend_row_indices") = py::none(),
      "Fused attention forward into `out` (and `lse` float32 [b, h, s_q] / [h, t_q]); "
      "startend_row_indices: FlashMask column bounds, int32 [b, mask_heads, s_kv, C].");

  m.def(
      "fused_attn_bwd",
      [attn_kw](py::object q, py::object k, py::object v, py::object out, py::object d_out,
                py::object lse, py::object d_q, py::object d_k, py::object d_v, py::object cu_q,
                py::object cu_kv, py::object mq, py::object mkv, std::string fmt,
                std::string mt, py::object win, py::object scale, double dropout,
                py::object seed, py::object offset, std::string backend, py::object stream,
                bool deterministic, py::object startend) {
        fused_attn_bwd(q, k, v, out, d_out, lse, d_q, d_k, d_v,
                       attn_kw(cu_q, cu_kv, mq, mkv, fmt, mt, win, scale, dropout, seed, offset,
                               backend, stream, deterministic, startend));
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::arg("d_out"), py::arg("lse"),
      py::arg("d_q"), py::arg("d_k"), py::arg("d_v"), py::kw_only(),
      py::arg("cu_seqlens_q") = py::none(), py::arg("cu_seqlens_kv") = py::none(),
      py::arg("max_seqlen_q") = py::none(), py::arg("max_seqlen_kv") = py::none(),
      py::arg("qkv_format") = "bshd", py::arg("attn_mask_type") = "no_mask",
      py::arg("window_size") = py::make_tuple(-1, -1), py::arg("softmax_scale") = py::none(),
      py::arg("dropout") = 0.0, py::arg("seed") = 0, py::arg("offset") = 0,
      py::arg("backend") = "auto", py::arg("stream") = py::none(),
      py::arg("deterministic") = false, py::arg("startend_row_indices") = py::none(),
      "Fused attention backward into d_q, d_k, d_v.");

  m.def(
      "attn_check",
      [attn_kw](py::object q, py::object k, py::object v, py::object out, py::object lse,
                py::object cu_q, py::object cu_kv, py::object mq, py::object mkv,
                std::string fmt, std::string mt, py::object win, py::object scale,
                double dropout, std::string backend, bool backward, py::object startend) {
        return attn_check(q, k, v, out, lse,
                          attn_kw(cu_q, cu_kv, mq, mkv, fmt, mt, win, scale, dropout,
                                  py::int_(0), py::int_(0), backend, py::none(), false, startend),
                          backward);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"), py::kw_only(),
      py::arg("lse") = py::none(), py::arg("cu_seqlens_q") = py::none(),
      py::arg("cu_seqlens_kv") = py::none(), py::arg("max_seqlen_q") = py::none(),
      py::arg("max_seqlen_kv") = py::none(), py::arg("qkv_format") = "bshd",
      py::arg("attn_mask_type") = "no_mask", py::arg("window_size") = py::make_tuple(-1, -1),
      py::arg("softmax_scale") = py::none(), py::arg("dropout") = 0.0,
      py::arg("backend") = "auto", py::arg("backward") = false,
      py::arg("startend_row_indices") = py::none(),
      "The capability check of a fused_attn_fwd (backward=True: fused_attn_bwd) call, without "
      "running it: '' when `backend` can run it, else the reason. Bad arguments raise "
      "ValueError as the call would.");

  m.def("softmax_fwd", &softmax_fwd, py::arg("x"), py::arg("y"), py::kw_only(),
        py::arg("mask") = py::none(), py::arg("scale") = 1.0, py::arg("causal") = py::none(),
        py::arg("stream") = py::none(),
        "y = softmax(scale * x) over the last axis of x [b, h, s_q, s_kv]; mask bool "
        "[b or 1, 1, s_q, s_kv], True = masked; causal None | 'top_left' | 'bottom_right'.");
  m.def("softmax_bwd", &softmax_bwd, py::arg("y"), py::arg("d_y"), py::arg("d_x"),
        py::kw_only(), py::arg("scale") = 1.0, py::arg("stream") = py::none(),
        "d_x = scale * y * (d_y - sum(d_y * y)).");
  m.def("mask_to_cu_seqlens", &mask_to_cu_seqlens, py::arg("mask"), py::arg("cu_seqlens_q"),
        py::arg("cu_seqlens_kv"), py::kw_only(), py::arg("mask_kv") = py::none(),
        py::arg("valid") = py::none(), py::arg("check") = py::none(),
        py::arg("stream") = py::none(),
        "Padding mask(s) -> int32 cu_seqlens [b+1]. Never copies to the host on CUDA unless "
        "check=True. check=None (default): a CPU mask that is not right padding raises "
        "ValueError, a CUDA mask is not checked; check=True: CUDA too (one device->host copy and "
        "a sync); check=False: never. `valid` (int32 [1]) receives the verdict (1 = right "
        "padding) for the caller to read when it likes; capturable in a CUDA graph.");
  m.def("decode_attn", &decode_attn, py::arg("q"), py::arg("k_cache"), py::arg("v_cache"),
        py::arg("cache_seqlens"), py::arg("out"), py::kw_only(), py::arg("k_new") = py::none(),
        py::arg("v_new") = py::none(), py::arg("block_table") = py::none(),
        py::arg("lse") = py::none(), py::arg("softmax_scale") = py::none(),
        py::arg("window_size") = py::make_tuple(-1, 0), py::arg("num_splits") = 0,
        py::arg("backend") = "auto", py::arg("stream") = py::none(),
        "Attention of q [b, s_q, h, d] over a KV cache into `out` [b, s_q, h, d_v] (and `lse` "
        "float32 [b, h, s_q]); k_new/v_new are appended in place at cache_seqlens (SPEC §10).");
  m.def("attn_merge", &attn_merge, py::arg("out_a"), py::arg("lse_a"), py::arg("out_b"),
        py::arg("lse_b"), py::arg("out"), py::arg("lse"), py::kw_only(),
        py::arg("qkv_format") = "bshd", py::arg("stream") = py::none(),
        "Merge two partial attention results through their lse, in float32: out/lse receive "
        "the result over both key sets (out may alias out_a, lse may alias lse_a); rows where "
        "both parts saw no key give 0 and -inf (SPEC §11, paddle_te/merge.h).");
  m.def("backends", &backends,
        "{name: {'available': bool, 'reason': str}} for this build and the current device.");
}
