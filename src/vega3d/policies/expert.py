"""A scripted expert for robosuite's Lift (toy imitation proof): above the cube, down, grasp, lift.

It acts in the LIBERO action convention (7-D OSC_POSE delta, gripper -1 open / +1 close) from the
privileged cube position, which the learned policy never sees: the policy has to find the cube in images.
"""

from __future__ import annotations

import numpy as np

HOVER, GRASP_STEPS, LIFT = 0.06, 12, 0.2


class LiftExpert:
    def __init__(self, gain: float = 12.0):
        self.gain = gain
        self.reset()

    def reset(self) -> None:
        self.phase, self.closed_for, self.start_z = "approach", 0, None

    def act(self, obs: dict) -> np.ndarray:
        eef, cube = np.asarray(obs["robot0_eef_pos"]), np.asarray(obs["cube_pos"])
        gripper, target = -1.0, eef
        if self.phase == "approach":
            target = cube + [0, 0, HOVER]
            if np.linalg.norm((target - eef)[:2]) < 0.008 and abs(target[2] - eef[2]) < 0.02:
                self.phase = "descend"
        if self.phase == "descend":
            target = cube + [0, 0, -0.005]
            if abs(target[2] - eef[2]) < 0.01:
                self.phase = "grasp"
        if self.phase == "grasp":
            target, gripper = cube + [0, 0, -0.005], 1.0
            self.closed_for += 1
            if self.closed_for >= GRASP_STEPS:
                self.phase, self.start_z = "lift", cube[2]
        if self.phase == "lift":
            target, gripper = np.r_[eef[:2], self.start_z + LIFT], 1.0
        action = np.zeros(7)
        action[:3] = np.clip(self.gain * (target - eef), -1, 1)
        action[6] = gripper
        return action
