"""Reading datasets written by RLBench's dataset generator, without RLBench.

On-disk layout (RLBench `rlbench/dataset_generator.py`, `rlbench/utils.py`; PerAct fork `MohitShridhar/RLBench@peract`)::

    <root>/<task>/variation<V>/episodes/episode<M>/       upstream RLBench
    <root>/<task>/all_variations/episodes/episode<M>/     the PerAct fork (adds variation_number.pkl)
        low_dim_obs.pkl                                   the pickled rlbench.demo.Demo (images set to None)
        <camera>_{rgb,depth,mask}/<i>.png                 i = 0 .. len(demo) - 1

`low_dim_obs.pkl` is read with `RestrictedUnpickler`: the only globals it resolves are RLBench's
`Demo` and `Observation` (mapped to plain attribute holders, turned into dicts) and the numpy
reconstruction functions under both numpy 1 (`numpy.core`) and numpy 2 (`numpy._core`) module
names. Any other global (`os.system`, `builtins.eval`, ...) raises `UnsafePickleError` before it
is looked up, so nothing in the file is executed.

Depth PNGs hold a 24-bit integer packed R (high), G, B (low) byte, scaled by 2**24 - 1 from the
normalised depth d in [0, 1]; metres = near + d * (far - near) with the camera's near and far
planes from the observation's `misc`.
"""

from __future__ import annotations

import codecs
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from rlmtl.errors import DatasetError

CAMERAS = ("left_shoulder", "right_shoulder", "overhead", "wrist", "front")
MODALITIES = ("rgb", "depth", "mask")
DEPTH_SCALE = 2**24 - 1
LOW_DIM_PICKLE = "low_dim_obs.pkl"
VARIATION_DESCRIPTIONS = "variation_descriptions.pkl"
VARIATION_NUMBER = "variation_number.pkl"  # PerAct fork only
ALL_VARIATIONS = "all_variations"  # PerAct fork only


class UnsafePickleError(DatasetError):
    """A pickle references a global outside the allow-list."""


class _RLBenchRecord:
    """Stand-in for RLBench's pickled classes: pickle rebuilds them with NEWOBJ + BUILD, which only
    fills `__dict__`, so no RLBench code is needed (or run)."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{type(self).__name__}: unexpected pickled state {type(state).__name__}")
        self.__dict__.update(state)


class DemoRecord(_RLBenchRecord):
    """`rlbench.demo.Demo`: `_observations`, `random_seed`, `num_reset_attempts`."""


class ObservationRecord(_RLBenchRecord):
    """`rlbench.backend.observation.Observation`: low-dim fields and `misc` (images are None)."""


def _numpy_modules() -> tuple[Any, Any]:
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    return multiarray, numeric


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    # numpy's _reconstruct would instantiate any `subtype`; only plain arrays are allowed here.
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"array subtype {subtype!r} is not allowed")
    multiarray, _ = _numpy_modules()
    return multiarray._reconstruct(subtype, shape, dtype)


def _scalar(dtype: np.dtype, *args: Any) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"numpy scalar of dtype {dtype!r} is not allowed")
    multiarray, _ = _numpy_modules()
    return multiarray.scalar(dtype, *args)


def _frombuffer(buffer: Any, dtype: np.dtype, shape: Any, order: str) -> np.ndarray:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise UnsafePickleError(f"array buffer of dtype {dtype!r} is not allowed")
    _, numeric = _numpy_modules()
    return numeric._frombuffer(buffer, dtype, shape, order)


def _encode(text: str, encoding: str = "utf-8") -> bytes:
    # protocol <= 2 stores bytes as _codecs.encode(str, "latin1")
    if encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, encoding)


_NUMPY_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _encode,
}
for _prefix in ("numpy.core", "numpy._core"):  # numpy 1 and numpy 2 module layouts
    _NUMPY_GLOBALS[(f"{_prefix}.multiarray", "_reconstruct")] = _reconstruct
    _NUMPY_GLOBALS[(f"{_prefix}.multiarray", "scalar")] = _scalar
    _NUMPY_GLOBALS[(f"{_prefix}.numeric", "_frombuffer")] = _frombuffer

ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("rlbench.demo", "Demo"): DemoRecord,
    ("rlbench.backend.observation", "Observation"): ObservationRecord,
    **_NUMPY_GLOBALS,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only `ALLOWED_GLOBALS` and refuses everything else."""

    def __init__(self, file: BinaryIO, source: str = "<pickle>") -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.source}: refuses to load global {module}.{name} (only RLBench's Demo/Observation and numpy arrays are allowed)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source}: persistent ids are not allowed")


def load_pickle(path: str | Path) -> Any:
    """Unpickle `path` with `RestrictedUnpickler`; every problem is a DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(handle, str(path)).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError, MemoryError) as error:
        raise DatasetError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from None


@dataclass
class DemoData:
    """A loaded `Demo` as plain data: one dict of attributes per observation."""

    observations: list[dict[str, Any]]
    random_seed: Any = None
    num_reset_attempts: int | None = None

    def __len__(self) -> int:
        return len(self.observations)


def demo_to_data(demo: Any, source: str = "<demo>") -> DemoData:
    """A Demo (the stand-in from a pickle, or RLBench's own from a live collection) as DemoData."""
    observations = getattr(demo, "_observations", None)
    if not isinstance(observations, list) or not observations:
        raise DatasetError(f"{source}: not an RLBench Demo with observations (got {type(demo).__name__})")
    data = []
    for i, observation in enumerate(observations):
        attributes = getattr(observation, "__dict__", None)
        if not isinstance(attributes, dict):
            raise DatasetError(f"{source}: observation {i} is a {type(observation).__name__}, not an RLBench Observation")
        data.append(dict(attributes))
    return DemoData(data, getattr(demo, "random_seed", None), getattr(demo, "num_reset_attempts", None))


def load_demo(path: str | Path) -> DemoData:
    """Read `low_dim_obs.pkl` as DemoData."""
    return demo_to_data(load_pickle(path), str(path))


# ----------------------------------------------------------------------------- images


def decode_depth(image: np.ndarray) -> np.ndarray:
    """24-bit packed depth PNG [H, W, 3] uint8 -> normalised depth [H, W] float32 in [0, 1]."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"depth image must be [H, W, 3], got shape {image.shape}")
    packed = image.astype(np.uint32)
    value = packed[..., 0] * 65536 + packed[..., 1] * 256 + packed[..., 2]
    return (value.astype(np.float64) / DEPTH_SCALE).astype(np.float32)


def encode_depth(depth: np.ndarray) -> np.ndarray:
    """Normalised depth [H, W] in [0, 1] -> packed [H, W, 3] uint8 (RLBench's writer's encoding)."""
    value = np.clip(np.floor(np.asarray(depth, dtype=np.float64) * DEPTH_SCALE + 0.5), 0, DEPTH_SCALE).astype(np.uint32)
    return np.stack([value >> 16, (value >> 8) & 255, value & 255], axis=-1).astype(np.uint8)


def depth_to_metres(depth: np.ndarray, near: float, far: float) -> np.ndarray:
    """Normalised depth -> metres along the camera axis: near + d * (far - near)."""
    return (near + depth.astype(np.float64) * (far - near)).astype(np.float32)


def decode_mask(image: np.ndarray) -> np.ndarray:
    """RGB mask PNG [H, W, 3] uint8 -> object handles [H, W] int32 (R + 256 G + 65536 B)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"mask image must be [H, W, 3], got shape {image.shape}")
    packed = image.astype(np.int32)
    return packed[..., 0] + packed[..., 1] * 256 + packed[..., 2] * 65536


def read_png(path: Path, size: int | None = None, blend: bool = False) -> np.ndarray:
    """An RGB PNG as [H, W, 3] uint8, resized to size: with `blend` (camera RGB) by PIL's default
    filter, as RLBench's own loader does (`image.resize(size)`, rlbench/utils.py:314-317); without
    (encoded depth, masks) nearest-neighbour, since blending the packed values would corrupt them."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if size is not None and image.size != (size, size):
                image = image.resize((size, size)) if blend else image.resize((size, size), Image.Resampling.NEAREST)
            return np.asarray(image, dtype=np.uint8)
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: not a readable PNG ({error})") from None


# ----------------------------------------------------------------------------- episodes


@dataclass(frozen=True)
class EpisodeRef:
    """Where one stored demo lives."""

    task: str
    variation: int | None  # None in the PerAct layout until variation_number.pkl / misc is read
    number: int
    path: Path


_NUMBERED = re.compile(r"^(variation|episode)(\d+)$")


def _numbered(folder: Path, prefix: str) -> list[tuple[int, Path]]:
    found = []
    for child in folder.iterdir():
        match = _NUMBERED.match(child.name)
        if child.is_dir() and match and match.group(1) == prefix:
            found.append((int(match.group(2)), child))
    return sorted(found)


def find_episodes(root: str | Path, task: str, variation: int = 0) -> list[EpisodeRef]:
    """Stored episodes of `task` under `root`, in episode order.

    `variation` >= 0 selects that variation in the upstream layout; -1 takes all variations. The
    PerAct layout (`all_variations`) is always read whole; `read_episode` then filters by variation.
    """
    task_dir = Path(root) / task
    if not task_dir.is_dir():
        raise DatasetError(f"{task_dir}: no such task folder (expected <root>/<task>/variation<N>/episodes or .../all_variations/episodes)")
    refs: list[EpisodeRef] = []
    peract = task_dir / ALL_VARIATIONS / "episodes"
    if peract.is_dir():
        refs += [EpisodeRef(task, None, number, path) for number, path in _numbered(peract, "episode")]
    for number, variation_dir in _numbered(task_dir, "variation"):
        if variation >= 0 and number != variation:
            continue
        episodes = variation_dir / "episodes"
        if not episodes.is_dir():
            raise DatasetError(f"{episodes}: missing episodes folder")
        refs += [EpisodeRef(task, number, m, path) for m, path in _numbered(episodes, "episode")]
    if not refs and not peract.is_dir() and not _numbered(task_dir, "variation"):
        raise DatasetError(f"{task_dir}: neither variation<N>/episodes nor all_variations/episodes found")
    return refs


@dataclass
class StoredEpisode:
    """One episode read from disk: plain low-dim data and the requested images."""

    ref: EpisodeRef
    variation: int
    demo: DemoData
    images: dict[str, np.ndarray] = field(default_factory=dict)  # "<camera>_<modality>" -> [T, H, W(, 3)]

    def __len__(self) -> int:
        return len(self.demo)


def episode_variation(ref: EpisodeRef, demo: DemoData) -> int:
    """The variation of an episode: the folder name, else variation_number.pkl, else misc."""
    if ref.variation is not None:
        return ref.variation
    number_file = ref.path / VARIATION_NUMBER
    if number_file.is_file():
        value = load_pickle(number_file)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        raise DatasetError(f"{number_file}: expected an integer, got {type(value).__name__}")
    misc = demo.observations[0].get("misc") or {}
    if "variation_index" in misc:
        return int(misc["variation_index"])
    raise DatasetError(f"{ref.path}: variation unknown (no variation_number.pkl and no misc['variation_index'])")


def read_episode(
    ref: EpisodeRef,
    cameras: list[str] | tuple[str, ...],
    modalities: tuple[str, ...] = ("rgb",),
    image_size: int | None = None,
) -> StoredEpisode:
    """Read one episode: the Demo pickle and, for the requested cameras only, its PNG frames.

    Depth comes back in metres [T, H, W] float32, masks as object handles [T, H, W] int32, RGB as
    [T, H, W, 3] uint8. A missing or extra frame, or missing near/far planes, raises DatasetError
    naming the path.
    """
    for camera in cameras:
        if camera not in CAMERAS:
            raise DatasetError(f"unknown RLBench camera {camera!r} (cameras: {', '.join(CAMERAS)})")
    for modality in modalities:
        if modality not in MODALITIES:
            raise DatasetError(f"unknown image modality {modality!r} (modalities: {', '.join(MODALITIES)})")
    demo = load_demo(ref.path / LOW_DIM_PICKLE)
    episode = StoredEpisode(ref, episode_variation(ref, demo), demo)
    length = len(demo)
    for camera in cameras:
        for modality in modalities:
            folder = ref.path / f"{camera}_{modality}"
            frames = _frame_files(folder, length)
            pixels = [read_png(path, image_size, blend=modality == "rgb") for path in frames]
            if modality == "rgb":
                episode.images[f"{camera}_rgb"] = np.stack(pixels)
            elif modality == "mask":
                episode.images[f"{camera}_mask"] = np.stack([decode_mask(p) for p in pixels])
            else:
                metres = []
                for i, p in enumerate(pixels):
                    near, far = _near_far(demo.observations[i], camera, ref.path / LOW_DIM_PICKLE, i)
                    metres.append(depth_to_metres(decode_depth(p), near, far))
                episode.images[f"{camera}_depth"] = np.stack(metres)
    return episode


def _frame_files(folder: Path, length: int) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: missing image folder (the demo has {length} steps)")
    names = {p.name for p in folder.iterdir() if p.suffix == ".png"}
    expected = [f"{i}.png" for i in range(length)]
    missing = [name for name in expected if name not in names]
    extra = sorted(names - set(expected))
    if missing or extra:
        detail = (
            (f"missing {', '.join(missing[:5])}" if missing else "")
            + ("; " if missing and extra else "")
            + (f"unexpected {', '.join(extra[:5])}" if extra else "")
        )
        raise DatasetError(f"{folder}: {len(names)} frames but low_dim_obs.pkl has {length} steps ({detail})")
    return [folder / name for name in expected]


def _near_far(observation: dict[str, Any], camera: str, source: Path, step: int) -> tuple[float, float]:
    misc = observation.get("misc") or {}
    try:
        return float(misc[f"{camera}_camera_near"]), float(misc[f"{camera}_camera_far"])
    except KeyError as error:
        raise DatasetError(f"{source}: step {step} has no misc[{error.args[0]!r}] needed to decode depth to metres") from None


def read_descriptions(ref: EpisodeRef) -> list[str]:
    """The language descriptions of the episode's variation (per episode in the PerAct layout)."""
    for folder in (ref.path, ref.path.parent.parent):
        path = folder / VARIATION_DESCRIPTIONS
        if path.is_file():
            value = load_pickle(path)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise DatasetError(f"{path}: expected a list of strings")
            return value
    return []
