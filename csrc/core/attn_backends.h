// The fused-attention backends as one table. The core (api_attention.cc) validates a call, then
// asks this table which backend runs it, how much workspace it needs, and runs it: nothing else
// in the core names a backend. A new backend, or an arch variant that is a backend of its own,
// is one entry in attn_backends.cc (and one value of pte_backend_t); an arch variant behind an
// existing backend (csrc/cuda/attn/sm90/ behind 'flash') is chosen inside that backend's entry
// points and needs no entry here.
#pragma once

#include <cstddef>
#include <string>

#include "core/problem.h"

namespace pte {

struct AttnBackend {
  pte_backend_t id;       // its name is pte_backend_name(id)
  pte_device_t device;    // where the tensors must live
  // Draws the documented Philox keep mask (attention.h): `auto` puts these first when dropout is
  // on, so forward and backward come from backends that agree on the mask.
  bool philox_dropout;
  // Null when the backend is not compiled into this build; `not_built` then says why.
  const char* not_built;
  // "" when the backend can run p, else the reason (static or thread-local text).
  const char* (*check)(const AttnProblem& p, bool backward);
  size_t (*fwd_workspace)(const AttnProblem& p);  // bytes on the tensors' device
  size_t (*bwd_workspace)(const AttnProblem& p);
  void (*fwd)(const AttnProblem& p);
  void (*bwd)(const AttnProblem& p);
  // "" when this build and the current machine can run the backend at all, else why.
  std::string (*available)();
};

// Every concrete backend, in `auto`'s order without dropout (fastest first, docs/backends.md);
// *n receives the count.
const AttnBackend* attn_backends(size_t* n);

// The entry of a concrete backend; null for PTE_BACKEND_AUTO and values outside the enum.
const AttnBackend* find_attn_backend(pte_backend_t id);

}  // namespace pte
