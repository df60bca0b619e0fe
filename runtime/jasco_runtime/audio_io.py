"""Audio and melody inputs/outputs for the runtime: soundfile, numpy (no torch).

Drums follow audiocraft's path (BEHAVIOUR.md §5): any rate and channel count → resample each channel to
the model rate with julius' algorithm (:mod:`jasco_runtime.resample`) → mean over channels → trim /
zero-pad to the segment. Files are written atomically.
"""
from __future__ import annotations

import io
import os
import typing as tp
from pathlib import Path

import numpy as np

from .errors import InputError, first_line
from .files import atomic_write, atomic_write_bytes  # noqa: F401 (atomic_write re-exported)
from .resample import resample_frac

PathLike = tp.Union[str, os.PathLike]
LOUDNESS_TARGET_LUFS = -14.0  # audiocraft audio_write's loudness strategy default
LOUDNESS_MIN_SECONDS = 0.4  # ITU-R BS.1770 gating block: pyloudnorm measures nothing shorter


RESAMPLE_MARGIN_S = 0.1  # audio read beyond what a song needs: the resampler's sinc support is far shorter


def _read(source: tp.Any, max_seconds: tp.Optional[float]) -> tp.Tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(source) as f:
        frames = -1 if max_seconds is None else int(np.ceil(max_seconds * f.samplerate))
        if frames >= 0 and f.frames > 0:
            frames = min(frames, f.frames)
        return f.read(frames=frames, dtype="float32", always_2d=True), int(f.samplerate)


def load_audio(path: PathLike, max_seconds: tp.Optional[float] = None) -> tp.Tuple[np.ndarray, int]:
    """Any file libsndfile reads (wav, flac, ogg, mp3) → (float32 [channels, samples], sample_rate).
    ``max_seconds``: read at most that much from the start (a 2-h file for a 10-s clip is not decoded whole)."""
    try:
        wav, sr = _read(str(path), max_seconds)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / OSError
        raise InputError(f"cannot read audio file {path} ({first_line(exc)}); "
                         "give a wav/flac/ogg/mp3 file") from exc
    if wav.shape[0] == 0:
        raise InputError(f"audio file {path} is empty")
    return np.ascontiguousarray(wav.T), int(sr)


def prepare_drums(wav: np.ndarray, sample_rate: int, target_rate: int, duration: float,
                  channels_first: bool = False) -> np.ndarray:
    """Drum stem [C, T] (or [T]) at any rate → mono float32 [duration·target_rate] (trim / zero-pad).
    ``channels_first``: the layout is known (decoded from a file), so a short many-channel clip is not taken for
    [samples, channels] (A02/M08)."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        wav = wav[None]
    if wav.ndim != 2 or wav.shape[-1] == 0:
        raise InputError(f"drums must be [channels, samples] audio, got shape {list(wav.shape)}")
    if wav.shape[0] > wav.shape[1] and not channels_first:
        raise InputError(f"drums look like [samples, channels] ({list(wav.shape)}); pass [channels, samples]")
    if not np.isfinite(wav).all():
        raise InputError("drums audio contains NaN or infinite samples")
    mono = resample_frac(wav, int(sample_rate), int(target_rate)).mean(axis=0)
    n = int(duration * target_rate)
    mono = mono[:n]
    if mono.shape[0] < n:
        mono = np.concatenate([mono, np.zeros(n - mono.shape[0], np.float32)])
    return mono.astype(np.float32)


def as_salience(melody: np.ndarray, bins: int, source: str = "melody") -> np.ndarray:
    """Melody salience [bins, T] or [T, bins] → float32 [bins, T] (frames at the model's frame rate).
    The orientation is read from the shape, so a square [bins, bins] matrix is refused as ambiguous."""
    if np.iscomplexobj(melody):  # float32 would drop the imaginary part (with numpy's 2-line ComplexWarning; ML04)
        raise InputError(f"{source} is complex ({np.asarray(melody).dtype}); a salience matrix is real: give "
                         f"magnitudes [{bins}, T] (e.g. numpy.abs)")
    try:
        mel = np.asarray(melody, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source} must be a numeric salience matrix [{bins}, T], got {type(melody).__name__}") from exc
    if mel.ndim != 2 or bins not in mel.shape:
        raise InputError(f"{source} must be a salience matrix [{bins}, T] or [T, {bins}], got shape {list(mel.shape)}")
    if 0 in mel.shape:
        raise InputError(f"{source} has 0 frames (shape {list(mel.shape)}); give at least one frame of salience, "
                         "or drop the melody")
    if mel.shape == (bins, bins):
        raise InputError(f"{source} is {bins}×{bins}: [{bins}, T] and [T, {bins}] cannot be told apart; "
                         f"pad or trim it to another number of frames (e.g. the whole segment)")
    if not np.isfinite(mel).all():
        raise InputError(f"{source} contains NaN or infinite values")
    return np.ascontiguousarray(mel if mel.shape[0] == bins else mel.T)


def load_melody(path: PathLike, bins: int) -> np.ndarray:
    """``.npy`` salience matrix → float32 [bins, T]."""
    _refuse_audio_as_melody(path, bins)
    try:
        mel = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read melody {path} ({first_line(exc)}); expected a .npy salience matrix "
                         f"[{bins}, T]") from exc
    return as_salience(mel, bins, source=f"melody {path}")


NPY_MAGIC = b"\x93NUMPY"
AUDIO_MAGIC = {b"RIFF": "wav", b"fLaC": "flac", b"OggS": "ogg", b"ID3": "mp3", b"\xff\xfb": "mp3", b"FORM": "aiff"}


def _refuse_non_npy(head: bytes, source: str, bins: int) -> None:
    """Audio given as melody is named as such, not as numpy's "pickled (object) data" (ML19, ML22)."""
    kind = next((k for magic, k in AUDIO_MAGIC.items() if head.startswith(magic)), None)
    if kind is not None:
        raise InputError(f"{source} is a {kind} audio file; a melody is a salience matrix .npy [{bins}, T] at the "
                         "model's frame rate, computed from the audio beforehand")
    if head and not head.startswith(NPY_MAGIC) and not head.startswith(b"PK"):  # PK: an .npz, named later
        raise InputError(f"cannot read {source} (it is not a .npy file); expected a .npy salience matrix [{bins}, T]")


def _refuse_audio_as_melody(path: PathLike, bins: int) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError:
        return  # np.load reports it
    _refuse_non_npy(head, f"melody {path}", bins)


def check_normalization(strategy: tp.Optional[str]) -> None:
    """Fail before generating when the normalisation cannot run (unknown name, pyloudnorm missing)."""
    if strategy not in (None, "peak", "loudness"):
        raise InputError(f"unknown normalisation {strategy!r}; use peak or loudness")
    if strategy == "loudness":
        try:
            import pyloudnorm  # noqa: F401
        except ImportError as exc:
            raise InputError("loudness normalisation needs pyloudnorm; `pip install pyloudnorm` or use --normalize peak") from exc


def normalize_clip(clip: np.ndarray, sample_rate: int, strategy: tp.Optional[str]) -> np.ndarray:
    """'peak' → max |x| = 1; 'loudness' → −14 LUFS (ITU-R BS.1770 via pyloudnorm), then clipped to ±1."""
    check_normalization(strategy)
    if strategy is None:
        return clip
    if strategy == "peak":
        peak = float(np.abs(clip).max())
        return clip / peak if peak > 0 else clip
    import pyloudnorm

    meter = pyloudnorm.Meter(sample_rate)
    loudness = meter.integrated_loudness(clip.T.astype(np.float64))
    if not np.isfinite(loudness):  # silence
        return clip
    gain = 10.0 ** ((LOUDNESS_TARGET_LUFS - loudness) / 20.0)
    return np.clip(clip * gain, -1.0, 1.0).astype(np.float32)


def encode_wav(clip: np.ndarray, sample_rate: int, subtype: str = "FLOAT", normalize: tp.Optional[str] = None) -> bytes:
    """[channels, samples] (or [samples]) → the bytes of a wav file.  Encoding in memory keeps disk errors
    out of libsndfile (whose short writes surface as a bare AssertionError in soundfile)."""
    import soundfile as sf

    clip = np.asarray(clip, dtype=np.float32)
    if clip.ndim == 1:
        clip = clip[None]
    clip = normalize_clip(clip, sample_rate, normalize)
    if subtype == "PCM_16":
        clip = np.clip(clip, -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(buf, clip.T, int(sample_rate), subtype=subtype, format="WAV")
    return buf.getvalue()


def write_wav(path: PathLike, clip: np.ndarray, sample_rate: int, subtype: str = "FLOAT",
              normalize: tp.Optional[str] = None) -> None:
    """Write [channels, samples] (or [samples]) to ``path`` atomically (temp file + rename)."""
    atomic_write_bytes(path, encode_wav(clip, sample_rate, subtype=subtype, normalize=normalize))


# -- uploads (bytes, e.g. over HTTP: jasco-serve) ---------------------------------------------------------
def read_audio_bytes(data: bytes, source: str = "audio upload",
                     max_seconds: tp.Optional[float] = None) -> tp.Tuple[np.ndarray, int]:
    """An audio file's bytes (wav, flac, ogg, mp3) → (float32 [channels, samples], sample_rate); ``max_seconds``:
    decode at most that much (a 20-min mp3 upload for a 10-s clip is not decoded whole)."""
    try:
        wav, sr = _read(io.BytesIO(data), max_seconds)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError / TypeError on non-audio bytes
        reason = getattr(exc, "error_string", None) or first_line(exc)
        raise InputError(f"cannot decode the {source} ({reason}); give a wav/flac/ogg/mp3 file") from exc
    if wav.shape[0] == 0:
        raise InputError(f"the {source} holds no samples")
    return np.ascontiguousarray(wav.T), int(sr)


def read_npy_bytes(data: bytes, source: str = "melody upload", expected: str = "a .npy salience matrix [53, T]") -> np.ndarray:
    """A ``.npy`` file's bytes → its array (pickles and ``.npz`` archives refused)."""
    _refuse_non_npy(bytes(data[:len(NPY_MAGIC)]), f"the {source}", 53)
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read the {source} ({first_line(exc)}); "
                         f"expected {expected}") from exc
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise InputError(f"the {source} is an .npz archive; expected a single {expected[2:]}")
    return arr


def read_melody_bytes(data: bytes, bins: int, source: str = "melody upload") -> np.ndarray:
    """A ``.npy`` file's bytes → float32 salience [bins, T] (pickles refused)."""
    mel = read_npy_bytes(data, source, f"a .npy salience matrix [{bins}, T]")
    return as_salience(mel, bins, source=f"the {source}")
