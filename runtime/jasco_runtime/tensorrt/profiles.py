"""Optimisation profiles from the manifest: each graph input's (min, opt, max) shape.

The manifest declares every input's shape with named dynamic axes (``["batch", "text_len", 64]``) and
each axis' ``min/opt/max``; a profile is those three shapes per input.  ``max_batch`` narrows (or
widens) the ``batch`` axis, e.g. for an 8 GB board; the engine then records the profile it was built
with and the runtime chunks to it.
"""
from __future__ import annotations

import typing as tp

from ..errors import InputError

if tp.TYPE_CHECKING:  # pragma: no cover
    from ..export_folder import GraphEntry

Shape = tp.Tuple[int, ...]
Profile = tp.Dict[str, tp.Tuple[Shape, Shape, Shape]]


def axis_ranges(entry: "GraphEntry", max_batch: tp.Optional[int] = None) -> tp.Dict[str, tp.Dict[str, int]]:
    """``{axis: {min, opt, max}}`` of a graph, with the batch axis capped at ``max_batch``."""
    axes = {name: v.to_dict() for name, v in entry.profile.items()}
    if max_batch is not None and "batch" in axes:
        if max_batch < axes["batch"]["min"]:
            raise InputError(f"--max-batch {max_batch} is below {entry.name}'s minimum batch {axes['batch']['min']}")
        b = axes["batch"]
        axes["batch"] = {"min": b["min"], "opt": min(b["opt"], max_batch), "max": max_batch}
    return axes


def profile_shapes(entry: "GraphEntry", max_batch: tp.Optional[int] = None) -> Profile:
    """``{input: (min_shape, opt_shape, max_shape)}`` for every input of ``entry``."""
    axes = axis_ranges(entry, max_batch)
    out: Profile = {}
    for spec in entry.inputs:
        shapes = []
        for end in ("min", "opt", "max"):
            dims = []
            for d in spec.shape:
                if isinstance(d, str):
                    if d not in axes:
                        raise InputError(f"{entry.name}: input {spec.name} has axis {d!r} without a profile in the "
                                         "manifest; re-run jasco-export")
                    dims.append(axes[d][end])
                else:
                    dims.append(int(d))
            shapes.append(tuple(dims))
        out[spec.name] = (shapes[0], shapes[1], shapes[2])
    return out


def ort_profile_options(profile: Profile) -> tp.Dict[str, str]:
    """The same profile as ONNX Runtime's TensorRT EP options (``name:1x500x128,...``)."""
    def fmt(i: int) -> str:
        return ",".join(f"{name}:{'x'.join(str(d) for d in shapes[i])}" for name, shapes in profile.items())

    return {"trt_profile_min_shapes": fmt(0), "trt_profile_opt_shapes": fmt(1), "trt_profile_max_shapes": fmt(2)}
