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
    # Clip with constant bounds, and with the upper bound alone.
    low, high = np.array(-0.5, np.float32), np.array(0.7, np.float32)
    write("clip_both_bounds", model("clip", [helper.make_node("Clip", ["x", "low", "high"], ["y"])],
                                    [("x", shape)], ["y"], {"low": low, "high": high}), {"x": x}, ["y"])
    write("clip_upper_bound_only", model("clip", [helper.make_node("Clip", ["x", "", "high"], ["y"])],
                                         [("x", shape)], ["y"], {"high": high}), {"x": x}, ["y"])
    # Split by sizes given as a constant input (opset 13), and into num_outputs parts (opset 18, 8 = 3 + 3 + 2).
    sizes = helper.make_tensor("sizes", TensorProto.INT64, [2], [3, 5])
    split_sizes = model("split", [helper.make_node("Split", ["x", "sizes"], ["a", "b"], axis=-1)], [("x", shape)],
                        ["a", "b"], {})
    split_sizes.graph.initializer.append(sizes)
    write("split_sizes_input", split_sizes, {"x": x}, ["a", "b"])
    write("split_num_outputs_opset18", model("split", [helper.make_node(
        "Split", ["x"], ["a", "b", "c"], axis=2, num_outputs=3)], [("x", shape)], ["a", "b", "c"], {}, opset=18),
        {"x": x}, ["a", "b", "c"])
    # LayerNormalization with its Mean and InvStdDev outputs, over the last axis and over axes 1 and 2.
    for name, axis in [("layer_norm_all_outputs", -1), ("layer_norm_all_outputs_axis1", 1)]:
        normalized = x.shape[axis:] if axis >= 0 else x.shape[axis:]
        scale = RNG.uniform(0.5, 1.5, normalized).astype(np.float32)
        offset = RNG.uniform(-0.5, 0.5, normalized).astype(np.float32)
        write(name, model("layer_norm", [helper.make_node(
            "LayerNormalization", ["x", "scale", "offset"], ["y", "mean", "inv_std_dev"], axis=axis, epsilon=1e-5)],
            [("x", shape)], ["y", "mean", "inv_std_dev"], {"scale": scale, "offset": offset}), {"x": x},
            ["y", "mean", "inv_std_dev"])
    # Opsets 24 and 25: Swish (new in 24) and ops whose versions moved without changing meaning.
    write("swish_opset24", model("swish", [helper.make_node("Swish", ["x"], ["y"], alpha=1.5)], [("x", shape)],
                                 ["y"], {}, opset=24), {"x": x}, ["y"])
    target = helper.make_tensor("target", TensorProto.INT64, [3], [2, 3 * HIDDEN // 2, 2])
    moved = model("reshape_transpose", [helper.make_node("Reshape", ["x", "target"], ["r"]),
                                        helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1])],
                  [("x", [2, 3, HIDDEN])], ["y"], {}, opset=25)
    moved.graph.initializer.append(target)
    write("reshape_transpose_opset25", moved, {"x": x}, ["y"])
    print("wrote", sorted(p.name for p in ROOT.iterdir()))


if __name__ == "__main__":
    main()
