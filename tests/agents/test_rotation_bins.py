"""Keyframe rotations as 5-degree Euler bins (PerAct's convention): quaternion -> bins ->
quaternion comes back within the bins' resolution, with the canonical sign."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from rlmtl.agents.rotation_bins import bins_per_angle, bins_to_quaternion, canonical_quaternion, quaternion_to_bins


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic angle between rotations given as xyzw quaternions [N, 4], in degrees."""
    return np.degrees((Rotation.from_quat(a).inv() * Rotation.from_quat(b)).magnitude())


@pytest.mark.parametrize("resolution", [5.0, 10.0, 45.0])
def test_round_trip_stays_within_the_resolution_with_the_canonical_sign(resolution):
    quaternions = Rotation.random(2000, random_state=0).as_quat()
    back = bins_to_quaternion(quaternion_to_bins(quaternions, resolution), resolution)
    assert back.shape == (2000, 4) and (back[:, 3] >= 0).all()
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-12)
    error = angle_between_deg(quaternions, back)
    assert error.max() <= 1.5 * resolution + 1e-9  # each of the three angles within half a bin
    assert np.median(error) < resolution  # and typically much closer


def test_q_and_minus_q_give_the_same_bins_and_known_rotations_their_bins():
    quaternions = Rotation.random(100, random_state=1).as_quat()
    np.testing.assert_array_equal(quaternion_to_bins(quaternions), quaternion_to_bins(-quaternions))
    identity = np.array([0.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(quaternion_to_bins(identity), [36, 36, 36])  # 0 deg + 180 -> bin 36 of 72
    quarter_z = Rotation.from_euler("z", 90, degrees=True).as_quat()
    np.testing.assert_array_equal(quaternion_to_bins(quarter_z), [36, 36, 54])
    half_x = Rotation.from_euler("x", 179.9, degrees=True).as_quat()  # +180 rounds to bin 72, which wraps to 0
    assert quaternion_to_bins(half_x)[0] == 0
    np.testing.assert_allclose(bins_to_quaternion(np.array([36, 36, 36])), identity, atol=1e-12)
    np.testing.assert_allclose(canonical_quaternion([0.0, 0.0, 0.0, -2.0]), identity)


def test_bad_input_is_refused():
    for resolution in (7.0, 0.0, -5.0, float("nan"), 360.0):
        with pytest.raises(ValueError, match="divide 360 degrees"):
            bins_per_angle(resolution)
    with pytest.raises(ValueError, match=r"bins must be in \[0, 72\)"):
        bins_to_quaternion(np.array([0, 72, 3]))
    with pytest.raises(ValueError, match="finite and non-zero"):
        quaternion_to_bins(np.array([0.0, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="finite and non-zero"):
        quaternion_to_bins(np.array([np.nan, 0.0, 0.0, 1.0]))
