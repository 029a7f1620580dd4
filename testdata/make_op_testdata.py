#!/usr/bin/env python3
"""Makes testdata/ops/: one tiny ONNX model per contrib or recent-opset op that
the tiny exported models do not exercise, with random inputs and the outputs
ONNX Runtime computes for them (the independent reference).

Run with onnx==1.23.2, onnxruntime==1.32.0, numpy (see requirements.txt):
    python testdata/make_op_testdata.py
"""
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parent / "ops"
RNG = np.random.default_rng(5)
HIDDEN = 8


def tensor_info(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def model(name, nodes, inputs, outputs, initializers, opset=17):
    graph = helper.make_graph(nodes, name, [tensor_info(n, s) for n, s in inputs],
                              [tensor_info(n, None) for n in outputs],
                              [helper.make_tensor(n, TensorProto.FLOAT, v.shape, v.flatten()) for n, v in initializers.items()])
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


def write(name, proto, feeds, outputs):
    directory = ROOT / name
    (directory / "inputs").mkdir(parents=True)
    (directory / "expected").mkdir(parents=True)
    onnx.save(proto, directory / "model.onnx")
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])
    results = session.run(outputs, feeds)
    for key, value in feeds.items():
        np.save(directory / "inputs" / f"{key}.npy", value)
    for key, value in zip(outputs, results):
        np.save(directory / "expected" / f"{key}.npy", value)


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    x = RNG.standard_normal((2, 3, HIDDEN)).astype(np.float32)
    skip = RNG.standard_normal((2, 3, HIDDEN)).astype(np.float32)
    gamma = RNG.uniform(0.5, 1.5, HIDDEN).astype(np.float32)
    beta = RNG.uniform(-0.5, 0.5, HIDDEN).astype(np.float32)
    bias = RNG.uniform(-0.5, 0.5, HIDDEN).astype(np.float32)
    shape = ["batch", "seq", HIDDEN]
    feeds = {"x": x, "skip": skip}
    both = [("x", shape), ("skip", shape)]

    write("skip_layer_norm", model("skip_layer_norm", [helper.make_node(
        "SkipLayerNormalization", ["x", "skip", "gamma", "beta", "bias"], ["y", "", "", "sum"], domain="com.microsoft",
        epsilon=1e-5)], both, ["y", "sum"], {"gamma": gamma, "beta": beta, "bias": bias}), feeds, ["y", "sum"])
    write("skip_simplified_layer_norm", model("skip_simplified_layer_norm", [helper.make_node(
        "SkipSimplifiedLayerNormalization", ["x", "skip", "gamma", "bias"], ["y", "", "", "sum"], domain="com.microsoft",
        epsilon=1e-6)], both, ["y", "sum"], {"gamma": gamma, "bias": bias}), feeds, ["y", "sum"])
    write("simplified_layer_norm", model("simplified_layer_norm", [helper.make_node(
        "SimplifiedLayerNormalization", ["x", "gamma"], ["y"], axis=-1, epsilon=1e-6)], [("x", shape)], ["y"],
        {"gamma": gamma}), {"x": x}, ["y"])
    write("fast_gelu", model("fast_gelu", [helper.make_node(
        "FastGelu", ["x", "bias"], ["y"], domain="com.microsoft")], [("x", shape)], ["y"], {"bias": bias}),
        {"x": x}, ["y"])
    write("bias_gelu", model("bias_gelu", [helper.make_node(
        "BiasGelu", ["x", "bias"], ["y"], domain="com.microsoft")], [("x", shape)], ["y"], {"bias": bias}),
        {"x": x}, ["y"])
    write("microsoft_gelu", model("microsoft_gelu", [helper.make_node(
        "Gelu", ["x"], ["y"], domain="com.microsoft")], [("x", shape)], ["y"], {}), {"x": x}, ["y"])
    write("rms_normalization_opset23", model("rms_normalization", [helper.make_node(
        "RMSNormalization", ["x", "gamma"], ["y"], axis=-1, epsilon=1e-5)], [("x", shape)], ["y"],
        {"gamma": gamma}, opset=23), {"x": x}, ["y"])
    write("gelu_opset20_tanh", model("gelu_tanh", [helper.make_node(
        "Gelu", ["x"], ["y"], approximate="tanh")], [("x", shape)], ["y"], {}, opset=20), {"x": x}, ["y"])
    write("gemm_transposed_scaled", model("gemm", [helper.make_node(
        "Gemm", ["a", "w", "c"], ["y"], transA=0, transB=1, alpha=0.5, beta=2.0)], [("a", [3, HIDDEN])], ["y"],
        {"w": RNG.standard_normal((4, HIDDEN)).astype(np.float32), "c": bias[:4].copy()}),
        {"a": x[0]}, ["y"])
    print("wrote", sorted(p.name for p in ROOT.iterdir()))


if __name__ == "__main__":
    main()
