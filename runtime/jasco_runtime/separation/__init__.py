"""Drum separation (htdemucs) around the exported ``drums_separator`` graph: STFT, apply_model, resampling."""
from .apply import ApplyOptions, apply_model
from .drums import GRAPH, SeparatorConfig, folder_separator, separate, separate_drums, separate_prepared

__all__ = ["ApplyOptions", "apply_model", "GRAPH", "SeparatorConfig", "separate", "separate_drums", "folder_separator",
           "separate_prepared"]
