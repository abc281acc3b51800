"""Any registered game in a worker subprocess, so a crashed or hung engine ends one episode
instead of the run.

``IsolatedGame("alfworld", {}, step_timeout=30)`` builds ``make_game("alfworld")`` in a child Python
process (its own session, so a JVM or other grandchild belongs to its process group) and forwards
the ``TextGame`` calls over a socket. When the child dies or a call outlives its timeout, the
whole process group is killed, the call returns a failed ``GameState`` with
``info["failure"]`` naming the reason, and the next ``reset`` starts a fresh child.

The methods block; the agent loop calls them through ``asyncio.to_thread``, one object per
episode worker. A lock makes concurrent calls on one object wait their turn.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from env_adapters.base import GameState, TextGame

# The child: adopt the parent's import path, then serve (kept tiny: it runs before any import).
_BOOTSTRAP = (
    "import sys; from multiprocessing.connection import Connection; "
    "conn = Connection(int(sys.argv[1])); init = conn.recv(); sys.path[:] = init['sys_path']; "
    "from env_adapters.isolated import serve; serve(conn, init)"
)
_PARENT_POLL_S = 0.5
_LIVE: weakref.WeakSet[IsolatedGame] = weakref.WeakSet()


class GameWorkerError(RuntimeError):
    """The worker process could not be started, or failed again right after a restart."""


class _WorkerFault(Exception):
    """The worker died or timed out during a call; the message is the reason."""


def serve(conn: Connection, init: dict[str, Any]) -> None:
    """Child side: build the game, then answer ``(kind, name, args)`` requests until closed.

    However it ends (close, parent gone, error), the child kills its own process group last, so
    helpers the game started (a JVM) never outlive it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process ends
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        _serve_requests(conn, init)
    finally:
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _serve_requests(conn: Connection, init: dict[str, Any]) -> None:
    import importlib

    try:
        for module in init["import_modules"]:
            importlib.import_module(module)
        from env_adapters.base import make_game

        game = make_game(init["game"], **init["kwargs"])
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("error", _portable(exc)))
        return
    conn.send(("ok", None))
    while True:
        try:
            kind, name, args = conn.recv()
        except (EOFError, OSError):
            break
        if kind == "close":
            break
        try:
            attr = getattr(game, name)
            result = attr(*args) if kind == "call" else attr
        except BaseException as exc:  # noqa: BLE001 - the game's own error, raised in the parent
            conn.send(("error", _portable(exc)))
        else:
            conn.send(("ok", result))
    try:
        game.close()
    finally:
        with contextlib.suppress(OSError):  # the parent may be gone already
            conn.send(("ok", None))


def _exit_with_parent(parent: int) -> None:
    """Kill this process group once the parent is gone (it may have died by SIGKILL/SIGTERM)."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL_S)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _portable(exc: BaseException) -> BaseException:
    """The exception if it pickles, else a RuntimeError carrying its text and traceback."""
    import pickle

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 - any pickling failure means: send text instead
        return RuntimeError(f"{type(exc).__name__}: {exc}\n(worker traceback)\n{text}")
    if hasattr(exc, "add_note"):  # Python >= 3.11 shows the worker's traceback under the error
        exc.add_note(f"(raised in the game worker)\n{text}")
    return exc


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class IsolatedGame(TextGame):
    """A registered game run in a worker subprocess, with per-call timeouts.

    Args:
        game: registered game name, built in the child with ``make_game(game, **kwargs)``.
        kwargs: the game constructor's keyword arguments (picklable).
        step_timeout: seconds a ``step`` (or a query such as ``admissible_actions``) may take.
        reset_timeout: seconds a ``reset`` may take.
        start_timeout: seconds the child may take to import and build the game.
        import_modules: modules the child imports first, for games registered outside
            ``env_adapters`` (the decorator runs on import).
    """

    def __init__(self, game: str, kwargs: dict[str, Any] | None = None, *,
                 step_timeout: float = 60.0, reset_timeout: float = 120.0,
                 start_timeout: float = 300.0, import_modules: Sequence[str] = ()) -> None:
        for name, value in (("step_timeout", step_timeout), ("reset_timeout", reset_timeout),
                            ("start_timeout", start_timeout)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        self.game = game
        self.kwargs = dict(kwargs or {})
        self.step_timeout = float(step_timeout)
        self.reset_timeout = float(reset_timeout)
        self.start_timeout = float(start_timeout)
        self.import_modules = tuple(import_modules)
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._in_episode = False
        self._failure = ""  # why the current episode was ended by a fault
        self._labels = {"task_description": "", "task_type": ""}  # the game's, read at reset
        self._started = False
        self.restarts = 0  # workers started after the first (each one replaced a failed worker)
        _register_cleanup(self)

    # ---- process management -------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The worker's process id (also its process group id), or None when none runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _start(self) -> None:
        if self._started:
            self.restarts += 1
        self._started = True
        parent_sock, child_sock = socket.socketpair()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),), stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: killpg reaches grandchildren
            )
        finally:
            child_sock.close()
        self._conn = Connection(parent_sock.detach())
        self._conn.send({"sys_path": list(sys.path), "import_modules": self.import_modules,
                         "game": self.game, "kwargs": self.kwargs})
        try:
            self._receive(self.start_timeout, f"starting game {self.game!r}")
        except _WorkerFault as fault:
            raise GameWorkerError(f"game worker for {self.game!r} failed to start: {fault}") from None
        except BaseException:  # the game's constructor raised: the child has exited
            self._kill()
            raise

    def _kill(self) -> None:
        """Kill the worker's whole process group and reap it."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # unkillable (e.g. stuck in the kernel): stop waiting
            pass

    def _receive(self, timeout: float, what: str) -> Any:
        conn, proc = self._conn, self._proc
        assert conn is not None and proc is not None
        if not conn.poll(timeout):
            self._kill()
            raise _WorkerFault(f"timeout: {what} took longer than {timeout:g} s")
        try:
            status, payload = conn.recv()
        except (EOFError, OSError):
            raise self._died(f"during {what}") from None
        if status == "error":
            raise payload
        return payload

    def _died(self, when: str) -> _WorkerFault:
        """The fault for a worker whose connection broke, naming how it ended (its exit status)."""
        proc = self._proc
        assert proc is not None
        try:
            code = proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        self._kill()
        return _WorkerFault(f"worker died {when} ({_describe_exit(code)})")

    def _request(self, kind: str, name: str, args: tuple, timeout: float) -> Any:
        if self._conn is None:
            raise _WorkerFault("worker not running")
        try:
            self._conn.send((kind, name, args))
        except (BrokenPipeError, ConnectionError, OSError):
            # the worker may die between two calls: the send then breaks before any reply could
            raise self._died(f"before {name}") from None
        return self._receive(timeout, name)

    # ---- TextGame -----------------------------------------------------------------------

    def reset(self, task: str, variation: int = 0, seed: int = 0) -> GameState:
        with self._lock:
            self._in_episode, self._failure, reasons = False, "", []
            for _attempt in range(2):
                try:
                    if self._conn is None:
                        self._start()
                    state = self._request("call", "reset", (task, variation, seed),
                                          self.reset_timeout)
                    self._labels = {name: self._request("get", name, (), self.step_timeout)
                                    for name in self._labels}
                except (_WorkerFault, GameWorkerError) as fault:
                    self._kill()
                    reasons.append(str(fault))
                    continue
                self._in_episode, self._failure = True, ""
                return state
            self._in_episode = False
            raise GameWorkerError(
                f"reset of {self.game!r} task {task!r} failed in a fresh worker too: "
                + " | ".join(reasons)
            )

    def step(self, action: str) -> GameState:
        with self._lock:
            if not self._in_episode and not self._failure:
                raise RuntimeError("IsolatedGame.step called before reset(task=...)")
            if self._failure:
                return self._failed_state(f"episode already ended by a fault: {self._failure}")
            try:
                return self._request("call", "step", (action,), self.step_timeout)
            except _WorkerFault as fault:
                self._in_episode, self._failure = False, str(fault)
                return self._failed_state(str(fault))

    def _failed_state(self, reason: str) -> GameState:
        return GameState(
            observation=f"The game engine failed ({reason}); the episode ends here.",
            done=True, won=False, valid_action=False, info={"failure": reason},
        )

    def _query(self, kind: str, name: str, args: tuple = ()) -> Any:
        """A side query; a fault ends the episode like a failed step and returns None."""
        with self._lock:
            if self._conn is None or self._failure:
                return None
            try:
                return self._request(kind, name, args, self.step_timeout)
            except _WorkerFault as fault:
                self._in_episode, self._failure = False, str(fault)
                return None

    @property
    def task_description(self) -> str:
        return self._labels["task_description"]

    @property
    def task_type(self) -> str:
        return self._labels["task_type"]

    def admissible_actions(self) -> list[str] | None:
        return self._query("call", "admissible_actions")

    def actions_prompt(self) -> str | None:
        return self._query("call", "actions_prompt")

    def call(self, method: str, *args: Any) -> Any:
        """Call any other method of the game in the worker (e.g. ``expert_actions``); None on a
        fault."""
        return self._query("call", method, args)

    def close(self) -> None:
        """Ask the worker to close its game, then kill its process group. Safe to call twice."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.send(("close", "", ()))
                    self._conn.poll(5.0)
                except (OSError, EOFError):
                    pass
            self._kill()
            self._in_episode = False

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            try:
                self._kill()
            except Exception:  # noqa: BLE001 - interpreter shutdown may have torn down modules
                pass


_cleanup_registered = False


def _register_cleanup(game: IsolatedGame) -> None:
    """Track live games so interpreter exit kills their workers (SIGTERM/SIGKILL of the parent
    is covered by each worker watching its parent)."""
    global _cleanup_registered
    _LIVE.add(game)
    if not _cleanup_registered:
        atexit.register(_close_all)
        _cleanup_registered = True


def _close_all() -> None:
    for game in list(_LIVE):
        game._kill()
