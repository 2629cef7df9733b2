"""A scripted expert for robosuite's Lift (toy imitation proof): above the cube, down, grasp, lift.

It acts in the LIBERO action convention (7-D OSC_POSE delta, gripper -1 open / +1 close) from the
privileged cube position, which the learned policy never sees: the policy has to find the cube in images.
The expert keeps no memory: its action is a function of the current state (cube offset, seen in the
images, and the finger gap, in the proprio), so a policy can imitate it from what it observes, and the
clean action is defined in any state a perturbed or learned rollout drifts into (DART-style demos).
"""

from __future__ import annotations

import numpy as np

HOVER, LIFT = 0.06, 0.04
#: Finger gap (``qpos[0] - qpos[1]``) while closed on Lift's 4.0-4.4 cm cube (more when it stands rotated); below: closed on nothing.
HOLDING_GAP = (0.03, 0.066)
#: How close (m) across and above the cube's grasp point the gripper closes its fingers (it goes on down while they close).
AT_CUBE, GRASP_HEIGHT = 0.012, 0.02
#: Horizontal distance (m) from the cube beyond which the gripper approaches at hover height.
FUNNEL = 0.02


class LiftExpert:
    def __init__(self, gain: float = 8.0):
        self.gain = gain

    def phase(self, obs: dict) -> str:
        """``approach`` (funnel down onto the cube, open), ``grasp`` (close) or ``lift`` (holding it)."""
        offset = np.asarray(obs["cube_pos"]) - np.asarray(obs["robot0_eef_pos"])
        across, above = np.linalg.norm(offset[:2]), -offset[2]
        qpos = np.asarray(obs["robot0_gripper_qpos"])
        gap = qpos[0] - qpos[1]
        if HOLDING_GAP[0] < gap < HOLDING_GAP[1] and across < 2 * AT_CUBE and abs(above) < 2 * GRASP_HEIGHT:
            return "lift"
        if across < AT_CUBE and above < GRASP_HEIGHT and gap >= HOLDING_GAP[0]:
            return "grasp"
        return "approach"

    def act(self, obs: dict) -> np.ndarray:
        eef, cube = np.asarray(obs["robot0_eef_pos"]), np.asarray(obs["cube_pos"])
        phase, grasp_point = self.phase(obs), cube + [0, 0, -0.005]
        if phase == "approach":  # hover height far from the cube, descending as the gripper centres over it
            across = np.linalg.norm((cube - eef)[:2])
            target, gripper = grasp_point + [0, 0, HOVER * min(1.0, across / FUNNEL)], -1.0
        elif phase == "grasp":
            target, gripper = grasp_point, 1.0
        else:
            target, gripper = np.r_[cube[:2], eef[2] + LIFT], 1.0
        action = np.zeros(7)
        action[:3] = np.clip(self.gain * (target - eef), -1, 1)
        action[6] = gripper
        return action
