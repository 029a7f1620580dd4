#!/usr/bin/env python3
"""kiln against ONNX's own operator examples for the ops of transformer models.

For every node test case that the `onnx` package defines for these ops
(`onnx.backend.test.case.node`: the examples of the operator docs, with
expected outputs computed by their numpy reference), runs `kiln eval` on the
case's model and inputs (inputs and outputs as ONNX TensorProto `.pb` files,
which hold every element type exactly) and sorts the case into one of:

  right    kiln's outputs match the expected ones: the case's own rtol/atol (at
           least 1e-4 / 1e-6), and for 16-bit float outputs within 2 units in
           the last place (kiln's evaluator rounds each op's result to the
           dtype, numpy's reference rounds in its own order)
  wrong    kiln ran but its outputs differ (must never happen)
  refused  kiln refused with "not supported" and a reason
  failed   kiln failed some other way (an error that is not a clear refusal)

and prints a line per op and the totals. Needs `onnx` and numpy (the pinned
versions in testdata/requirements.txt) and a built `kiln`:

    python3 scripts/onnx_conformance.py [--kiln target/release/kiln] [--show failed,wrong]
"""
import argparse
import os
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.backend.test.case import node

# The ops of transformer models: what encoders and decoders are exported with.
TRANSFORMER_OPS = """Abs Add And Attention Cast CastLike Ceil Clip Concat Constant ConstantOfShape Cos Div Dropout
Equal Erf Exp Expand Flatten Floor Gather GatherND Gelu Gemm Greater GreaterOrEqual Identity IsNaN
LayerNormalization Less LessOrEqual Log MatMul Max Min Mul Neg Not Or Pow RMSNormalization Range
Reciprocal ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum Relu Reshape RotaryEmbedding Shape
Sigmoid Sin Slice Softmax Split Sqrt Squeeze Sub Swish Tanh Transpose Trilu Unsqueeze Where Xor""".split()

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def as_array(value):
    """A case's input or output as numpy (some cases store TensorProtos)."""
    return numpy_helper.to_array(value) if isinstance(value, TensorProto) else np.asarray(value)


def run_case(kiln, case, work):
    """(verdict, detail) for one test case."""
    directory = os.path.join(work, case.name)
    os.makedirs(directory)
    model_path = os.path.join(directory, "model.onnx")
    with open(model_path, "wb") as f:
        f.write(case.model.SerializeToString())
    inputs, outputs = case.data_sets[0]
    # Inputs and outputs travel as ONNX TensorProto files (.pb), the one format
    # that holds bfloat16, the 8-bit floats and the packed 4- and 2-bit types.
    arguments = [kiln, "eval", model_path, "--output-dir", os.path.join(directory, "out"), "--output-format", "pb"]
    graph_inputs = [i.name for i in case.model.graph.input]
    for name, value in zip(graph_inputs, inputs):
        path = os.path.join(directory, f"{name}.pb")
        tensor = value if isinstance(value, TensorProto) else numpy_helper.from_array(np.asarray(value), name)
        with open(path, "wb") as f:
            f.write(tensor.SerializeToString())
        arguments += ["--input", f"{name}={path}"]
    done = subprocess.run(arguments, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        message = " ".join(done.stderr.strip().splitlines()[-3:])
        return ("refused" if "not supported" in message else "failed"), message
    rtol, atol = getattr(case, "rtol", 1e-3), getattr(case, "atol", 1e-7)
    for output, expected in zip(case.model.graph.output, outputs):
        path = os.path.join(directory, "out", output.name.replace("/", "_") + ".pb")
        if not os.path.exists(path):
            return "wrong", f"no output {output.name}"
        got = numpy_helper.to_array(onnx.load_tensor(path))
        expected = as_array(expected)
        if got.shape != expected.shape:
            return "wrong", f"{output.name}: shape {got.shape}, expected {expected.shape}"
        # bfloat16 and the float8 types (ml_dtypes) are floats too, though numpy's kind says otherwise.
        if expected.dtype.kind in "fcV" or "float" in expected.dtype.name:
            got64, expected64 = got.astype(np.float64), expected.astype(np.float64)
            same = np.allclose(got64, expected64, rtol=max(rtol, 1e-4), atol=max(atol, 1e-6), equal_nan=True)
            if not same and expected.dtype.itemsize == 2:
                ulp = {"float16": 2.0**-10, "bfloat16": 2.0**-7}.get(expected.dtype.name, 0.0)
                bound = 2 * ulp * np.exp2(np.floor(np.log2(np.maximum(np.abs(expected64), 2.0**-14))))
                same = bool(np.all((np.abs(got64 - expected64) <= bound) | (np.isnan(got64) & np.isnan(expected64))))
        else:
            same = np.array_equal(got.astype(expected.dtype), expected)
        if not same:
            return "wrong", f"{output.name}: values differ"
    return "right", ""


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kiln", default=os.path.join(ROOT, "target", "release", "kiln"))
    parser.add_argument("--show", default="wrong,failed", help="verdicts whose cases are listed with their detail")
    arguments = parser.parse_args()
    show = set(arguments.show.split(",")) if arguments.show else set()
    totals = Counter()
    by_op = defaultdict(Counter)
    listed = []
    cases = defaultdict(list)
    for case in node.collect_testcases():
        # `*_expanded*` cases are the op's function body written out in other ops: not the op itself.
        op = case.model.graph.node[0].op_type if case.model.graph.node else None
        if op in TRANSFORMER_OPS and "_expanded" not in case.name:
            cases[op].append(case)
    with tempfile.TemporaryDirectory() as work:
        for op in TRANSFORMER_OPS:
            for case in cases[op]:
                try:
                    verdict, detail = run_case(arguments.kiln, case, work)
                except subprocess.TimeoutExpired:
                    verdict, detail = "failed", "timed out"
                totals[verdict] += 1
                by_op[op][verdict] += 1
                if verdict in show:
                    listed.append(f"  {verdict:<7} {case.name}: {detail[:200]}")
    for op in TRANSFORMER_OPS:
        counts = by_op[op]
        if counts:
            print(f"{op:<20} " + "  ".join(f"{k} {counts[k]}" for k in ("right", "wrong", "refused", "failed")
                                            if counts[k]))
    print("\n".join(listed))
    total = sum(totals.values())
    print(f"\n{total} cases: {totals['right']} right ({totals['right'] / max(total, 1):.1%}), "
          f"{totals['wrong']} wrong, {totals['refused']} refused as not supported, {totals['failed']} failed otherwise")
    sys.exit(1 if totals["wrong"] else 0)


if __name__ == "__main__":
    main()
