"""A tiny PaddleFormers Llama trained on packed documents with FlashMask, through paddle_te.

Pretraining packs several documents into each row of a batch; a document must not attend to the
one before it. PaddleFormers hands such a batch to the attention as FlashMask column bounds
(``attn_mask_startend_row_indices``, int32 ``[b, 1, s, 1]``: in key column j, the rows from the
end of j's document on are masked out). With ``_attn_implementation="paddle_te"`` these run
through ``paddle_te.flashmask_attention`` (key tiles a document never sees are skipped); with
``"eager"`` PaddleFormers expands them into a dense ``[b, 1, s, s]`` mask.

The data: documents of random length, each an arithmetic progression of tokens modulo the vocab
(``a, a+d, a+2d, ...``) with a random start and step -- unpredictable at the first two tokens
of a document, predictable after, but only if attention stays inside the document. Both models
start from the same weights and see the same batches (no dropout), so their loss curves must
coincide; the script prints both and the largest difference, and writes
``<out>/paddleformers_loss.png`` and ``<out>/paddleformers_summary.json``.

    python examples/paddleformers_flashmask.py               # 150 steps (a minute on 2 CPU cores)
    python examples/paddleformers_flashmask.py --steps 5     # a smoke run
"""

import argparse
import json
import os
import sys
import time
import warnings

os.environ.setdefault("GLOG_minloglevel", "2")
warnings.filterwarnings("ignore", message="No ccache found")
warnings.filterwarnings("ignore", message="Setuptools is replacing distutils")

import numpy as np  # noqa: E402
import paddle  # noqa: E402

try:
    import paddle_te  # noqa: E402
except ImportError:  # a source checkout built in place
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import paddle_te  # noqa: E402

VOCAB = 64


def make_batch(rng, batch, seq_len):
    """input ids [b, s], labels [b, s] (-100 where no target), position ids restarting at each
    document, and the FlashMask bounds of the documents (int32 [b, 1, s, 1])."""
    ids = np.zeros((batch, seq_len + 1), np.int64)
    positions = np.zeros((batch, seq_len), np.int64)
    cus = []
    for r in range(batch):
        cu, pos = [0], 0
        while pos < seq_len + 1:
            n = int(min(rng.integers(6, 24), seq_len + 1 - pos))
            start, step = rng.integers(0, VOCAB), rng.integers(1, 8)
            ids[r, pos:pos + n] = (start + step * np.arange(n)) % VOCAB
            pos += n
            cu.append(min(pos, seq_len))
        cu = sorted(set(cu))
        cus.append(cu)
        for a, e in zip(cu[:-1], cu[1:]):
            positions[r, a:e] = np.arange(e - a)
    labels = ids[:, 1:].copy()
    for r, cu in enumerate(cus):  # the last token of a document does not predict the next one
        for e in cu[1:-1]:
            labels[r, e - 1] = -100
    bounds = paddle_te.masks.causal_document_mask(cus, seq_len)
    return (paddle.to_tensor(ids[:, :-1]), paddle.to_tensor(labels), paddle.to_tensor(positions),
            bounds)


def build(impl, seed):
    from paddleformers.transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, fuse_rms_norm=False, dtype="float32")
    config._attn_implementation = impl  # set before the model is built
    paddle.seed(seed)
    return LlamaForCausalLM(config)


def loss_of(model, ids, labels, positions, bounds):
    logits = model(input_ids=ids, position_ids=positions, attn_mask_startend_row_indices=bounds,
                   return_dict=True).logits
    return paddle.nn.functional.cross_entropy(logits.reshape([-1, VOCAB]), labels.reshape([-1]),
                                              ignore_index=-100)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=96)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--out", default="out")
    args = parser.parse_args(argv)
    paddle.set_device("cpu")

    paddle_te.integrations.paddleformers.register()
    models = {impl: build(impl, seed=0) for impl in ("paddle_te", "eager")}
    models["eager"].set_state_dict(models["paddle_te"].state_dict())
    optims = {impl: paddle.optimizer.AdamW(args.lr, parameters=m.parameters())
              for impl, m in models.items()}
    losses = {impl: [] for impl in models}
    seconds = {impl: 0.0 for impl in models}
    rng = np.random.default_rng(0)
    for step in range(args.steps):
        batch = make_batch(rng, args.batch, args.seq_len)
        for impl, model in models.items():
            t0 = time.perf_counter()
            loss = loss_of(model, *batch)
            loss.backward()
            optims[impl].step()
            optims[impl].clear_grad()
            seconds[impl] += time.perf_counter() - t0
            losses[impl].append(float(loss))
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            print(f"step {step:4d}   paddle_te {losses['paddle_te'][-1]:.4f}   "
                  f"eager {losses['eager'][-1]:.4f}")

    diff = float(np.max(np.abs(np.subtract(losses["paddle_te"], losses["eager"]))))
    summary = {
        "steps": args.steps, "batch": args.batch, "seq_len": args.seq_len,
        "first_loss": losses["paddle_te"][0], "last_loss": losses["paddle_te"][-1],
        "max_abs_loss_difference": diff,
        "seconds": seconds, "losses": losses,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "paddleformers_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(losses["eager"], label="eager (dense mask)", linewidth=3, alpha=0.5)
        ax.plot(losses["paddle_te"], label="paddle_te (FlashMask)", linewidth=1)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("tiny Llama on packed documents")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(args.out, "paddleformers_loss.png"), dpi=120)
    except ImportError:
        pass
    print(f"\nloss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f} over {args.steps} steps; "
          f"largest |paddle_te - eager| = {diff:.2e}")
    print(f"time: paddle_te {seconds['paddle_te']:.1f} s, eager {seconds['eager']:.1f} s")
    if diff > 1e-3:
        raise SystemExit(f"the loss curves differ by {diff:.2e}")
    return summary


if __name__ == "__main__":
    main()
