"""ALFWorld adapter cost: steps/s through ``AlfworldGame`` vs the raw TextWorld engine in the same
run, the same through an ``IsolatedGame`` worker, reset time, and memory per environment.

Run: ``.venv/bin/python tests/benchmarks/bench_alfworld.py [--games 3] [--steps 100]``
(needs ALFWORLD_DATA or ../shared/data/alfworld). Prints a table; docs/alfworld.md keeps the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

from env_adapters import task_set
from env_adapters.alfworld import AlfworldGame, _engine_modules, data_dir
from env_adapters.isolated import IsolatedGame


def raw_engine():
    """TextWorld's PDDL env with ALFWorld's object names, as the adapter builds it."""
    textworld, pddl_env, demangler = _engine_modules()
    return demangler(shuffle=False)(pddl_env(textworld.EnvInfos(won=True, admissible_commands=True)))


def action_script(game_file: str, steps: int, seed: int) -> list[str]:
    """A random walk of admissible commands, replayed identically by every contender."""
    env, rng = raw_engine(), random.Random(seed)
    env.load(game_file)
    state, actions = env.reset(), []
    for _ in range(steps):
        actions.append(rng.choice(state["admissible_commands"]))
        state, _, _ = env.step(actions[-1])
    return actions


def time_lockstep(raw, adapter: AlfworldGame, isolated: IsolatedGame, root: Path, task: str,
                  actions: list[str]) -> dict[str, tuple[float, float]]:
    """Play the same actions on all three side by side, timing each step of each in turn, so
    load from other jobs hits all alike. Returns {name: (wall seconds, CPU seconds here)}."""
    raw.load(str(root / task))
    raw.reset()
    adapter.reset(task)
    isolated.reset(task)
    contenders = {
        "raw TextWorld": lambda a: raw.step(a),
        "AlfworldGame": lambda a: (adapter.step(a), adapter.admissible_actions()),
        "IsolatedGame": lambda a: (isolated.step(a), isolated.admissible_actions()),
    }
    totals = {name: [0.0, 0.0] for name in contenders}
    for i, action in enumerate(actions):
        order = list(contenders) if i % 2 == 0 else list(reversed(contenders))
        for name in order:
            wall, cpu = time.perf_counter(), time.thread_time()
            contenders[name](action)
            totals[name][0] += time.perf_counter() - wall
            totals[name][1] += time.thread_time() - cpu
    return {name: (wall, cpu) for name, (wall, cpu) in totals.items()}


def reset_times(game: AlfworldGame, tasks: list[str]) -> tuple[list[float], list[float]]:
    """(new game: load + reset, same game again: reset only) in seconds."""
    cold, warm = [], []
    for task in tasks:
        start = time.perf_counter()
        game.reset(task)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        game.reset(task)
        warm.append(time.perf_counter() - start)
    return cold, warm


def rss_mb(pid: int | None = None) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def in_process_mb(tasks: list[str]) -> tuple[float, float]:
    """In a fresh interpreter: (MB the engine import takes, MB each further in-process
    AlfworldGame with a loaded game adds)."""
    code = (
        "import gc, psutil, sys; from env_adapters.alfworld import AlfworldGame, _engine_modules\n"
        "rss = lambda: psutil.Process().memory_info().rss / 2**20\n"
        "base = rss(); _engine_modules(); imported = rss(); games = []\n"
        "for t in sys.argv[1:]:\n    games.append(AlfworldGame()); games[-1].reset(t)\n"
        "gc.collect(); print(imported - base, (rss() - imported) / len(games))"
    )
    out = subprocess.run([sys.executable, "-c", code, *tasks], capture_output=True, text=True,
                         check=True).stdout.split()
    return float(out[-2]), float(out[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", type=int, default=3, help="games stepped (valid-seen-small)")
    parser.add_argument("--steps", type=int, default=100, help="steps per game")
    args = parser.parse_args()

    specs = task_set("alfworld/valid-seen-small")
    stepped = specs[:: max(1, len(specs) // args.games)][: args.games]
    root = data_dir()
    raw, adapter = raw_engine(), AlfworldGame()
    isolated = IsolatedGame("alfworld", {}, step_timeout=60, reset_timeout=120)
    totals = {"raw TextWorld": [0.0, 0.0], "AlfworldGame": [0.0, 0.0], "IsolatedGame": [0.0, 0.0]}
    n_steps = 0
    for i, spec in enumerate(stepped):
        actions = action_script(str(root / spec.task), args.steps, seed=i)
        for name, (wall, cpu) in time_lockstep(raw, adapter, isolated, root, spec.task,
                                               actions).items():
            totals[name][0] += wall
            totals[name][1] += cpu
        n_steps += len(actions)
    worker_mb = rss_mb(isolated.pid)
    isolated.close()
    first_of_type = list({s.task_type: s.task for s in specs}.values())
    cold, warm = reset_times(adapter, first_of_type)
    import_mb, per_game_mb = in_process_mb(first_of_type[:4])

    raw_wall, raw_cpu = totals["raw TextWorld"]
    print(f"\nALFWorld benchmark: {len(stepped)} games x {args.steps} admissible random-walk steps,"
          f" played in lockstep; {psutil.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{'contender':<16}{'steps/s':>9}{'ms/step':>9}{'overhead':>10}"
          f"{'CPU ms/step':>13}{'CPU overhead':>14}")
    for name, (wall, cpu) in totals.items():
        cpu_cols = (f"{1000 * cpu / n_steps:>13.2f}{100 * (cpu / raw_cpu - 1):>13.1f}%"
                    if name != "IsolatedGame" else f"{'(in worker)':>13}{'':>14}")
        print(f"{name:<16}{n_steps / wall:>9.1f}{1000 * wall / n_steps:>9.2f}"
              f"{100 * (wall / raw_wall - 1):>9.1f}%{cpu_cols}")
    print(f"\nreset, new game (load + reset), {len(cold)} games (one per type): median "
          f"{statistics.median(cold):.2f} s, min {min(cold):.2f} s, max {max(cold):.2f} s")
    print(f"reset, same game again (translation reused): median {statistics.median(warm):.3f} s, "
          f"max {max(warm):.3f} s")
    print(f"memory: IsolatedGame worker process {worker_mb:.0f} MB RSS (Python + TextWorld + one "
          f"game); in one process the engine import takes {import_mb:.0f} MB and each further "
          f"AlfworldGame {per_game_mb:.0f} MB")


if __name__ == "__main__":
    main()
