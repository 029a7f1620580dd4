#!/usr/bin/env python3
"""Makes testdata/ops/: one tiny ONNX model per contrib or recent-opset op that
the tiny exported models do not exercise, with random inputs and the outputs
ONNX Runtime computes for them (the independent reference; ONNX's reference
evaluator where ONNX Runtime refuses what the operator allows).

Run with onnx==1.23.2, onnxruntime==1.32.0, numpy (see requirements.txt):
    python testdata/make_op_testdata.py
"""
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

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


def write(name, proto, feeds, outputs, reference="onnxruntime"):
    """Saves the model, its inputs and the outputs of the reference: ONNX
    Runtime, or ONNX's own reference evaluator where ONNX Runtime is stricter
    than the operator's definition."""
    directory = ROOT / name
    (directory / "inputs").mkdir(parents=True)
    (directory / "expected").mkdir(parents=True)
    onnx.save(proto, directory / "model.onnx")
    if reference == "onnx":
        results = ReferenceEvaluator(proto).run(outputs, feeds)
    else:
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
    # RotaryEmbedding (opset 23): 4-D input, interleaved pairs, partial rotation (4 of 8), position ids;
    # and a 3-D input with num_heads and per-position caches (no position ids).
    queries = RNG.standard_normal((2, 2, 3, HIDDEN)).astype(np.float32)
    positions = np.array([[0, 1, 2], [4, 2, 0]], dtype=np.int64)
    angles = np.arange(5)[:, None] * np.array([1.0, 0.1], np.float32)[None, :]
    rotary = model("rotary", [helper.make_node("RotaryEmbedding", ["x", "cos", "sin", "positions"], ["y"],
                                               interleaved=1, rotary_embedding_dim=4)],
                   [("x", ["batch", 2, "seq", HIDDEN])], ["y"],
                   {"cos": np.cos(angles).astype(np.float32), "sin": np.sin(angles).astype(np.float32)}, opset=23)
    rotary.graph.input.append(helper.make_tensor_value_info("positions", TensorProto.INT64, ["batch", "seq"]))
    write("rotary_embedding_interleaved_partial", rotary, {"x": queries, "positions": positions}, ["y"])
    per_position = np.arange(6, dtype=np.float32).reshape(2, 3, 1) * np.array([1.0, 0.5], np.float32)
    write("rotary_embedding_3d_per_position", model("rotary", [helper.make_node(
        "RotaryEmbedding", ["x", "cos", "sin"], ["y"], num_heads=2)], [("x", [2, 3, HIDDEN])], ["y"],
        {"cos": np.cos(per_position).astype(np.float32), "sin": np.sin(per_position).astype(np.float32)},
        opset=23), {"x": x}, ["y"])
    # Attention (opset 23): grouped-query heads with a past cache, causal (present_* outputs too);
    # 3-D inputs with head counts, a boolean mask and softcap; a float mask, a scale and the
    # post-softmax probabilities as qk_matmul_output.
    q4 = RNG.standard_normal((2, 4, 3, HIDDEN)).astype(np.float32)
    k4 = RNG.standard_normal((2, 2, 3, HIDDEN)).astype(np.float32)
    v4 = RNG.standard_normal((2, 2, 3, HIDDEN)).astype(np.float32)
    past_k = RNG.standard_normal((2, 2, 2, HIDDEN)).astype(np.float32)
    past_v = RNG.standard_normal((2, 2, 2, HIDDEN)).astype(np.float32)
    attention = model("attention", [helper.make_node(
        "Attention", ["q", "k", "v", "", "past_k", "past_v"], ["y", "present_k", "present_v"], is_causal=1)],
        [("q", [2, 4, 3, HIDDEN]), ("k", [2, 2, 3, HIDDEN]), ("v", [2, 2, 3, HIDDEN]),
         ("past_k", [2, 2, 2, HIDDEN]), ("past_v", [2, 2, 2, HIDDEN])], ["y", "present_k", "present_v"], {}, opset=23)
    write("attention_gqa_causal_past", attention,
          {"q": q4, "k": k4, "v": v4, "past_k": past_k, "past_v": past_v}, ["y", "present_k", "present_v"])
    q3, k3, v3 = (RNG.standard_normal((2, 3, 2 * HIDDEN)).astype(np.float32) for _ in range(3))
    keep = np.array([[[True, True, False], [True, False, False], [True, True, True]]])
    attention = model("attention", [helper.make_node(
        "Attention", ["q", "k", "v", "mask"], ["y"], q_num_heads=2, kv_num_heads=2, softcap=2.0)],
        [("q", [2, 3, 2 * HIDDEN]), ("k", [2, 3, 2 * HIDDEN]), ("v", [2, 3, 2 * HIDDEN])], ["y"], {}, opset=23)
    attention.graph.input.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, [1, 3, 3]))
    write("attention_3d_bool_mask_softcap", attention, {"q": q3, "k": k3, "v": v3, "mask": keep}, ["y"])
    bias = RNG.uniform(-1.0, 0.0, (3, 3)).astype(np.float32)
    attention = model("attention", [helper.make_node(
        "Attention", ["q", "k", "v", "bias"], ["y", "", "", "probabilities"], scale=0.25, qk_matmul_output_mode=3)],
        [("q", [2, 2, 3, HIDDEN]), ("k", [2, 2, 3, HIDDEN]), ("v", [2, 2, 3, HIDDEN])], ["y", "probabilities"],
        {"bias": bias}, opset=23)
    write("attention_float_mask_scale_probabilities", attention,
          {"q": q4[:, :2], "k": k4, "v": v4}, ["y", "probabilities"])
    # Opsets before 13: each op as the version the opset selects.
    x3 = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    write("softmax_opset11_flattens_at_axis1", model("softmax", [helper.make_node("Softmax", ["x"], ["y"], axis=1)],
          [("x", [2, 3, 4])], ["y"], {}, opset=11), {"x": x3}, ["y"])
    write("clip_opset6_attribute_bounds", model("clip", [helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.7)],
          [("x", [2, 3, 4])], ["y"], {}, opset=6), {"x": x3}, ["y"])
    old_forms = model("opset11_attribute_axes", [
        helper.make_node("ReduceSum", ["x"], ["sum"], axes=[2], keepdims=0),
        helper.make_node("Unsqueeze", ["sum"], ["unsqueezed"], axes=[1]),
        helper.make_node("Squeeze", ["unsqueezed"], ["squeezed"], axes=[1]),
        helper.make_node("Split", ["x"], ["head", "tail"], axis=2, split=[1, 3]),
        helper.make_node("Dropout", ["tail"], ["dropped"], ratio=0.25),
    ], [("x", [2, 3, 4])], ["squeezed", "head", "dropped"], {}, opset=11)
    write("opset11_attribute_axes_and_split", old_forms, {"x": x3}, ["squeezed", "head", "dropped"])
    # Casts through the small types kiln's evaluator holds (8-bit floats, FP4, 4- and 16-bit integers), back to float.
    wide = (RNG.standard_normal((4, 8)) * 40).astype(np.float32)
    wide[0, :4] = [1e6, -1e6, np.inf, 0.3]
    small = [("e5m2", TensorProto.FLOAT8E5M2), ("e4m3fnuz", TensorProto.FLOAT8E4M3FNUZ),
             ("e5m2fnuz", TensorProto.FLOAT8E5M2FNUZ), ("int4", TensorProto.INT4), ("uint4", TensorProto.UINT4),
             ("int16", TensorProto.INT16), ("uint16", TensorProto.UINT16)]
    # Float to 4-bit integers: ONNX Runtime rounds, ONNX's reference truncates; finite whole numbers agree.
    nodes = []
    for name, code in small:
        source = "whole" if name.endswith("int4") else "x"
        nodes += [helper.make_node("Cast", [source], [f"{name}_cast"], to=code),
                  helper.make_node("Cast", [f"{name}_cast"], [name], to=TensorProto.FLOAT)]
    names = [name for name, _ in small]
    write("cast_through_small_types_opset23", model("casts", nodes, [("x", [4, 8]), ("whole", [4, 8])], names, {},
                                                    opset=23), {"x": wide, "whole": np.nan_to_num(np.round(wide), posinf=5.0)}, names)
    q_cache = RNG.standard_normal((2, 2, 3, HIDDEN)).astype(np.float32)
    k_cache, v_cache = (RNG.standard_normal((2, 2, 5, HIDDEN)).astype(np.float32) for _ in range(2))
    attention = model("attention", [helper.make_node(
        "Attention", ["q", "k", "v", "", "", "", "nonpad_kv_seqlen"], ["y"], is_causal=1, left_window_size=2)],
        [("q", [2, 2, 3, HIDDEN]), ("k", [2, 2, 5, HIDDEN]), ("v", [2, 2, 5, HIDDEN])], ["y"], {}, opset=25)
    attention.graph.input.append(helper.make_tensor_value_info("nonpad_kv_seqlen", TensorProto.INT64, [2]))
    write("attention_external_cache_causal_window_opset25", attention,
          {"q": q_cache, "k": k_cache, "v": v_cache, "nonpad_kv_seqlen": np.array([4, 5], dtype=np.int64)}, ["y"])
    trilu = model("trilu", [helper.make_node("Trilu", ["x", "k"], ["y"], upper=0)], [("x", [2, 3, 4])], ["y"], {},
                  opset=14)
    trilu.graph.input.append(helper.make_tensor_value_info("k", TensorProto.INT64, []))
    write("trilu_lower_run_time_k", trilu, {"x": x3, "k": np.array(1, dtype=np.int64)}, ["y"])
    dropout = model("dropout", [helper.make_node("Dropout", ["x"], ["y", "mask"])], [("x", [2, 3, 4])],
                    ["y", "mask"], {}, opset=13)
    dropout.graph.output[1].type.tensor_type.elem_type = TensorProto.BOOL
    write("dropout_inference_mask", dropout, {"x": x3}, ["y", "mask"])
    # Casts to the 8-bit floats without saturation: past the format's rounding threshold is ±inf or NaN.
    overflowing = np.array([[0.5, -3.0, 300.0, -470.0, 240.0, 250.0, 6e4, -7e4]], dtype=np.float32)
    floats8 = [("e4m3fn", TensorProto.FLOAT8E4M3FN), ("e5m2", TensorProto.FLOAT8E5M2),
               ("e4m3fnuz", TensorProto.FLOAT8E4M3FNUZ), ("e5m2fnuz", TensorProto.FLOAT8E5M2FNUZ)]
    nodes = []
    for name, code in floats8:
        nodes += [helper.make_node("Cast", ["x"], [f"{name}_cast"], to=code, saturate=0),
                  helper.make_node("Cast", [f"{name}_cast"], [name], to=TensorProto.FLOAT)]
    names = [name for name, _ in floats8]
    write("cast_unsaturated_float8_opset19", model("casts", nodes, [("x", [1, 8])], names, {}, opset=19),
          {"x": overflowing}, names)
    # Unsaturated casts from integers: compared as floats, no integer reaches the thresholds here.
    integers = helper.make_graph(
        [helper.make_node("Cast", ["small"], ["small_e4m3"], to=TensorProto.FLOAT8E4M3FN, saturate=0),
         helper.make_node("Cast", ["small_e4m3"], ["from_uint8"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["wide"], ["wide_e5m2"], to=TensorProto.FLOAT8E5M2, saturate=0),
         helper.make_node("Cast", ["wide_e5m2"], ["from_int16"], to=TensorProto.FLOAT)],
        "casts", [helper.make_tensor_value_info("small", TensorProto.UINT8, [4]),
                  helper.make_tensor_value_info("wide", TensorProto.INT16, [4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("from_uint8", "from_int16")])
    write("cast_unsaturated_float8_from_integers_opset19",
          helper.make_model(integers, opset_imports=[helper.make_opsetid("", 19)], ir_version=10),
          {"small": np.array([0, 100, 209, 255], dtype=np.uint8),
           "wide": np.array([-30000, -5, 4096, 30000], dtype=np.int16)}, ["from_uint8", "from_int16"])
    # Reduction axes fed as a graph input with no elements: known (empty) at compile time.
    reduce = model("reduce", [helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=1),
                              helper.make_node("ReduceMax", ["x", "axes"], ["same"], noop_with_empty_axes=1)],
                   [("x", [2, 3, 4])], ["total", "same"], {}, opset=18)
    reduce.graph.input.append(helper.make_tensor_value_info("axes", TensorProto.INT64, [0]))
    write("reduce_empty_axes_input_opset18", reduce, {"x": x3, "axes": np.zeros(0, dtype=np.int64)},
          ["total", "same"])
    # Reductions over other axes than the last: mean pooling over the sequence, a softmax over axis 1.
    pooling = model("pooling", [helper.make_node("ReduceMean", ["x"], ["pooled"], axes=[1], keepdims=0),
                                helper.make_node("Softmax", ["x"], ["spread"], axis=1),
                                helper.make_node("ReduceMax", ["x"], ["peak"], axes=[0, 2], keepdims=1)],
                    [("x", [2, 3, 4])], ["pooled", "spread", "peak"], {}, opset=17)
    write("reductions_over_other_axes_opset17", pooling, {"x": x3}, ["pooled", "spread", "peak"])
    # float64 end to end: a Max of two doubles, and the cast down to float.
    doubles = helper.make_graph(
        [helper.make_node("Max", ["a", "b"], ["largest"]), helper.make_node("Cast", ["largest"], ["y"], to=1)],
        "doubles", [helper.make_tensor_value_info(n, TensorProto.DOUBLE, [2, 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info("largest", TensorProto.DOUBLE, None),
         helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    a, b = (RNG.standard_normal((2, 3)) * (1 + 1e-12) for _ in range(2))
    write("max_and_cast_float64", helper.make_model(doubles, opset_imports=[helper.make_opsetid("", 13)],
                                                    ir_version=10), {"a": a, "b": b}, ["largest", "y"])
    # A boolean mask of keys alone: kiln's attention op with a padding mask. ONNX Runtime wants the mask's
    # query dim spelled out, though the operator broadcasts it, so ONNX's reference evaluates this one
    # (without is_causal: its causal path reads the query count from the mask's shape).
    attention = model("attention", [helper.make_node("Attention", ["q", "k", "v", "keep"], ["y"])],
                      [("q", [2, 2, 3, HIDDEN]), ("k", [2, 2, 3, HIDDEN]), ("v", [2, 2, 3, HIDDEN])], ["y"], {},
                      opset=23)
    attention.graph.input.append(helper.make_tensor_value_info("keep", TensorProto.BOOL, [2, 1, 1, 3]))
    keys_kept = np.array([[True, True, False], [False, False, False]]).reshape(2, 1, 1, 3)
    write("attention_key_padding", attention,
          {"q": q4[:, :2], "k": k4, "v": v4, "keep": keys_kept}, ["y"], reference="onnx")
    print("wrote", sorted(p.name for p in ROOT.iterdir()))


if __name__ == "__main__":
    main()
