"""Draw one frame of gymnax's CartPole-v1, Pendulum-v1 and Acrobot-v1 from their state fields.

Each `draw_*(fig, env, params, states, t)` draws frame `t` onto an empty matplotlib
`fig`; `states` is the host (NumPy) state pytree with a leading time axis.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.patches import Rectangle


def _at(states: Any, field: str, t: int) -> float:
    return float(np.asarray(getattr(states, field))[t])


def _axes(fig: Any, xlim: tuple[float, float], ylim: tuple[float, float]) -> Any:
    ax = fig.add_subplot(1, 1, 1)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.tick_params(labelsize=7)
    return ax


def draw_cartpole(fig: Any, env: Any, params: Any, states: Any, t: int) -> None:
    """The cart on its track (dashed lines at +-x_threshold) and the pole at angle theta
    from upright (drawn with its full length, twice the `length` parameter)."""
    x, theta = _at(states, "x", t), _at(states, "theta", t)
    limit = float(params.x_threshold)
    pole = 2.0 * float(params.length)
    ax = _axes(fig, (-limit - 0.6, limit + 0.6), (-0.6, pole + 0.6))
    ax.axhline(0.0, color="black", lw=1)
    for side in (-limit, limit):
        ax.axvline(side, color="tab:red", ls="--", lw=0.8)
    w, h = 0.5, 0.25
    ax.add_patch(Rectangle((x - w / 2, -h / 2), w, h, color="tab:blue"))
    top = (x + pole * np.sin(theta), h / 2 + pole * np.cos(theta))
    ax.plot([x, top[0]], [h / 2, top[1]], lw=5, color="tab:brown", solid_capstyle="round")
    ax.set_title(
        f"x {x:+.2f} m, pole {np.degrees(theta):+.1f} deg "
        f"(limit {np.degrees(float(params.theta_threshold_radians)):.0f})",
        fontsize=8,
    )


def draw_pendulum(fig: Any, env: Any, params: Any, states: Any, t: int) -> None:
    """The rod at angle theta (0 upright, counter-clockwise positive) and the last torque
    as a bar below (right = positive, full width = max_torque)."""
    theta, u = _at(states, "theta", t), _at(states, "last_u", t)
    length = float(params.l)
    ax = _axes(fig, (-1.4 * length, 1.4 * length), (-1.5 * length, 1.4 * length))
    tip = (-length * np.sin(theta), length * np.cos(theta))
    ax.plot([0, tip[0]], [0, tip[1]], lw=6, color="tab:brown", solid_capstyle="round")
    ax.plot(0, 0, marker="o", ms=6, color="black")
    frac = float(np.clip(u / float(params.max_torque), -1, 1))
    ax.add_patch(Rectangle((0, -1.35 * length), frac * length, 0.1 * length, color="tab:red"))
    ax.axvline(0, ymax=0.1, color="black", lw=0.5)
    angle = (theta + np.pi) % (2 * np.pi) - np.pi
    ax.set_title(f"angle {np.degrees(angle):+.0f} deg from upright, torque {u:+.2f}", fontsize=8)


def draw_acrobot(fig: Any, env: Any, params: Any, states: Any, t: int) -> None:
    """The two links hanging from the pivot, and the height the tip must pass
    (`-cos(a1) - cos(a1 + a2) > 1`, dashed)."""
    a1, a2 = _at(states, "joint_angle1", t), _at(states, "joint_angle2", t)
    l1, l2 = float(params.link_length_1), float(params.link_length_2)
    reach = l1 + l2
    ax = _axes(fig, (-reach - 0.2, reach + 0.2), (-reach - 0.2, reach + 0.2))
    p1 = np.array([l1 * np.sin(a1), -l1 * np.cos(a1)])
    p2 = p1 + np.array([l2 * np.sin(a1 + a2), -l2 * np.cos(a1 + a2)])
    ax.axhline(1.0, color="tab:green", ls="--", lw=1)
    ax.plot([0, p1[0], p2[0]], [0, p1[1], p2[1]], lw=5, color="tab:blue", solid_capstyle="round")
    ax.plot([0, p1[0]], [0, p1[1]], marker="o", ms=6, color="black", ls="none")
    ax.set_title(f"tip height {-np.cos(a1) - np.cos(a1 + a2):+.2f} (goal > 1)", fontsize=8)
