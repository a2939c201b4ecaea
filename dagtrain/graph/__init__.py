"""The fine task graph: IR, the exact-SGD builder, windows and the validator."""

from dagtrain.graph.build import build_exact
from dagtrain.graph.ir import CONTROL, DATA, KINDS, add_control, add_data, add_op, inputs_of, op_key
from dagtrain.graph.validate import validate
from dagtrain.graph.window import Window, plan_windows

__all__ = ["CONTROL", "DATA", "KINDS", "Window", "add_control", "add_data", "add_op", "build_exact",
           "inputs_of", "op_key", "plan_windows", "validate"]
