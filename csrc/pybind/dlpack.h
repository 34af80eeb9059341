// The DLPack ABI (https://dmlc.github.io/dlpack/latest/c_api.html), the unversioned form that
// every producer returns from __dlpack__() when the consumer asks for no max_version. Written
// out here from the published ABI so the module needs no extra dependency; layouts must not
// change (they are a stable C ABI, v0.8).
#pragma once

#include <cstdint>

namespace pte {
namespace dlpack {

enum DeviceType : int32_t {
  kDLCPU = 1,
  kDLCUDA = 2,
  kDLCUDAHost = 3,  // pinned host memory: addressable from the host
  kDLCUDAManaged = 13,
};

enum DataTypeCode : uint8_t {
  kDLInt = 0,
  kDLUInt = 1,
  kDLFloat = 2,
  kDLBfloat = 4,
  kDLBool = 6,
};

struct DLDevice {
  int32_t device_type;
  int32_t device_id;
};

struct DLDataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};

struct DLTensor {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; null = compact row-major
  uint64_t byte_offset;
};

struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};

// PyCapsule names of the protocol: a consumer renames the capsule once it owns the tensor, so
// the capsule's own destructor no longer frees it; the consumer calls `deleter` when done.
constexpr const char* kCapsuleName = "dltensor";
constexpr const char* kUsedCapsuleName = "used_dltensor";

}  // namespace dlpack
}  // namespace pte
