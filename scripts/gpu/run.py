"""kiln on a real GPU: correctness of every artifact, then a benchmark table.

Run through scripts/gpu/run.sh after scripts/gpu/prepare.sh. Needs PyTorch
with CUDA and numpy; JAX is optional (its column says n/a without it).

1. Every testdata model's artifact runs with `kiln-run --device cuda` on the
   stored inputs; outputs are compared with the stored ONNX Runtime / PyTorch
   outputs (max |diff| ≤ 1e-3 · max |expected|).
2. MiniLM-L6 (256 × 64) and BERT-base (32 × 128), bf16, pseudo-random weights
   shared with the references (bert_weights.py): kiln (launches alone, inputs
   resident, through `kiln-run --repeat`), PyTorch eager, torch.compile
   (default and max-autotune) and JAX, median ms; kiln's output is checked
   against PyTorch eager (minimum row cosine). The roofline floor is
   max(FLOPs / peak FLOP/s, bytes / peak bandwidth) with both peaks measured
   here (a large bf16 matmul, a large device copy).
"""
import argparse
import glob
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import bert_weights  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "out", "gpu")
KILN_RUN = os.path.join(OUT, "bin", "kiln-run")
REPEATS = 50


def kiln_run(artifact, inputs, output_dir, repeat=0):
    """Runs kiln-run on CUDA; returns (outputs by name, median ms or None)."""
    arguments = [KILN_RUN, artifact, "--device", "cuda", "--output-dir", output_dir, "--force"]
    for name, path in inputs.items():
        arguments += ["--input", f"{name}={path}"]
    if repeat:
        arguments += ["--repeat", str(repeat)]
    done = subprocess.run(arguments, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"kiln-run {os.path.basename(artifact)} failed:\n{done.stderr}")
    median = None
    for line in done.stdout.splitlines():
        if line.startswith("median_ms"):
            median = float(line.split()[1])
    outputs = {}
    for line in done.stdout.splitlines():
        if " -> " in line:
            name, path = line.split(":")[0], line.split(" -> ")[1].strip()
            outputs[name] = np.load(path)
    return outputs, median, done.stderr


def check_testdata_models():
    models = json.load(open(os.path.join(ROOT, "testdata", "models.json")))["models"]
    failures = 0
    for model in models:
        artifact = os.path.join(OUT, "artifacts", model["name"] + ".kiln")
        directory = os.path.join(ROOT, "testdata", "models", model["name"])
        inputs = {name: os.path.join(directory, "inputs", name + ".npy") for name in model["inputs"]}
        with tempfile.TemporaryDirectory() as output_dir:
            try:
                outputs, _, log = kiln_run(artifact, inputs, output_dir)
            except RuntimeError as error:
                print(f"  FAIL {model['name']}: {error}")
                failures += 1
                continue
        worst = 0.0
        for name in model["outputs"]:
            expected = np.load(os.path.join(directory, "expected", name + ".npy")).astype(np.float64)
            got = outputs[name].astype(np.float64)
            scale = max(np.abs(expected).max(), 1e-30)
            worst = max(worst, float(np.abs(got - expected).max() / scale))
        status = "ok  " if worst <= 1e-3 else "FAIL"
        failures += status == "FAIL"
        device = [line for line in log.splitlines() if line.startswith("device:")]
        print(f"  {status} {model['name']:<24} max|diff|/max|expected| = {worst:.2e}   {device[0] if device else ''}")
    return failures


def ceilings():
    """Measured peak bf16 matmul FLOP/s and device-to-device bandwidth."""
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    flops = 2 * n**3 / (time_torch(lambda: a @ b, 20) / 1e3)
    x = torch.empty(1 << 30, device="cuda", dtype=torch.uint8)
    y = torch.empty_like(x)
    bandwidth = 2 * x.numel() / (time_torch(lambda: y.copy_(x), 20) / 1e3)
    return flops, bandwidth


def time_torch(function, repeats=REPEATS):
    """Median ms of `function` on the GPU, by CUDA events, after warm-up."""
    for _ in range(5):
        function()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        function()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def torch_bert(config, weights):
    """A bf16 BERT encoder in PyTorch over the given f32 weights."""
    w = {name: torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape).cuda().to(torch.bfloat16)
         for name, (shape, data) in weights.items()}
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = config["layer_norm_eps"]

    def norm(x, prefix):
        return F.layer_norm(x, (hidden,), w[prefix + ".weight"], w[prefix + ".bias"], eps)

    def linear(x, prefix):
        return F.linear(x, w[prefix + ".weight"], w[prefix + ".bias"])

    def forward(ids, mask, types):
        batch, seq = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:seq]
        x = norm(x + w["embeddings.token_type_embeddings.weight"][types], "embeddings.LayerNorm")
        keep = mask[:, None, None, :].bool()
        for layer in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{layer}."
            split = lambda t: t.view(batch, seq, heads, hidden // heads).transpose(1, 2)  # noqa: E731
            q, k, v = (split(linear(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=keep).transpose(1, 2).reshape(batch, seq, hidden)
            x = norm(x + linear(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            inner = F.gelu(linear(x, p + "intermediate.dense"))
            x = norm(x + linear(inner, p + "output.dense"), p + "output.LayerNorm")
        return x

    return forward


def jax_bert(config, weights):
    """The same encoder in JAX (jit), or None without JAX."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    w = {name: jnp.asarray(np.frombuffer(data, dtype=np.float32).reshape(shape), dtype=jnp.bfloat16)
         for name, (shape, data) in weights.items()}
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    eps = config["layer_norm_eps"]

    def norm(x, prefix):
        x32 = x.astype(jnp.float32)
        mean = x32.mean(-1, keepdims=True)
        var = ((x32 - mean) ** 2).mean(-1, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + eps)
        return (y * w[prefix + ".weight"] + w[prefix + ".bias"]).astype(jnp.bfloat16)

    def linear(x, prefix):
        return x @ w[prefix + ".weight"].T + w[prefix + ".bias"]

    @jax.jit
    def forward(ids, mask, types):
        batch, seq = ids.shape
        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:seq]
        x = norm(x + w["embeddings.token_type_embeddings.weight"][types], "embeddings.LayerNorm")
        bias = jnp.where(mask[:, None, None, :] > 0, 0.0, -1e9).astype(jnp.float32)
        for layer in range(config["num_hidden_layers"]):
            p = f"encoder.layer.{layer}."
            split = lambda t: t.reshape(batch, seq, heads, hidden // heads).transpose(0, 2, 1, 3)  # noqa: E731
            q, k, v = (split(linear(x, p + "attention.self." + n)) for n in ("query", "key", "value"))
            scores = (q @ k.transpose(0, 1, 3, 2)).astype(jnp.float32) / np.sqrt(hidden // heads) + bias
            probabilities = jax.nn.softmax(scores, axis=-1).astype(jnp.bfloat16)
            context = (probabilities @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
            x = norm(x + linear(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            inner = jax.nn.gelu(linear(x, p + "intermediate.dense"), approximate=False)
            x = norm(x + linear(inner, p + "output.dense"), p + "output.LayerNorm")
        return x

    def timed(ids, mask, types, repeats=REPEATS):
        args = [jnp.asarray(a) for a in (ids, mask, types)]
        for _ in range(5):
            forward(*args).block_until_ready()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            forward(*args).block_until_ready()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)

    return timed


def roofline_floor_ms(config, batch, seq, peak_flops, peak_bandwidth):
    h, f, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    tokens = batch * seq
    matmul_parameters = layers * (4 * h * h + 2 * h * f)
    flops = 2 * tokens * matmul_parameters + layers * 4 * batch * seq * seq * h
    bytes_moved = 2 * matmul_parameters + 2 * 2 * tokens * h + 3 * 8 * tokens  # weights, embeddings in + out, ids
    return max(flops / peak_flops, bytes_moved / peak_bandwidth) * 1e3


def benchmark(name, batch, seq, peak_flops, peak_bandwidth, work):
    config = bert_weights.config_json(name)
    model_dir = os.path.join(work, name)
    bert_weights.write_model(name, model_dir)
    weights = bert_weights.read_safetensors(os.path.join(model_dir, "model.safetensors"))
    artifact = os.path.join(work, name + ".bf16.kiln")
    with gzip.open(os.path.join(OUT, "artifacts", name + ".bf16.kiln.gz")) as source, open(artifact, "wb") as target:
        shutil.copyfileobj(source, target)
    generator = np.random.default_rng(7)
    ids = generator.integers(1000, config["vocab_size"], size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    types = np.zeros((batch, seq), dtype=np.int64)
    inputs = {}
    for input_name, value in [("input_ids", ids), ("attention_mask", mask), ("token_type_ids", types)]:
        inputs[input_name] = os.path.join(work, f"{name}-{input_name}.npy")
        np.save(inputs[input_name], value)
    outputs, kiln_ms, _ = kiln_run(artifact, inputs, os.path.join(work, name + "-out"), repeat=REPEATS)

    forward = torch_bert(config, weights)
    t_ids, t_mask, t_types = (torch.from_numpy(a).cuda() for a in (ids, mask, types))
    with torch.no_grad():
        reference = forward(t_ids, t_mask, t_types).float().cpu().numpy()
        got = outputs["last_hidden_state"].reshape(-1, config["hidden_size"]).astype(np.float64)
        expected = reference.reshape(-1, config["hidden_size"]).astype(np.float64)
        cosine = float(np.min((got * expected).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(expected, axis=-1))))
        results = {"kiln": kiln_ms, "PyTorch eager": time_torch(lambda: forward(t_ids, t_mask, t_types))}
        for mode in ["default", "max-autotune"]:
            torch._dynamo.reset()
            compiled = torch.compile(forward, mode=None if mode == "default" else mode)
            results[f"torch.compile ({mode})"] = time_torch(lambda: compiled(t_ids, t_mask, t_types))
    jax_timed = jax_bert(config, weights)
    results["JAX (jit)"] = jax_timed(ids, mask, types) if jax_timed else None
    floor = roofline_floor_ms(config, batch, seq, peak_flops, peak_bandwidth)
    return results, floor, cosine


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-checks", action="store_true", help="only benchmark")
    arguments = parser.parse_args()
    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    failures = 0
    if not arguments.skip_checks:
        print("== every testdata artifact on CUDA vs the stored reference outputs")
        failures = check_testdata_models()
    peak_flops, peak_bandwidth = ceilings()
    print(f"== measured ceilings: {peak_flops / 1e12:.0f} TFLOP/s bf16 matmul, {peak_bandwidth / 1e9:.0f} GB/s copy")
    lines = [f"GPU: {torch.cuda.get_device_name()}; ceilings measured: {peak_flops / 1e12:.0f} TFLOP/s bf16, "
             f"{peak_bandwidth / 1e9:.0f} GB/s", "",
             "| model | shape | system | median ms | kiln / system | roofline floor ms | floor / time |",
             "|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as work:
        for name, batch, seq in [("minilm-l6", 256, 64), ("bert-base", 32, 128)]:
            results, floor, cosine = benchmark(name, batch, seq, peak_flops, peak_bandwidth, work)
            print(f"== {name} {batch}x{seq} bf16: kiln vs PyTorch eager minimum row cosine {cosine:.5f}")
            for system, ms in results.items():
                if ms is None:
                    lines.append(f"| {name} | {batch}x{seq} | {system} | n/a | | {floor:.3f} | |")
                    continue
                ratio = results["kiln"] / ms
                lines.append(f"| {name} | {batch}x{seq} | {system} | {ms:.3f} | {ratio:.2f} | {floor:.3f} | {floor / ms:.1%} |")
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(table + "\n")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
