"""TFLite lowerings of the ops other exporters write: activations, Squeeze/Unsqueeze, Split, Resize, ConvTranspose.

A mixin of ``converters.tflite._Exporter`` (it uses the exporter's tensor, layout and quantization helpers), kept
apart so the exporter's core stays readable. Each lowering is int8 where the ONNX graph quantizes the op's input
and output, float otherwise, and refuses an attribute it cannot express with one sentence naming the node:

* ``LeakyRelu`` -> ``LEAKY_RELU``; ``PRelu`` -> ``PRELU`` (slope broadcast in the tensor's layout);
  ``HardSwish`` -> ``HARD_SWISH`` (HardSigmoid is rewritten to Mul/Add/Clip by ``converters.normalize``).
* ``Squeeze`` / ``Unsqueeze`` -> ``RESHAPE`` (not on the batch axis).
* ``Split`` -> ``SPLIT_V`` (sizes from the inferred output shapes); in int8 each output is requantized to its
  own QuantizeLinear's grid where that differs from the input's (TFLite's SPLIT copies bytes).
* ``Resize`` (4-D, scaling H and W only) -> ``RESIZE_NEAREST_NEIGHBOR`` for mode nearest with
  asymmetric + floor (PyTorch's export) or half_pixel + round_prefer_floor on integer upscales, and
  ``RESIZE_BILINEAR`` for mode linear with align_corners, asymmetric, half_pixel or pytorch_half_pixel.
* ``ConvTranspose`` (2-D, group 1, no dilation) -> ``TRANSPOSE_CONV`` with the pads TFLite's SAME or VALID
  reproduce, else VALID and a ``STRIDED_SLICE`` of the ONNX output's window (PyTorch's output_padding); int8
  with per-channel weights and an int32 bias. Its output shape is a constant tensor, so a file with one declares
  batch 1 (shape signature 1, not -1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

_NHWC = (0, 2, 3, 1)


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ForeignOps:
    """Lowerings for ``_Exporter``; see the module docstring."""

    # -- elementwise activations ------------------------------------------------------------------
    def _activation(self, node: onnx.NodeProto, code: str, options: Any = None, extra: list[int] | None = None,
                    x: Any = None) -> None:
        """``code`` applied to input 0, int8 (with the output's own quantization) or float."""
        x = self._input(node, 0) if x is None else x
        out_q = self._output_quantization(node.output[0]) if x.dtype == "int8" else None
        if x.dtype == "int8" and out_q is None:
            x = self._float(x)
        kwargs = {"scale": out_q[0], "zero_point": out_q[1]} if out_q else {}
        out = self._like(x, node.output[0], x.shape, x.layout, **kwargs)
        out.producer = self._op(code, [x.tensor, *(extra or [])], [out.tensor], options)
        self._finish(node, out, out_q)

    def _lower_LeakyRelu(self, node: onnx.NodeProto) -> None:
        options = self.s.LeakyReluOptionsT()
        options.alpha = float(_attr(node, "alpha", 0.01))
        self._activation(node, "LEAKY_RELU", options)

    def _lower_HardSwish(self, node: onnx.NodeProto) -> None:
        self._activation(node, "HARD_SWISH", self.s.HardSwishOptionsT())

    def _lower_PRelu(self, node: onnx.NodeProto) -> None:
        if not self._is_constant(node.input[1]):
            raise self._fail(node, "the slope is not a constant.")
        x = self._input(node, 0)
        out_q = self._output_quantization(node.output[0]) if x.dtype == "int8" else None
        data, scale, zp, _ = self._constant(node.input[1])
        int8 = out_q is not None and scale is not None and data.dtype == np.int8 and scale.size == 1
        if x.dtype == "int8" and not int8:
            x = self._float(x)
            out_q = None
        if not int8:
            data, scale, zp = self._float_constant(node.input[1]), None, None
        rank = len(x.shape)
        data = data.reshape((1,) * (rank - data.ndim) + data.shape) if data.ndim < rank else data
        if x.layout == "nhwc" and data.ndim == 4:
            data = data.transpose(_NHWC)
        data = data.reshape(data.shape[1:]) if data.ndim == rank and data.shape[0] == 1 else data  # no batch axis
        slope = self._tensor(self._weight_name(node.input[1]), data.shape, "int8" if int8 else "float32", data=data,
                             scale=None if scale is None else scale.reshape(-1)[:1],
                             zero_point=None if zp is None else zp.reshape(-1)[:1])
        self._activation(node, "PRELU", None, [slope], x=x)

    # -- reshapes ------------------------------------------------------------------------------------
    def _squeeze_like(self, node: onnx.NodeProto) -> None:
        """Squeeze / Unsqueeze as a RESHAPE to the inferred shape; the batch axis must stay where it is."""
        x = self._as(self._input(node, 0), "nchw")
        shape = self.shapes[node.output[0]]
        rank = len(x.shape) if node.op_type == "Squeeze" else len(shape)
        if self._axes(node, 1, rank) is None and node.op_type == "Squeeze":
            raise self._fail(node, "without axes it squeezes the batch axis too (the file is written at batch 1); "
                                   "give the axes.")
        self._reshape(node, x, shape, "nchw" if len(shape) == 4 else "plain")

    def _lower_Squeeze(self, node: onnx.NodeProto) -> None:
        self._squeeze_like(node)

    def _lower_Unsqueeze(self, node: onnx.NodeProto) -> None:
        self._squeeze_like(node)

    # -- Split ---------------------------------------------------------------------------------------
    def _lower_Split(self, node: onnx.NodeProto) -> None:
        x = self._input(node, 0)
        rank = len(x.shape)
        axis = _attr(node, "axis", 0) % rank
        if axis == 0:
            raise self._fail(node, "it splits the batch axis, which the TFLite file leaves free.")
        outputs = [o for o in node.output]
        if not all(outputs):
            raise self._fail(node, "an output is unnamed.")
        sizes = [self.shapes[o][axis] for o in outputs]
        quantized = x.dtype == "int8" and all(self._output_quantization(o) is not None for o in outputs)
        if x.dtype == "int8" and not quantized:
            x = self._float(x)
        tflite_axis = _NHWC.index(axis) if x.layout == "nhwc" else axis
        pieces = [self._like(x, f"{o}_split" if quantized else o, self.shapes[o], x.layout) for o in outputs]
        options = self.s.SplitVOptionsT()
        options.numSplits = len(outputs)
        op = self._op("SPLIT_V", [x.tensor, self._const_i32(sizes), self._const_i32(tflite_axis)],
                      [p.tensor for p in pieces], options)
        for name, piece in zip(outputs, pieces):
            piece.producer = op
            out_q = self._output_quantization(name) if quantized else None
            if out_q:  # SPLIT copies bytes: a piece on another grid is requantized
                piece = self._requantize(piece, out_q[0], out_q[1], out_q[2])
                self.tensors[piece.tensor].name = out_q[2]
                self.values[out_q[2]] = piece
                self.done.add(out_q[2])
            self.values[name] = piece

    # -- Resize --------------------------------------------------------------------------------------
    def _lower_Resize(self, node: onnx.NodeProto) -> None:
        x = self._input(node, 0)
        out_shape = self.shapes[node.output[0]]
        if len(x.shape) != 4 or tuple(out_shape[:2]) != tuple(x.shape[:2]):
            raise self._fail(node, "only resizing the height and width of a 4-D tensor is supported.")
        mode = _text(_attr(node, "mode", "nearest"))
        transform = _text(_attr(node, "coordinate_transformation_mode", "half_pixel"))
        if _attr(node, "antialias", 0) and mode != "nearest" and out_shape[2] < x.shape[2]:
            raise self._fail(node, "antialiased downsampling has no TFLite equivalent.")
        upscale = all(o % i == 0 for o, i in zip(out_shape[2:], x.shape[2:]))
        if mode == "nearest":
            rounding = _text(_attr(node, "nearest_mode", "round_prefer_floor"))
            if transform == "asymmetric" and rounding == "floor":
                code, align, half = "RESIZE_NEAREST_NEIGHBOR", False, False
            elif transform in ("half_pixel", "pytorch_half_pixel") and rounding == "round_prefer_floor" and upscale:
                code, align, half = "RESIZE_NEAREST_NEIGHBOR", False, True
            else:
                raise self._fail(node, f"nearest resizing with coordinate_transformation_mode '{transform}' and "
                                       f"nearest_mode '{rounding}' has no TFLite equivalent (asymmetric + floor, or "
                                       f"half_pixel + round_prefer_floor on an integer upscale).")
        elif mode == "linear":
            known = {"align_corners": (True, False), "asymmetric": (False, False), "half_pixel": (False, True)}
            if transform == "pytorch_half_pixel" and min(out_shape[2:]) > 1:
                transform = "half_pixel"  # the same as half_pixel unless an output axis has length 1
            if transform not in known:
                raise self._fail(node, f"linear resizing with coordinate_transformation_mode '{transform}' has no "
                                       f"TFLite equivalent.")
            code, (align, half) = "RESIZE_BILINEAR", known[transform]
        else:
            raise self._fail(node, f"mode '{mode}' has no TFLite equivalent (nearest and linear do).")
        x = self._as(x, "nhwc")
        out_q = self._output_quantization(node.output[0]) if x.dtype == "int8" else None
        if x.dtype == "int8" and out_q is None:
            x = self._float(x)
        options = getattr(self.s, "ResizeNearestNeighborOptionsT" if code == "RESIZE_NEAREST_NEIGHBOR"
                          else "ResizeBilinearOptionsT")()
        options.alignCorners, options.halfPixelCenters = align, half
        out = self._like(x, f"{node.output[0]}_resized" if out_q else node.output[0], out_shape, "nhwc")
        out.producer = self._op(code, [x.tensor, self._const_i32(list(out_shape[2:]))], [out.tensor], options)
        if out_q:  # TFLite's int8 resize keeps the input's grid
            out = self._requantize(out, out_q[0], out_q[1], out_q[2])
        self._finish(node, out, out_q)

    # -- ConvTranspose -------------------------------------------------------------------------------
    def _lower_ConvTranspose(self, node: onnx.NodeProto) -> None:
        x = self._as(self._input(node, 0), "nhwc")
        if len(x.shape) != 4:
            raise self._fail(node, "only 2-D transposed convolutions are supported.")
        if _attr(node, "group", 1) != 1:
            raise self._fail(node, f"group={_attr(node, 'group', 1)}; TFLite TRANSPOSE_CONV has no groups.")
        if list(_attr(node, "dilations", [1, 1])) != [1, 1]:
            raise self._fail(node, "dilated transposed convolution is not supported.")
        if not self._is_constant(node.input[1]):
            raise self._fail(node, "the weights are not a constant.")
        weights, w_scale, w_zp, _ = self._constant(node.input[1])
        c_in, c_out, kh, kw = weights.shape
        strides = list(_attr(node, "strides", [1, 1]))
        out_shape = self.shapes[node.output[0]]
        padding = self._transpose_conv_padding(node, x.shape[2:], out_shape[2:], (kh, kw), strides)
        crop = None
        if padding is None:  # e.g. PyTorch's output_padding: the full VALID output, then the ONNX window of it
            crop = self._transpose_conv_crop(node, x.shape[2:], out_shape[2:], (kh, kw), strides)
            final_shape = out_shape
            out_shape = (*out_shape[:2], *[(i - 1) * s + k for i, s, k in zip(x.shape[2:], strides, (kh, kw))])
            padding = self.s.Padding.VALID
        quantized = self._int8_inputs(node, [0]) and w_scale is not None and weights.dtype == np.int8
        bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
        out_q = self._output_quantization(node.output[0]) if quantized else None
        kernel = (weights if quantized else self._float_constant(node.input[1])).transpose(1, 2, 3, 0)  # IOHW->OHWI
        if quantized:
            if np.any(w_zp != 0):
                raise self._fail(node, "int8 weights must be symmetric (zero point 0) for TFLite.")
            scales = np.broadcast_to(w_scale.reshape(-1), (c_out,)).astype(np.float32)
            w_index = self._tensor(self._weight_name(node.input[1]), kernel.shape, "int8", data=kernel, scale=scales,
                                   zero_point=np.zeros(c_out, np.int64), axis=0)
            b_index = self._int32_bias(bias_name, x.scale, scales, c_out, f"{node.name}_bias")
            out = self._like(x, node.output[0], out_shape, "nhwc", scale=out_q[0], zero_point=out_q[1])
        else:
            x = self._float(x)
            w_index = self._tensor(node.input[1], kernel.shape, "float32", data=kernel)
            bias = self._float_constant(bias_name) if bias_name else np.zeros(c_out, np.float32)
            b_index = self._tensor(f"{node.name}_bias", bias.shape, "float32", data=bias)
            out = self._like(x, node.output[0], out_shape, "nhwc", dtype="float32")
        options = self.s.TransposeConvOptionsT()
        options.padding = padding
        options.strideH, options.strideW = int(strides[0]), int(strides[1])
        nhwc_shape = [out_shape[i] for i in _NHWC]
        self.batch_one_only = True  # the output shape is a constant, batch included
        out.producer = self._op("TRANSPOSE_CONV", [self._const_i32(nhwc_shape), w_index, x.tensor, b_index],
                                [out.tensor], options)
        if crop is not None:
            self.tensors[out.tensor].name = f"{node.output[0]}_full"
            begin = [0, crop[0], crop[1], 0]
            end = [final_shape[0], crop[0] + final_shape[2], crop[1] + final_shape[3], final_shape[1]]
            cropped = self._like(out, node.output[0], final_shape, "nhwc")
            cropped.producer = self._op("STRIDED_SLICE", [out.tensor, self._const_i32(begin), self._const_i32(end),
                                                          self._const_i32([1, 1, 1, 1])], [cropped.tensor],
                                        self.s.StridedSliceOptionsT())
            out = cropped
        self._finish(node, out, out_q)

    def _transpose_conv_crop(self, node: onnx.NodeProto, size: tuple[int, ...], out: tuple[int, ...],
                             kernel: tuple[int, int], strides: list[int]) -> tuple[int, int]:
        """(top, left) of the ONNX output inside the full transposed output, which must contain it."""
        auto_pad = _text(_attr(node, "auto_pad", "NOTSET"))
        full = [(i - 1) * s + k for i, s, k in zip(size, strides, kernel)]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            total = [f - o for f, o in zip(full, out)]
            begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
        else:
            begin = list(_attr(node, "pads", [0, 0, 0, 0]))[:2]
        if any(b < 0 or b + o > f for b, o, f in zip(begin, out, full)):
            raise self._fail(node, f"its output {list(out)} reaches beyond the transposed convolution's "
                                   f"{list(full)} (output_padding larger than the end pads).")
        return begin[0], begin[1]

    def _transpose_conv_padding(self, node: onnx.NodeProto, size: tuple[int, ...], out: tuple[int, ...],
                                kernel: tuple[int, int], strides: list[int]) -> int | None:
        """SAME or VALID, whichever crops the full transposed output where the ONNX pads do; None if neither."""
        auto_pad = _text(_attr(node, "auto_pad", "NOTSET"))
        pads = list(_attr(node, "pads", [0, 0, 0, 0]))
        full = [(i - 1) * s + k for i, s, k in zip(size, strides, kernel)]
        if auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
            crop = [f - o for f, o in zip(full, out)]
            begin = [c // 2 if auto_pad == "SAME_UPPER" else c - c // 2 for c in crop] if auto_pad != "VALID" \
                else [0, 0]
        else:
            begin = pads[:2]
        for name, padding in (("VALID", self.s.Padding.VALID), ("SAME", self.s.Padding.SAME)):
            tflite_begin = []
            for o, k, s in zip(out, kernel, strides):
                forward = (o - k + s) // s if name == "VALID" else -(-o // s)
                tflite_begin.append(max((forward - 1) * s + k - o, 0) // 2)
            forward_ok = all(((o - k + s) // s if name == "VALID" else -(-o // s)) == i
                             for o, k, s, i in zip(out, kernel, strides, size))
            if forward_ok and tflite_begin == list(begin):
                return padding
        return None
