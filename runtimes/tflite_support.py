"""Which engines load a TFLite file, and which of its operators LiteRT, TFLite Micro and an Ethos-U NPU run.

LiteRT and TFLite Micro are asked directly rather than read from a list: each distinct operator of the file
(builtin code and version, or custom name) is put alone in a one-operator model and loaded. An engine that
lacks the operator answers "Didn't find op"; any other complaint (the lone operator has no inputs) means the
kernel is there. TFLite Micro's Python interpreter registers every kernel of its build (a firmware registers
only what its ``MicroMutableOpResolver`` lists). Every probe runs in a forked child, as TFLite Micro may crash
preparing a malformed node and both engines print straight to file descriptor 2. The Ethos-U placement comes
from a Vela compile (:mod:`runtimes.vela`), whose report names each operator left on the CPU and why.

>>> litert_refusal(data)        # None, or LiteRT's reason for not loading the file  # doctest: +SKIP
>>> operator_support(data)      # {"litert": {"CONV_2D": None, ...}, "tflite-micro": {...}}  # doctest: +SKIP
>>> registered_builtins("tflite-micro")  # every builtin the installed build has a kernel for  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge.errors import EngineError

#: The engines :func:`operator_support` asks, by the names results documents use.
ENGINES = ("litert", "tflite-micro")
#: What the engines say when they have no kernel for an operator (LiteRT reports a missing custom op only when
#: it prepares the graph; TFLite Micro adds the second line to the first for builtins).
_MISSING = ("Didn't find op", "unresolved custom op", "Failed to get registration")
_ANSWER = "kernel: "
_RAISED = "\n--- raised: "  # separates what an engine printed from the exception it raised


@dataclass(frozen=True)
class OperatorCode:
    """One operator kind of a file: its name (``CUSTOM:<name>`` for custom ones), builtin code and version."""

    name: str
    builtin: int
    version: int
    custom: str | None = None


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated as schema

    return schema


def operator_codes(data: bytes) -> list[OperatorCode]:
    """The distinct operator kinds the main subgraph uses, in order of first use."""
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    used = dict.fromkeys(op.opcodeIndex for op in (model.subgraphs[0].operators or []))
    codes = []
    for index in used:
        code = model.operatorCodes[index]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        name = f"CUSTOM:{custom}" if custom else names.get(builtin, str(builtin))
        codes.append(OperatorCode(name, builtin, int(code.version or 1), custom))
    return codes


def litert_refusal(data: bytes) -> str | None:
    """None when LiteRT loads and allocates the file, else its reason in one sentence (first complaint only)."""
    ok, message = _in_child(lambda: _litert_load(data))
    if ok:
        return None
    printed, _, raised = message.partition(_RAISED)
    reason = clean_litert_message(raised or printed)
    return re.sub(r"\(tensor (\d+) ", lambda m: f"(tensor {m.group(1)} '{_tensor_name(data, int(m.group(1)))}' ", reason)


def tflm_refusal(data: bytes, arena_bytes: int | None = None) -> str | None:
    """None when TFLite Micro loads and allocates the file, else its reason (what it printed, first line)."""
    from runtimes.tflm_session import upper_bound_arena_bytes

    arena = arena_bytes or upper_bound_arena_bytes(data)
    ok, message = _in_child(lambda: _tflm_load(data, arena))
    return None if ok else _first_tflm_line(message)


def operator_support(data: bytes) -> dict[str, dict[str, str | None]]:
    """Per engine (``litert``, ``tflite-micro``), each operator kind of the file: None if it has a kernel, else why."""
    codes = operator_codes(data)
    reasons = {"litert": f"LiteRT {_version('ai-edge-litert')} has no kernel for {{name}} version {{version}}",
               "tflite-micro": f"not in TFLite Micro's kernels (tflite-micro {_version('tflite-micro')})"}
    support: dict[str, dict[str, str | None]] = {}
    for engine in ENGINES:
        found = _has_kernels(engine, codes)
        support[engine] = {code.name: None if has else reasons[engine].format(name=code.name, version=code.version)
                           for code, has in zip(codes, found, strict=True)}
    return support


def npu_placement(data: bytes, accelerator: str = "ethos-u55-128") -> dict[str, Any]:
    """Which operators Vela puts on the Ethos-U NPU and which stay on the CPU, with Vela's reason for each."""
    from runtimes.vela import compile_for_npu, vela_version

    if vela_version() is None:
        return {"accelerator": accelerator, "error": "Vela is not installed (pip install ethos-u-vela)"}
    try:
        _, summary = compile_for_npu(data, accelerator)
    except EngineError as exc:
        return {"accelerator": accelerator, "error": str(exc)}
    return {"accelerator": accelerator, "vela_version": summary["vela_version"],
            "npu_operators": summary["npu_operators"], "cpu_operators": summary["cpu_operators"],
            "cpu_operations": summary["cpu_operations"], "macs": summary["macs"]}


def clean_litert_message(message: str) -> str:
    """LiteRT's first complaint, with the tensor it names: its messages arrive run together without spaces."""
    text = " ".join(message.split())
    parts = re.split(r"(?<=[.!])(?=[A-Z])", text)
    first = parts[0].strip() if parts else text
    for part in parts[1:3]:
        if re.match(r"Tensor \d+ has", part):
            first = f"{first.rstrip('.')} ({part.strip().rstrip('.').replace('Tensor', 'tensor', 1)})"
            break
    return first.rstrip(". ") or "LiteRT gave no reason"


def _tensor_name(data: bytes, index: int) -> str:
    graph = _schema().Model.GetRootAs(bytes(data), 0).Subgraphs(0)
    return (graph.Tensors(index).Name() or b"?").decode(errors="replace") if index < graph.TensorsLength() else "?"


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def _litert_load(data: bytes, allocate: bool = True) -> None:
    from ai_edge_litert import interpreter as litert

    resolver = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = litert.Interpreter(model_content=bytes(data), experimental_op_resolver_type=resolver)
    if allocate:
        interpreter.allocate_tensors()


def _tflm_load(data: bytes, arena_bytes: int) -> None:
    from tflite_micro.python.tflite_micro import runtime

    runtime.Interpreter.from_bytes(bytes(data), arena_size=arena_bytes)


def _first_tflm_line(message: str) -> str:
    """TFLite Micro's most telling line: the first it printed that is not its generic summary."""
    printed, _, raised = message.partition(_RAISED)
    lines = [line.strip() for line in (printed + "\n" + raised).splitlines() if line.strip()]
    useful = [line for line in lines if "failed to allocate tensors" not in line.lower()]
    return (useful or lines or ["TFLite Micro gave no reason"])[0]


def _one_operator_model(code: OperatorCode) -> bytes:
    """A model holding one operator of kind ``code`` with no inputs or outputs: enough for an engine's lookup."""
    import flatbuffers

    schema = _schema()
    model = schema.ModelT()
    model.version = 3
    opcode = schema.OperatorCodeT()
    opcode.builtinCode = code.builtin
    opcode.deprecatedBuiltinCode = min(code.builtin, 127)  # the old byte field saturates at PLACEHOLDER (127)
    opcode.version = code.version
    if code.custom:
        opcode.customCode = code.custom
    model.operatorCodes = [opcode]
    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.buffer, tensor.name = [1], schema.TensorType.FLOAT32, 0, "t"
    operator = schema.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = 0, [], []
    graph = schema.SubGraphT()
    graph.tensors, graph.inputs, graph.outputs, graph.operators = [tensor], [0], [0], [operator]
    model.subgraphs = [graph]
    model.buffers = [schema.BufferT()]
    builder = flatbuffers.Builder(256)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _in_child(call: Callable[[], None]) -> tuple[bool, str]:
    """Run ``call`` in a forked child: (whether it returned, everything it printed and raised)."""
    if not hasattr(os, "fork"):
        try:
            call()
            return True, ""
        except Exception as exc:  # noqa: BLE001 - the engine's message is the answer
            return False, str(exc)
    sys.stdout.flush()
    sys.stderr.flush()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: answer through the pipe and the exit status, skip Python's cleanup
        code = 1
        try:
            os.close(read)
            os.dup2(write, 1)
            os.dup2(write, 2)
            import faulthandler

            faulthandler.disable()  # a crash is an answer here, not something to report
            try:
                call()
                code = 0
            except Exception as exc:  # noqa: BLE001
                os.write(write, f"{_RAISED}{exc}\n".encode(errors="replace"))
        finally:
            os._exit(code)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    _, status = os.waitpid(pid, 0)
    output = b"".join(chunks).decode(errors="replace")
    if os.WIFSIGNALED(status):
        output += f"\nthe engine crashed (signal {os.WTERMSIG(status)})"
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, output


def registered_builtins(engine: str = "tflite-micro") -> list[str]:
    """Every builtin operator ``engine`` (``litert`` or ``tflite-micro``) has a kernel for, at version 1: the
    supported-operators list of the installed build, asked of the engine itself."""
    if engine not in ENGINES:
        raise EngineError(f"unknown engine '{engine}'; available: {', '.join(ENGINES)}.")
    schema = _schema()
    skip = ("CUSTOM", "PLACEHOLDER_FOR_GREATER_OP_CODES")
    codes = sorted((OperatorCode(name, code, 1) for name, code in vars(schema.BuiltinOperator).items()
                    if not name.startswith("_") and isinstance(code, int) and name not in skip),
                   key=lambda c: c.builtin)
    return [code.name for code, has in zip(codes, _has_kernels(engine, codes), strict=True) if has]


def _has_kernels(engine: str, codes: list[OperatorCode]) -> list[bool]:
    """Whether ``engine`` finds a kernel for each operator kind, asked in as few forked children as crashes allow.

    A child probes the kinds in turn and reports each on its own line. An engine that lacks a kernel says so and
    returns; one that has it goes on to prepare the lone operator, which may crash TFLite Micro: the kind the
    child died on therefore counts as present, and a new child carries on after it.
    """
    answers: list[bool] = []
    while len(answers) < len(codes):
        _, output = _in_child(lambda start=len(answers): _probe_kernels(engine, codes[start:]))
        answers += [line.endswith(" yes") for line in output.splitlines() if line.startswith(_ANSWER)]
        if len(answers) < len(codes):
            answers.append(True)
    return answers


def _probe_kernels(engine: str, codes: list[OperatorCode]) -> None:
    """In a child: one answer line per operator kind on the original stdout, written as soon as it is known."""
    import tempfile

    answer_fd = os.dup(1)
    for code in codes:
        probe = _one_operator_model(code)
        with tempfile.TemporaryFile() as printed:
            os.dup2(printed.fileno(), 1)
            os.dup2(printed.fileno(), 2)  # the engines print their lookup failures straight to fd 1 or 2
            message = ""
            try:
                if engine == "litert":
                    _litert_load(probe, allocate=code.custom is not None)
                else:
                    _tflm_load(probe, 16384)
            except Exception as exc:  # noqa: BLE001 - the text says whether the kernel was missing
                message = str(exc)
            printed.seek(0)
            message += printed.read().decode(errors="replace")
        found = not any(marker in message for marker in _MISSING)
        os.write(answer_fd, f"{_ANSWER}{code.name} {'yes' if found else 'no'}\n".encode())
