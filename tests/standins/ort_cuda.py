"""ONNX Runtime's CUDA provider aliased to the CPU provider, for the CPU dry run of GPU code paths.

The real onnxruntime (CPU build) runs every session; what changes is what a GPU build would show: the CUDA
provider is listed as available, a session asked for it reports it as started (``get_providers``), and
OrtValues / IOBinding outputs placed on ``"cuda"`` live in host memory.  The provider options each session
was asked for are recorded (``AliasedCuda.sessions``), so a test can check e.g. ``use_tf32``.  Numbers are
ONNX Runtime CPU's: this checks plumbing, not CUDA numerics.
"""
from __future__ import annotations

import typing as tp
from dataclasses import dataclass, field

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@dataclass
class AliasedCuda:
    sessions: tp.List[tp.List[tp.Any]] = field(default_factory=list)  # providers (with options) per session
    tensorrt: bool = False  # alias ONNX Runtime's TensorRT EP to the CPU too

    def install(self, monkeypatch) -> "AliasedCuda":
        import onnxruntime as ort

        real_session, real_binding = ort.InferenceSession, ort.IOBinding
        real_from_numpy = ort.OrtValue.ortvalue_from_numpy
        real_from_shape = ort.OrtValue.ortvalue_from_shape_and_type
        record, with_tensorrt = self.sessions, self.tensorrt

        def device(name: str) -> str:
            if name not in ("cpu", "cuda"):
                raise ValueError(f"stand-in: unknown device type {name!r}")
            return "cpu"

        class Binding(real_binding):
            def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr):
                return super().bind_input(name, device(device_type), 0, element_type, shape, buffer_ptr)

            def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None,
                            buffer_ptr=None):
                return super().bind_output(name, device(device_type), 0, element_type, shape, buffer_ptr)

        class Session(real_session):
            def __init__(self, path, sess_options=None, providers=None, **kw):
                providers = list(providers or [])
                record.append(providers)
                names = [p[0] if isinstance(p, tuple) else p for p in providers]
                unknown = [n for n in names if n not in (CPU, CUDA, TRT) or (n == TRT and not with_tensorrt)]
                if unknown:
                    raise ValueError(f"stand-in: provider {unknown} is not available")
                self._aliased = [n for n in (TRT, CUDA) if n in names]
                super().__init__(path, sess_options=sess_options, providers=[CPU], **kw)

            def get_providers(self):
                return self._aliased + [CPU] if self._aliased else super().get_providers()

            def io_binding(self):
                return Binding(self)

        monkeypatch.setattr(ort, "get_available_providers", lambda: ([TRT] if with_tensorrt else []) + [CUDA, CPU])
        monkeypatch.setattr(ort, "InferenceSession", Session)
        monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy",
                            staticmethod(lambda array, device_type="cpu", device_id=0, *a:
                                         real_from_numpy(array, device(device_type), 0)))
        monkeypatch.setattr(ort.OrtValue, "ortvalue_from_shape_and_type",
                            staticmethod(lambda shape, element_type, device_type="cpu", device_id=0, *a, **kw:
                                         real_from_shape(shape, element_type, device(device_type), 0)))
        return self

    def options(self, provider: str = CUDA) -> tp.List[tp.Dict[str, str]]:
        """The options each session passed for ``provider`` ({} when it passed none)."""
        out = []
        for providers in self.sessions:
            for p in providers:
                name, opts = (p if isinstance(p, tuple) else (p, {}))
                if name == provider:
                    out.append(dict(opts))
        return out
