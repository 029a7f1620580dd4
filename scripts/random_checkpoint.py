#!/usr/bin/env python3
"""Writes a Hugging Face checkpoint directory (config.json + model.safetensors)
with random weights in the shape of a real model, for compile-time and
simulator benchmarks that need a model's size but not its answers.

    python3 scripts/random_checkpoint.py bert-base OUT_DIR
    python3 scripts/random_checkpoint.py smollm2-135m OUT_DIR

bert-base: BertModel, 12 layers, hidden 768, 12 heads, intermediate 3072,
vocabulary 30522. smollm2-135m: LlamaForCausalLM as SmolLM2-135M, 30 layers,
hidden 576, 9 query and 3 key/value heads, intermediate 1536, vocabulary
49152, tied embeddings. Weights are uniform in [-0.05, 0.05) (norm weights
1, biases 0), from a fixed seed: the same bytes every run. Only the Python
standard library is needed. An existing OUT_DIR with the same config is left
as it is.
"""
import array
import json
import os
import random
import struct
import sys


def bert_base():
    h, inter, layers = 768, 3072, 12
    config = {
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu", "hidden_size": h,
        "intermediate_size": inter, "num_attention_heads": 12, "num_hidden_layers": layers,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "type_vocab_size": 2, "vocab_size": 30522,
        "pad_token_id": 0, "position_embedding_type": "absolute", "dtype": "float32",
    }
    tensors = [
        ("embeddings.word_embeddings.weight", [30522, h]),
        ("embeddings.position_embeddings.weight", [512, h]),
        ("embeddings.token_type_embeddings.weight", [2, h]),
        ("embeddings.LayerNorm.weight", [h]),
        ("embeddings.LayerNorm.bias", [h]),
    ]
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ["query", "key", "value"]:
            tensors += [(p + f"attention.self.{name}.weight", [h, h]), (p + f"attention.self.{name}.bias", [h])]
        tensors += [
            (p + "attention.output.dense.weight", [h, h]), (p + "attention.output.dense.bias", [h]),
            (p + "attention.output.LayerNorm.weight", [h]), (p + "attention.output.LayerNorm.bias", [h]),
            (p + "intermediate.dense.weight", [inter, h]), (p + "intermediate.dense.bias", [inter]),
            (p + "output.dense.weight", [h, inter]), (p + "output.dense.bias", [h]),
            (p + "output.LayerNorm.weight", [h]), (p + "output.LayerNorm.bias", [h]),
        ]
    tensors += [("pooler.dense.weight", [h, h]), ("pooler.dense.bias", [h])]
    return config, tensors


def smollm2_135m():
    h, inter, layers, heads, kv_heads, head_dim = 576, 1536, 30, 9, 3, 64
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu", "hidden_size": h,
        "intermediate_size": inter, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "head_dim": head_dim, "num_hidden_layers": layers, "rms_norm_eps": 1e-5, "max_position_embeddings": 8192,
        "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}, "tie_word_embeddings": True,
        "attention_bias": False, "mlp_bias": False, "vocab_size": 49152, "dtype": "float32",
    }
    tensors = [("model.embed_tokens.weight", [49152, h]), ("model.norm.weight", [h])]
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors += [
            (p + "input_layernorm.weight", [h]), (p + "post_attention_layernorm.weight", [h]),
            (p + "self_attn.q_proj.weight", [heads * head_dim, h]),
            (p + "self_attn.k_proj.weight", [kv_heads * head_dim, h]),
            (p + "self_attn.v_proj.weight", [kv_heads * head_dim, h]),
            (p + "self_attn.o_proj.weight", [h, heads * head_dim]),
            (p + "mlp.gate_proj.weight", [inter, h]), (p + "mlp.up_proj.weight", [inter, h]),
            (p + "mlp.down_proj.weight", [h, inter]),
        ]
    return config, tensors


FAMILIES = {"bert-base": bert_base, "smollm2-135m": smollm2_135m}


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in FAMILIES:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(FAMILIES)}}} OUT_DIR")
    config, tensors = FAMILIES[sys.argv[1]]()
    out = sys.argv[2]
    config_path = os.path.join(out, "config.json")
    config_text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    weights_path = os.path.join(out, "model.safetensors")
    if os.path.exists(config_path) and os.path.exists(weights_path):
        with open(config_path) as f:
            if f.read() == config_text:
                print(f"{out}: up to date")
                return
        sys.exit(f"{out} holds another checkpoint; choose an empty directory")
    os.makedirs(out, exist_ok=True)
    # A pool of random floats, tiled from a random offset into each tensor.
    rng = random.Random(0x5EED)
    pool = array.array("f", (rng.uniform(-0.05, 0.05) for _ in range(1 << 20))).tobytes()
    ones, zeros = array.array("f", [1.0]).tobytes(), array.array("f", [0.0]).tobytes()
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        size = 4
        for d in shape:
            size *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    temporary = weights_path + ".partial"
    with open(temporary, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for name, shape in tensors:
            size = header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            if name.endswith("norm.weight") or name.endswith("LayerNorm.weight"):
                f.write(ones * (size // 4))
            elif name.endswith(".bias"):
                f.write(zeros * (size // 4))
            else:
                start = rng.randrange(len(pool) // 4) * 4
                tiled = pool[start:] + pool * (size // len(pool) + 1)
                f.write(tiled[:size])
    os.replace(temporary, weights_path)
    with open(config_path, "w") as f:
        f.write(config_text)
    print(f"{out}: {sys.argv[1]}, {len(tensors)} tensors, {offset / 1e6:.0f} MB of f32 weights")


if __name__ == "__main__":
    main()
