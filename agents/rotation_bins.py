"""Gripper rotations as discretised Euler angles, the classification targets of keyframe agents.

C2F-ARM, PerAct and RVT predict a keyframe's rotation as three classifications, one per Euler
angle, in bins of `resolution` degrees (5 in PerAct, conf/method/PERACT_BC.yaml:42), rather than
regressing a quaternion. The convention here is PerAct's (peract 02fb876):
- a quaternion is `[qx, qy, qz, qw]` (RLBench's gripper pose order), normalised, and negated when
  `qw < 0`, so q and -q (the same rotation) give the same bins (agents/c2farm_lingunet_bc/
  launch_utils.py:122-124);
- its Euler angles are scipy's extrinsic `"xyz"` in degrees, shifted by +180 to [0, 360], divided
  by the resolution and rounded; bin `360 / resolution` (an angle of +180) wraps to bin 0 (-180,
  the same angle) (helpers/utils.py:72-77);
- bins go back as `bin * resolution - 180` degrees through the same Euler convention
  (helpers/utils.py:80-82), and the quaternion is made canonical again (`qw >= 0`).
Each angle comes back within half a bin of the original, so the rotation comes back within about
`3 * resolution / 2` degrees (the three errors add at most).
"""

from __future__ import annotations

import numpy as np

DEFAULT_RESOLUTION_DEG = 5.0


def bins_per_angle(resolution: float) -> int:
    """Bins of one Euler angle: 360 / resolution, which must be a whole number (ValueError otherwise)."""
    count = 360.0 / resolution if resolution > 0 else float("nan")
    if not (np.isfinite(count) and abs(count - round(count)) < 1e-9 and round(count) >= 2):
        raise ValueError(f"rotation resolution must divide 360 degrees into at least 2 bins, got {resolution}")
    return int(round(count))


def canonical_quaternion(quaternions: np.ndarray) -> np.ndarray:
    """[N, 4] (or [4]) xyzw quaternions -> unit length with qw >= 0 (ValueError for a zero or
    non-finite one)."""
    q = np.asarray(quaternions, dtype=np.float64)
    norm = np.linalg.norm(q, axis=-1, keepdims=True)
    if not (np.isfinite(q).all() and (norm > 1e-12).all()):
        raise ValueError("quaternions must be finite and non-zero")
    q = q / norm
    return np.where(q[..., 3:4] < 0, -q, q)


def quaternion_to_bins(quaternions: np.ndarray, resolution: float = DEFAULT_RESOLUTION_DEG) -> np.ndarray:
    """[N, 4] xyzw quaternions -> [N, 3] Euler-angle bins in [0, 360 / resolution) (int64)."""
    from scipy.spatial.transform import Rotation

    count = bins_per_angle(resolution)
    q = canonical_quaternion(quaternions)
    euler = Rotation.from_quat(q.reshape(-1, 4)).as_euler("xyz", degrees=True) + 180.0
    bins = np.around(euler / resolution).astype(np.int64)
    bins[bins == count] = 0
    return bins.reshape(*q.shape[:-1], 3)


def bins_to_quaternion(bins: np.ndarray, resolution: float = DEFAULT_RESOLUTION_DEG) -> np.ndarray:
    """[N, 3] Euler-angle bins -> [N, 4] canonical xyzw quaternions (ValueError for a bin out of range)."""
    from scipy.spatial.transform import Rotation

    count = bins_per_angle(resolution)
    b = np.asarray(bins)
    if b.size and (b.min() < 0 or b.max() >= count):
        raise ValueError(f"rotation bins must be in [0, {count}), got {b.min()}..{b.max()}")
    degrees = b.reshape(-1, 3).astype(np.float64) * resolution - 180.0
    q = Rotation.from_euler("xyz", degrees, degrees=True).as_quat()
    return canonical_quaternion(q).reshape(*b.shape[:-1], 4)
