// The vocabularies of the attention API, one table each (attention.h): the core's messages, the
// Paddle ops and the pybind11 module all spell layouts, mask types and backends from here.
#include <cstring>
#include <string>

#include "core/api_common.h"
#include "paddle_te/attention.h"

namespace pte {
namespace {

template <typename E>
struct Word {
  E value;
  const char* name;
};

// Indexed by the enum value (asserted below), so name lookup is a bounds check and an index.
const Word<pte_qkv_format_t> kFormats[] = {
    {PTE_QKV_BSHD, "bshd"}, {PTE_QKV_SBHD, "sbhd"}, {PTE_QKV_THD, "thd"}};
const Word<pte_mask_type_t> kMaskTypes[] = {
    {PTE_MASK_NO_MASK, "no_mask"},
    {PTE_MASK_PADDING, "padding"},
    {PTE_MASK_CAUSAL, "causal"},
    {PTE_MASK_PADDING_CAUSAL, "padding_causal"},
    {PTE_MASK_CAUSAL_BOTTOM_RIGHT, "causal_bottom_right"},
    {PTE_MASK_PADDING_CAUSAL_BOTTOM_RIGHT, "padding_causal_bottom_right"}};
const Word<pte_backend_t> kBackends[] = {{PTE_BACKEND_AUTO, "auto"},
                                         {PTE_BACKEND_FLASH, "flash"},
                                         {PTE_BACKEND_CUDNN, "cudnn"},
                                         {PTE_BACKEND_CPU, "cpu"}};
static_assert(sizeof(kBackends) / sizeof(kBackends[0]) == PTE_BACKEND_COUNT,
              "one name per backend");

template <typename E, size_t N>
const char* name_of(const Word<E> (&words)[N], E value) {
  const auto i = static_cast<size_t>(value);
  return i < N && words[i].value == value ? words[i].name : nullptr;
}

template <typename E, size_t N>
void parse(const Word<E> (&words)[N], const char* arg, const char* name, E* out) {
  PTE_CHECK(out != nullptr, "out: null pointer");
  PTE_CHECK(name != nullptr, arg, ": null pointer");
  std::string allowed;
  for (const Word<E>& w : words) {
    if (std::strcmp(name, w.name) == 0) {
      *out = w.value;
      return;
    }
    allowed += str(allowed.empty() ? "" : ", ", "'", w.name, "'");
  }
  PTE_CHECK(false, arg, "='", name, "': must be one of ", allowed);
}

}  // namespace
}  // namespace pte

extern "C" {

const char* pte_qkv_format_name(pte_qkv_format_t format) {
  return pte::name_of(pte::kFormats, format);
}
const char* pte_mask_type_name(pte_mask_type_t mask_type) {
  return pte::name_of(pte::kMaskTypes, mask_type);
}
const char* pte_backend_name(pte_backend_t backend) {
  return pte::name_of(pte::kBackends, backend);
}

pte_status_t pte_qkv_format_parse(const char* name, pte_qkv_format_t* out) {
  return pte::api_guard([&] { pte::parse(pte::kFormats, "qkv_format", name, out); });
}
pte_status_t pte_mask_type_parse(const char* name, pte_mask_type_t* out) {
  return pte::api_guard([&] { pte::parse(pte::kMaskTypes, "attn_mask_type", name, out); });
}
pte_status_t pte_backend_parse(const char* name, pte_backend_t* out) {
  return pte::api_guard([&] { pte::parse(pte::kBackends, "backend", name, out); });
}

}  // extern "C"
