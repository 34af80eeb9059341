"""paddle_te's main job (SPEC §6): train a small encoder-decoder transformer built from
paddle_te layers, check it against the same model on paddle.nn layers, and serve it.

The task is sequence reversal: the source is a random token sequence of variable length
(right-padded within each batch), the target is the same tokens reversed, then EOS.

    encoder  2 x paddle_te.nn.TransformerLayer(layer_type="encoder",
                                                self_attn_mask_type="padding")
    decoder  2 x paddle_te.nn.TransformerLayer(layer_type="decoder",
                                                self_attn_mask_type="padding_causal",
                                                window_size=(WINDOW, 0),        # sliding window
                                                enc_dec_attn_mask_type="padding")

Steps:
  1. build the paddle_te model; copy its initial weights into the same model built on
     paddle.nn.TransformerEncoderLayer / TransformerDecoderLayer (normalize_before=True) and
     check that both give the same logits;
  2. train both in dygraph on the same batches (dropout 0, so the loss curves must match);
  3. train the paddle_te model again in static mode (paddle.static Program + Executor +
     optimizer.minimize) from the same initial weights;
  4. measure accuracy (teacher-forced tokens, greedy-decoded sequences) on held-out data;
  5. paddle.jit.save the trained paddle_te model, reload it with paddle.inference (after
     `import paddle_te`, which registers the custom ops) and greedy-decode a few examples;
     then decode them again token by token through paddle.inference with KV caches that
     paddle_te.ops.decode_attn appends to in place (no re-run, no cache copies);
  6. print a summary table, write the loss curves to <out>/demo_loss.png and the numbers to
     <out>/demo_summary.json.

    python examples/demo.py                  # full run (a few minutes on 2 CPU cores)
    python examples/demo.py --quick          # a smoke run (tests/test_demo.py)
    python examples/demo.py --steps 500 --device cpu --out /tmp/demo
"""

import argparse
import json
import os
import re
import sys
import time
import warnings

# Before Paddle is imported: keep its C++ INFO/WARNING log lines out of the demo's output
# (set GLOG_minloglevel=0 to see them), and its build-tool notice about ccache.
os.environ.setdefault("GLOG_minloglevel", "2")
warnings.filterwarnings("ignore", message="No ccache found")

import numpy as np  # noqa: E402

import paddle  # noqa: E402
import paddle.nn.functional as F  # noqa: E402
from paddle import nn  # noqa: E402

try:
    import paddle_te  # noqa: E402  (registers the custom ops: needed before paddle.inference)
except ImportError:
    # Run from a source checkout whose build is in place (python setup.py build_ext --inplace).
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import paddle_te  # noqa: E402
import paddle_te.nn as te_nn  # noqa: E402

# ---- the synthetic task ------------------------------------------------------------------------
PAD, BOS, EOS = 0, 1, 2
FIRST_TOKEN = 3  # tokens FIRST_TOKEN .. vocab-1 carry content


class Config:
    vocab = 16
    min_len = 3
    max_len = 12
    hidden = 64
    heads = 4
    ffn = 128
    enc_layers = 2
    dec_layers = 2
    window = 4  # decoder self-attention sees itself and the WINDOW tokens before it
    batch = 32
    lr = 2e-3
    eval_examples = 256
    seed = 2024


def make_batch(rng, cfg, batch):
    """Random sequences of variable length, right-padded to this batch's longest.

    Returns int64 arrays src [b, s_src], tgt_in [b, s_src + 1] (BOS + reversed),
    tgt_out [b, s_src + 1] (reversed + EOS); PAD everywhere past each sequence.
    """
    lengths = rng.integers(cfg.min_len, cfg.max_len + 1, size=batch)
    s = int(lengths.max())
    src = np.full((batch, s), PAD, np.int64)
    tgt_in = np.full((batch, s + 1), PAD, np.int64)
    tgt_out = np.full((batch, s + 1), PAD, np.int64)
    for i, n in enumerate(lengths):
        seq = rng.integers(FIRST_TOKEN, cfg.vocab, size=n)
        src[i, :n] = seq
        tgt_in[i, 0] = BOS
        tgt_in[i, 1 : n + 1] = seq[::-1]
        tgt_out[i, :n] = seq[::-1]
        tgt_out[i, n] = EOS
    return src, tgt_in, tgt_out


# ---- the model, on paddle_te layers or on paddle.nn layers -------------------------------------
class Seq2Seq(nn.Layer):
    """Token + position embeddings, an encoder and a decoder stack, final LayerNorms, a vocab
    projection. `impl` picks the layers: "paddle_te" or "paddle" (paddle.nn.Transformer*Layer
    with normalize_before=True); everything around the layers is the same code."""

    def __init__(self, cfg, impl):
        super().__init__()
        self.cfg = cfg
        self.impl = impl
        self.tok_emb = nn.Embedding(cfg.vocab, cfg.hidden)
        self.pos_emb = nn.Embedding(cfg.max_len + 2, cfg.hidden)
        if impl == "paddle_te":
            self.encoder = nn.LayerList([
                te_nn.TransformerLayer(
                    cfg.hidden, cfg.ffn, cfg.heads, layer_type="encoder",
                    self_attn_mask_type="padding", hidden_dropout=0.0, attention_dropout=0.0)
                for _ in range(cfg.enc_layers)
            ])
            self.decoder = nn.LayerList([
                te_nn.TransformerLayer(
                    cfg.hidden, cfg.ffn, cfg.heads, layer_type="decoder",
                    self_attn_mask_type="padding_causal", window_size=(cfg.window, 0),
                    enc_dec_attn_mask_type="padding", hidden_dropout=0.0,
                    attention_dropout=0.0)
                for _ in range(cfg.dec_layers)
            ])
        elif impl == "paddle":
            self.encoder = nn.LayerList([
                nn.TransformerEncoderLayer(
                    cfg.hidden, cfg.heads, cfg.ffn, dropout=0.0, activation="gelu",
                    attn_dropout=0.0, act_dropout=0.0, normalize_before=True)
                for _ in range(cfg.enc_layers)
            ])
            self.decoder = nn.LayerList([
                nn.TransformerDecoderLayer(
                    cfg.hidden, cfg.heads, cfg.ffn, dropout=0.0, activation="gelu",
                    attn_dropout=0.0, act_dropout=0.0, normalize_before=True)
                for _ in range(cfg.dec_layers)
            ])
        else:
            raise ValueError(f"impl={impl!r}: must be 'paddle_te' or 'paddle'")
        self.enc_norm = nn.LayerNorm(cfg.hidden)
        self.dec_norm = nn.LayerNorm(cfg.hidden)
        self.head = nn.Linear(cfg.hidden, cfg.vocab)

    def embed(self, tokens):
        # tokens: [b, s] int64
        # paddle.shape: the length is dynamic in static graphs ([None, None] inputs).
        pos = paddle.arange(paddle.shape(tokens)[1], dtype="int64").unsqueeze(0)  # [1, s]
        return self.tok_emb(tokens) + self.pos_emb(pos)

    def forward(self, src, tgt_in):
        """src [b, s_src], tgt_in [b, s_tgt] int64 -> logits [b, s_tgt, vocab]."""
        src_pad = (src == PAD).unsqueeze([1, 2])  # [b, 1, 1, s_src], True = padding
        tgt_pad = (tgt_in == PAD).unsqueeze([1, 2])  # [b, 1, 1, s_tgt]
        x = self.embed(src)
        y = self.embed(tgt_in)
        if self.impl == "paddle_te":
            # Canonical masks (True = masked out); padding masks become cu_seqlens inside.
            for layer in self.encoder:
                x = layer(x, attention_mask=src_pad)
            memory = self.enc_norm(x)
            for layer in self.decoder:
                y = layer(y, attention_mask=tgt_pad, encoder_output=memory,
                          enc_dec_attn_mask=(tgt_pad, src_pad))
        else:
            # Paddle's convention: True = keep. Padded query rows attend normally here (paddle_te
            # gives them 0); they never reach a real token or the loss, so the models agree.
            src_keep = paddle.logical_not(src_pad)
            self_keep = self.window_keep(paddle.shape(tgt_in)[1])  # [1, 1, s_tgt, s_tgt]
            for layer in self.encoder:
                x = layer(x, src_mask=src_keep)
            memory = self.enc_norm(x)
            for layer in self.decoder:
                y = layer(y, memory, tgt_mask=self_keep, memory_mask=src_keep)
        return self.head(self.dec_norm(y))

    def window_keep(self, s):
        """Causal sliding window for paddle.nn: query i keeps keys i - window .. i."""
        i = paddle.arange(s, dtype="int64").unsqueeze(1)
        j = paddle.arange(s, dtype="int64").unsqueeze(0)
        keep = paddle.logical_and(j <= i, j >= i - self.cfg.window)
        return keep.unsqueeze([0, 1])


# paddle_te.nn.TransformerLayer parameter names -> paddle.nn.Transformer{Encoder,Decoder}Layer's.
_ENC_NAMES = [("input_layernorm", "norm1"), ("self_attention", "self_attn"),
              ("mlp_layernorm", "norm2"), ("fc1", "linear1"), ("fc2", "linear2")]
_DEC_NAMES = [("input_layernorm", "norm1"), ("self_attention", "self_attn"),
              ("inter_layernorm", "norm2"), ("inter_attention", "cross_attn"),
              ("mlp_layernorm", "norm3"), ("fc1", "linear1"), ("fc2", "linear2")]


def te_to_paddle_name(name):
    m = re.match(r"(encoder|decoder)\.(\d+)\.([a-z_0-9]+)(\..*)$", name)
    if not m:
        return name  # embeddings, final norms, head: same names in both models
    stack, idx, sub, rest = m.groups()
    table = dict(_ENC_NAMES if stack == "encoder" else _DEC_NAMES)
    return f"{stack}.{idx}.{table[sub]}{rest}"


def copy_weights(state, target):
    """Load a paddle_te model's state (name -> ndarray) into a paddle.nn model, checking that
    every parameter of both sides is used exactly once with the same shape."""
    mapped = {te_to_paddle_name(k): v for k, v in state.items()}
    own = target.state_dict()
    if set(mapped) != set(own):
        raise RuntimeError(
            f"weight names differ: only in paddle_te {sorted(set(mapped) - set(own))}, "
            f"only in paddle.nn {sorted(set(own) - set(mapped))}")
    for k, v in own.items():
        if list(v.shape) != list(mapped[k].shape):
            raise RuntimeError(f"{k}: shape {list(v.shape)} vs {list(mapped[k].shape)}")
    target.set_state_dict(mapped)


def masked_loss(logits, tgt_out):
    """Mean cross-entropy over real target tokens. logits [b, s, V], tgt_out [b, s]."""
    return F.cross_entropy(logits, tgt_out.unsqueeze(-1), ignore_index=PAD)


# ---- progress and reporting --------------------------------------------------------------------
class Progress:
    """A plain-text progress bar: redrawn in place on a terminal, a line per 10% otherwise."""

    def __init__(self, label, total, width=30):
        self.label, self.total, self.width = label, total, width
        self.tty = sys.stdout.isatty()
        self.start = time.perf_counter()
        self.next_line = 0

    def update(self, step, loss):
        done = step + 1
        elapsed = time.perf_counter() - self.start
        if not self.tty and done < self.total and done < self.next_line:
            return
        self.next_line = done + max(1, self.total // 10)
        filled = int(self.width * done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        text = (f"{self.label:<22} [{bar}] {done:>4}/{self.total} loss {loss:7.4f} "
                f"{done / max(elapsed, 1e-9):6.1f} it/s")
        if self.tty:
            sys.stdout.write("\r" + text)
            if done == self.total:
                sys.stdout.write("\n")
        else:
            print(text)
        sys.stdout.flush()


def table(rows, header):
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = "+".join("-" * (w + 2) for w in widths)
    out = ["+" + line + "+"]
    out.append("| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |")
    out.append("+" + line + "+")
    for r in rows:
        out.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
    out.append("+" + line + "+")
    return "\n".join(out)


# ---- training ----------------------------------------------------------------------------------
def train_dygraph(model, batches, cfg, label):
    opt = paddle.optimizer.Adam(learning_rate=cfg.lr, parameters=model.parameters())
    model.train()
    losses = []
    bar = Progress(label, len(batches))
    for step, (src, tgt_in, tgt_out) in enumerate(batches):
        logits = model(paddle.to_tensor(src), paddle.to_tensor(tgt_in))
        loss = masked_loss(logits, paddle.to_tensor(tgt_out))
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
        bar.update(step, losses[-1])
    model.eval()
    return losses


def train_static(init_state, batches, cfg, label, place, impl="paddle_te"):
    """The model (paddle_te by default) in static mode: one Program with forward, backward (the custom ops'
    grad ops) and the Adam update, run by an Executor. Returns (losses, trained state)."""
    paddle.enable_static()
    try:
        main, startup = paddle.static.Program(), paddle.static.Program()
        with paddle.static.program_guard(main, startup):
            src = paddle.static.data("src", [None, None], "int64")
            tgt_in = paddle.static.data("tgt_in", [None, None], "int64")
            tgt_out = paddle.static.data("tgt_out", [None, None], "int64")
            model = Seq2Seq(cfg, impl)
            loss = masked_loss(model(src, tgt_in), tgt_out)
            opt = paddle.optimizer.Adam(learning_rate=cfg.lr, parameters=model.parameters())
            opt.minimize(loss)
        exe = paddle.static.Executor(place)
        exe.run(startup)
        # Same initial weights as the dygraph runs: write them into the scope by variable name.
        scope = paddle.static.global_scope()
        params = model.state_dict()
        for name, value in params.items():
            scope.var(value.name).get_tensor().set(init_state[name], place)
        losses = []
        bar = Progress(label, len(batches))
        for step, (s, ti, to) in enumerate(batches):
            (l,) = exe.run(main, feed={"src": s, "tgt_in": ti, "tgt_out": to}, fetch_list=[loss])
            losses.append(float(l))
            bar.update(step, losses[-1])
        trained = {name: np.array(scope.var(v.name).get_tensor()) for name, v in params.items()}
    finally:
        paddle.disable_static()
    return losses, trained


# ---- evaluation --------------------------------------------------------------------------------
def greedy_decode(step_fn, src, cfg):
    """Greedy decoding with a full re-run per step. step_fn(src, tgt_in) -> logits ndarray."""
    b = src.shape[0]
    tgt = np.full((b, 1), BOS, np.int64)
    for _ in range(src.shape[1] + 1):
        logits = step_fn(src, tgt)
        nxt = logits[:, -1].argmax(-1).astype(np.int64)
        tgt = np.concatenate([tgt, nxt[:, None]], axis=1)
    return tgt[:, 1:]


def strip(seq):
    out = []
    for t in seq:
        if t == EOS or t == PAD:
            break
        out.append(int(t))
    return out


def evaluate(model, eval_batches, cfg):
    """Teacher-forced token accuracy and greedy exact-sequence accuracy."""
    model.eval()
    correct = total = seq_ok = seq_total = 0

    def step_fn(s, t):
        return model(paddle.to_tensor(s), paddle.to_tensor(t)).numpy()

    with paddle.no_grad():
        for src, tgt_in, tgt_out in eval_batches:
            pred = step_fn(src, tgt_in).argmax(-1)
            real = tgt_out != PAD
            correct += int(((pred == tgt_out) & real).sum())
            total += int(real.sum())
            decoded = greedy_decode(step_fn, src, cfg)
            for i in range(src.shape[0]):
                seq_ok += strip(decoded[i]) == strip(tgt_out[i])
                seq_total += 1
    return correct / total, seq_ok / seq_total


def export_and_serve(model, cfg, out_dir, examples):
    """paddle.jit.save the model, reload it with paddle.inference and greedy-decode `examples`."""
    path = os.path.join(out_dir, "demo_model", "seq2seq")
    spec = [paddle.static.InputSpec([None, None], "int64", "src"),
            paddle.static.InputSpec([None, None], "int64", "tgt_in")]
    model.eval()
    paddle.jit.save(model, path, input_spec=spec)
    model_file = next(path + ext for ext in (".json", ".pdmodel") if os.path.exists(path + ext))

    config = paddle.inference.Config(model_file, path + ".pdiparams")
    if paddle.get_device().startswith("gpu"):
        config.enable_use_gpu(256, 0)
    else:
        config.disable_gpu()
    config.disable_glog_info()
    predictor = paddle.inference.create_predictor(config)
    names = predictor.get_input_names()

    def step_fn(s, t):
        for name, arr in zip(names, (s, t)):
            predictor.get_input_handle(name).copy_from_cpu(np.ascontiguousarray(arr))
        predictor.run()
        return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()

    src = examples
    served = greedy_decode(step_fn, src, cfg)
    with paddle.no_grad():
        eager = greedy_decode(
            lambda s, t: model(paddle.to_tensor(s), paddle.to_tensor(t)).numpy(), src, cfg)
    return model_file, served, eager


# ---- incremental decoding through paddle.inference: decode_attn over an in-place KV cache ------
class Encode(nn.Layer):
    """The trained model's encoder alone: src [b, s_src] -> memory [b, s_src, hidden]."""

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, src):
        x = self.m.embed(src)
        src_pad = (src == PAD).unsqueeze([1, 2])
        for layer in self.m.encoder:
            x = layer(x, attention_mask=src_pad)
        return self.m.enc_norm(x)


class DecodeStep(nn.Layer):
    """One greedy step of the trained decoder on one new token per sequence.

    The self-attention keys and values of earlier tokens live in preallocated caches
    [b, max_steps, heads, head_dim], one pair per layer; paddle_te.ops.decode_attn appends this
    token's key and value in place at cache_seqlens and attends over the cache with the decoder's
    sliding window. Nothing is re-run and no cache is copied or concatenated.
    """

    def __init__(self, model):
        super().__init__()
        self.m = model

    def forward(self, memory, src, token, cache_seqlens, caches):
        """memory [b, s_src, hidden], src [b, s_src], token [b, 1] int64, cache_seqlens int32 [b]
        (tokens decoded so far = this token's position), caches: list of k, v per layer."""
        m = self.m
        y = m.tok_emb(token) + m.pos_emb(cache_seqlens.astype("int64").unsqueeze(1))
        src_pad = (src == PAD).unsqueeze([1, 2])
        tgt_pad = (token < 0).unsqueeze([1, 2])  # [b, 1, 1, 1], all False: no query padding
        for i, layer in enumerate(m.decoder):
            att = layer.self_attention
            h = layer.input_layernorm(y)
            q = att.q_proj(h).reshape([0, 0, att.num_heads, att.head_dim])
            k = att.k_proj(h).reshape([0, 0, att.num_kv_heads, att.head_dim])
            v = att.v_proj(h).reshape([0, 0, att.num_kv_heads, att.head_dim])
            o = paddle_te.ops.decode_attn(q, caches[2 * i], caches[2 * i + 1], cache_seqlens,
                                          k_new=k, v_new=v, window_size=layer.window_size)
            y = y + att.out_proj(o.reshape([0, 0, att.num_heads * att.head_dim]))
            y = y + layer.inter_attention(layer.inter_layernorm(y), memory, (tgt_pad, src_pad))
            y = y + layer.fc2(F.gelu(layer.fc1(layer.mlp_layernorm(y))))
        return m.head(m.dec_norm(y))[:, -1]  # [b, vocab]


def _predictor(layer, path, spec):
    paddle.jit.save(layer, path, input_spec=spec)
    model_file = next(path + ext for ext in (".json", ".pdmodel") if os.path.exists(path + ext))
    config = paddle.inference.Config(model_file, path + ".pdiparams")
    if paddle.get_device().startswith("gpu"):
        config.enable_use_gpu(256, 0)
    else:
        config.disable_gpu()
    config.disable_glog_info()
    return paddle.inference.create_predictor(config)


def serve_incremental(model, cfg, out_dir, src):
    """Greedy decoding of `src` through two paddle.inference predictors (encoder, decode step)
    with the KV caches held inside the step predictor: they are fed once (zeros) and every run
    appends to them in place. Returns the decoded tokens [b, s_src + 1]."""
    assert all(layer.activation == "gelu" for layer in model.decoder)
    model.eval()
    att = model.decoder[0].self_attention
    b, steps = src.shape[0], src.shape[1] + 1
    cache_shape = [b, steps, att.num_kv_heads, att.head_dim]
    n_caches = 2 * len(model.decoder)
    root = os.path.join(out_dir, "demo_model")
    enc = _predictor(Encode(model), os.path.join(root, "encode"),
                     [paddle.static.InputSpec([None, None], "int64", "src")])
    step = _predictor(DecodeStep(model), os.path.join(root, "decode_step"), [
        paddle.static.InputSpec([None, None, cfg.hidden], "float32", "memory"),
        paddle.static.InputSpec([None, None], "int64", "src"),
        paddle.static.InputSpec([None, 1], "int64", "token"),
        paddle.static.InputSpec([None], "int32", "cache_seqlens"),
        [paddle.static.InputSpec([None, None] + cache_shape[2:], "float32", f"cache_{i}")
         for i in range(n_caches)],
    ])

    enc.get_input_handle(enc.get_input_names()[0]).copy_from_cpu(np.ascontiguousarray(src))
    enc.run()
    memory = enc.get_output_handle(enc.get_output_names()[0]).copy_to_cpu()
    names = step.get_input_names()
    handle = {n: step.get_input_handle(n) for n in names}
    handle["memory"].copy_from_cpu(memory)
    handle["src"].copy_from_cpu(np.ascontiguousarray(src))
    for i in range(n_caches):  # once: afterwards the step appends to them in place
        handle[f"cache_{i}"].copy_from_cpu(np.zeros(cache_shape, np.float32))
    token = np.full((b, 1), BOS, np.int64)
    out = []
    for t in range(steps):
        handle["token"].copy_from_cpu(token)
        handle["cache_seqlens"].copy_from_cpu(np.full([b], t, np.int32))
        step.run()
        logits = step.get_output_handle(step.get_output_names()[0]).copy_to_cpu()
        token = logits.argmax(-1).astype(np.int64)[:, None]
        out.append(token[:, 0])
    return np.stack(out, axis=1)


# ---- main --------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300, help="training steps per run (default 300)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 40 steps, a small eval set (used by tests/test_demo.py)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"],
                   help="auto: the GPU when this Paddle build has one, else the CPU")
    p.add_argument("--out", default="out", help="output folder (plot, summary, saved model)")
    p.add_argument("--no-static", action="store_true", help="skip the static-mode run")
    args = p.parse_args(argv)
    if args.quick and "--steps" not in (argv if argv is not None else sys.argv):
        args.steps = 40
    if args.steps < 1:
        p.error(f"--steps={args.steps}: must be >= 1")
    return args


def pick_device(choice):
    has_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if choice == "gpu" and not has_gpu:
        sys.exit("--device gpu: this Paddle build has no usable GPU (paddle.is_compiled_with_cuda()="
                 f"{paddle.is_compiled_with_cuda()})")
    device = "gpu:0" if (choice == "gpu" or (choice == "auto" and has_gpu)) else "cpu"
    paddle.set_device(device)
    return device


def plot(path, curves, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_diff) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    styles = {"paddle_te (dygraph)": "-", "paddle.nn (dygraph)": "--",
              "paddle_te (static)": ":"}
    for name, losses in curves.items():
        ax.plot(np.arange(1, len(losses) + 1), losses, styles.get(name, "-"), label=name,
                linewidth=1.4)
    ax.set_ylabel("training loss (cross-entropy)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    base = np.asarray(curves["paddle.nn (dygraph)"])
    for name, losses in curves.items():
        if name != "paddle.nn (dygraph)":
            ax_diff.plot(np.arange(1, len(base) + 1), np.abs(np.asarray(losses) - base),
                         styles.get(name, "-"), label=f"|{name} - paddle.nn|", linewidth=1.0)
    ax_diff.set_yscale("log")
    ax_diff.set_xlabel("step")
    ax_diff.set_ylabel("|difference|")
    ax_diff.legend(fontsize=8)
    ax_diff.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    cfg = Config()
    if args.quick:
        cfg.eval_examples = 64
    os.makedirs(args.out, exist_ok=True)
    device = pick_device(args.device)
    place = paddle.CUDAPlace(0) if device.startswith("gpu") else paddle.CPUPlace()
    print(f"paddle {paddle.__version__}, paddle_te {paddle_te.__version__}, device {device}")
    print(f"task: reverse sequences of {cfg.min_len}-{cfg.max_len} tokens (vocab {cfg.vocab}), "
          f"batch {cfg.batch}, {args.steps} steps; decoder window ({cfg.window}, 0)")

    rng = np.random.default_rng(cfg.seed)
    batches = [make_batch(rng, cfg, cfg.batch) for _ in range(args.steps)]
    eval_rng = np.random.default_rng(cfg.seed + 1)
    eval_batches = [make_batch(eval_rng, cfg, 64) for _ in range(max(1, cfg.eval_examples // 64))]

    # 1. Same initial weights in both models; same logits before training.
    paddle.seed(cfg.seed)
    te_model = Seq2Seq(cfg, "paddle_te")
    init_state = {k: v.numpy() for k, v in te_model.state_dict().items()}
    ref_model = Seq2Seq(cfg, "paddle")
    copy_weights(init_state, ref_model)
    src, tgt_in, _ = batches[0]
    with paddle.no_grad():
        a = te_model(paddle.to_tensor(src), paddle.to_tensor(tgt_in)).numpy()
        b = ref_model(paddle.to_tensor(src), paddle.to_tensor(tgt_in)).numpy()
    real = tgt_in != PAD
    init_diff = float(np.abs(a - b)[real].max())
    print(f"initial logits, paddle_te vs paddle.nn on real tokens: max |diff| = {init_diff:.2e}")

    # 2-3. Train.
    timings, curves = {}, {}
    t = time.perf_counter()
    curves["paddle_te (dygraph)"] = train_dygraph(te_model, batches, cfg, "paddle_te (dygraph)")
    timings["paddle_te (dygraph)"] = time.perf_counter() - t
    t = time.perf_counter()
    curves["paddle.nn (dygraph)"] = train_dygraph(ref_model, batches, cfg, "paddle.nn (dygraph)")
    timings["paddle.nn (dygraph)"] = time.perf_counter() - t
    static_model = None
    if not args.no_static:
        t = time.perf_counter()
        curves["paddle_te (static)"], static_state = train_static(
            init_state, batches, cfg, "paddle_te (static)", place)
        timings["paddle_te (static)"] = time.perf_counter() - t
        static_model = Seq2Seq(cfg, "paddle_te")
        static_model.set_state_dict(static_state)

    # 4. Accuracy on held-out data.
    models = {"paddle_te (dygraph)": te_model, "paddle.nn (dygraph)": ref_model}
    if static_model is not None:
        models["paddle_te (static)"] = static_model
    accuracy = {name: evaluate(m, eval_batches, cfg) for name, m in models.items()}

    # 5. Save, reload with paddle.inference, decode.
    src = eval_batches[0][0][:4]
    model_file, served, eager = export_and_serve(te_model, cfg, args.out, src)
    print(f"\nsaved {model_file}; greedy decoding through paddle.inference:")
    for i in range(src.shape[0]):
        s, d = strip(src[i]), strip(served[i])
        mark = "ok" if d == s[::-1] else "miss"
        print(f"  {' '.join(map(str, s)):<36} -> {' '.join(map(str, d)):<36} {mark}")
    served_matches = bool((served == eager).all())
    print(f"paddle.inference decodes == dygraph decodes: {served_matches}")
    # 5b. The same, decoding token by token through decode_attn with in-place KV caches.
    incremental = serve_incremental(te_model, cfg, args.out, src)
    incremental_matches = bool((incremental == eager).all())
    print("paddle.inference incremental decoding (decode_attn, KV cache appended in place) == "
          f"full re-run decoding: {incremental_matches}")

    # 6. Report.
    window = max(1, min(20, args.steps // 10))
    base = np.asarray(curves["paddle.nn (dygraph)"])
    rows, summary = [], {"device": device, "steps": args.steps, "paddle": paddle.__version__,
                         "initial_logit_diff": init_diff, "runs": {},
                         "served_matches_dygraph": served_matches,
                         "incremental_matches_full": incremental_matches}
    for name, losses in curves.items():
        losses = np.asarray(losses)
        tok_acc, seq_acc = accuracy[name]
        diff = float(np.abs(losses - base).max())
        rows.append([name, f"{losses[:window].mean():.4f}", f"{losses[-window:].mean():.4f}",
                     "-" if name == "paddle.nn (dygraph)" else f"{diff:.2e}",
                     f"{100 * tok_acc:.1f}%", f"{100 * seq_acc:.1f}%",
                     f"{timings[name]:.1f}"])
        summary["runs"][name] = {
            "losses": losses.tolist(), "first_loss": float(losses[:window].mean()),
            "final_loss": float(losses[-window:].mean()), "max_abs_diff_vs_paddle_nn": diff,
            "token_accuracy": tok_acc, "sequence_accuracy": seq_acc, "train_seconds": timings[name]}
    print()
    print(table(rows, ["run", f"loss (first {window})", f"loss (last {window})",
                       "max |loss - paddle.nn|", "token acc", "sequence acc", "train s"]))
    png = os.path.join(args.out, "demo_loss.png")
    plot(png, curves, f"Sequence reversal, {args.steps} steps, {device}: paddle_te vs paddle.nn")
    summary["plot"] = png
    summary["total_seconds"] = time.perf_counter() - t_start
    with open(os.path.join(args.out, "demo_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"\nloss curves: {png}\nnumbers:     {os.path.join(args.out, 'demo_summary.json')}")
    print(f"total {summary['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
