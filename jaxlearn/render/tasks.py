"""Draw one frame of jaxlearn's task envs (navigation, exploration, cooperative).

Each `draw_*(fig, env, params, states, t)` draws frame `t` of an episode onto an empty
matplotlib `fig`; `states` is the host (NumPy) state pytree with a leading time axis, so a
frame can show the path up to `t`. Units are metres (navigation, cooperative) or cells
(exploration); x to the right, y up.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Circle, Rectangle

from jaxlearn.envs.exploration import coverage

AGENT = "tab:blue"
GOAL = "tab:green"
TOOL = "tab:orange"
OBSTACLE = "dimgray"
SAFETY = "tab:red"


def figure_size(env: Any) -> tuple[float, float]:
    """Inches: wider for 3-D navigation (top-down view and side view)."""
    return (8.0, 4.2) if getattr(env, "dim", 2) == 3 else (4.4, 4.4)


def _at(states: Any, field: str, t: int) -> np.ndarray:
    return np.asarray(getattr(states, field))[t]


def _state(states: Any, t: int) -> Any:
    """The state of frame `t` (no time axis)."""
    return jax.tree.map(lambda x: np.asarray(x)[t], states)


def _room(ax: Any, width: float, height: float, xlabel: str, ylabel: str) -> None:
    """Axes showing the box `[0, width] x [0, height]`, equal scale."""
    pad = 0.05 * max(width, height)
    ax.set_xlim(-pad, width + pad)
    ax.set_ylim(-pad, height + pad)
    ax.set_aspect("equal")
    ax.add_patch(Rectangle((0, 0), width, height, fill=False, lw=1.5, color="black"))
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


def _obstacles(ax: Any, states: Any, t: int, dims: tuple[int, int], ring: float = 0.0) -> None:
    """Active obstacles as discs (spheres project to discs of the same radius), with a
    dashed ring `ring` metres beyond the surface when `ring > 0`."""
    mask = _at(states, "obstacle_mask", t)
    centres = _at(states, "obstacles", t)[mask][:, list(dims)]
    for c, r in zip(centres, _at(states, "radii", t)[mask], strict=True):
        ax.add_patch(Circle(c, r, color=OBSTACLE, alpha=0.85))
        if ring > 0:
            ax.add_patch(Circle(c, r + ring, fill=False, ls="--", lw=0.8, color=SAFETY))


def _navigation_view(ax: Any, env: Any, params: Any, states: Any, t: int, dims: tuple[int, int]):
    axes = "xyz"
    ws = _at(states, "workspace", t)
    _room(ax, ws[dims[0]], ws[dims[1]], f"{axes[dims[0]]} (m)", f"{axes[dims[1]]} (m)")
    _obstacles(ax, states, t, dims, ring=float(params.safety_distance))
    goal = _at(states, "goal", t)[list(dims)]
    ax.add_patch(Circle(goal, float(params.goal_radius), color=GOAL, alpha=0.35))
    ax.plot(*goal, marker="*", ms=12, color=GOAL, ls="none")
    if bool(_at(states, "tool_needed", t)):
        held = bool(_at(states, "has_tool", t))
        tool = _at(states, "tool", t)[list(dims)]
        ax.plot(*tool, marker="s", ms=9, ls="none", color=TOOL, alpha=0.3 if held else 1.0)
    trail = np.asarray(states.pos)[: t + 1]
    pos = trail[-1]
    if env.dim == 3 and dims == (0, 1):
        # top-down view: the agent's height as colour
        z = trail[:, 2]
        ax.plot(trail[:, 0], trail[:, 1], lw=0.8, color="lightgray")
        ax.scatter(trail[:, 0], trail[:, 1], c=z, s=6, cmap="viridis", vmin=0, vmax=ws[2])
        ax.scatter(
            [pos[0]],
            [pos[1]],
            c=[pos[2]],
            s=80,
            cmap="viridis",
            vmin=0,
            vmax=ws[2],
            edgecolors="black",
        )
    else:
        ax.plot(trail[:, dims[0]], trail[:, dims[1]], lw=1.2, color=AGENT, alpha=0.6)
        ax.plot(pos[dims[0]], pos[dims[1]], marker="o", ms=8, color=AGENT, mec="black")
    if bool(_at(states, "tool_needed", t)) and bool(_at(states, "has_tool", t)):
        ax.plot(pos[dims[0]], pos[dims[1]], marker="s", ms=4, color=TOOL, ls="none")


def draw_navigation(fig: Any, env: Any, params: Any, states: Any, t: int) -> None:
    """Workspace, obstacles with their safety ring (dashed), the goal (star and its radius),
    the tool (square, faded once held) when needed, and the agent's trail. In 3-D: a
    top-down x-y view with the height as colour, and an x-z side view."""
    pos = _at(states, "pos", t)
    info = f"collisions {int(_at(states, 'collisions', t))}"
    if bool(_at(states, "tool_needed", t)):
        info += ", tool held" if bool(_at(states, "has_tool", t)) else ", tool not held"
    if env.dim == 2:
        ax = fig.add_subplot(1, 1, 1)
        _navigation_view(ax, env, params, states, t, (0, 1))
        ax.set_title(info, fontsize=8)
        return
    top, side = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    _navigation_view(top, env, params, states, t, (0, 1))
    _navigation_view(side, env, params, states, t, (0, 2))
    top.set_title(f"top view (colour: z = {pos[2]:.2f} m); {info}", fontsize=8)
    side.set_title("side view", fontsize=8)


EXPLORATION_COLOURS = ListedColormap(["#c8c8c8", "white", "#9ecae1", "#303030"])


def draw_exploration(fig: Any, env: Any, params: Any, states: Any, t: int) -> None:
    """The active grid: unvisited cells white, visited blue, obstacles black, resources
    stars (gold until found, then green outline), the agent red with its trail."""
    visited = _at(states, "visited", t)
    blocked = _at(states, "obstacle_grid", t)
    wx, wy = (int(v) for v in _at(states, "workspace", t))
    code = np.where(blocked, 3, np.where(visited, 2, 1))  # [G, G] indexed [x, y]
    ax = fig.add_subplot(1, 1, 1)
    gx, gy = code.shape
    ax.imshow(
        code.T,
        origin="lower",
        extent=(0, gx, 0, gy),
        cmap=EXPLORATION_COLOURS,
        vmin=0,
        vmax=3,
        interpolation="nearest",
    )
    ax.set_xlim(0, wx)
    ax.set_ylim(0, wy)
    ax.set_xticks(np.arange(wx + 1))
    ax.set_yticks(np.arange(wy + 1))
    ax.grid(color="lightgray", lw=0.5)
    ax.tick_params(labelsize=6)
    res = _at(states, "resources", t)
    mask, found = _at(states, "resource_mask", t), _at(states, "found", t)
    for (x, y), on, got in zip(res, mask, found, strict=True):
        if on:
            ax.plot(
                x + 0.5,
                y + 0.5,
                marker="*",
                ms=13,
                ls="none",
                color="white" if got else "gold",
                mec=GOAL if got else "darkgoldenrod",
            )
    trail = np.asarray(states.pos)[: t + 1] + 0.5
    ax.plot(trail[:, 0], trail[:, 1], lw=1.0, color="tab:red", alpha=0.5)
    ax.plot(*trail[-1], marker="o", ms=10, color="tab:red", mec="black")
    cov = float(coverage(_state(states, t)))
    n_found = int(np.sum(found & mask))
    ax.set_title(
        f"coverage {cov:.2f}, resources found {n_found}/{int(np.sum(mask))}, "
        f"collisions {int(_at(states, 'collisions', t))}",
        fontsize=8,
    )


def draw_cooperative(fig: Any, env: Any, params: Any, states: Any, t: int) -> None:
    """Agents (coloured, with trails), their formation slots around the team centroid
    (hollow circles, dotted line from each agent to its slot), the goal and its radius,
    obstacles, and communication: a line between every pair of agents (each hears all
    the others), as opaque as the pair's mean |comm|, with each agent's signal in text."""
    ax = fig.add_subplot(1, 1, 1)
    ws = _at(states, "workspace", t)
    _room(ax, ws[0], ws[1], "x (m)", "y (m)")
    _obstacles(ax, states, t, (0, 1))
    goal = _at(states, "goal", t)
    ax.add_patch(Circle(goal, float(params.goal_radius), color=GOAL, alpha=0.3))
    ax.plot(*goal, marker="*", ms=12, color=GOAL, ls="none")
    pos = _at(states, "pos", t)
    n = pos.shape[0]
    centroid = pos.mean(axis=0)
    slots = centroid + np.asarray(env.slot_offsets(params))
    comm = _at(states, "comm", t)
    loud = np.abs(comm).mean(axis=-1) if comm.shape[-1] else np.zeros(n)
    for i in range(n):
        for j in range(i + 1, n):
            alpha = float(np.clip(0.1 + 0.9 * (loud[i] + loud[j]) / 2, 0, 1))
            ax.plot(*np.stack([pos[i], pos[j]], axis=1), color="tab:purple", lw=1.5, alpha=alpha)
    ax.plot(*centroid, marker="x", ms=8, color="black", ls="none")
    trails = np.asarray(states.pos)[: t + 1]
    score = np.asarray(env.agent_scores(pos, params))
    for i in range(n):
        colour = f"C{i % 10}"
        ax.plot(trails[:, i, 0], trails[:, i, 1], lw=0.8, color=colour, alpha=0.5)
        ax.add_patch(Circle(slots[i], 0.12, fill=False, color=colour, lw=1.2))
        ax.plot(*np.stack([pos[i], slots[i]], axis=1), ls=":", lw=0.8, color=colour)
        ax.plot(*pos[i], marker="o", ms=8, color=colour, mec="black")
        if comm.shape[-1]:
            text = "[" + " ".join(f"{c:+.1f}" for c in comm[i][:3]) + "]"
            ax.annotate(text, pos[i], xytext=(5, 5), textcoords="offset points", fontsize=6)
    ax.set_title(
        f"team formation score {score.mean():.2f}, collisions {int(_at(states, 'collisions', t))}",
        fontsize=8,
    )
