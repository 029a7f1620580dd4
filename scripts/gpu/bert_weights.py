"""Deterministic pseudo-random BERT checkpoints for the GPU benchmark.

`python3 bert_weights.py {minilm-l6|bert-base} DIR` writes DIR/config.json and
DIR/model.safetensors (f32) with pure Python, on any machine: the weights
compiler machine and the GPU machine produce the same bytes, so kiln's
artifact (compiled on the first) and the PyTorch/JAX references (built on the
second) share their weights exactly. Each tensor is a short pseudo-random
block (std 0.02, LayerNorm scales near 1) tiled to its size: the benchmark
moves and multiplies the same number of bytes as with real weights, and the
artifact compresses well enough to carry to the GPU machine.
"""
import json
import os
import struct
import sys

CONFIGS = {
    # sentence-transformers/all-MiniLM-L6-v2's encoder
    "minilm-l6": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                      vocab_size=30522, max_position_embeddings=512),
    # bert-base-uncased
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                      vocab_size=30522, max_position_embeddings=512),
}
BLOCK = 4096  # elements per pseudo-random block (16 KiB: inside gzip's window)


def config_json(name):
    config = dict(CONFIGS[name])
    config.update(architectures=["BertModel"], model_type="bert", hidden_act="gelu", layer_norm_eps=1e-12,
                  type_vocab_size=2, pad_token_id=0)
    return config


def tensors(config):
    """(name, shape, kind) of every weight; kind is 'matrix', 'scale' or 'bias'."""
    h, f = config["hidden_size"], config["intermediate_size"]
    out = [("embeddings.word_embeddings.weight", [config["vocab_size"], h], "matrix"),
           ("embeddings.position_embeddings.weight", [config["max_position_embeddings"], h], "matrix"),
           ("embeddings.token_type_embeddings.weight", [2, h], "matrix"),
           ("embeddings.LayerNorm.weight", [h], "scale"), ("embeddings.LayerNorm.bias", [h], "bias")]
    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        for name, rows, cols in [("attention.self.query", h, h), ("attention.self.key", h, h),
                                 ("attention.self.value", h, h), ("attention.output.dense", h, h),
                                 ("intermediate.dense", f, h), ("output.dense", h, f)]:
            out += [(p + name + ".weight", [rows, cols], "matrix"), (p + name + ".bias", [rows], "bias")]
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"]:
            out += [(p + norm + ".weight", [h], "scale"), (p + norm + ".bias", [h], "bias")]
    return out


def block(kind, seed):
    """BLOCK f32 values as little-endian bytes, from a 64-bit LCG."""
    state = seed
    values = []
    for _ in range(BLOCK):
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        uniform = ((state >> 11) / float(1 << 53)) * 2.0 - 1.0  # [-1, 1)
        values.append({"matrix": 0.0346 * uniform, "scale": 1.0 + 0.1 * uniform, "bias": 0.02 * uniform}[kind])
    return struct.pack(f"<{BLOCK}f", *values)


def tensor_bytes(kind, count, seed):
    data = block(kind, seed)
    return data * (count // BLOCK) + data[: 4 * (count % BLOCK)]


def write_model(name, directory):
    config = config_json(name)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    entries, offset = {}, 0
    specs = tensors(config)
    for index, (tensor, shape, _kind) in enumerate(specs):
        count = 1
        for d in shape:
            count *= d
        entries[tensor] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * count]}
        offset += 4 * count
    header = json.dumps(entries).encode()
    header += b" " * (-len(header) % 8)
    with open(os.path.join(directory, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for index, (tensor, shape, kind) in enumerate(specs):
            count = 1
            for d in shape:
                count *= d
            f.write(tensor_bytes(kind, count, seed=1000 + index))


def read_safetensors(path):
    """name -> (shape, raw little-endian f32 bytes) of an f32 safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    base = 8 + length
    return {name: (spec["shape"], data[base + spec["data_offsets"][0] : base + spec["data_offsets"][1]])
            for name, spec in header.items() if name != "__metadata__"}


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in CONFIGS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(CONFIGS)}}} DIR")
    write_model(sys.argv[1], sys.argv[2])
