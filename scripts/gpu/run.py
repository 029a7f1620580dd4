"""kiln on a real GPU, in one call that always returns answers.

Run through scripts/gpu/run.sh after scripts/gpu/prepare.sh. Needs PyTorch with
CUDA and numpy; JAX is optional. The sections run one after another, each in
its own process under a time cap, and print their rows as they finish: a slow,
hanging or failing section costs only itself. Everything printed also goes to
out/gpu/results.md (and $OUT/results.md when $OUT is set).

  probes       each tensor-core instruction variant (ldmatrix x1/x2/x4 and .trans,
               mma.sync bf16/f16/tf32, cp.async 4/8/16 bytes with zero-fill) in a tiny
               kernel on the GPU, its output bits against the simulator's
  device       name, clocks, measured copy bandwidth and bf16 matmul rate
  correctness  every artifact on CUDA (KILN_CUDA_SYNC=1) against f32 references
               computed with TF32 off; then compute-sanitizer memcheck and
               racecheck on one small artifact
  timing-*     BERT-base 32x128, then MiniLM-L6 256x64, bf16: kiln (CUDA graphs),
               PyTorch eager, torch.compile default / reduce-overhead, JAX, each
               as N back-to-back calls between CUDA events, medians of 3 rounds
               with the systems alternated; kiln's outputs checked again
               after timing
  max-autotune torch.compile max-autotune for both, beside eager, capped
  kernels      kiln's per-launch times (graphs off, events per launch) beside
               each launch's FLOPs and bytes from the compiler's cost model
  gemm         kiln's matmul launches at BERT-base's and MiniLM's shapes beside
               cuBLAS (torch.matmul, bf16) at the same M, N, K

Usage: run.py [--only SECTION[,SECTION...]] [--section NAME] (the latter is
how run.py calls itself).
"""
import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "out", "gpu")
KILN_RUN = os.path.join(OUT, "bin", "kiln-run")
WORKLOADS = [("bert-base", 32, 128), ("minilm-l6", 256, 64)]
CALLS = 20  # back-to-back calls per timed round
ROUNDS = 3
# Seconds each section may take before it is stopped (the whole call must
# stay well inside the device tool's ten minutes).
CAPS = {"probes": 50, "device": 45, "correctness": 120, "timing-bert-base": 100, "timing-minilm-l6": 90,
        "max-autotune": 60, "kernels": 40, "gemm": 50}
SECTIONS = list(CAPS)

sys.path.insert(0, os.path.dirname(__file__))


def say(line=""):
    """Prints a row at once and keeps it for results.md."""
    print(line, flush=True)
    with open(os.path.join(OUT, "results.md"), "a") as f:
        f.write(line + "\n")


# ----------------------------------------------------------------- helpers


def kiln_run(artifact, inputs, output_dir, extra=(), env=None, timeout=120, wrapper=()):
    """Runs kiln-run on CUDA; returns (outputs by name, stdout, stderr)."""
    import numpy as np

    arguments = list(wrapper) + [KILN_RUN, artifact, "--device", "cuda", "--output-dir", output_dir, "--force"]
    for name, path in inputs.items():
        arguments += ["--input", f"{name}={path}"]
    arguments += list(extra)
    done = subprocess.run(arguments, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))
    if done.returncode != 0:
        raise RuntimeError(f"kiln-run {os.path.basename(artifact)} failed ({done.returncode}):\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    outputs = {}
    for line in done.stdout.splitlines():
        if " -> " in line and line.endswith(".npy"):
            name, path = line.split(":")[0], line.split(" -> ")[1].strip()
            outputs[name] = np.load(path)
    return outputs, done.stdout, done.stderr


def gunzipped(stem, work):
    """The artifact `out/gpu/artifacts/<stem>.kiln.gz` (prepare.sh gzips them all), unpacked into `work`."""
    artifact = os.path.join(work, stem + ".kiln")
    if not os.path.exists(artifact):
        with gzip.open(os.path.join(OUT, "artifacts", stem + ".kiln.gz")) as source, \
                open(artifact, "wb") as target:
            shutil.copyfileobj(source, target)
    return artifact


def workload_inputs(name, batch, seq, work):
    """Token ids (fixed seed), a mask with padded rows, token types; as arrays and .npy files."""
    import numpy as np
    import bert_weights

    config = bert_weights.config_json(name)
    generator = np.random.default_rng(7)
    ids = generator.integers(1000, config["vocab_size"], size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    lengths = generator.integers(seq // 2, seq + 1, size=batch)
    lengths[0] = seq
    for row, length in enumerate(lengths):
        mask[row, length:] = 0
    types = np.zeros((batch, seq), dtype=np.int64)
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    files = {}
    for key, value in arrays.items():
        files[key] = os.path.join(work, f"{name}-{batch}x{seq}-{key}.npy")
        np.save(files[key], value)
    return config, arrays, files


def compare(got, expected, mask=None):
    """(minimum row cosine, max |diff| / max |expected|) over the last axis, padded rows left out."""
    import numpy as np

    width = expected.shape[-1]
    got = got.reshape(-1, width).astype(np.float64)
    expected = expected.reshape(-1, width).astype(np.float64)
    if mask is not None:
        keep = mask.reshape(-1).astype(bool)
        got, expected = got[keep], expected[keep]
    if not np.isfinite(got).all():
        return float("nan"), float("inf")
    norms = np.linalg.norm(got, axis=-1) * np.linalg.norm(expected, axis=-1)
    cosine = float(np.min((got * expected).sum(-1) / np.maximum(norms, 1e-30)))
    scale = max(float(np.abs(expected).max()), 1e-30)
    return cosine, float(np.abs(got - expected).max()) / scale


def torch_encoder(name, dtype):
    """The benchmark encoder in PyTorch (weights from bert_weights.py) as `forward(ids, mask, types)`."""
    import torch
    import torch.nn.functional as F
    import bert_weights

    config = bert_weights.config_json(name)
    with tempfile.TemporaryDirectory() as directory:
        bert_weights.write_model(name, directory)
        weights = bert_weights.read_safetensors(os.path.join(directory, "model.safetensors"))
    w = {key: torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(shape).cuda().to(dtype)
         for key, (shape, data) in weights.items()}
    hidden, heads, eps = config["hidden_size"], config["num_attention_heads"], config["layer_norm_eps"]

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

    return config, weights, forward


def jax_encoder(config, weights):
    """The same encoder in JAX (jit, bf16), or None without JAX."""
    try:
        import jax
        import jax.numpy as jnp
        import numpy as np
    except ImportError:
        return None
    w = {key: jnp.asarray(np.frombuffer(data, dtype=np.float32).reshape(shape), dtype=jnp.bfloat16)
         for key, (shape, data) in weights.items()}
    hidden, heads, eps = config["hidden_size"], config["num_attention_heads"], config["layer_norm_eps"]

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

    return forward


def time_rounds_torch(function, calls=CALLS):
    """ms per call of `calls` back-to-back calls between two CUDA events (one round)."""
    import torch

    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        function()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / calls


def floor_ms(config, batch, seq, peak_flops, peak_bandwidth):
    """max(FLOPs / peak, bytes / bandwidth) of one encoder forward (bf16)."""
    h, f, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    tokens = batch * seq
    matmul_parameters = layers * (4 * h * h + 2 * h * f)
    flops = 2 * tokens * matmul_parameters + layers * 4 * batch * seq * seq * h
    bytes_moved = 2 * matmul_parameters + 2 * tokens * h + 3 * 8 * tokens
    return max(flops / peak_flops, bytes_moved / peak_bandwidth) * 1e3, flops


def ceilings_file():
    return os.path.join(OUT, "ceilings.json")


# ----------------------------------------------------------------- sections


def section_device():
    """Device facts and the two ceilings every later number is read against."""
    import torch

    query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,"
                            "memory.total,power.limit", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
    say(f"nvidia-smi: {query.stdout.strip() or query.stderr.strip()}")
    properties = torch.cuda.get_device_properties(0)
    say(f"torch {torch.__version__}: {properties.name}, sm_{properties.major}{properties.minor}, "
        f"{properties.multi_processor_count} SMs, {properties.total_memory / 2**30:.0f} GiB")
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    matmul_ms = statistics.median(time_rounds_torch(lambda: a @ b, 10) for _ in range(3))
    flops = 2 * n**3 / (matmul_ms / 1e3)
    x = torch.randint(0, 255, (1 << 31,), device="cuda", dtype=torch.uint8)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    copy_ms = statistics.median(time_rounds_torch(lambda: y.copy_(x), 10) for _ in range(3))
    bandwidth = 2 * x.numel() / (copy_ms / 1e3)
    say(f"measured: bf16 matmul {n}^3 {flops / 1e12:.0f} TFLOP/s (random data); device copy "
        f"{bandwidth / 1e9:.0f} GB/s (read + written)")
    with open(ceilings_file(), "w") as f:
        json.dump({"flops": flops, "bandwidth": bandwidth}, f)


def section_correctness():
    """Every artifact on CUDA with a sync after each launch, against f32 references."""
    import numpy as np
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    failures = 0
    models = json.load(open(os.path.join(ROOT, "testdata", "models.json")))["models"]
    say("| artifact | precision | max \\|diff\\| / max \\|ref\\| | min row cosine | status |")
    say("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for model in models:
            directory = os.path.join(ROOT, "testdata", "models", model["name"])
            inputs = {n: os.path.join(directory, "inputs", n + ".npy") for n in model["inputs"]}
            try:
                outputs, _, _ = kiln_run(gunzipped(model["name"], work), inputs, os.path.join(work, model["name"]),
                                         env={"KILN_CUDA_SYNC": "1"})
                worst, cosine = 0.0, 1.0
                for name in model["outputs"]:
                    expected = np.load(os.path.join(directory, "expected", name + ".npy"))
                    c, d = compare(outputs[name], expected)
                    worst, cosine = max(worst, d), min(cosine, c)
                ok = worst <= 1e-3
            except (RuntimeError, subprocess.TimeoutExpired, KeyError) as error:
                worst, cosine, ok = float("nan"), float("nan"), False
                print(error, flush=True)
            failures += not ok
            say(f"| {model['name']} | f32 | {worst:.2e} | {cosine:.6f} | {'ok' if ok else 'FAIL'} |")
        for name, batch, seq in WORKLOADS:
            try:
                config, _, forward = torch_encoder(name, torch.float32)
                _, arrays, files = workload_inputs(name, batch, seq, work)
                with torch.no_grad():
                    reference = forward(*(torch.from_numpy(arrays[k]).cuda() for k in
                                          ("input_ids", "attention_mask", "token_type_ids"))).cpu().numpy()
                outputs, _, _ = kiln_run(gunzipped(name + ".bf16", work), files, os.path.join(work, name),
                                         env={"KILN_CUDA_SYNC": "1"})
                cosine, worst = compare(outputs["last_hidden_state"], reference, arrays["attention_mask"])
                ok = cosine >= 0.99
            except (RuntimeError, subprocess.TimeoutExpired, KeyError) as error:
                worst, cosine, ok = float("nan"), float("nan"), False
                print(error, flush=True)
            failures += not ok
            say(f"| {name} {batch}x{seq} | bf16 vs f32 (TF32 off) | {worst:.2e} | {cosine:.6f} | "
                f"{'ok' if ok else 'FAIL'} |")
        sanitizer = shutil.which("compute-sanitizer")
        model = next(m for m in models if m["name"] == "bert-hf5")
        directory = os.path.join(ROOT, "testdata", "models", model["name"])
        inputs = {n: os.path.join(directory, "inputs", n + ".npy") for n in model["inputs"]}
        for tool in ["memcheck", "racecheck"]:
            if not sanitizer:
                say(f"compute-sanitizer {tool}: not on this machine")
                continue
            try:
                _, out, err = kiln_run(gunzipped(model["name"], work), inputs,
                                       os.path.join(work, "sanitized"), timeout=60,
                                       env={"KILN_CUDA_GRAPHS": "0"},
                                       wrapper=[sanitizer, "--tool", tool, "--error-exitcode", "3"])
                summary = [line for line in (out + err).splitlines() if "ERROR SUMMARY" in line
                           or "RACECHECK SUMMARY" in line]
                say(f"compute-sanitizer {tool} on {model['name']}: {summary[-1] if summary else 'clean'}")
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                if "Device not supported" in str(error):
                    say(f"compute-sanitizer {tool}: this machine's runtime does not support it (Device not supported)")
                    continue
                failures += 1
                lines = [line for line in str(error).splitlines() if line.strip()]
                say(f"compute-sanitizer {tool} on {model['name']}: FAIL " + " / ".join(lines[-6:]))
    return failures


def kiln_round(artifact, files, work, calls=CALLS):
    """One timed round of kiln: ms per call (kiln-run fails if the outputs after its replays differ)."""
    _, out, _ = kiln_run(artifact, files, work, extra=["--repeat", str(calls), "--rounds", "1"])
    line = next(l for l in out.splitlines() if l.startswith("median_ms"))
    return float(line.split()[1])


def section_timing(workloads, autotune=False):
    """kiln against PyTorch, torch.compile and JAX, timed alike, systems alternated per round."""
    import numpy as np
    import torch

    ceilings = json.load(open(ceilings_file())) if os.path.exists(ceilings_file()) else None
    say("| model | shape | system | ms (median of 3 rounds) | kiln / system | floor ms | floor / ms | check |")
    say("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as work:
        for name, batch, seq in workloads:
            config, weights, forward = torch_encoder(name, torch.bfloat16)
            _, arrays, files = workload_inputs(name, batch, seq, work)
            tensors = [torch.from_numpy(arrays[k]).cuda() for k in ("input_ids", "attention_mask", "token_type_ids")]
            artifact = gunzipped(name + ".bf16", work)
            out_dir = os.path.join(work, name + "-out")
            systems = {}
            checks = {}
            with torch.no_grad():
                reference = forward(*tensors).float().cpu().numpy()
                if not autotune:
                    systems["kiln"] = lambda: kiln_round(artifact, files, out_dir)
                    systems["PyTorch eager"] = lambda: time_rounds_torch(lambda: forward(*tensors))
                    for mode in ["default", "reduce-overhead"]:
                        compiled = torch.compile(forward, mode=None if mode == "default" else mode)
                        for _ in range(3):
                            result = compiled(*tensors)
                        checks[f"torch.compile ({mode})"] = compare(result.float().cpu().numpy(), reference,
                                                                      arrays["attention_mask"])[0]
                        systems[f"torch.compile ({mode})"] = (lambda c: lambda: time_rounds_torch(
                            lambda: c(*tensors)))(compiled)
                    jax_forward = jax_encoder(config, weights)
                    if jax_forward is not None:
                        import jax.numpy as jnp

                        jax_args = [jnp.asarray(arrays[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]
                        result = jax_forward(*jax_args)
                        result.block_until_ready()
                        checks["JAX (jit)"] = compare(np.asarray(result, dtype=np.float32), reference,
                                                      arrays["attention_mask"])[0]

                        def jax_round(calls=CALLS):
                            # JAX has no event API: host clock around N back-to-back calls,
                            # the device drained before and after.
                            jax_forward(*jax_args).block_until_ready()
                            started = time.perf_counter()
                            for _ in range(calls):
                                result = jax_forward(*jax_args)
                            result.block_until_ready()
                            return (time.perf_counter() - started) * 1e3 / calls

                        systems["JAX (jit)"] = jax_round
                else:
                    compiled = torch.compile(forward, mode="max-autotune")
                    for _ in range(3):
                        result = compiled(*tensors)
                    checks["torch.compile (max-autotune)"] = compare(result.float().cpu().numpy(), reference,
                                                                      arrays["attention_mask"])[0]
                    systems["torch.compile (max-autotune)"] = lambda: time_rounds_torch(lambda: compiled(*tensors))
                    systems["PyTorch eager"] = lambda: time_rounds_torch(lambda: forward(*tensors))
                for function in systems.values():  # warm-up round, untimed
                    function()
                times = {system: [] for system in systems}
                for _ in range(ROUNDS):
                    for system, function in systems.items():
                        times[system].append(function())
            if "kiln" in systems:
                # Checked again after timing: the outputs of kiln's last run, after its replays.
                outputs, _, _ = kiln_run(artifact, files, out_dir, extra=["--repeat", str(CALLS), "--rounds", "1"])
                checks["kiln"] = compare(outputs["last_hidden_state"], reference, arrays["attention_mask"])[0]
            floor, flops = floor_ms(config, batch, seq, ceilings["flops"], ceilings["bandwidth"]) if ceilings \
                else (None, None)
            kiln_ms = statistics.median(times["kiln"]) if "kiln" in times else None
            for system, samples in times.items():
                ms = statistics.median(samples)
                ratio = f"{kiln_ms / ms:.2f}" if kiln_ms else ""
                floor_text = f"{floor:.3f} | {floor / ms:.1%}" if floor else " | "
                check = f"cos {checks[system]:.4f}" if system in checks else "reference"
                say(f"| {name} | {batch}x{seq} | {system} | {ms:.3f} | {ratio} | {floor_text} | {check} |")


def section_kernels():
    """kiln's launches one by one, against the compiler's FLOP and byte counts."""
    ceilings = json.load(open(ceilings_file())) if os.path.exists(ceilings_file()) else None
    with tempfile.TemporaryDirectory() as work:
        for name, batch, seq in WORKLOADS:
            _, _, files = workload_inputs(name, batch, seq, work)
            _, out, _ = kiln_run(gunzipped(name + ".bf16", work), files, os.path.join(work, "out"), extra=["--profile", "10"],
                                 env={"KILN_CUDA_GRAPHS": "0"})
            say(f"{name} {batch}x{seq}: per launch (median of 10, events per launch, graphs off)")
            say("| # | group | kernel | us | GFLOP | MB | TFLOP/s | GB/s | floor us |")
            say("|---|---|---|---|---|---|---|---|---|")
            for line in out.splitlines():
                if line.startswith("launch "):
                    fields = line.split()
                    values = dict(f.split("=") for f in fields[4:])
                    us, flops, nbytes = float(values["median_us"]), int(values["flops"]), int(values["bytes"])
                    floor = max(flops / ceilings["flops"], nbytes / ceilings["bandwidth"]) * 1e6 if ceilings else 0
                    say(f"| {fields[1]} | {fields[2]} | {fields[3]} | {us:.1f} | {flops / 1e9:.2f} | "
                        f"{nbytes / 1e6:.2f} | {float(values['tflops']):.2f} | {float(values['gbps']):.0f} | "
                        f"{floor:.1f} |")
                elif line.startswith("launches "):
                    say(f"{name}: {line}")


def section_probes():
    """Runs each probe kernel (out/gpu/probes/NAME.ptx and .json from `kiln kernel`)
    through the CUDA driver and compares its output bits with the simulator's."""
    import ctypes
    import glob
    import numpy as np
    import torch
    torch.zeros(1, device="cuda")  # the primary context, current on this thread
    cuda = ctypes.CDLL("libcuda.so.1")

    def check(status, what):
        if status != 0:
            raise RuntimeError(f"{what}: CUDA error {status}")

    dtypes = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16, "i32": torch.int32,
              "i64": torch.int64}
    failures = 0
    say("| probe | outputs | equal bits | max abs difference |")
    say("|---|---|---|---|")
    for path in sorted(glob.glob(os.path.join(OUT, "probes", "*.json"))):
        probe = json.load(open(path))
        module, function = ctypes.c_void_p(), ctypes.c_void_p()
        ptx = open(path[:-len(".json")] + ".ptx", "rb").read() + b"\0"
        check(cuda.cuModuleLoadData(ctypes.byref(module), ptx), "loading " + probe["kernel"])
        check(cuda.cuModuleGetFunction(ctypes.byref(function), module, probe["kernel"].encode()), "finding the kernel")
        tensors, values = [], []
        for param in probe["params"]:
            if "scalar" in param:
                values.append(ctypes.c_int64(int(param["scalar"])))
                tensors.append(None)
                continue
            if param["dtype"] == "u32":
                host = torch.from_numpy(np.array(param["input"], dtype=np.uint64).astype(np.uint32).view(np.int32))
            else:
                host = torch.tensor(param["input"], dtype=dtypes[param["dtype"]])
            tensor = host.cuda()
            tensors.append(tensor)
            values.append(ctypes.c_void_p(tensor.data_ptr()))
        # kernelParams: one pointer to each argument's value.
        pointers = (ctypes.c_void_p * len(values))(*[ctypes.addressof(v) for v in values])
        check(cuda.cuLaunchKernel(function, probe["blocks"], 1, 1, probe["threads"], 1, 1,
                                  probe["dynamic_shared_bytes"], None, pointers, None), "launching")
        torch.cuda.synchronize()
        for param, tensor in zip(probe["params"], tensors):
            if tensor is None or not param.get("writable"):
                continue
            got = tensor.cpu().to(torch.float64).numpy()
            want = np.array(param["simulated"], dtype=np.float64)
            as_bits = lambda x: x.astype(np.float32).view(np.uint32)
            equal = int((as_bits(got) == as_bits(want)).sum())
            difference = float(np.max(np.abs(got - want))) if len(want) else 0.0
            failures += equal != len(want)
            say(f"| {probe['kernel']} | `{param['name']}` ({len(want)}) | {equal} | {difference:.3g} |")
        cuda.cuModuleUnload(module)
    return failures


def section_gemm():
    """kiln's matmul launches against cuBLAS (torch.matmul, bf16) at the same shapes."""
    import torch
    with tempfile.TemporaryDirectory() as work:
        for name, batch, seq in WORKLOADS:
            import bert_weights
            config = bert_weights.config_json(name)
            hidden, inner = config["hidden_size"], config["intermediate_size"]
            rows = batch * seq
            shapes = {"qkv": (3 * hidden, hidden), "out": (hidden, hidden), "up": (inner, hidden), "down": (hidden, inner)}
            _, out, _ = kiln_run(gunzipped(name + ".bf16", work), workload_inputs(name, batch, seq, work)[2],
                                 os.path.join(work, "out"), extra=["--profile", "10"], env={"KILN_CUDA_GRAPHS": "0"})
            launches = []
            for line in out.splitlines():
                if line.startswith("launch ") and "_matmul" in line:
                    fields = line.split()
                    values = dict(f.split("=") for f in fields[4:])
                    launches.append((fields[3], int(values["flops"]), float(values["median_us"])))
            say(f"{name} {batch}x{seq} (M = {rows}): kiln's matmul launches against cuBLAS")
            say("| layer matmul | N | K | kiln kernel | kiln us | cuBLAS us | kiln / cuBLAS speed |")
            say("|---|---|---|---|---|---|---|")
            for label, (n, k) in shapes.items():
                matching = [l for l in launches if l[1] == 2 * rows * n * k]
                if not matching:
                    say(f"| {label} | {n} | {k} | (no launch with these FLOPs) | | | |")
                    continue
                kernel, _, kiln_us = sorted(matching, key=lambda l: l[2])[len(matching) // 2]
                a = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
                w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
                time_rounds_torch(lambda: a @ w.t())  # warm-up
                cublas_ms = statistics.median(time_rounds_torch(lambda: a @ w.t()) for _ in range(ROUNDS))
                say(f"| {label} | {n} | {k} | {kernel} | {kiln_us:.1f} | {cublas_ms * 1e3:.1f} | "
                    f"{cublas_ms * 1e3 / kiln_us:.2f} |")


def run_section(name):
    """Runs `name` in its own process under its cap; its rows stream through."""
    started = time.time()
    say(f"\n## {name} (cap {CAPS[name]} s)")
    try:
        done = subprocess.run([sys.executable, __file__, "--section", name], timeout=CAPS[name],
                              env=dict(os.environ, PYTHONUNBUFFERED="1", XLA_PYTHON_CLIENT_PREALLOCATE="false"))
        status = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode})"
    except subprocess.TimeoutExpired:
        status = "STOPPED at its cap"
    say(f"{name}: {status} in {time.time() - started:.0f} s")
    return status == "ok"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    parser.add_argument("--only", help="comma-separated sections to run (default: all, in order)")
    arguments = parser.parse_args()
    if arguments.section:
        function = {"probes": section_probes, "device": section_device, "correctness": section_correctness,
                    "max-autotune": lambda: section_timing(WORKLOADS, autotune=True), "kernels": section_kernels,
                    "gemm": section_gemm}
        for workload in WORKLOADS:
            function[f"timing-{workload[0]}"] = lambda w=workload: section_timing([w])
        failures = function[arguments.section]()
        sys.exit(1 if failures else 0)
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(f"# kiln on the GPU, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    chosen = arguments.only.split(",") if arguments.only else SECTIONS
    passed = [run_section(name) for name in SECTIONS if name in chosen]
    if os.environ.get("OUT"):
        shutil.copy(os.path.join(OUT, "results.md"), os.path.join(os.environ["OUT"], "results.md"))
    sys.exit(0 if all(passed) else 1)


if __name__ == "__main__":
    main()
