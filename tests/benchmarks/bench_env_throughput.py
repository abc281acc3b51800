"""Environment throughput: N game workers stepping in parallel, steps/s vs N, per game.

For each game (synthetic, sciworld, alfworld) and N in 1, 2, 4, 8, N episodes step at once for a
fixed wall-clock window, each on its own game object, driven by N threads of this process, in
the two ways the agent loop can run games:

- ``threads``: N game objects in this process (``env.isolate=false``). ScienceWorld's work runs in
  each game's own JVM, so it can run in parallel; ALFWorld (TextWorld) and synthetic are Python
  and share this process's GIL. ALFWorld is measured with N = 1 only here: TextWorld is not
  thread-safe (concurrent steps of two games in one process crash its shared grammar parser).
- ``processes``: N ``IsolatedGame`` worker processes (``env.isolate=true``); this process only
  forwards calls over sockets.

``raw`` is one game object stepped in this thread with nothing else running: the single-env
step rate that N workers are compared with. Every episode replays a fixed cycle of valid actions
(listed in ``ACTIONS``; ALFWorld's are the "go to" actions of its first observation), resetting
when the game ends. Reset time is excluded from the window; steps that end an episode are counted.

Run: ``.venv/bin/python tests/benchmarks/bench_env_throughput.py [--games sciworld] [--workers 1,2,4]
[--seconds 5]`` (ALFWorld needs ALFWORLD_DATA or ../shared/data/alfworld). Prints a table and the
machine load (``os.getloadavg``) before and after each game. Each window follows a
2 s warm-up window of the same workers; docs/reliability.md keeps figures.
"""

from __future__ import annotations

import argparse
import itertools
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from env_adapters import make_game, task_set
from env_adapters.base import TaskSpec, TextGame
from env_adapters.isolated import IsolatedGame

GAMES = ("synthetic", "sciworld", "alfworld")
# fixed action cycles; every action is valid in any room of the task
ACTIONS = {
    "synthetic": ["go north", "go east", "open door", "go south", "go west"],
    "sciworld": ["look around", "teleport to kitchen", "inventory", "teleport to hallway", "look around",
                 "teleport to bathroom"],
}
WARMUP_S = 2.0
KWARGS = {
    "synthetic": {},
    "sciworld": {"env_step_limit": 10**6},  # no resets inside the window
    "alfworld": {},
}


def first_task(game: str) -> TaskSpec:
    name = {"synthetic": "synthetic/long", "sciworld": "sciworld/l0-test-small",
            "alfworld": "alfworld/valid-seen-small"}[game]
    return task_set(name)[0]


@dataclass
class Runner:
    """One episode stepping through its action cycle."""

    game: TextGame
    task: TaskSpec
    name: str

    def start(self) -> None:
        self.game.reset(self.task.task, self.task.variation, self.task.seed)
        if self.name == "alfworld":
            listed = self.game.admissible_actions() or []
            self.actions = [a for a in listed if a.startswith("go to ")][:6] + ["look"]
        else:
            self.actions = ACTIONS[self.name]
        self.cycle = itertools.cycle(self.actions)

    def run(self, until: float, counter: list[int], lock: threading.Lock) -> None:
        steps, paused = 0, 0.0
        while time.monotonic() + paused < until:
            state = self.game.step(next(self.cycle))
            assert not state.info.get("failure"), state.info
            steps += 1
            if state.done:  # reset outside the window: shift the deadline by its duration
                started = time.monotonic()
                self.start()
                paused -= time.monotonic() - started
        with lock:
            counter[0] += steps


def rate(runners: list[Runner], seconds: float) -> float:
    """Total steps/s of ``runners`` stepping at once for ``seconds``."""
    counter, lock = [0], threading.Lock()
    with ThreadPoolExecutor(len(runners)) as pool:
        # warm up first (a fresh JVM is several times slower until its JIT has compiled the hot paths)
        until = time.monotonic() + WARMUP_S
        list(pool.map(lambda r: r.run(until, [0], lock), runners))
        until = time.monotonic() + seconds
        list(pool.map(lambda r: r.run(until, counter, lock), runners))
    return counter[0] / seconds


def build(name: str, mode: str, count: int) -> list[Runner]:
    task = first_task(name)

    def one(_: int) -> Runner:
        if mode == "processes":
            game: TextGame = IsolatedGame(name, KWARGS[name], step_timeout=120, reset_timeout=300)
        else:
            game = make_game(name, **KWARGS[name])
        runner = Runner(game, task, name)
        runner.start()
        return runner

    with ThreadPoolExecutor(min(count, 4)) as pool:  # start engines a few at a time (2 cores)
        return list(pool.map(one, range(count)))


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def bench(name: str, workers: list[int], seconds: float) -> list[dict]:
    rows = []
    before = load()
    raw = build(name, "threads", 1)
    raw_rate = rate(raw, seconds)
    raw[0].game.close()
    for mode in ("threads", "processes"):
        # TextWorld's grammar parser is a module global: concurrent steps of two ALFWorld games in
        # one process crash it (IndexError in tatsu), so in-process ALFWorld runs one worker only
        sizes = [1] if (name, mode) == ("alfworld", "threads") else workers
        runners = build(name, mode, max(sizes))
        try:
            for n in sizes:
                total = rate(runners[:n], seconds)
                rows.append({"game": name, "mode": mode, "n": n, "steps_s": total, "per_worker": total / n,
                             "speedup": total / raw_rate, "raw": raw_rate})
                print(f"  {name:9s} {mode:9s} N={n}: {total:8.1f} steps/s", flush=True)
        finally:
            for runner in runners:
                runner.game.close()
    for row in rows:
        row["load"] = f"{before} -> {load()}"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--games", default=",".join(GAMES))
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    workers = sorted(int(n) for n in args.workers.split(","))
    print(f"cores: {os.cpu_count()}, load before: {load()}", flush=True)
    rows = []
    for name in args.games.split(","):
        rows += bench(name.strip(), workers, args.seconds)
    print("\n| game | mode | N | steps/s (all) | steps/s per worker | vs raw 1-env | raw 1-env steps/s "
          "| load 1/5/15 min |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['game']} | {r['mode']} | {r['n']} | {r['steps_s']:.1f} | {r['per_worker']:.1f} | "
              f"{r['speedup']:.2f}x | {r['raw']:.1f} | {r['load']} |")


if __name__ == "__main__":
    main()
