/* paddle_te C API: the whole public surface. */
#ifndef PADDLE_TE_PADDLE_TE_H_
#define PADDLE_TE_PADDLE_TE_H_

#include "paddle_te/common.h"
#include "paddle_te/attention.h"
#include "paddle_te/softmax.h"
#include "paddle_te/seqlens.h"
#include "paddle_te/decode.h"
#include "paddle_te/merge.h"

#endif /* PADDLE_TE_PADDLE_TE_H_ */
