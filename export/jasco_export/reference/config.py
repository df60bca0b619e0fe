"""JASCO architecture config, read from a release checkpoint's ``xp.cfg`` YAML.

The released ``xp.cfg`` is the full hydra composition of a training run: it holds ``???`` values and
``${oc.env:USER}`` interpolations in sections inference never reads.  We therefore resolve only the
keys the model needs (audiocraft/models/builders.py ``get_jasco_model``), never the whole config.
"""
from __future__ import annotations

import dataclasses
import math
import typing as tp
from dataclasses import dataclass, field

from ..errors import CheckpointError

TEMPORAL_CONDITIONS = ("chords", "self_wav", "melody")
"""Order in which temporal conditions are concatenated to the latents (audiocraft JascoCondConst.ALL)."""


@dataclass
class TransformerConfig:
    """``transformer_lm`` section (audiocraft/models/flow_matching.py FlowMatchingModel + UnetTransformer)."""

    dim: int = 1024
    num_heads: int = 16
    num_layers: int = 24
    hidden_scale: float = 4
    activation: str = "gelu"
    norm: str = "layer_norm"
    norm_first: bool = True
    bias_ff: bool = False
    bias_attn: bool = False
    bias_proj: bool = False
    layer_scale: tp.Optional[float] = None
    positional_embedding: str = "sin"
    max_period: float = 10_000.0
    positional_scale: float = 1.0
    qk_layer_norm: bool = False
    qk_layer_norm_cross: bool = False
    skip_connections: bool = False
    causal: bool = False
    kv_repeat: int = 1
    cross_attention: bool = True
    flow_dim: int = 128
    chords_dim: int = 0
    drums_dim: int = 0
    melody_dim: int = 0
    time_embedding_dim: int = 128

    @property
    def dim_feedforward(self) -> int:
        return int(self.hidden_scale * self.dim)


@dataclass
class ConditionerConfig:
    """One entry of the ``conditioners`` section: ``model`` type plus its keyword arguments."""

    name: str
    model: str
    args: tp.Dict[str, tp.Any] = field(default_factory=dict)


@dataclass
class FuserConfig:
    """``fuser`` section (audiocraft/modules/conditioners.py ConditionFuser)."""

    cross: tp.List[str] = field(default_factory=lambda: ["description"])
    prepend: tp.List[str] = field(default_factory=list)
    sum: tp.List[str] = field(default_factory=list)
    ignore: tp.List[str] = field(default_factory=list)
    input_interpolate: tp.List[str] = field(default_factory=list)
    cross_attention_pos_emb: bool = False
    cross_attention_pos_emb_scale: float = 1.0


@dataclass
class JascoConfig:
    """Everything the inference path of a JASCO checkpoint depends on."""

    transformer: TransformerConfig
    conditioners: tp.Dict[str, ConditionerConfig]
    fuser: FuserConfig
    attribute_dropout: tp.Dict[str, tp.Dict[str, float]]
    sample_rate: int = 32000
    channels: int = 1
    segment_duration: float = 10.0
    latent_mean: float = -0.0074
    latent_std: float = 4.0102
    latent_dim: int = 128
    frame_rate: float = 50.0
    compression_checkpoint: tp.Optional[str] = None
    cfg_coef_all: tp.Optional[float] = None
    cfg_coef_txt: tp.Optional[float] = None

    # -- derived ---------------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        """Number of latent frames T (``seq_len`` in audiocraft's JascoConditioningProvider)."""
        return int(math.ceil(self.segment_duration * self.frame_rate))

    @property
    def t5_name(self) -> tp.Optional[str]:
        for c in self.conditioners.values():
            if c.model == "t5":
                return str(c.args["name"])
        return None

    @property
    def chords_card(self) -> int:
        c = self.conditioners.get("chords")
        return int(c.args.get("card", 194)) if c else -1

    @property
    def has_melody(self) -> bool:
        return "melody" in self.conditioners

    @property
    def has_drums(self) -> bool:
        return "self_wav" in self.conditioners

    @property
    def variant(self) -> str:
        parts = ["chords" if "chords" in self.conditioners else None,
                 "drums" if self.has_drums else None, "melody" if self.has_melody else None]
        return "-".join(p for p in parts if p) or "text"

    def to_dict(self) -> tp.Dict[str, tp.Any]:
        return dataclasses.asdict(self)


_TRANSFORMER_KEYS = {f.name for f in dataclasses.fields(TransformerConfig)}
_UNSUPPORTED = {
    # key: (value audiocraft's JASCO releases use, reason)
    "causal": (False, "causal attention is not used by JASCO"),
    "kv_repeat": (1, "grouped key/value attention is not used by JASCO"),
}


def _container(cfg: tp.Any, key: str, default: tp.Any = None) -> tp.Any:
    """Resolve one subtree of an OmegaConf config (or of a :class:`PlainConfig`), leaving the rest untouched."""
    if isinstance(cfg, PlainConfig):
        return cfg.select(key, default)
    from omegaconf import OmegaConf

    node = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    if node is None:
        return default
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


class PlainConfig:
    """The ``xp.cfg`` YAML without omegaconf (a GPU check machine may lack it): plain YAML plus the one
    interpolation form the keys JASCO reads use, a whole value ``${a.b.c}`` naming another key.  Anything
    else (a resolver such as ``${oc.env:USER}``, an interpolation inside a longer string) in a key that is
    read is refused with the install hint; unread sections are never looked at (as with OmegaConf)."""

    def __init__(self, data: tp.Any):
        if not isinstance(data, dict):
            raise CheckpointError("xp.cfg is not a YAML mapping; the checkpoint looks corrupt")
        self.data = data

    def _get(self, key: str) -> tp.Any:
        node: tp.Any = self.data
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def _resolve(self, node: tp.Any, depth: int = 0) -> tp.Any:
        if depth > 32:
            raise CheckpointError("xp.cfg has an interpolation cycle")
        if isinstance(node, dict):
            return {k: self._resolve(v, depth) for k, v in node.items()}
        if isinstance(node, list):
            return [self._resolve(v, depth) for v in node]
        if isinstance(node, str) and "${" in node:
            inner = node[2:-1]
            if not (node.startswith("${") and node.endswith("}")) or any(c in inner for c in ":${}"):
                raise CheckpointError(f"xp.cfg value {node!r} needs omegaconf to resolve; pip install omegaconf")
            return self._resolve(self._get(inner), depth + 1)
        return node

    def select(self, key: str, default: tp.Any = None) -> tp.Any:
        node = self._get(key)
        return default if node is None else self._resolve(node)


def _load(yaml_text: str) -> tp.Any:
    """OmegaConf's config of ``yaml_text``, or a :class:`PlainConfig` when omegaconf is not installed."""
    try:
        from omegaconf import OmegaConf
    except ImportError:
        import yaml

        return PlainConfig(yaml.safe_load(yaml_text))
    return OmegaConf.create(yaml_text)


def parse_xp_cfg(yaml_text: str) -> JascoConfig:
    """Build a :class:`JascoConfig` from the ``xp.cfg`` YAML string stored in ``state_dict.bin``."""
    try:
        cfg = _load(yaml_text)
    except CheckpointError:
        raise
    except Exception as exc:  # omegaconf / yaml raise several types
        raise CheckpointError(f"xp.cfg is not valid YAML ({exc}); the checkpoint looks corrupt") from exc
    try:
        return _parse(cfg)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"xp.cfg lacks a key JASCO needs ({type(exc).__name__}: {exc})") from exc


def _parse(cfg: tp.Any) -> JascoConfig:
    lm = _container(cfg, "transformer_lm")
    if not isinstance(lm, dict):
        raise CheckpointError("xp.cfg has no 'transformer_lm' section; is this a JASCO checkpoint?")
    for key, (expected, why) in _UNSUPPORTED.items():
        if key in lm and lm[key] != expected:
            raise CheckpointError(f"transformer_lm.{key}={lm[key]!r} is not supported ({why})")
    if lm.get("positional_embedding", "sin") != "sin":
        raise CheckpointError("only positional_embedding='sin' is supported (JASCO releases use 'sin')")
    if lm.get("norm", "layer_norm") != "layer_norm":
        raise CheckpointError("only norm='layer_norm' is supported (JASCO releases use it)")
    tkw = {k: v for k, v in lm.items() if k in _TRANSFORMER_KEYS and v is not None}
    if lm.get("layer_scale") is not None:
        tkw["layer_scale"] = float(lm["layer_scale"])
    transformer = TransformerConfig(**tkw)

    fuser_raw = _container(cfg, "fuser", {}) or {}
    fuser = FuserConfig(**{k: v for k, v in fuser_raw.items()
                           if k in {f.name for f in dataclasses.fields(FuserConfig)}})
    # audiocraft/models/builders.py get_jasco_model: cross attention is forced on when a condition is
    # fused by cross attention, whatever transformer_lm.cross_attention says.
    transformer.cross_attention = bool(fuser.cross) or bool(lm.get("cross_attention", False))

    conds_raw = _container(cfg, "conditioners", {}) or {}
    conds_raw.pop("args", None)
    conditioners = {}
    for name, c in conds_raw.items():
        model = c["model"]
        conditioners[str(name)] = ConditionerConfig(name=str(name), model=model, args=dict(c.get(model) or {}))

    att = _container(cfg, "attribute_dropout", {}) or {}
    cfgc = _container(cfg, "generate.lm", {}) or {}
    sample_rate = int(_container(cfg, "sample_rate", 32000))
    return JascoConfig(
        transformer=transformer,
        conditioners=conditioners,
        fuser=fuser,
        attribute_dropout={k: dict(v or {}) for k, v in att.items()},
        sample_rate=sample_rate,
        channels=int(_container(cfg, "channels", 1)),
        segment_duration=float(_container(cfg, "dataset.segment_duration", 10.0)),
        latent_mean=float(_container(cfg, "compression_model_latent_mean", 0.0)),
        latent_std=float(_container(cfg, "compression_model_latent_std", 1.0)),
        latent_dim=int(_container(cfg, "compression_model_latent_dim", 128)),
        frame_rate=float(_container(cfg, "compression_model_framerate", 50)),
        compression_checkpoint=_container(cfg, "compression_model_checkpoint"),
        cfg_coef_all=cfgc.get("cfg_coef_all"),
        cfg_coef_txt=cfgc.get("cfg_coef_txt"),
    )
