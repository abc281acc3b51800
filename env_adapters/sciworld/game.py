"""ScienceWorld behind the ``TextGame`` interface: ``make_game("sciworld", ...)``.

One game object owns one JVM (``Simulator``) and reuses it across episodes; a crashed or hung JVM
ends the running episode as failed (``info["failure"]``) and is replaced at the next ``reset``.

What is reported, faithfully to the simulator:

- ``score``: ScienceWorld's score, 0-100 (``round(100 * getScore())``); -100 after a wrong
  ``focus on``.
- ``won``: the task was completed (``getCompleted()`` and score 100). A timed-out episode with a
  partial score is not won; neither is a focus failure.
- ``done``: completed, failed (score < 0), or more than ``env_step_limit`` moves; the same rule as
  ``ScienceWorldEnv.step``. Moves are the simulator's clock: an action it does not understand
  takes none, ``wait`` takes ten. The paper's 30-turn limit belongs to the agent loop.
- ``valid_action``: False when the simulator did not understand the input ("No known action
  matches that input.", "Unknown action. ..." after a numbered question, parser errors).
  Everything the simulator acted on is valid, even if the action changed nothing.
- An ambiguous input ("look at door") makes the simulator ask for an option number; that question
  is the observation (``info["ambiguous"]``) and the next action should be the number. Gold paths
  rely on this, so the game does not answer for the agent.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Sequence
from typing import Any

from env_adapters.base import GameState, TextGame, register_game
from env_adapters.sciworld import splits
from env_adapters.sciworld.simulator import Simulator, SimulatorFault, check_heap

SIMPLIFICATIONS = (
    "easy",
    "teleportAction",
    "selfWateringFlowerPots",
    "openContainers",
    "openDoors",
    "noElectricalAction",
)
# how the simulator starts its replies to input it could not act on
INVALID_PREFIXES = (
    "No known action matches that input",
    "Unknown action.",
    "Ambiguous request: Multiple different possible actions",
    "ERROR:",
    "Error Encountered",
)
AMBIGUOUS_PREFIX = "Ambiguous request: Please enter the number"
_OPTION_RE = re.compile(r"^(\d+):\t", re.MULTILINE)
# the simulator lists these templates in a form it does not itself use in its valid actions
_TEMPLATE_FIXES = {"go OBJ": "go to OBJ", "teleport OBJ": "teleport to OBJ"}


def resolve_task(task: str | int) -> str:
    """A task name from a name (``"boil"``) or an index (``"0"`` or ``0``)."""
    names = splits.task_names()
    if isinstance(task, int) or (isinstance(task, str) and task.strip().isdigit()):
        index = int(task)
        if 0 <= index < len(names):
            return names[index]
        raise ValueError(
            f"ScienceWorld task index {index} is out of range; use 0..{len(names) - 1}"
        )
    if isinstance(task, str) and task.strip() in names:
        return task.strip()
    raise ValueError(
        f"unknown ScienceWorld task {task!r}; use a task index 0..{len(names) - 1} or one of "
        f"{names}"
    )


def check_simplification(simplification: str) -> str:
    parts = [p for p in simplification.split(",") if p] if isinstance(simplification, str) else None
    if parts is None or any(p not in SIMPLIFICATIONS for p in parts):
        raise ValueError(
            f"simplification={simplification!r} is not valid; use '' or a comma-separated list "
            f"(no spaces) of {SIMPLIFICATIONS}"
        )
    return simplification


def _templates_and_objects(server: Any) -> tuple[list[str], list[str]]:
    templates = [str(t) for t in server.getPossibleActions()]
    return templates, [str(o) for o in server.getPossibleObjects()]


def compact_actions(templates: Sequence[str], objects: Sequence[str]) -> str:
    """The valid actions as templates + objects, a few hundred characters instead of ~30k."""
    shown = sorted({_TEMPLATE_FIXES.get(t, t) for t in templates})
    return (
        "Action templates (replace OBJ with an object): "
        + ", ".join(shown)
        + "\nObjects: "
        + ", ".join(sorted(set(objects)))
    )


@register_game("sciworld")
class ScienceWorldGame(TextGame):
    """ScienceWorld with the paper's defaults: the "easy" preset and a 100-move step limit.

    Args:
        simplification: ScienceWorld simplification string ("easy", "" or a comma-separated list).
        env_step_limit: the episode ends after more than this many simulator moves.
        jvm_heap: the JVM's maximum heap (``-Xmx``); about 220-330 MB resident at "256m".
        step_timeout: seconds one step (or action listing) may take before the JVM counts as hung.
        load_timeout: seconds a task load may take (gold-path generation can take ~30 s).
        jvm_options: extra JVM options; the serial collector keeps each worker to one GC thread.
    """

    def __init__(
        self,
        simplification: str = "easy",
        env_step_limit: int = 100,
        jvm_heap: str = "256m",
        step_timeout: float = 30.0,
        load_timeout: float = 180.0,
        jvm_options: Sequence[str] = ("-XX:+UseSerialGC",),
    ):
        self.simplification = check_simplification(simplification)
        if not isinstance(env_step_limit, int) or env_step_limit < 1:
            raise ValueError(f"env_step_limit={env_step_limit!r} must be a positive integer")
        for name, value in (("step_timeout", step_timeout), ("load_timeout", load_timeout)):
            if not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive number of seconds")
        self.env_step_limit = env_step_limit
        self.jvm_heap = check_heap(jvm_heap)
        self.jvm_options = tuple(jvm_options)
        self.step_timeout = float(step_timeout)
        self.load_timeout = float(load_timeout)
        self.jvm_restarts = 0
        self._simulator: Simulator | None = None
        self._task = ""
        self._variation = 0
        self._description = ""
        self._moves_taken = 0
        self._last: GameState | None = None
        self._valid_cache: list[str] | None = None
        self._pending_fault: str | None = None
        self._gold: dict[tuple[str, int, str], list[str]] = {}

    # -- process -------------------------------------------------------------------------------

    @property
    def jvm_pid(self) -> int | None:
        """PID of the running JVM, None before the first reset or after a fault/close."""
        sim = self._simulator
        return sim.pid if sim is not None and sim.alive() else None

    def jvm_resident_bytes(self) -> int:
        sim = self._simulator
        return sim.resident_bytes() if sim is not None else 0

    def _running_simulator(self) -> Simulator:
        if self._simulator is None or not self._simulator.alive():
            if self._simulator is not None:
                self._simulator.kill()
                self.jvm_restarts += 1
            self._simulator = Simulator(self.jvm_heap, self.jvm_options)
        return self._simulator

    def close(self) -> None:
        if self._simulator is not None:
            self._simulator.kill()
            self._simulator = None
        self._last = None

    # -- episode -------------------------------------------------------------------------------

    def reset(self, task: str, variation: int = 0, seed: int = 0) -> GameState:
        """Load ``task`` (name or index) at ``variation``.

        ScienceWorld takes no seed, so ``seed`` only labels the episode. The variation fixes the
        task and the world; the simulator's own unseeded randomness remains (objects may be
        listed in another order after a reload, animals move at random), so two episodes of one
        variation are the same task but not always byte-identical.
        """
        name = resolve_task(task)
        limit = splits.max_variations(name)
        given = variation
        try:  # numpy integers from a parquet row are fine too
            variation = operator.index(variation)
        except TypeError:
            variation = -1
        if isinstance(given, bool) or not 0 <= variation < limit:
            raise ValueError(
                f"variation {given!r} of ScienceWorld task {name!r} is out of range; "
                f"use 0..{limit - 1}"
            )
        electrical = "power-component" in name or "conductivity" in name
        if electrical and "noElectricalAction" in self.simplification.split(","):
            raise ValueError(
                f"task {name!r} needs electrical actions; drop 'noElectricalAction' from "
                f"simplification={self.simplification!r} ('easy' keeps them for this task)"
            )
        simplification = self.simplification

        def load(server: Any) -> tuple[str, str, str]:
            error = server.load(name, variation, simplification, False)
            return error, server.freeActionLook(), server.getTaskDescription()

        for attempt in (1, 2):  # a JVM that dies while loading gets one fresh replacement
            try:
                error, look, description = self._running_simulator().call(
                    load, self.load_timeout, f"load of {name} variation {variation}"
                )
                break
            except SimulatorFault as fault:
                if attempt == 2:
                    raise RuntimeError(
                        f"ScienceWorld failed twice to load {name!r} variation {variation}: "
                        f"{fault.reason}"
                    ) from fault
        if error:
            raise ValueError(f"ScienceWorld refused {name!r} variation {variation}: {error}")
        self._task, self._variation, self._description = name, variation, description
        self._moves_taken = 0
        self._valid_cache = None
        self._pending_fault = None
        info = {"task": name, "variation": variation, "seed": seed, "moves": 0}
        info["jvm_restarts"] = self.jvm_restarts
        self._last = GameState(observation=look, info=info)
        return self._last

    def step(self, action: str) -> GameState:
        if self._last is None:
            raise RuntimeError("call reset(task, variation) before step()")
        if self._last.done:
            return GameState(
                observation="The episode is over; call reset() to start a new one.",
                done=True,
                won=self._last.won,
                valid_action=False,
                score=self._last.score,
                info={**self._last.info, "after_done": True},
            )
        text = action if isinstance(action, str) else str(action)
        self._moves_taken += 1
        self._valid_cache = None
        if self._pending_fault is not None:
            return self._fail(self._pending_fault)

        def play(server: Any) -> tuple[str, float, bool, int]:
            observation = server.step(text)
            return observation, server.getScore(), server.getCompleted(), server.getNumMoves()

        try:
            observation, raw_score, completed, moves = self._simulator.call(
                play, self.step_timeout, "step"
            )
        except SimulatorFault as fault:
            return self._fail(fault.reason)
        score = int(round(100 * raw_score))
        completed = bool(completed)
        won = completed and score >= 100
        done = completed or score < 0 or moves > self.env_step_limit
        info: dict[str, Any] = {
            "task": self._task,
            "variation": self._variation,
            "moves": int(moves),
            "completed": completed,
        }
        if observation.startswith(AMBIGUOUS_PREFIX):
            info["ambiguous"] = True
        self._last = GameState(
            observation=observation,
            done=done,
            won=won,
            valid_action=not observation.startswith(INVALID_PREFIXES),
            score=float(score),
            info=info,
        )
        return self._last

    def _fail(self, reason: str) -> GameState:
        # the agent did nothing wrong: a fault is not an invalid action
        score = self._last.score if self._last is not None else 0.0
        self._last = GameState(
            observation=f"The game stopped: {reason}",
            done=True,
            won=False,
            valid_action=True,
            score=score,
            info={"task": self._task, "variation": self._variation, "failure": reason},
        )
        self._pending_fault = None
        return self._last

    # -- what the agent sees -------------------------------------------------------------------

    @property
    def task_description(self) -> str:
        return self._description

    @property
    def task_type(self) -> str:
        return self._task

    def admissible_actions(self) -> list[str] | None:
        """Every valid action-object combination now (often 500-3,000 strings; see
        ``actions_prompt`` for the compact form). None if the JVM failed; the next step ends the
        episode with that failure."""
        if self._last is None or self._last.done:
            return None
        if self._valid_cache is None:
            found = self._ask(lambda s: [str(a) for a in s.getValidActionObjectCombinations()])
            if found is None:
                return None
            self._valid_cache = found
        return list(self._valid_cache)

    def actions_prompt(self) -> str | None:
        """The valid actions in compact form: templates + objects (or, after an ambiguous input,
        the option numbers to answer with)."""
        if self._last is None or self._last.done:
            return None
        if self._last.info.get("ambiguous"):
            options = _OPTION_RE.findall(self._last.observation)
            return "Answer with the number of the option you mean: " + ", ".join(options)
        found = self._ask(_templates_and_objects)
        return None if found is None else compact_actions(*found)

    def _ask(self, fn: Any) -> Any:
        try:
            return self._simulator.call(fn, self.step_timeout, "action listing")
        except SimulatorFault as fault:
            self._pending_fault = fault.reason
            return None

    def gold_actions(self) -> list[str]:
        """The simulator's gold action sequence for the current task, variation and preset.

        Generating it reloads the task, so call it right after ``reset`` (before any step); the
        episode is left at its start. Replayed, it completes the task (it may exceed the paper's
        30 turns or the step limit: see docs/sciworld.md).
        """
        if self._last is None:
            raise RuntimeError("call reset(task, variation) before gold_actions()")
        if self._moves_taken:
            raise RuntimeError("gold_actions() must be called right after reset(), before step()")
        key = (self._task, self._variation, self.simplification)
        if key not in self._gold:
            name, variation, simplification = key

            def generate(server: Any) -> list[str]:
                server.load(name, variation, simplification, True)
                gold = [str(a) for a in server.getGoldActionSequence()]
                server.load(name, variation, simplification, False)  # back to a clean start
                return gold

            try:
                gold = self._simulator.call(generate, self.load_timeout, "gold-path generation")
            except SimulatorFault as fault:
                self._last = None
                raise RuntimeError(f"gold-path generation failed: {fault.reason}") from fault
            self._gold[key] = gold
        return list(self._gold[key])
